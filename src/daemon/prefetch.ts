import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { CHUNK_BYTES } from '../model/chunks.js';
import { hexOf, isDigest, type Digest } from '../model/digest.js';
import type { BlobRef, BlobSource } from '../fetch/blob-source.js';
import type { Logger } from '../util/log.js';

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

export interface PrefetchProgress {
  planned: number;
  done: number;
  failed: number;
  bytes: number;
}

/**
 * Fetches recorded contents in the background, a chunk at a time and two
 * contents at once, so demand reads (which may run many at once on the same
 * connection pool) are not queued behind it. Stops when `signal` aborts.
 */
export function prefetch(source: BlobSource, refs: BlobRef[], signal: AbortSignal, log: Logger): PrefetchProgress {
  const progress: PrefetchProgress = { planned: refs.length, done: 0, failed: 0, bytes: 0 };
  let next = 0;
  const worker = async (): Promise<void> => {
    while (!signal.aborted && next < refs.length) {
      const ref = refs[next++] as BlobRef;
      try {
        for (let off = 0; off < ref.size && !signal.aborted; off += CHUNK_BYTES) {
          progress.bytes += (await source.read(ref, off, CHUNK_BYTES, { signal })).byteLength;
        }
        progress.done++;
      } catch (err) {
        if (signal.aborted) return;
        progress.failed++;
        log.debug('prefetch failed', { digest: ref.digest, error: err instanceof Error ? err.message : String(err) });
      }
    }
  };
  void Promise.all([worker(), worker()]).then(() => {
    if (!signal.aborted) log.info('prefetch done', { ...progress });
  });
  return progress;
}
