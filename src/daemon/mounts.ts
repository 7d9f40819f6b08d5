import { execFile } from 'node:child_process';
import { mkdir, rm, stat } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { CairnError, ErrorCode } from '../model/errors.js';
import type { Entry } from '../model/entry.js';
import type { Digest } from '../model/digest.js';
import { mergeProfiles } from '../model/read-profile.js';
import type { BlobSource } from '../fetch/blob-source.js';
import { RegistryClient, type RemoteImage } from '../fetch/registry-client.js';
import { FuseMount } from '../fuse/adapter.js';
import { UnionView, type LookupMode } from '../union/view.js';
import { ImageFs } from './image-fs.js';
import { detach, isStaleFuseMount, mountedType } from './stale.js';
import {
  loadRecord,
  prefetch,
  PROFILE_WINDOW_MS,
  ProfileRecorder,
  ReadRecorder,
  type PrefetchProgress,
} from './prefetch.js';
import type { Logger } from '../util/log.js';
import { costModelOf, type CostModel } from '../metrics/cost-model.js';
import { FsMetrics, MountMetrics } from '../metrics/fs-metrics.js';

const run = promisify(execFile);

/** Longest an unmount waits to share the mount's read profile with the registry. */
const SHARE_AT_UNMOUNT_MS = 2000;

export interface MountRequest {
  registry: string;
  repository: string;
  reference: string;
  mountpoint: string;
  lookup: LookupMode;
  /** Kernel overlayfs over the lazy view, with this directory holding upper/ and work/. */
  upper?: string;
  /**
   * Fetch in the background what earlier mounts of this image read: this
   * daemon's record, then the registry's read profile (what other daemons shared).
   */
  prefetch?: boolean;
  /** Share what this mount reads in its first 30 s with the registry's read profile of the image (default true). */
  shareReads?: boolean;
  /** Route FUSE opens to cairn, so they are timed (a round trip per open). */
  timeOpens?: boolean;
  /**
   * Mount only the image's first `layers` layers (bottom up): the merged view of a
   * prefix, which is what a snapshot of the image's k-th layer holds.
   */
  layers?: number;
}

export interface MountInfo {
  mountpoint: string;
  registry: string;
  image: string;
  digest: string;
  lookup: LookupMode;
  layers: number;
  /** Where the union view came from: the registry's built view, or built here from the recipes. */
  metadata: 'view' | 'recipes';
  writable: boolean;
  mountedMs: number;
  /** Time from the request to the mount answering. */
  readySeconds: number;
}

/** Counters of the content path shared by every mount (fetcher and cache tiers). */
export interface ContentStats {
  bytesFetched: number;
  retries: number;
  tiers: Record<
    string,
    {
      hits: number;
      misses: number;
      evictions?: number;
      bytes?: number;
      /** Disk tier: chunk files whose bytes did not match their digest (removed, fetched again). */
      corrupt?: number;
      /** Disk tier: what the repair at open found and fixed. */
      repair?: { rowsDropped: number; filesIndexed: number; filesDeleted: number; tempsDeleted: number };
    }
  >;
  fetchErrors: number;
  /** Fetched bytes that did not match their digest. */
  verifyFailures?: number;
  /** Chunk fetches that failed because their deadline passed. */
  deadlinesMissed?: number;
}

/** The shared content path: one fetcher and one cache for every mount of the daemon. */
export interface ContentStack {
  /** The content source for images of the registry at `url`. */
  sourceFor(url: string): Promise<BlobSource>;
  stats(): ContentStats;
  close(): Promise<void>;
}

interface Mounted {
  info: MountInfo;
  fs: ImageFs;
  fuse: FuseMount;
  /** Where the lazy view is mounted when an overlay sits on top of it. */
  lowerDir?: string;
  readErrors: number;
  bytesServed: number;
  recorder: ReadRecorder;
  /** The start-up reads to share with the registry; absent with shareReads false. */
  profile?: ProfileRecorder;
  /** Shares the profile when its window closes (cleared at unmount). */
  profileTimer?: NodeJS.Timeout;
  client: RegistryClient;
  /** The image's digest (what its read profile is kept under). */
  image: Digest;
  metrics: MountMetrics;
  prefetch?: PrefetchProgress;
  stopPrefetch: AbortController;
}

/**
 * The mounts of one daemon: each resolves an image through the registry's
 * metadata API, builds its union view, and serves it through FUSE, all
 * sharing one content stack.
 */
export class MountManager {
  private readonly mounts = new Map<string, Mounted>();
  private readonly clients = new Map<string, RegistryClient>();
  private nextLowerId = 1;
  /** The daemon's measurements (its own when none is given). */
  readonly metrics: FsMetrics;

  constructor(
    private readonly content: ContentStack,
    private readonly opts: {
      stateDir: string;
      readDeadlineMs: number;
      log: Logger;
      metrics?: FsMetrics;
      /** How long after a mount its reads go into the profile shared with the registry (default 30 s). */
      profileWindowMs?: number;
    },
  ) {
    this.metrics = opts.metrics ?? new FsMetrics();
    const w = opts.profileWindowMs;
    if (w !== undefined && (!Number.isSafeInteger(w) || w <= 0)) {
      throw new CairnError(ErrorCode.INVALID_OPTION, 'MountManager: option profileWindowMs must be a positive integer');
    }
  }

  private get profileWindowMs(): number {
    return this.opts.profileWindowMs ?? PROFILE_WINDOW_MS;
  }

  private client(url: string): RegistryClient {
    let c = this.clients.get(url);
    if (!c) {
      c = new RegistryClient({ url, deadlineMs: this.opts.readDeadlineMs });
      this.clients.set(url, c);
    }
    return c;
  }

  async mount(req: MountRequest): Promise<MountInfo> {
    const started = performance.now();
    const mountpoint = resolve(req.mountpoint);
    if (this.mounts.has(mountpoint))
      throw new CairnError(ErrorCode.INVALID_INPUT, `${mountpoint}: already mounted by this daemon`);
    const st = await stat(mountpoint).catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOTCONN') return undefined;
      throw new CairnError(
        ErrorCode.NOT_FOUND,
        `mountpoint ${mountpoint}: ${err.code === 'ENOENT' ? 'does not exist' : err.message}`,
      );
    });
    if (st && !st.isDirectory())
      throw new CairnError(ErrorCode.INVALID_INPUT, `mountpoint ${mountpoint}: not a directory`);
    if (await isStaleFuseMount(mountpoint)) {
      this.opts.log.warn('clearing stale mount', { mountpoint });
      await detach(mountpoint);
    } else if ((await mountedType(mountpoint)) !== undefined) {
      throw new CairnError(ErrorCode.INVALID_INPUT, `mountpoint ${mountpoint}: something is already mounted there`);
    }

    const client = this.client(req.registry);
    const image = await client.image(req.repository, req.reference);
    if (req.layers !== undefined && (req.layers < 1 || req.layers > image.layers.length)) {
      throw new CairnError(
        ErrorCode.INVALID_INPUT,
        `mount option layers: ${req.layers} is not within 1..${image.layers.length} (the layers of ${req.repository}:${req.reference})`,
      );
    }
    const wanted = req.layers === undefined ? image.layers : image.layers.slice(0, req.layers);
    const { view, metadata } = await this.loadView(client, image, wanted, req.lookup);
    const recordDir = join(this.opts.stateDir, 'reads');
    const metrics = new MountMetrics(mountpoint, this.metrics);
    const record: Partial<Mounted> = {
      metrics,
      readErrors: 0,
      bytesServed: 0,
      recorder: new ReadRecorder(recordDir, image.digest),
      ...(req.shareReads === false ? {} : { profile: new ProfileRecorder(this.profileWindowMs) }),
      client,
      image: image.digest,
      stopPrefetch: new AbortController(),
    };
    const source = await this.content.sourceFor(req.registry);
    const fs = new ImageFs(view, source, {
      readDeadlineMs: this.opts.readDeadlineMs,
      observer: {
        lookup: (op, depth, seconds, error) => metrics.lookup(op, depth, seconds, error),
        read: (r) => {
          metrics.read(r);
          const { ref, bytes, error } = r;
          if (error) {
            record.readErrors = (record.readErrors ?? 0) + 1;
            this.opts.log.warn('read failed', {
              mountpoint,
              error: error instanceof Error ? error.message : String(error),
            });
            return;
          }
          record.bytesServed = (record.bytesServed ?? 0) + bytes;
          record.recorder?.note(ref);
          record.profile?.note(ref, r.position, bytes);
        },
      },
    });

    let lowerDir: string | undefined;
    let fuseAt = mountpoint;
    if (req.upper) {
      lowerDir = join(this.opts.stateDir, 'lower', String(process.pid), String(this.nextLowerId++));
      await mkdir(lowerDir, { recursive: true });
      fuseAt = lowerDir;
    }
    const fuse = new FuseMount(fuseAt, fs, {
      readDeadlineMs: this.opts.readDeadlineMs,
      fsname: `cairn:${req.repository}`,
      ...(req.timeOpens ? { routeOpens: true } : {}),
    });
    await fuse.mount();
    if (req.upper && lowerDir) {
      const upper = join(resolve(req.upper), 'upper');
      const work = join(resolve(req.upper), 'work');
      try {
        await mkdir(upper, { recursive: true });
        await mkdir(work, { recursive: true });
        await run('mount', [
          '-t',
          'overlay',
          'overlay',
          '-o',
          `lowerdir=${lowerDir},upperdir=${upper},workdir=${work}`,
          mountpoint,
        ]);
      } catch (err) {
        await fuse.unmount().catch(() => undefined);
        throw new CairnError(
          ErrorCode.STORAGE,
          `overlay on ${mountpoint}: ${(err as { stderr?: string }).stderr?.trim() || (err as Error).message}`,
        );
      }
    }
    const info: MountInfo = {
      mountpoint,
      registry: req.registry,
      image: `${req.repository}${req.reference.startsWith('sha256:') ? '@' : ':'}${req.reference}`,
      digest: image.digest,
      lookup: req.lookup,
      layers: wanted.length,
      metadata,
      writable: req.upper !== undefined,
      mountedMs: Date.now(),
      readySeconds: (performance.now() - started) / 1000,
    };
    if (req.prefetch) {
      // The mount answers now; the plan (a file here, a round trip to the registry) is made behind it.
      const plan = Promise.all([
        loadRecord(recordDir, image.digest),
        client.readProfile(image.digest).catch((err: unknown) => {
          this.opts.log.warn('no read profile from the registry; prefetching from the local record only', {
            image: image.digest,
            error: err instanceof Error ? err.message : String(err),
          });
          return [];
        }),
      ]).then(([local, shared]) => {
        const refs = mergeProfiles(local, shared);
        return { refs, fromRegistry: refs.length - local.length };
      });
      record.prefetch = prefetch(source, plan, (record.stopPrefetch as AbortController).signal, this.opts.log);
    }
    Object.assign(record, { info, fs, fuse, ...(lowerDir ? { lowerDir } : {}) });
    const mounted = record as Mounted;
    if (mounted.profile) {
      mounted.profileTimer = setTimeout(() => void this.shareProfile(mounted), this.profileWindowMs);
      mounted.profileTimer.unref();
    }
    this.mounts.set(mountpoint, mounted);
    this.metrics.track(metrics);
    this.opts.log.info('mounted', { ...info });
    return info;
  }

  /**
   * The union view of `wanted` (the image's first layers): restored from the
   * view the registry built (no recipe to parse, no name to intern), or built
   * here from the recipes when the registry serves none or one that does not
   * check out (wrong digest, not a view, built from other layers).
   */
  private async loadView(
    client: RegistryClient,
    image: RemoteImage,
    wanted: RemoteImage['layers'],
    lookup: LookupMode,
  ): Promise<{ view: UnionView; metadata: 'view' | 'recipes' }> {
    if (wanted.length > 0) {
      try {
        const decoded = UnionView.decode(await client.view(image.digest, wanted.length), { lookup });
        const expected = wanted.map((l) => l.recipe);
        if (decoded.recipes.length !== expected.length || decoded.recipes.some((r, i) => r !== expected[i])) {
          throw new CairnError(ErrorCode.INVALID_INPUT, `view: built from other layers than those of the image`);
        }
        return { view: decoded.view, metadata: 'view' };
      } catch (err) {
        // Whatever went wrong with the view (a registry without views answers NOT_FOUND), the
        // recipes still describe the image, verified by their ids; a registry that is down fails there.
        const code = err instanceof CairnError ? err.code : undefined;
        if (code !== ErrorCode.NOT_FOUND) {
          this.opts.log.warn("refused the registry's view of the image; building it from the recipes", {
            image: image.digest,
            error: (err as Error).message,
          });
        }
      }
    }
    const recipes = await Promise.all(wanted.map((l) => client.recipe(l.recipe)));
    const layers: Entry[][] = recipes.map((r) => r.entries);
    return { view: UnionView.build(layers, { lookup }), metadata: 'recipes' };
  }

  async unmount(path: string): Promise<void> {
    const mountpoint = resolve(path);
    const m = this.mounts.get(mountpoint);
    if (!m) throw new CairnError(ErrorCode.NOT_FOUND, `${mountpoint}: not mounted by this daemon`);
    m.stopPrefetch.abort();
    clearTimeout(m.profileTimer);
    await this.shareProfile(m, AbortSignal.timeout(SHARE_AT_UNMOUNT_MS));
    await m.recorder.save().catch((err: unknown) =>
      this.opts.log.warn('could not save the read record', {
        error: err instanceof Error ? err.message : String(err),
      }),
    );
    // The overlay goes first: it holds the lazy view as its lower layer.
    if (m.lowerDir) await run('umount', [mountpoint]);
    await m.fuse.unmount();
    if (m.lowerDir) await rm(m.lowerDir, { recursive: true, force: true });
    this.mounts.delete(mountpoint);
    this.metrics.forget(mountpoint);
    this.opts.log.info('unmounted', { mountpoint });
  }

  /**
   * Sends the mount's start-up reads to the registry, once. Failing to share
   * (a registry that is down, or refuses profiles) costs the next node its
   * prefetch, nothing else: logged, never thrown.
   */
  private async shareProfile(m: Mounted, signal?: AbortSignal): Promise<void> {
    const entries = m.profile?.take() ?? [];
    if (entries.length === 0) return;
    try {
      await m.client.shareReadProfile(m.image, entries, signal);
      this.opts.log.debug('read profile shared', { image: m.info.digest, files: entries.length });
    } catch (err) {
      this.opts.log.warn('could not share the read profile with the registry', {
        image: m.info.digest,
        error: err instanceof Error ? err.message : String(err),
      });
    }
  }

  list(): MountInfo[] {
    return [...this.mounts.values()].map((m) => m.info);
  }

  get size(): number {
    return this.mounts.size;
  }

  stats(path: string): Record<string, unknown> {
    const m = this.mounted(path);
    const c = this.content.stats();
    return {
      ...m.info,
      imageBytes: m.fs.imageBytes,
      bytesServed: m.bytesServed,
      readErrors: m.readErrors,
      depthFit: m.metrics.fit.result(),
      // Every lookup of every mount this daemon has served, unmounted ones included.
      daemonDepthFit: this.metrics.fit.result(),
      ...(m.prefetch ? { prefetch: { ...m.prefetch } } : {}),
      // Shared by every mount of the daemon: the content path is one fetcher and one cache.
      bytesFetched: c.bytesFetched,
      cache: c.tiers,
      fetchErrors: c.fetchErrors,
    };
  }

  /** The cost model measured on one mount (rejects when its fit cannot give a slope yet). */
  costModel(path: string): CostModel {
    const m = this.mounted(path);
    return costModelOf(m.metrics.fit, `mount ${m.info.mountpoint} (image ${m.info.digest})`);
  }

  private mounted(path: string): Mounted {
    const mountpoint = resolve(path);
    const m = this.mounts.get(mountpoint);
    if (!m) throw new CairnError(ErrorCode.NOT_FOUND, `${mountpoint}: not mounted by this daemon`);
    return m;
  }

  async closeAll(): Promise<void> {
    for (const mountpoint of [...this.mounts.keys()]) {
      await this.unmount(mountpoint).catch((err: unknown) =>
        this.opts.log.error('unmount failed', { mountpoint, error: err instanceof Error ? err.message : String(err) }),
      );
    }
    await Promise.all([...this.clients.values()].map((c) => c.close()));
  }
}
