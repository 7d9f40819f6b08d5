import { CairnError, ErrorCode } from '../model/errors.js';
import { HttpBlobSource, type FetchEvent } from '../fetch/http-source.js';
import type { ChunkSource } from '../fetch/chunk-source.js';
import type { DiskCache } from '../cache/disk-cache.js';
import { MemoryCache } from '../cache/memory-cache.js';
import type { Logger } from '../util/log.js';
import type { ContentStack, ContentStats } from './mounts.js';

export interface ContentStackOptions {
  /** Memory tier budget. */
  memoryBytes: number;
  /** Disk tier directory; absent = diskless (nothing written to local disk). */
  diskDir?: string;
  diskBytes?: number;
  /** Deadline of one chunk fetch, retries included. */
  readDeadlineMs: number;
}

interface Stack {
  top: MemoryCache;
  memory: MemoryCache;
  disk?: DiskCache;
}

/**
 * The daemon's content path: per registry, fetcher -> disk tier (optional) ->
 * memory tier, shared by every mount of that registry. Disk tiers of several
 * registries (and of several daemons, on HPC nodes) may share one directory:
 * contents are addressed by digest.
 */
export async function buildContentStack(opts: ContentStackOptions, log: Logger): Promise<ContentStack> {
  if (opts.diskDir !== undefined && !(opts.diskBytes && opts.diskBytes > 0)) {
    throw new CairnError(ErrorCode.INVALID_OPTION, '--disk-cache: a positive budget is needed with --cache-dir');
  }
  const stacks = new Map<string, Promise<Stack>>();
  const counters = { bytesFetched: 0, fetchErrors: 0, retries: 0, verifyFailures: 0, deadlinesMissed: 0 };
  const onEvent = (e: FetchEvent): void => {
    if (e.kind === 'fetch') counters.bytesFetched += e.bytes;
    else if (e.kind === 'retry') counters.retries++;
    else if (e.kind === 'error') {
      counters.fetchErrors++;
      if (e.code === ErrorCode.TIMEOUT) counters.deadlinesMissed++;
    } else if (e.kind === 'verify-failed') counters.verifyFailures++;
  };
  const open = async (url: string): Promise<Stack> => {
    const fetcher = new HttpBlobSource({ url, deadlineMs: opts.readDeadlineMs, onEvent });
    let below: ChunkSource = fetcher;
    let disk: DiskCache | undefined;
    if (opts.diskDir !== undefined) {
      // Loaded only with a disk tier: better-sqlite3 costs start-up time a diskless daemon need not pay.
      const { DiskCache } = await import('../cache/disk-cache.js');
      disk = await DiskCache.open(fetcher, { dir: opts.diskDir, maxBytes: opts.diskBytes as number, logger: log });
      below = disk;
    }
    const memory = new MemoryCache(below, { maxBytes: opts.memoryBytes });
    return { top: memory, memory, ...(disk ? { disk } : {}) };
  };
  const resolved: Stack[] = [];
  return {
    async sourceFor(url: string) {
      let s = stacks.get(url);
      if (!s) {
        s = open(url).then((st) => (resolved.push(st), st));
        stacks.set(url, s);
      }
      return (await s).top;
    },
    stats(): ContentStats {
      const tiers: ContentStats['tiers'] = {};
      const add = (name: string, t: { hits: number; misses: number; evictions: number; bytes: number }): void => {
        const prev = tiers[name] ?? { hits: 0, misses: 0, evictions: 0, bytes: 0 };
        tiers[name] = {
          ...prev,
          hits: prev.hits + t.hits,
          misses: prev.misses + t.misses,
          evictions: (prev.evictions ?? 0) + t.evictions,
          bytes: (prev.bytes ?? 0) + t.bytes,
        };
      };
      for (const s of resolved) {
        add('memory', s.memory.stats());
        if (s.disk) {
          const d = s.disk.stats();
          add('disk', d);
          const r = s.disk.repairReport;
          const tier = tiers.disk as NonNullable<(typeof tiers)['disk']>;
          const prev = tier.repair ?? { rowsDropped: 0, filesIndexed: 0, filesDeleted: 0, tempsDeleted: 0 };
          tier.corrupt = (tier.corrupt ?? 0) + d.corrupt;
          tier.repair = {
            rowsDropped: prev.rowsDropped + r.rowsDropped,
            filesIndexed: prev.filesIndexed + r.filesIndexed,
            filesDeleted: prev.filesDeleted + r.filesDeleted,
            tempsDeleted: prev.tempsDeleted + r.tempsDeleted,
          };
        }
      }
      return {
        bytesFetched: counters.bytesFetched,
        fetchErrors: counters.fetchErrors,
        retries: counters.retries,
        verifyFailures: counters.verifyFailures,
        deadlinesMissed: counters.deadlinesMissed,
        tiers,
      };
    },
    async close() {
      // The memory tier owns the tiers below it and closes them.
      await Promise.all(resolved.map((s) => s.top.close()));
    },
  };
}
