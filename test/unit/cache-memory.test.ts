import { watch, type FSWatcher } from 'node:fs';
import { readdir } from 'node:fs/promises';
import { describe, expect, it } from 'vitest';
import { MemoryCache } from '../../src/cache/memory-cache.js';
import type { BlobRef } from '../../src/fetch/blob-source.js';
import { CHUNK_BYTES } from '../../src/model/chunks.js';
import { sha256 } from '../../src/model/digest.js';
import { CairnError, ErrorCode } from '../../src/model/errors.js';
import { contentsMap, seededBytes, seededRandom } from '../contract/contents.js';
import { MapChunkSource } from '../contract/map-chunk-source.js';
import { testTempDir } from '../fixtures/tmp.js';

const KB = 1024;

function setup(sizes: number[], maxBytes: number, seed = 'mem') {
  const buffers = sizes.map((size, i) => seededBytes(size, `${seed}/${i}`));
  const inner = new MapChunkSource(contentsMap(buffers));
  const cache = new MemoryCache(inner, { maxBytes });
  const refs: BlobRef[] = buffers.map((b) => ({ digest: sha256(b), size: b.length }));
  return { buffers, inner, cache, refs };
}

async function codeOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (err) {
    return err instanceof CairnError ? err.code : `not a CairnError: ${String(err)}`;
  }
  return 'resolved';
}

describe('MemoryCache', () => {
  it('counts a miss, then hits, and reads the inner source once', async () => {
    const { cache, inner, refs, buffers } = setup([100 * KB], CHUNK_BYTES);
    const ref = refs[0]!;
    expect((await cache.read(ref, 0, ref.size)).equals(buffers[0]!)).toBe(true);
    expect((await cache.read(ref, 10, 20)).equals(buffers[0]!.subarray(10, 30))).toBe(true);
    expect((await cache.readChunk(ref, 0)).equals(buffers[0]!)).toBe(true);
    expect(inner.calls).toBe(1);
    expect(cache.stats()).toMatchObject({ hits: 2, misses: 1, fetches: 1, evictions: 0, bytes: 100 * KB, entries: 1 });
  });

  it('caches large contents chunk by chunk', async () => {
    const { cache, inner, refs, buffers } = setup([2 * CHUNK_BYTES + 5], 4 * CHUNK_BYTES);
    const ref = refs[0]!;
    await cache.read(ref, CHUNK_BYTES - 1, 2); // chunks 0 and 1
    expect(inner.calls).toBe(2);
    await cache.read(ref, 0, ref.size); // 0 and 1 cached, 2 fetched
    expect(inner.calls).toBe(3);
    expect(inner.callsFor(ref.digest, 2)).toBe(1);
    expect((await cache.read(ref, 0, ref.size)).equals(buffers[0]!)).toBe(true);
    expect(inner.calls).toBe(3);
    expect(cache.stats().bytes).toBe(ref.size);
  });

  it('evicts the least recently used chunk first', async () => {
    const { cache, inner, refs } = setup([100 * KB, 100 * KB, 100 * KB, 100 * KB], 300 * KB);
    const [a, b, c, d] = refs as [BlobRef, BlobRef, BlobRef, BlobRef];
    for (const ref of [a, b, c]) await cache.readChunk(ref, 0);
    await cache.readChunk(a, 0); // a is now the most recent: b is the oldest
    await cache.readChunk(d, 0);
    expect(cache.stats()).toMatchObject({ evictions: 1, entries: 3, bytes: 300 * KB });
    const before = inner.calls;
    for (const ref of [a, c, d]) await cache.readChunk(ref, 0);
    expect(inner.calls).toBe(before); // a, c, d still cached
    await cache.readChunk(b, 0);
    expect(inner.calls).toBe(before + 1); // b was evicted
  });

  it('never holds more than its budget', async () => {
    const sizes = Array.from({ length: 20 }, (_, i) => 10 * KB + i * 37 * KB);
    const { cache, refs, buffers } = setup(sizes, 700 * KB);
    const next = seededRandom(1);
    for (let i = 0; i < 200; i++) {
      const k = next(refs.length);
      const ref = refs[k]!;
      expect((await cache.read(ref, 0, ref.size)).equals(buffers[k]!)).toBe(true);
      const s = cache.stats();
      expect(s.bytes).toBeLessThanOrEqual(700 * KB);
    }
    expect(cache.stats().evictions).toBeGreaterThan(0);
  });

  it('passes chunks larger than the budget through, uncached', async () => {
    const { cache, inner, refs, buffers } = setup([5000], 4000);
    const ref = refs[0]!;
    expect((await cache.read(ref, 0, ref.size)).equals(buffers[0]!)).toBe(true);
    expect((await cache.read(ref, 0, ref.size)).equals(buffers[0]!)).toBe(true);
    expect(inner.calls).toBe(2);
    expect(cache.stats()).toMatchObject({ passthrough: 2, bytes: 0, entries: 0, hits: 0, misses: 0 });
  });

  it('shares one inner read among concurrent misses of a chunk', async () => {
    const { cache, inner, refs, buffers } = setup([200 * KB], CHUNK_BYTES);
    const ref = refs[0]!;
    const release = inner.pause();
    const reads = Array.from({ length: 10 }, (_, i) => cache.read(ref, i * 1000, 5000));
    await new Promise((r) => setTimeout(r, 10));
    release();
    const got = await Promise.all(reads);
    got.forEach((buf, i) => expect(buf.equals(buffers[0]!.subarray(i * 1000, i * 1000 + 5000))).toBe(true));
    expect(inner.calls).toBe(1);
    expect(cache.stats()).toMatchObject({ misses: 10, fetches: 1 });
  });

  it('an aborting reader does not abort the others; all aborting cancels the inner read', async () => {
    const { cache, inner, refs, buffers } = setup([200 * KB, 10 * KB], CHUNK_BYTES);
    const [ref, other] = refs as [BlobRef, BlobRef];
    let release = inner.pause();
    const quitter = new AbortController();
    const a = cache.readChunk(ref, 0, { signal: quitter.signal });
    const b = cache.readChunk(ref, 0);
    quitter.abort();
    expect(await codeOf(a)).toBe(ErrorCode.ABORTED);
    release();
    expect((await b).equals(buffers[0]!)).toBe(true);
    expect(inner.aborted).toBe(0);

    release = inner.pause();
    const c1 = new AbortController();
    const c2 = new AbortController();
    const x = cache.readChunk(other, 0, { signal: c1.signal });
    const y = cache.readChunk(other, 0, { signal: c2.signal });
    await new Promise((r) => setTimeout(r, 5));
    c1.abort();
    c2.abort();
    expect(await codeOf(x)).toBe(ErrorCode.ABORTED);
    expect(await codeOf(y)).toBe(ErrorCode.ABORTED);
    expect(inner.aborted).toBe(1);
    release();
    expect(cache.stats().entries).toBe(1); // only the first chunk
    expect((await cache.readChunk(other, 0)).equals(buffers[1]!)).toBe(true); // a fresh read works
  });

  it('does not cache failures', async () => {
    const data = seededBytes(1000, 'late');
    const inner = new MapChunkSource(new Map());
    const cache = new MemoryCache(inner, { maxBytes: CHUNK_BYTES });
    const ref = { digest: sha256(data), size: data.length };
    expect(await codeOf(cache.read(ref, 0, 10))).toBe(ErrorCode.NOT_FOUND);
    inner.contents.set(ref.digest, data);
    expect((await cache.read(ref, 0, 10)).equals(data.subarray(0, 10))).toBe(true);
  });

  it('rejects chunk indexes outside the content with RANGE', async () => {
    const { cache, refs } = setup([CHUNK_BYTES + 1], 4 * CHUNK_BYTES);
    expect(await codeOf(cache.readChunk(refs[0]!, 2))).toBe(ErrorCode.RANGE);
    expect(await codeOf(cache.readChunk(refs[0]!, -1))).toBe(ErrorCode.RANGE);
    expect(await codeOf(cache.readChunk(refs[0]!, 0.5))).toBe(ErrorCode.RANGE);
  });

  it('gives chunk digests: the content digest for a whole content, else the inner source’s', async () => {
    const { cache, refs, buffers } = setup([10, 2 * CHUNK_BYTES], 4 * CHUNK_BYTES);
    expect(await cache.chunkDigest(refs[0]!, 0)).toBe(refs[0]!.digest);
    expect(await cache.chunkDigest(refs[1]!, 1)).toBe(sha256(buffers[1]!.subarray(CHUNK_BYTES)));
  });

  it('closes its inner source (unless told not to), twice safely; reads after close reject', async () => {
    const { cache, inner, refs } = setup([10], 1000);
    await cache.close();
    await cache.close();
    expect(inner.closeCalls).toBe(1);
    expect(await codeOf(cache.read(refs[0]!, 0, 1))).toBe(ErrorCode.UNAVAILABLE);
    const keep = new MapChunkSource(new Map());
    await new MemoryCache(keep, { maxBytes: 1000, closeInner: false }).close();
    expect(keep.closeCalls).toBe(0);
  });

  it('rejects a budget that is not a positive integer', () => {
    const inner = new MapChunkSource(new Map());
    for (const maxBytes of [0, -1, 1.5, Number.NaN]) {
      expect(() => new MemoryCache(inner, { maxBytes })).toThrow(/maxBytes/);
    }
  });

  it('diskless: a MemoryCache over a source writes nothing to disk', async () => {
    const cwdDir = await testTempDir('cairn-diskless-cwd-');
    const tmpDir = await testTempDir('cairn-diskless-tmp-');
    const oldCwd = process.cwd();
    const oldTmp = process.env.TMPDIR;
    const events: string[] = [];
    const watchers: FSWatcher[] = [];
    try {
      process.chdir(cwdDir);
      process.env.TMPDIR = tmpDir;
      for (const dir of [cwdDir, tmpDir]) {
        watchers.push(watch(dir, { recursive: true }, (event, name) => events.push(`${dir}: ${event} ${name}`)));
      }
      const { cache, refs, buffers } = setup([0, 10, 200 * KB, CHUNK_BYTES, 3 * CHUNK_BYTES + 1], 2 * CHUNK_BYTES);
      for (let round = 0; round < 3; round++) {
        await Promise.all(
          refs.map(async (ref, i) => expect((await cache.read(ref, 0, ref.size)).equals(buffers[i]!)).toBe(true)),
        );
      }
      expect(cache.stats().evictions).toBeGreaterThan(0);
      await cache.close();
      await new Promise((r) => setTimeout(r, 50)); // let the watchers report
    } finally {
      for (const w of watchers) w.close();
      process.chdir(oldCwd);
      if (oldTmp === undefined) delete process.env.TMPDIR;
      else process.env.TMPDIR = oldTmp;
    }
    expect(events).toEqual([]);
    expect(await readdir(cwdDir)).toEqual([]);
    expect(await readdir(tmpDir)).toEqual([]);
  });
});
