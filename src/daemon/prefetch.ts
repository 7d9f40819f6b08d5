import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { CHUNK_BYTES } from '../model/chunks.js';
import { hexOf, isDigest, type Digest } from '../model/digest.js';
import type { BlobRef, BlobSource } from '../fetch/blob-source.js';
import type { Logger } from '../util/log.js';
import { blocksOf, MAX_PROFILE_FILES, PROFILE_BLOCK_BYTES, type ProfileEntry } from '../model/read-profile.js';

/** Most contents remembered per image. */
const MAX_RECORDED = 100_000;

/**
 * What was read during earlier mounts of an image, in first-read order, kept in
 * the daemon's state directory (one JSON file per image digest).
 */
export class ReadRecorder {
  private readonly refs = new Map<Digest, number>();

  constructor(
    private readonly dir: string,
    private readonly image: Digest,
  ) {}

  private get file(): string {
    return join(this.dir, `${hexOf(this.image)}.json`);
  }

  note(ref: BlobRef): void {
    if (this.refs.size < MAX_RECORDED && !this.refs.has(ref.digest)) this.refs.set(ref.digest, ref.size);
  }

  /** Merges what this mount read into the image's record (earlier reads keep their place). */
  async save(): Promise<void> {
    if (this.refs.size === 0) return;
    const all = new Map<Digest, number>([
      ...(await loadRecord(this.dir, this.image)).map((r) => [r.digest, r.size] as const),
    ]);
    for (const [d, size] of this.refs) if (!all.has(d) && all.size < MAX_RECORDED) all.set(d, size);
    await mkdir(this.dir, { recursive: true });
    const tmp = `${this.file}.${process.pid}.tmp`;
    await writeFile(tmp, JSON.stringify([...all].map(([digest, size]) => ({ digest, size }))));
    await rename(tmp, this.file);
  }
}

export async function loadRecord(dir: string, image: Digest): Promise<BlobRef[]> {
  try {
    const parsed = JSON.parse(await readFile(join(dir, `${hexOf(image)}.json`), 'utf8')) as unknown;
    if (!Array.isArray(parsed)) return [];
    return parsed.filter(
      (r): r is BlobRef =>
        !!r && isDigest((r as BlobRef).digest) && Number.isSafeInteger((r as BlobRef).size) && (r as BlobRef).size >= 0,
    );
  } catch {
    return [];
  }
}

/** How long after a mount its reads go into the profile shared with the registry. */
export const PROFILE_WINDOW_MS = 30_000;

/**
 * What one mount read in its first `windowMs` (its start-up, which is what is
 * worth prefetching on another node), in first-read order, to share with the
 * registry once: when the window closes or at unmount, whichever is first.
 */
export class ProfileRecorder {
  /** Content -> its size and the blocks read (a set while open). */
  private readonly reads = new Map<Digest, { size: number; blocks: Set<number> }>();
  private readonly until: number;
  private shared = false;

  constructor(windowMs = PROFILE_WINDOW_MS) {
    this.until = performance.now() + windowMs;
  }

  /** A read of `bytes` bytes at `position` of `ref`. */
  note(ref: BlobRef, position: number, bytes: number): void {
    if (this.shared || performance.now() > this.until) return;
    let r = this.reads.get(ref.digest);
    if (!r) {
      if (this.reads.size >= MAX_PROFILE_FILES) return;
      r = { size: ref.size, blocks: new Set() };
      this.reads.set(ref.digest, r);
    }
    const last = Math.floor((position + Math.max(1, bytes) - 1) / PROFILE_BLOCK_BYTES);
    for (let b = Math.floor(position / PROFILE_BLOCK_BYTES); b <= last; b++) r.blocks.add(b);
  }

  /** The reads to share, once (empty on later calls and when nothing was read). */
  take(): ProfileEntry[] {
    if (this.shared) return [];
    this.shared = true;
    return [...this.reads].map(([digest, { size, blocks }]) =>
      blocks.size >= blocksOf(size) ? { digest, size } : { digest, size, blocks: [...blocks].sort((a, b) => a - b) },
    );
  }
}

export interface PrefetchProgress {
  /** Contents to fetch: the local record, then what the registry's profile adds. */
  planned: number;
  /** Of those, from the registry's read profile (shared by other daemons). */
  fromRegistry: number;
  done: number;
  failed: number;
  bytes: number;
}

/** Contents fetched at once by a prefetch (the content source keeps 8 connections). */
export const PREFETCH_CONCURRENCY = 6;

/**
 * Fetches recorded contents in the background, a chunk at a time and
 * `concurrency` contents at once, in the order they were first read (the order
 * the program will want them again), leaving connections of the pool to demand
 * reads. `plan` resolves to the list (the registry's profile may take a round
 * trip); the progress's counts fill in as it goes. Stops when `signal` aborts.
 */
export function prefetch(
  source: BlobSource,
  plan: Promise<{ refs: ProfileEntry[]; fromRegistry: number }>,
  signal: AbortSignal,
  log: Logger,
  concurrency = PREFETCH_CONCURRENCY,
): PrefetchProgress {
  const progress: PrefetchProgress = { planned: 0, fromRegistry: 0, done: 0, failed: 0, bytes: 0 };
  void plan.then(({ refs, fromRegistry }) => {
    progress.planned = refs.length;
    progress.fromRegistry = fromRegistry;
    let next = 0;
    const worker = async (): Promise<void> => {
      while (!signal.aborted && next < refs.length) {
        const entry = refs[next++] as ProfileEntry;
        const ref = { digest: entry.digest, size: entry.size };
        try {
          if (entry.blocks) {
            for (const b of entry.blocks) {
              if (signal.aborted) break;
              const data = await source.read(ref, b * PROFILE_BLOCK_BYTES, PROFILE_BLOCK_BYTES, { signal });
              progress.bytes += data.byteLength;
            }
          } else {
            for (let off = 0; off < ref.size && !signal.aborted; off += CHUNK_BYTES) {
              progress.bytes += (await source.read(ref, off, CHUNK_BYTES, { signal })).byteLength;
            }
          }
          progress.done++;
        } catch (err) {
          if (signal.aborted) return;
          progress.failed++;
          log.debug('prefetch failed', { digest: ref.digest, error: err instanceof Error ? err.message : String(err) });
        }
      }
    };
    return Promise.all(Array.from({ length: Math.max(1, concurrency) }, worker)).then(() => {
      if (!signal.aborted) log.info('prefetch done', { ...progress });
    });
  });
  return progress;
}
