import { MediaType } from '../../model/oci.js';
import { sha256, type Digest } from '../../model/digest.js';

/** The uncompressed layer media type of the same family (Docker or OCI). */
export function uncompressedLayerType(mediaType: string): string {
  return mediaType.startsWith('application/vnd.docker.') ? MediaType.DOCKER_LAYER : MediaType.OCI_LAYER;
}

/**
 * The manifest cairn serves for an image whose compressed layer blobs it does
 * not keep: the pushed manifest with each layer descriptor naming the layer's
 * uncompressed tar (digest = diffID, size = tar bytes), which cairn rebuilds
 * byte for byte from the layer's recipe. Config and diffIDs are unchanged, so
 * the image ID and the unpacked filesystem are the same; the manifest digest is not.
 * A function of the pushed bytes alone: the same push always gives the same digest.
 */
export function uncompressedManifest(
  pushed: Buffer,
  layers: { diffId: Digest; tarBytes: number }[],
): { data: Buffer; digest: Digest } {
  const doc = JSON.parse(pushed.toString('utf8')) as { layers?: Record<string, unknown>[] };
  const before = doc.layers ?? [];
  doc.layers = before.map((d, i) => {
    const l = layers[i] as { diffId: Digest; tarBytes: number };
    const out: Record<string, unknown> = {
      mediaType: uncompressedLayerType(String(d.mediaType)),
      digest: l.diffId,
      size: l.tarBytes,
    };
    if (d.annotations) out.annotations = d.annotations;
    return out;
  });
  const unchanged = before.every((d, i) => {
    const l = layers[i] as { diffId: Digest; tarBytes: number };
    return d.digest === l.diffId && d.size === l.tarBytes && d.mediaType === uncompressedLayerType(String(d.mediaType));
  });
  if (unchanged) return { data: pushed, digest: sha256(pushed) };
  const data = Buffer.from(JSON.stringify(doc, null, 2));
  return { data, digest: sha256(data) };
}

/** An index with its children's descriptors replaced by what is served for them. */
export function servedIndex(
  pushed: Buffer,
  children: Map<string, { digest: Digest; size: number; mediaType: string }>,
): { data: Buffer; digest: Digest } {
  const doc = JSON.parse(pushed.toString('utf8')) as { manifests?: Record<string, unknown>[] };
  let changed = false;
  doc.manifests = (doc.manifests ?? []).map((d) => {
    const s = children.get(String(d.digest));
    if (!s || s.digest === d.digest) return d;
    changed = true;
    return { ...d, mediaType: s.mediaType, digest: s.digest, size: s.size };
  });
  if (!changed) return { data: pushed, digest: sha256(pushed) };
  const data = Buffer.from(JSON.stringify(doc, null, 2));
  return { data, digest: sha256(data) };
}

/**
 * Whether an `Accept` header admits `mediaType`. No header, a wildcard or
 * an unparsable header admit everything (clients that send none take anything).
 */
export function accepts(header: string | string[] | undefined, mediaType: string): boolean {
  if (header === undefined) return true;
  const types = (Array.isArray(header) ? header.join(',') : header)
    .split(',')
    .map((t) => (t.split(';')[0] ?? '').trim().toLowerCase())
    .filter((t) => t !== '');
  if (types.length === 0) return true;
  return types.some((t) => t === '*/*' || t === 'application/*' || t === 'application/json' || t === mediaType);
}
