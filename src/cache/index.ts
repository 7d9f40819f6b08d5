export { MemoryCache, type MemoryCacheOptions, type MemoryCacheStats } from './memory-cache.js';
export { DiskCache, type DiskCacheOptions, type DiskCacheStats, type DiskCacheRepairReport } from './disk-cache.js';
export type { ChunkDigestSource } from './types.js';
export { chunkKey, parseChunkKey } from './chunks.js';
