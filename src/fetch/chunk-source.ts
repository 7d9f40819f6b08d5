/**
 * Chunk-level access to file contents: the unit the fetcher verifies and the
 * cache tiers store. Every tier implements `readChunk`, and `read` on top of it
 * with `readChunked`, so the slicing of a byte range into chunks is written once.
 */
import { CHUNK_BYTES } from '../model/chunks.js';
import { isDigest } from '../model/digest.js';
import { CairnError, ErrorCode } from '../model/errors.js';
import type { Digest } from '../model/digest.js';
import type { BlobRef, BlobSource, ReadOptions } from './blob-source.js';

/**
 * A BlobSource that also serves whole verified chunks.
 *
 * Chunk `i` of a content of `size` bytes covers
 * `[i * CHUNK_BYTES, min(size, (i + 1) * CHUNK_BYTES))`. A content of at most
 * CHUNK_BYTES (the empty one included) is one chunk, index 0, verified by the
 * content digest itself; a larger one has `ceil(size / CHUNK_BYTES)` chunks, each
 * verified by the registry's per-chunk digest.
 *
 * Contract of `readChunk(ref, index, opts)`:
 * - resolves with exactly `chunkLength(ref.size, index)` bytes, verified as
 *   above; a source never returns, and a cache never stores, unverified bytes;
 * - the buffer may be shared with other callers and with caches: callers must
 *   not modify it (`readChunked` copies what it returns);
 * - rejects like `read`: NOT_FOUND, DIGEST_MISMATCH, TIMEOUT, UNAVAILABLE,
 *   ABORTED (the caller's signal; promptly, and without cancelling the fetch for
 *   other callers of the same chunk), RANGE (an index outside the content),
 *   INVALID_INPUT (a ref whose digest or size is malformed);
 * - concurrent calls for the same chunk share one fetch.
 */
export interface ChunkSource extends BlobSource {
  readChunk(ref: BlobRef, index: number, opts?: ReadOptions): Promise<Buffer>;
  /**
   * The sha256 chunk `index` must hash to: `ref.digest` for a content of at
   * most CHUNK_BYTES (index 0), the registry's per-chunk digest otherwise.
   * Rejects like `read`. A disk tier keeps it beside the chunk, so a cached
   * chunk can be verified (and served) with the registry unreachable.
   */
  chunkDigest(ref: BlobRef, index: number, opts?: ReadOptions): Promise<Digest>;
}

/** Number of chunks of a content; a content of at most CHUNK_BYTES, the empty one included, has one. */
export function chunkCount(size: number): number {
  return size <= CHUNK_BYTES ? 1 : Math.ceil(size / CHUNK_BYTES);
}

/** The byte range `[start, end)` of chunk `index` of a content of `size` bytes. */
export function chunkSpan(size: number, index: number): { start: number; end: number } {
  const start = index * CHUNK_BYTES;
  return { start, end: Math.max(start, Math.min(size, start + CHUNK_BYTES)) };
}

/** Rejects a ref whose digest or size is malformed (INVALID_INPUT); `what` names the caller. */
export function checkRef(ref: BlobRef, what: string): void {
  if (!isDigest(ref.digest)) {
    throw new CairnError(ErrorCode.INVALID_INPUT, `${what}: ${JSON.stringify(ref.digest)} is not a sha256 digest`);
  }
  if (!Number.isSafeInteger(ref.size) || ref.size < 0) {
    throw new CairnError(ErrorCode.INVALID_INPUT, `${what}: ${ref.digest} has an invalid size ${ref.size}`);
  }
}

/** Rejects (RANGE) a chunk index that is not a chunk of `ref`; checks the ref first. */
export function checkChunkIndex(ref: BlobRef, index: number, what: string): void {
  checkRef(ref, what);
  const count = chunkCount(ref.size);
  if (!Number.isSafeInteger(index) || index < 0 || index >= count) {
    throw new CairnError(
      ErrorCode.RANGE,
      `${what}: ${ref.digest} has no chunk ${index} (size ${ref.size}, ${count} chunk${count === 1 ? '' : 's'})`,
    );
  }
}

/** The ABORTED error of a caller whose signal fired; `what` names the read. */
export function abortedError(what: string, signal?: AbortSignal): CairnError {
  return new CairnError(ErrorCode.ABORTED, `${what}: aborted`, { cause: signal?.reason });
}

/**
 * `read()` in terms of `readChunk()`: validates the arguments as the
 * BlobSource contract says, reads the chunks covering
 * `[offset, offset + length)` (all at once: the read's deadline is then that of
 * its slowest chunk), and returns a fresh buffer with exactly
 * `max(0, min(length, ref.size - offset))` bytes. Reads of zero bytes resolve
 * without asking the source anything. When one chunk fails, the read rejects
 * with that error and stops waiting for the others (which are cancelled unless
 * another caller waits for them).
 */
export async function readChunked(
  source: Pick<ChunkSource, 'readChunk'>,
  ref: BlobRef,
  offset: number,
  length: number,
  opts: ReadOptions = {},
): Promise<Buffer> {
  const what = 'read';
  checkRef(ref, what);
  if (!Number.isSafeInteger(offset) || offset < 0) {
    throw new CairnError(ErrorCode.RANGE, `${what}: offset ${offset} of ${ref.digest} is not a non-negative integer`);
  }
  if (!Number.isSafeInteger(length)) {
    throw new CairnError(ErrorCode.RANGE, `${what}: length ${length} of ${ref.digest} is not an integer`);
  }
  const signal = opts.signal;
  if (signal?.aborted) throw abortedError(`${what} ${ref.digest}`, signal);
  const n = Math.max(0, Math.min(length, ref.size - offset));
  if (n === 0) return Buffer.alloc(0);
  const end = offset + n;
  const first = Math.floor(offset / CHUNK_BYTES);
  const last = Math.floor((end - 1) / CHUNK_BYTES);

  const check = (chunk: Buffer, index: number): Buffer => {
    const span = chunkSpan(ref.size, index);
    if (chunk.length !== span.end - span.start) {
      throw new CairnError(
        ErrorCode.INTERNAL,
        `${what}: chunk ${index} of ${ref.digest} has ${chunk.length} bytes, not ${span.end - span.start}`,
      );
    }
    return chunk;
  };

  if (first === last) {
    const chunk = check(await source.readChunk(ref, first, opts), first);
    const base = first * CHUNK_BYTES;
    return Buffer.from(chunk.subarray(offset - base, end - base));
  }

  // Several chunks: when one fails, the others stop waiting (and their fetches
  // are cancelled unless someone else waits for them).
  const stop = new AbortController();
  const onAbort = (): void => stop.abort(signal?.reason);
  signal?.addEventListener('abort', onAbort, { once: true });
  try {
    const out = Buffer.allocUnsafe(n);
    const reads: Promise<void>[] = [];
    for (let i = first; i <= last; i++) {
      reads.push(
        source
          .readChunk(ref, i, { signal: stop.signal, ...(opts.onServed ? { onServed: opts.onServed } : {}) })
          .then((raw) => {
            const chunk = check(raw, i);
            const base = i * CHUNK_BYTES;
            const from = Math.max(offset, base);
            const to = Math.min(end, base + chunk.length);
            chunk.copy(out, from - offset, from - base, to - base);
          }),
      );
    }
    try {
      await Promise.all(reads);
    } catch (err) {
      // The caller's own abort is the reason, not the ABORTED of the chunk reads it caused.
      if (signal?.aborted) throw abortedError(`${what} ${ref.digest}`, signal);
      throw err;
    }
    return out;
  } finally {
    signal?.removeEventListener('abort', onAbort);
    stop.abort();
  }
}
