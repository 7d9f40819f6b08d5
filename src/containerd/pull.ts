/**
 * `cairn containerd pull`: a pull that leaves containerd with an unpacked image
 * and no layer downloaded. The manifest and config go into containerd's content
 * store, each layer's snapshot is Prepared with the remote-snapshot labels, so
 * cairn's snapshotter answers ALREADY_EXISTS over a lazy mount, and the image
 * record points at the manifest. Everything is created under a lease (nothing is
 * collected half-way); once the lease is gone, containerd's GC labels keep it:
 * image -> manifest (gc.ref.content.config) -> config (gc.ref.snapshot.SNAPSHOTTER
 * = the top chainID) -> the snapshots below it through their parents.
 */
import { randomBytes } from 'node:crypto';
import { RegistryClient } from '../fetch/registry-client.js';
import { chainIds } from '../model/chain-id.js';
import { sha256, type Digest } from '../model/digest.js';
import { CairnError, ErrorCode, isCairnError } from '../model/errors.js';
import { MediaType, parseConfig, parseManifest, type ImageManifest } from '../model/oci.js';
import {
  LABEL_CAIRN_IMAGE,
  LABEL_CAIRN_LAYER_INDEX,
  LABEL_CRI_IMAGE_REF,
  LABEL_CRI_LAYER_DIGEST,
  LABEL_TARGET,
  parseImageRef,
} from '../snapshotter/remote-labels.js';
import type { ContainerdClient } from './client.js';

export interface PullOptions {
  /** The image reference: containerd's image name; its repository and tag are looked up in the registry. */
  ref: string;
  /** cairn's registry (native API /api/v1 and OCI /v2). */
  registry: string;
  /** containerd's name of cairn's snapshotter (its proxy_plugins key). */
  snapshotter: string;
  /** Deadline of one registry request. */
  deadlineMs: number;
  /** Lifetime of the pull's lease, should the pull die before deleting it. */
  leaseSeconds?: number;
}

export interface PullResult {
  name: string;
  /** The manifest's digest, as containerd's image record has it. */
  digest: Digest;
  layers: number;
  /** Layers cairn answered lazily (ALREADY_EXISTS). */
  lazy: number;
  /** Layers whose snapshot containerd already had. */
  present: number;
  /** Bytes put into containerd's content store (manifest and config: no layer). */
  contentBytes: number;
  seconds: number;
}

const MANIFEST_ACCEPT = [MediaType.OCI_MANIFEST, MediaType.DOCKER_MANIFEST].join(', ');

/** One GET of the registry's /v2 with a deadline: the body and its content type. */
async function getV2(url: string, accept: string, deadlineMs: number): Promise<{ body: Buffer; type: string }> {
  let res: Response;
  try {
    res = await fetch(url, { headers: { accept }, signal: AbortSignal.timeout(deadlineMs) });
  } catch (err) {
    const name = (err as Error).name;
    if (name === 'TimeoutError' || name === 'AbortError')
      throw new CairnError(ErrorCode.TIMEOUT, `GET ${url}: no answer within ${deadlineMs} ms`);
    throw new CairnError(ErrorCode.UNAVAILABLE, `GET ${url}: ${(err as Error).message}`, { cause: err });
  }
  const body = Buffer.from(await res.arrayBuffer());
  if (res.status !== 200) {
    throw new CairnError(
      res.status === 404 ? ErrorCode.NOT_FOUND : ErrorCode.UNAVAILABLE,
      `GET ${url}: HTTP ${res.status} ${body.toString('utf8', 0, 200)}`,
    );
  }
  return { body, type: (res.headers.get('content-type') ?? '').split(';')[0]!.trim() };
}

/** Puts a blob into containerd's content store with `labels` (or sets them on the blob already there). */
async function putContent(
  client: ContainerdClient,
  digest: Digest,
  data: Buffer,
  labels: Record<string, string>,
): Promise<void> {
  const ref = `cairn-pull-${digest}`;
  const head = { ref, total: data.length, expected: digest };
  try {
    await client.stream('content', 'Write', [
      { ...head, action: 'WRITE', offset: 0, data },
      // The offset must be where the data ends: an offset of 0 would truncate what was written.
      { ...head, action: 'COMMIT', offset: data.length, labels },
    ]);
  } catch (err) {
    if (!isCairnError(err, ErrorCode.ALREADY_EXISTS)) throw err;
    await client.call('content', 'Update', {
      info: { digest, size: data.length, labels },
      updateMask: { paths: Object.keys(labels).map((k) => `labels.${k}`) },
    });
  }
}

export async function pullLazily(client: ContainerdClient, opts: PullOptions): Promise<PullResult> {
  const started = performance.now();
  const named = parseImageRef(opts.ref);
  if (!named) throw new CairnError(ErrorCode.INVALID_INPUT, `image ${JSON.stringify(opts.ref)}: no repository`);
  const { repository, reference } = named;
  const base = opts.registry.replace(/\/+$/, '');

  // What the registry holds: the image (native API) and the manifest and config containerd will read (/v2).
  const registry = new RegistryClient({ url: base, deadlineMs: opts.deadlineMs });
  const image = await registry.image(repository, reference).finally(() => registry.close());
  const m = await getV2(`${base}/v2/${repository}/manifests/${reference}`, MANIFEST_ACCEPT, opts.deadlineMs);
  const manifestDigest = sha256(m.body);
  const parsed = parseManifest(m.body, `manifest of ${opts.ref}`, m.type || undefined);
  if (parsed.kind !== 'manifest') {
    throw new CairnError(
      ErrorCode.UNSUPPORTED,
      `${opts.ref}: the registry serves an index; pull a single-platform manifest (REPO@DIGEST)`,
    );
  }
  const manifest: ImageManifest = parsed.manifest;
  const c = await getV2(
    `${base}/v2/${repository}/blobs/${manifest.config.digest}`,
    'application/octet-stream',
    opts.deadlineMs,
  );
  if (sha256(c.body) !== manifest.config.digest)
    throw new CairnError(ErrorCode.DIGEST_MISMATCH, `config of ${opts.ref}: bytes do not match its digest`);
  const diffIds = parseConfig(c.body, `config of ${opts.ref}`).rootfs?.diff_ids ?? [];
  const cairnDiffIds = image.layers.map((l) => l.diffId);
  if (diffIds.length !== manifest.layers.length || diffIds.join() !== cairnDiffIds.join()) {
    throw new CairnError(
      ErrorCode.INVALID_INPUT,
      `${opts.ref}: the /v2 manifest and the registry's image ${image.digest} do not have the same layers`,
    );
  }
  const chain = chainIds(diffIds);

  const lease = await client.call<{ lease: { id: string } }>('leases', 'Create', {
    id: `cairn-pull-${randomBytes(8).toString('hex')}`,
    labels: {
      'containerd.io/gc.expire': new Date(Date.now() + (opts.leaseSeconds ?? 3600) * 1000).toISOString(),
    },
  });
  client.lease = lease.lease.id;
  let lazy = 0;
  let present = 0;
  try {
    for (let i = 0; i < chain.length; i++) {
      const target = chain[i]!;
      try {
        await client.call('snapshots', 'Stat', { snapshotter: opts.snapshotter, key: target });
        present++;
        continue;
      } catch (err) {
        if (!isCairnError(err, ErrorCode.NOT_FOUND)) throw err;
      }
      const key = `cairn-pull-${randomBytes(6).toString('hex')}-${target}`;
      try {
        await client.call('snapshots', 'Prepare', {
          snapshotter: opts.snapshotter,
          key,
          parent: i === 0 ? '' : chain[i - 1],
          labels: {
            [LABEL_TARGET]: target,
            [LABEL_CAIRN_IMAGE]: `${repository}@${image.digest}`,
            [LABEL_CAIRN_LAYER_INDEX]: String(i),
            [LABEL_CRI_IMAGE_REF]: opts.ref,
            [LABEL_CRI_LAYER_DIGEST]: manifest.layers[i]!.digest,
          },
        });
      } catch (err) {
        if (!isCairnError(err, ErrorCode.ALREADY_EXISTS)) throw err;
        lazy++;
        continue;
      }
      // The snapshotter made an ordinary snapshot to fill: this pull downloads nothing, so undo it.
      await client.call('snapshots', 'Remove', { snapshotter: opts.snapshotter, key }).catch(() => undefined);
      throw new CairnError(
        ErrorCode.FAILED_PRECONDITION,
        `snapshotter ${JSON.stringify(opts.snapshotter)} did not mount layer ${i} (${target}) lazily: it fell back (its log says why; is it cairn with --registry ${base}?)`,
      );
    }
    // Children before parents, all under the lease: the labels hold them once it is gone.
    await putContent(client, manifest.config.digest, c.body, {
      [`containerd.io/gc.ref.snapshot.${opts.snapshotter}`]: chain[chain.length - 1] ?? '',
    });
    const manifestLabels: Record<string, string> = { 'containerd.io/gc.ref.content.config': manifest.config.digest };
    manifest.layers.forEach((l, i) => (manifestLabels[`containerd.io/gc.ref.content.l.${i}`] = l.digest));
    await putContent(client, manifestDigest, m.body, manifestLabels);
    const now = new Date();
    const ts = { seconds: Math.floor(now.getTime() / 1000), nanos: 0 };
    const record = {
      name: opts.ref,
      labels: {},
      target: { mediaType: manifest.mediaType, digest: manifestDigest, size: m.body.length, annotations: {} },
      createdAt: ts,
      updatedAt: ts,
    };
    try {
      await client.call('images', 'Create', { image: record });
    } catch (err) {
      if (!isCairnError(err, ErrorCode.ALREADY_EXISTS)) throw err;
      await client.call('images', 'Update', { image: record, updateMask: { paths: ['target'] } });
    }
  } finally {
    const id = client.lease;
    client.lease = undefined;
    await client.call('leases', 'Delete', { id, sync: false }).catch(() => undefined);
  }
  return {
    name: opts.ref,
    digest: manifestDigest,
    layers: chain.length,
    lazy,
    present,
    contentBytes: m.body.length + c.body.length,
    seconds: (performance.now() - started) / 1000,
  };
}
