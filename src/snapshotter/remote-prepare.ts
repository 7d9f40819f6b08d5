/**
 * Prepare with containerd's remote-snapshot labels, as remote snapshotters answer
 * it: when cairn's registry knows the layer, the committed snapshot named by the
 * target (`containerd.io/snapshot.ref`) is created over a lazy mount of the
 * image's first k layers, and the answer is ALREADY_EXISTS, so containerd
 * records the target and downloads nothing. Otherwise the Prepare falls back to
 * an ordinary snapshot that containerd fills; each fallback is logged with its
 * reason and counted (cairn_snapshotter_prepares_total{path="fallback"}).
 */
import { Counter, Registry } from 'prom-client';
import { RegistryClient, type RemoteImage } from '../fetch/registry-client.js';
import { chainIds } from '../model/chain-id.js';
import { CairnError, ErrorCode } from '../model/errors.js';
import type { Logger } from '../util/log.js';
import type { LazyMounter, LazySource } from './lazy-mounts.js';
import { LABEL_TARGET, parseRemoteLabels, type RemoteLayerRef } from './remote-labels.js';
import type { Snapshotter, SnapshotMount } from './snapshotter.js';

/** Why a Prepare with a target did not go lazy: a metric label (the log says more). */
export type FallbackKind =
  | 'no-target-label'
  | 'no-registry'
  | 'no-layer-labels'
  | 'unknown-image'
  | 'unknown-layer'
  | 'chain-mismatch'
  | 'mount-failed';

class Fallback extends Error {
  constructor(
    readonly kind: FallbackKind,
    message: string,
  ) {
    super(message);
  }
}

export interface RemotePrepareOptions {
  snapshotter: Snapshotter;
  /** cairn's registry (the native API at /api/v1); none: every target Prepare falls back. */
  registry?: string;
  mounts: LazyMounter;
  log: Logger;
  /** Deadline of one registry metadata request. */
  deadlineMs?: number;
}

export class RemotePreparer {
  readonly metrics = new Registry();
  private readonly prepares = new Counter({
    name: 'cairn_snapshotter_prepares_total',
    help: 'Prepare calls that carried a remote-snapshot target, by path: lazy (answered ALREADY_EXISTS over a lazy mount) or fallback (an ordinary snapshot containerd fills), with the reason of a fallback',
    labelNames: ['path', 'reason'] as const,
    registers: [this.metrics],
  });
  private readonly client: RegistryClient | undefined;
  private fallbacks = 0;
  private lazies = 0;
  /** Lazy snapshots created and not mounted yet, by target: a concurrent Prepare of one waits for it. */
  private readonly mounting = new Map<string, Promise<void>>();

  constructor(private readonly opts: RemotePrepareOptions) {
    this.client = opts.registry
      ? new RegistryClient({ url: opts.registry, deadlineMs: opts.deadlineMs ?? 10_000 })
      : undefined;
  }

  /** Counts so far (also in the metrics): for logs and tests. */
  counts(): { lazy: number; fallback: number } {
    return { lazy: this.lazies, fallback: this.fallbacks };
  }

  async prepare(key: string, parent: string, labels: Record<string, string>): Promise<SnapshotMount[]> {
    const target = labels[LABEL_TARGET] ?? '';
    // No target and not containerd's unpack key: a container's rootfs (or a snapshot built by hand), not a layer.
    if (target === '' && !isUnpackKey(key)) return this.opts.snapshotter.prepare(key, parent, labels);
    try {
      // ctr 1.6's own pull unpacks with no label at all: a layer, but nothing says which.
      if (target === '') throw new Fallback('no-target-label', `no ${LABEL_TARGET} label (an unpack by containerd)`);
      const source = await this.resolve(parent, labels);
      await this.createLazy(target, parent, labels, source);
    } catch (err) {
      if (!(err instanceof Fallback)) throw err;
      this.fallbacks++;
      this.prepares.inc({ path: 'fallback', reason: err.kind });
      this.opts.log.warn('prepare falls back to an ordinary snapshot', {
        key,
        target,
        reason: err.kind,
        detail: err.message,
        fallbacks: this.fallbacks,
      });
      return this.opts.snapshotter.prepare(key, parent, labels);
    }
    this.lazies++;
    this.prepares.inc({ path: 'lazy', reason: '' });
    throw new CairnError(ErrorCode.ALREADY_EXISTS, `target snapshot ${JSON.stringify(target)} (lazy)`);
  }

  /** Where the target's layers are in cairn's registry, checked against the target chainID and the parent. */
  private async resolve(parent: string, labels: Record<string, string>): Promise<LazySource> {
    if (!this.client || !this.opts.registry)
      throw new Fallback('no-registry', 'cairn snapshotter runs without --registry');
    const parsed = parseRemoteLabels(labels);
    if (!parsed.ok) throw new Fallback('no-layer-labels', parsed.reason);
    const ref = parsed.ref;
    let image: RemoteImage;
    try {
      image = await this.client.image(ref.repository, ref.reference);
    } catch (err) {
      throw new Fallback(
        'unknown-image',
        `${ref.repository}:${ref.reference}: ${err instanceof Error ? err.message : String(err)}`,
      );
    }
    const index = layerIndexOf(image, ref);
    const chain = chainIds(image.layers.map((l) => l.diffId));
    if (chain[index] !== ref.target) {
      throw new Fallback(
        'chain-mismatch',
        `layer ${index} of ${ref.repository}@${image.digest} has chainID ${chain[index]}, not the target ${ref.target}`,
      );
    }
    // containerd's backend key of the parent is NS/ID/CHAINID (or the bare chainID of a lazy one).
    const below = index === 0 ? '' : chain[index - 1]!;
    const parentOk = below === '' ? parent === '' : parent === below || parent.endsWith(`/${below}`);
    if (!parentOk) {
      throw new Fallback(
        'chain-mismatch',
        `parent ${JSON.stringify(parent)} is not the snapshot of layer ${index - 1} (${below || 'none'})`,
      );
    }
    return { registry: this.opts.registry, repository: ref.repository, digest: image.digest, layers: index + 1 };
  }

  private async createLazy(
    target: string,
    parent: string,
    labels: Record<string, string>,
    source: LazySource,
  ): Promise<void> {
    const s = this.opts.snapshotter;
    const { created, id } = s.createLazy(target, parent, labels, source);
    if (!created) {
      // Another Prepare of the same target (another namespace's pull) may still be mounting it:
      // ALREADY_EXISTS must not be answered before its files are there.
      await this.mounting.get(target);
      return;
    }
    const mounting = (async () => {
      try {
        const info = await this.opts.mounts.mount(source, s.fsDirOf(id));
        this.opts.log.info('lazy snapshot', { target, ...info });
      } catch (err) {
        await s.dropLazy(target);
        throw new Fallback('mount-failed', err instanceof Error ? err.message : String(err));
      }
    })();
    this.mounting.set(target, mounting);
    try {
      await mounting;
    } finally {
      this.mounting.delete(target);
    }
  }

  /** Mounts again the lazy snapshots whose mount is gone (the daemon was stopped or killed). */
  async restore(): Promise<void> {
    const lazy = this.opts.snapshotter.lazySnapshots();
    if (lazy.length === 0) return;
    const mounted = await this.opts.mounts.mounted();
    for (const l of lazy) {
      const mountpoint = this.opts.snapshotter.fsDirOf(l.id);
      if (mounted.has(mountpoint)) continue;
      try {
        await this.opts.mounts.mount(l.source, mountpoint);
        this.opts.log.warn('lazy snapshot mounted again', { name: l.name, mountpoint });
      } catch (err) {
        this.opts.log.error('lazy snapshot cannot be mounted again', {
          name: l.name,
          mountpoint,
          error: err instanceof Error ? err.message : String(err),
        });
      }
    }
  }

  async close(): Promise<void> {
    await this.client?.close();
  }
}

/**
 * containerd's key for a layer it unpacks itself, "extract-UNIQUE CHAINID", as
 * its metadata layer passes it on: "NAMESPACE/ID/extract-UNIQUE CHAINID".
 */
function isUnpackKey(key: string): boolean {
  return /^(?:[^/]+\/\d+\/)?extract-\S+ sha256:[0-9a-f]{64}$/.test(key);
}

function layerIndexOf(image: RemoteImage, ref: RemoteLayerRef): number {
  if (ref.layerIndex !== undefined) {
    if (ref.layerIndex >= image.layers.length) {
      throw new Fallback(
        'unknown-layer',
        `${ref.repository}@${image.digest} has ${image.layers.length} layers, not ${ref.layerIndex + 1}`,
      );
    }
    return ref.layerIndex;
  }
  const i = image.layers.findIndex((l) => l.digest === ref.layerDigest || l.diffId === ref.layerDigest);
  if (i < 0) throw new Fallback('unknown-layer', `${ref.repository}@${image.digest} has no layer ${ref.layerDigest}`);
  return i;
}
