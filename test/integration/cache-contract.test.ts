/**
 * Every cache stack against the BlobSource contract, over the in-memory
 * ChunkSource double (a 1 ms delay so that concurrent and aborted reads overlap).
 * Budgets are smaller than the contents so that eviction happens during the runs.
 */
import { DiskCache } from '../../src/cache/disk-cache.js';
import { MemoryCache } from '../../src/cache/memory-cache.js';
import { CHUNK_BYTES } from '../../src/model/chunks.js';
import { blobSourceContract } from '../contract/blob-source.contract.js';
import { contractContents } from '../contract/contents.js';
import { MapChunkSource } from '../contract/map-chunk-source.js';
import { makeTempDir } from '../fixtures/tmp.js';

const contents = contractContents();

blobSourceContract('MapChunkSource (the test double itself)', async () => {
  const source = new MapChunkSource(contents, { delayMs: 1 });
  return { source, contents, cleanup: () => source.close() };
});

blobSourceContract('MemoryCache over MapChunkSource', async () => {
  const source = new MemoryCache(new MapChunkSource(contents, { delayMs: 1 }), { maxBytes: 3 * CHUNK_BYTES });
  return { source, contents, cleanup: () => source.close() };
});

blobSourceContract('DiskCache over MapChunkSource', async () => {
  const tmp = await makeTempDir('cairn-cache-contract-');
  const source = await DiskCache.open(new MapChunkSource(contents, { delayMs: 1 }), {
    dir: tmp.path,
    maxBytes: 4 * CHUNK_BYTES,
  });
  return {
    source,
    contents,
    cleanup: async () => {
      await source.close();
      await tmp.cleanup();
    },
  };
});

blobSourceContract('MemoryCache over DiskCache over MapChunkSource', async () => {
  const tmp = await makeTempDir('cairn-cache-contract-');
  const disk = await DiskCache.open(new MapChunkSource(contents, { delayMs: 1 }), {
    dir: tmp.path,
    maxBytes: 4 * CHUNK_BYTES,
  });
  const source = new MemoryCache(disk, { maxBytes: 2 * CHUNK_BYTES });
  return {
    source,
    contents,
    cleanup: async () => {
      await source.close();
      await tmp.cleanup();
    },
  };
});
