import { CairnError, ErrorCode } from './errors.js';
import { parseDigest, type Digest } from './digest.js';

export const MediaType = {
  OCI_INDEX: 'application/vnd.oci.image.index.v1+json',
  OCI_MANIFEST: 'application/vnd.oci.image.manifest.v1+json',
  OCI_CONFIG: 'application/vnd.oci.image.config.v1+json',
  OCI_LAYER: 'application/vnd.oci.image.layer.v1.tar',
  OCI_LAYER_GZIP: 'application/vnd.oci.image.layer.v1.tar+gzip',
  OCI_LAYER_ZSTD: 'application/vnd.oci.image.layer.v1.tar+zstd',
  OCI_LAYER_NONDIST_GZIP: 'application/vnd.oci.image.layer.nondistributable.v1.tar+gzip',
  DOCKER_MANIFEST: 'application/vnd.docker.distribution.manifest.v2+json',
  DOCKER_LIST: 'application/vnd.docker.distribution.manifest.list.v2+json',
  DOCKER_CONFIG: 'application/vnd.docker.container.image.v1+json',
  DOCKER_LAYER_GZIP: 'application/vnd.docker.image.rootfs.diff.tar.gzip',
  DOCKER_LAYER: 'application/vnd.docker.image.rootfs.diff.tar',
} as const;

export type Compression = 'none' | 'gzip' | 'zstd';

const LAYER_COMPRESSION: Record<string, Compression> = {
  [MediaType.OCI_LAYER]: 'none',
  [MediaType.OCI_LAYER_GZIP]: 'gzip',
  [MediaType.OCI_LAYER_ZSTD]: 'zstd',
  [MediaType.OCI_LAYER_NONDIST_GZIP]: 'gzip',
  [MediaType.DOCKER_LAYER_GZIP]: 'gzip',
  [MediaType.DOCKER_LAYER]: 'none',
};

/** The compression a layer media type announces; unknown media types are refused. */
export function layerCompression(mediaType: string, what: string): Compression {
  const c = LAYER_COMPRESSION[mediaType];
  if (c === undefined) {
    throw new CairnError(ErrorCode.UNSUPPORTED, `${what}: unknown layer media type ${JSON.stringify(mediaType)}`);
  }
  return c;
}

export interface Descriptor {
  mediaType: string;
  digest: Digest;
  size: number;
  annotations?: Record<string, string>;
  platform?: Platform;
}

export interface Platform {
  architecture: string;
  os: string;
  variant?: string;
}

export interface ImageManifest {
  schemaVersion: 2;
  mediaType: string;
  config: Descriptor;
  layers: Descriptor[];
  annotations?: Record<string, string>;
}

export interface ImageIndex {
  schemaVersion: 2;
  mediaType: string;
  manifests: Descriptor[];
  annotations?: Record<string, string>;
}

export interface ImageConfig {
  architecture?: string;
  os?: string;
  variant?: string;
  rootfs?: { type: string; diff_ids: string[] };
}

export const REF_NAME_ANNOTATION = 'org.opencontainers.image.ref.name';

export function parseJson(data: Buffer | string, what: string): unknown {
  try {
    return JSON.parse(typeof data === 'string' ? data : data.toString('utf8'));
  } catch (err) {
    throw new CairnError(ErrorCode.INVALID_INPUT, `${what}: not valid JSON (${(err as Error).message})`);
  }
}

function invalid(what: string, problem: string): never {
  throw new CairnError(ErrorCode.INVALID_INPUT, `${what}: ${problem}`);
}

export function parseDescriptor(value: unknown, what: string): Descriptor {
  if (!value || typeof value !== 'object') invalid(what, 'descriptor is not an object');
  const d = value as Record<string, unknown>;
  if (typeof d.mediaType !== 'string') invalid(what, 'descriptor has no mediaType');
  const digest = parseDigest(d.digest, `${what} digest`);
  if (typeof d.size !== 'number' || !Number.isSafeInteger(d.size) || d.size < 0) {
    invalid(what, 'descriptor size is not a non-negative integer');
  }
  const out: Descriptor = { mediaType: d.mediaType, digest, size: d.size };
  if (d.annotations && typeof d.annotations === 'object') out.annotations = d.annotations as Record<string, string>;
  if (d.platform && typeof d.platform === 'object') {
    const p = d.platform as Record<string, unknown>;
    if (typeof p.architecture === 'string' && typeof p.os === 'string') {
      out.platform = { architecture: p.architecture, os: p.os };
      if (typeof p.variant === 'string') out.platform.variant = p.variant;
    }
  }
  return out;
}

export type ParsedManifest = { kind: 'manifest'; manifest: ImageManifest } | { kind: 'index'; index: ImageIndex };

/** Parses an image manifest or index (OCI or Docker schema 2), refusing anything else. */
export function parseManifest(data: Buffer, what: string, declaredMediaType?: string): ParsedManifest {
  const doc = parseJson(data, what);
  if (!doc || typeof doc !== 'object' || Array.isArray(doc)) invalid(what, 'not a JSON object');
  const m = doc as Record<string, unknown>;
  if (m.schemaVersion !== 2) invalid(what, `schemaVersion ${String(m.schemaVersion)} is not 2`);
  const mediaType = typeof m.mediaType === 'string' ? m.mediaType : declaredMediaType;
  const annotations = (m.annotations as Record<string, string> | undefined) ?? undefined;
  const isIndex =
    mediaType === MediaType.OCI_INDEX ||
    mediaType === MediaType.DOCKER_LIST ||
    (mediaType === undefined && Array.isArray(m.manifests));
  const isManifest =
    mediaType === MediaType.OCI_MANIFEST ||
    mediaType === MediaType.DOCKER_MANIFEST ||
    (mediaType === undefined && Array.isArray(m.layers));
  if (isIndex) {
    if (!Array.isArray(m.manifests)) invalid(what, 'index has no manifests array');
    const manifests = m.manifests.map((d, i) => parseDescriptor(d, `${what} manifests[${i}]`));
    const index: ImageIndex = { schemaVersion: 2, mediaType: mediaType ?? MediaType.OCI_INDEX, manifests };
    if (annotations) index.annotations = annotations;
    return { kind: 'index', index };
  }
  if (isManifest) {
    if (!Array.isArray(m.layers)) invalid(what, 'manifest has no layers array');
    const config = parseDescriptor(m.config, `${what} config`);
    const layers = m.layers.map((d, i) => parseDescriptor(d, `${what} layers[${i}]`));
    const manifest: ImageManifest = {
      schemaVersion: 2,
      mediaType: mediaType ?? MediaType.OCI_MANIFEST,
      config,
      layers,
    };
    if (annotations) manifest.annotations = annotations;
    return { kind: 'manifest', manifest };
  }
  throw new CairnError(ErrorCode.UNSUPPORTED, `${what}: unknown manifest media type ${JSON.stringify(mediaType)}`);
}

export function parseConfig(data: Buffer, what: string): ImageConfig {
  const doc = parseJson(data, what);
  if (!doc || typeof doc !== 'object') invalid(what, 'config is not a JSON object');
  const c = doc as Record<string, unknown>;
  const rootfs = c.rootfs as { type?: unknown; diff_ids?: unknown } | undefined;
  if (!rootfs || !Array.isArray(rootfs.diff_ids)) invalid(what, 'config has no rootfs.diff_ids');
  rootfs.diff_ids.forEach((d, i) => parseDigest(d, `${what} rootfs.diff_ids[${i}]`));
  const out: ImageConfig = { rootfs: { type: String(rootfs.type ?? 'layers'), diff_ids: rootfs.diff_ids as string[] } };
  if (typeof c.architecture === 'string') out.architecture = c.architecture;
  if (typeof c.os === 'string') out.os = c.os;
  if (typeof c.variant === 'string') out.variant = c.variant;
  return out;
}

/** Parses `os/arch[/variant]`. */
export function parsePlatform(value: string): Platform {
  const parts = value.split('/');
  if (parts.length < 2 || parts.length > 3 || parts.some((p) => p === '')) {
    throw new CairnError(ErrorCode.INVALID_OPTION, `--platform: ${JSON.stringify(value)} is not os/arch[/variant]`);
  }
  const p: Platform = { os: parts[0] as string, architecture: parts[1] as string };
  if (parts[2]) p.variant = parts[2];
  return p;
}

export function formatPlatform(p: Platform): string {
  return p.variant ? `${p.os}/${p.architecture}/${p.variant}` : `${p.os}/${p.architecture}`;
}

export function platformMatches(want: Platform, have: Platform): boolean {
  return (
    want.os === have.os &&
    want.architecture === have.architecture &&
    (want.variant === undefined || want.variant === have.variant)
  );
}
