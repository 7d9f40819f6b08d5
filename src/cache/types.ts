import type { ChunkSource } from '../fetch/chunk-source.js';

/** Kept as a name for the cache code: every ChunkSource gives chunk digests. */
export type ChunkDigestSource = ChunkSource;
