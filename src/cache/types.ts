import type { BlobRef, ReadOptions } from '../fetch/blob-source.js';
import type { ChunkSource } from '../fetch/chunk-source.js';
import type { Digest } from '../model/digest.js';

/**
 * PROPOSED ADDITION to ChunkSource (src/fetch/chunk-source.ts), pending
 * agreement with the fetcher: until it is part of ChunkSource, the disk cache
 * asks for this extended interface.
 *
 * `chunkDigest(ref, index)` resolves with the sha256 the bytes of chunk `index`
 * must hash to: `ref.digest` itself for a content of at most CHUNK_BYTES
 * (index 0), the registry's per-chunk digest otherwise. Rejects like `read`
 * (NOT_FOUND, RANGE for an index outside the content, ABORTED, ...).
 *
 * The disk cache needs it to verify a chunk of a large content when it reads it
 * back from disk: it stores the digest next to the chunk in its index, so a
 * cached chunk can be served (and verified) with the registry unreachable.
 */
export interface ChunkDigestSource extends ChunkSource {
  chunkDigest(ref: BlobRef, index: number, opts?: ReadOptions): Promise<Digest>;
}

export function hasChunkDigest(source: ChunkSource): source is ChunkDigestSource {
  return typeof (source as Partial<ChunkDigestSource>).chunkDigest === 'function';
}
