import type { Digest } from '../model/digest.js';

/** A file content as the union view knows it: its digest and size (from the recipe). */
export interface BlobRef {
  digest: Digest;
  size: number;
}

export interface ReadOptions {
  /** Cancels the read; the promise rejects with CAIRN_ERR_ABORTED. */
  signal?: AbortSignal;
}

/**
 * A source of file contents by digest: the registry fetcher, and every cache
 * tier over it (a decorator with this same interface).
 *
 * Contract:
 * - `read(ref, offset, length)` resolves with exactly
 *   `max(0, min(length, ref.size - offset))` bytes of the content, starting at `offset`.
 * - Bytes are verified before they are returned: content is checked against
 *   `ref.digest` (contents up to one chunk, CHUNK_BYTES) or against the
 *   registry's per-chunk digests (larger contents, verified chunk by chunk), so
 *   a source never returns, and a cache never stores, bytes that do not match.
 * - Failures reject with a CairnError: NOT_FOUND (unknown digest),
 *   DIGEST_MISMATCH (the remote sent other bytes), TIMEOUT (deadline passed),
 *   UNAVAILABLE (remote down after retries), ABORTED (signal), RANGE (offset < 0).
 * - Concurrent reads of the same chunk share one fetch.
 * - `close()` releases connections and files; calling it twice is safe; reads after close reject.
 */
export interface BlobSource {
  read(ref: BlobRef, offset: number, length: number, opts?: ReadOptions): Promise<Buffer>;
  close(): Promise<void>;
}
