import type { Digest } from '../model/digest.js';

/** A file content as the union view knows it: its digest and size (from the recipe). */
export interface BlobRef {
  digest: Digest;
  size: number;
}

/** Where a read was answered from: a cache tier, or the registry over the network. */
export type ContentTier = 'memory' | 'disk' | 'network';

const TIER_RANK: Record<ContentTier, number> = { memory: 0, disk: 1, network: 2 };

/** Of two tiers, the one further from the reader (a read spanning several chunks is as slow as its slowest). */
export function deeperTier(a: ContentTier | undefined, b: ContentTier): ContentTier {
  return a !== undefined && TIER_RANK[a] >= TIER_RANK[b] ? a : b;
}

export interface ReadOptions {
  /** Cancels the read; the promise rejects with CAIRN_ERR_ABORTED. */
  signal?: AbortSignal;
  /**
   * Told, once per chunk the read needed, which tier answered it (for
   * measurements only). Optional for a source: one that cannot tell says
   * nothing, and a read may then end without any call.
   */
  onServed?: (tier: ContentTier) => void;
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
