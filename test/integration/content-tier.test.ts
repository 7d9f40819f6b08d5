/**
 * Which tier answered a read (ReadOptions.onServed), through the real content
 * path: a registry server on a loopback port, the HTTP fetcher, the disk tier
 * and the memory tier over it, as the daemon stacks them.
 */
import { describe, expect, it, onTestFinished } from 'vitest';
import { DiskCache } from '../../src/cache/disk-cache.js';
import { MemoryCache } from '../../src/cache/memory-cache.js';
import { deeperTier, type BlobRef, type ContentTier } from '../../src/fetch/blob-source.js';
import { HttpBlobSource } from '../../src/fetch/http-source.js';
import { CHUNK_BYTES } from '../../src/model/chunks.js';
import { sha256 } from '../../src/model/digest.js';
import { file, layer } from '../fixtures/layers.js';
import { importFixtureImage, pseudoRandom, startRegistry } from '../fixtures/registry.js';
import { testTempDir } from '../fixtures/tmp.js';

const small = pseudoRandom(5000, 'tier small');
const large = pseudoRandom(2 * CHUNK_BYTES + 777, 'tier large');
const refOf = (b: Buffer): BlobRef => ({ digest: sha256(b), size: b.length });

async function stack(withDisk: boolean): Promise<{ memory: MemoryCache }> {
  const root = await testTempDir('cairn-tier-registry-');
  const registry = await startRegistry(root);
  await importFixtureImage(registry.store, {
    image: { layers: [layer([file('small', small), file('large', large)])] },
    target: 'tier/test:1',
  });
  const fetcher = new HttpBlobSource({ url: registry.url, deadlineMs: 10_000 });
  const below = withDisk
    ? await DiskCache.open(fetcher, { dir: await testTempDir('cairn-tier-disk-'), maxBytes: 64 * CHUNK_BYTES })
    : fetcher;
  const memory = new MemoryCache(below, { maxBytes: 64 * CHUNK_BYTES });
  onTestFinished(() => memory.close());
  return { memory };
}

/** Reads and returns the bytes with every tier the read was told about, in order. */
async function readTold(
  m: MemoryCache,
  ref: BlobRef,
  offset: number,
  length: number,
): Promise<{ data: Buffer; told: ContentTier[] }> {
  const told: ContentTier[] = [];
  const data = await m.read(ref, offset, length, { onServed: (t) => told.push(t) });
  return { data, told };
}

describe('the tier that answered a read', () => {
  it('network first, then memory; with the memory tier gone, disk', async () => {
    const { memory } = await stack(true);
    const ref = refOf(small);
    const first = await readTold(memory, ref, 0, small.length);
    expect(first.data.equals(small)).toBe(true);
    expect(first.told).toEqual(['network']);
    expect((await readTold(memory, ref, 100, 50)).told).toEqual(['memory']);
    memory.clear();
    const fromDisk = await readTold(memory, ref, 0, small.length);
    expect(fromDisk.told).toEqual(['disk']);
    expect(fromDisk.data.equals(small)).toBe(true);
    expect((await readTold(memory, ref, 0, 10)).told).toEqual(['memory']);
  });

  it('a read over several chunks is told once per chunk; the furthest tier is what it waited for', async () => {
    const { memory } = await stack(true);
    const ref = refOf(large);
    // Chunk 1 only.
    expect((await readTold(memory, ref, CHUNK_BYTES + 10, 100)).told).toEqual(['network']);
    memory.clear();
    // Chunks 0, 1, 2: 0 and 2 from the network, 1 from disk (in any order: they are read at once).
    const all = await readTold(memory, ref, 0, large.length);
    expect(all.data.equals(large)).toBe(true);
    expect([...all.told].sort()).toEqual(['disk', 'network', 'network']);
    expect(all.told.reduce<ContentTier | undefined>((a, t) => deeperTier(a, t), undefined)).toBe('network');
    expect([...(await readTold(memory, ref, 0, large.length)).told]).toEqual(['memory', 'memory', 'memory']);
  });

  it('readers joining one fetch are each told network; diskless stacks never say disk', async () => {
    const { memory } = await stack(false);
    const ref = refOf(small);
    const [a, b] = await Promise.all([readTold(memory, ref, 0, 10), readTold(memory, ref, 20, 10)]);
    expect(a.told).toEqual(['network']);
    expect(b.told).toEqual(['network']);
    expect(memory.stats().fetches).toBe(1);
    memory.clear();
    expect((await readTold(memory, ref, 0, 10)).told).toEqual(['network']);
  });

  it('deeperTier orders memory < disk < network', () => {
    expect(deeperTier(undefined, 'memory')).toBe('memory');
    expect(deeperTier('memory', 'disk')).toBe('disk');
    expect(deeperTier('network', 'disk')).toBe('network');
    expect(deeperTier('disk', 'memory')).toBe('disk');
  });
});
