import { deeperTier, type BlobRef, type ContentTier } from '../fetch/blob-source.js';
import type { ChunkSource } from '../fetch/chunk-source.js';

/** Kept as a name for the cache code: every ChunkSource gives chunk digests. */
export type ChunkDigestSource = ChunkSource;

/** A chunk a tier's shared fetch got from below, with the tier that answered (when it said). */
export interface ServedChunk {
  chunk: Buffer;
  tier: ContentTier | undefined;
}

/** Reads a chunk from the tier below, noting which tier answered it (a tier's miss path). */
export async function readServed(
  inner: ChunkSource,
  ref: BlobRef,
  index: number,
  signal: AbortSignal,
): Promise<ServedChunk> {
  let tier: ContentTier | undefined;
  const chunk = await inner.readChunk(ref, index, { signal, onServed: (t) => (tier = deeperTier(tier, t)) });
  return { chunk, tier };
}
