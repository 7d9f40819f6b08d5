import Database from 'better-sqlite3';
import { execFileSync } from 'node:child_process';
import { mkdir, readdir, readFile, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it, onTestFinished } from 'vitest';
import { DiskCache, type DiskCacheOptions } from '../../src/cache/disk-cache.js';
import { MemoryCache } from '../../src/cache/memory-cache.js';
import type { BlobRef } from '../../src/fetch/blob-source.js';
import { CHUNK_BYTES } from '../../src/model/chunks.js';
import { hexOf, sha256, type Digest } from '../../src/model/digest.js';
import { CairnError, ErrorCode } from '../../src/model/errors.js';
import { contentsMap, seededBytes, seededRandom } from '../contract/contents.js';
import { MapChunkSource } from '../contract/map-chunk-source.js';
import { testTempDir } from '../fixtures/tmp.js';
import { createLogger } from '../../src/util/log.js';

const KB = 1024;

interface Setup {
  dir: string;
  buffers: Buffer[];
  refs: BlobRef[];
  contents: Map<Digest, Buffer>;
  inner: MapChunkSource;
  cache: DiskCache;
  /** Opens another DiskCache on the same directory over a fresh double (a restart). */
  reopen(opts?: Partial<DiskCacheOptions>): Promise<{ cache: DiskCache; inner: MapChunkSource }>;
}

/** A clock that ticks one millisecond per call: access times are distinct and ordered. */
function tickingClock(): () => number {
  let t = 1_700_000_000_000;
  return () => t++;
}

async function setup(sizes: number[], opts: Partial<DiskCacheOptions> = {}, seed = 'disk'): Promise<Setup> {
  const dir = opts.dir ?? (await testTempDir('cairn-disk-cache-'));
  const buffers = sizes.map((size, i) => seededBytes(size, `${seed}/${i}`));
  const contents = contentsMap(buffers);
  const refs = buffers.map((b) => ({ digest: sha256(b), size: b.length }));
  const base: DiskCacheOptions = { dir, maxBytes: 64 * CHUNK_BYTES, flushIntervalMs: 60_000, now: tickingClock() };
  const open = async (extra: Partial<DiskCacheOptions>) => {
    const inner = new MapChunkSource(contents);
    const cache = await DiskCache.open(inner, { ...base, ...opts, ...extra });
    onTestFinished(() => cache.close());
    return { cache, inner };
  };
  const first = await open({});
  return { dir, buffers, refs, contents, ...first, reopen: open };
}

function chunkPath(dir: string, digest: Digest, index = 0): string {
  const hex = hexOf(digest);
  return join(dir, 'chunks', hex.slice(0, 2), `${hex}.${index}`);
}

interface IndexRow {
  key: string;
  chunk_digest: string;
  size: number;
  last_access: number;
  hits: number;
}

function indexRows(dir: string): IndexRow[] {
  const db = new Database(join(dir, 'index.db'), { readonly: true });
  try {
    return db.prepare(`SELECT * FROM chunks ORDER BY key`).all() as IndexRow[];
  } finally {
    db.close();
  }
}

/** Chunk files on disk: name -> size. */
async function chunkFiles(dir: string): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  for (const shard of await readdir(join(dir, 'chunks'))) {
    for (const name of await readdir(join(dir, 'chunks', shard))) {
      out.set(name, (await stat(join(dir, 'chunks', shard, name))).size);
    }
  }
  return out;
}

/** Index and directory agree: every row has its file, of its size, and every file its row. */
async function expectConsistent(dir: string): Promise<void> {
  const rows = indexRows(dir);
  const files = await chunkFiles(dir);
  expect(new Map(rows.map((r) => [r.key, r.size]))).toEqual(files);
  expect(await readdir(join(dir, 'tmp'))).toEqual([]);
}

async function codeOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (err) {
    return err instanceof CairnError ? err.code : `not a CairnError: ${String(err)}`;
  }
  return 'resolved';
}

async function flipByte(path: string, at: number): Promise<void> {
  const data = await readFile(path);
  data[at] = data[at]! ^ 0x01;
  await writeFile(path, data);
}

describe('DiskCache', () => {
  it('misses, writes the chunk to disk and the index, then hits without the inner source', async () => {
    const { dir, cache, inner, refs, buffers } = await setup([100 * KB]);
    const ref = refs[0]!;
    expect((await cache.read(ref, 0, ref.size)).equals(buffers[0]!)).toBe(true);
    await cache.whenIdle();
    expect((await readFile(chunkPath(dir, ref.digest))).equals(buffers[0]!)).toBe(true);
    expect(indexRows(dir)).toMatchObject([{ key: `${hexOf(ref.digest)}.0`, chunk_digest: ref.digest, size: ref.size }]);
    expect((await cache.read(ref, 5, 10)).equals(buffers[0]!.subarray(5, 15))).toBe(true);
    expect(inner.calls).toBe(1);
    expect(cache.stats()).toMatchObject({ hits: 1, misses: 1, fetches: 1, writes: 1, bytes: ref.size, entries: 1 });
    await expectConsistent(dir);
  });

  it('stores the chunks of a large content with their chunk digests', async () => {
    const { dir, cache, inner, refs, buffers } = await setup([2 * CHUNK_BYTES + 500]);
    const ref = refs[0]!;
    expect((await cache.read(ref, 0, ref.size)).equals(buffers[0]!)).toBe(true);
    await cache.whenIdle();
    const rows = indexRows(dir);
    expect(rows.map((r) => [r.key, r.chunk_digest, r.size])).toEqual(
      [0, 1, 2].map((i) => [
        `${hexOf(ref.digest)}.${i}`,
        sha256(buffers[0]!.subarray(i * CHUNK_BYTES, (i + 1) * CHUNK_BYTES)),
        Math.min(CHUNK_BYTES, ref.size - i * CHUNK_BYTES),
      ]),
    );
    expect(await cache.chunkDigest(ref, 1)).toBe(rows[1]!.chunk_digest);
    expect(inner.chunkDigestCalls).toBe(3); // asked once per chunk, when storing it; then from the index
    expect((await cache.read(ref, CHUNK_BYTES - 3, CHUNK_BYTES + 6)).length).toBe(CHUNK_BYTES + 6);
    expect(inner.calls).toBe(3);
  });

  it('uses a WAL-mode SQLite index in dir/index.db', async () => {
    const { dir } = await setup([10]);
    const db = new Database(join(dir, 'index.db'), { readonly: true });
    try {
      expect(db.pragma('journal_mode', { simple: true })).toBe('wal');
    } finally {
      db.close();
    }
  });

  it('evicts the least recently accessed chunks, and stays under its budget', async () => {
    const { dir, cache, inner, refs } = await setup([100 * KB, 100 * KB, 100 * KB, 100 * KB], {
      maxBytes: 300 * KB,
    });
    const [a, b, c, d] = refs as [BlobRef, BlobRef, BlobRef, BlobRef];
    for (const ref of [a, b, c]) {
      await cache.readChunk(ref, 0);
      await cache.whenIdle();
    }
    await cache.readChunk(a, 0); // a hit: its access time is pending in memory, written before evicting
    await cache.readChunk(d, 0);
    await cache.whenIdle();
    expect(cache.stats()).toMatchObject({ evictions: 1, entries: 3, bytes: 300 * KB });
    const files = await chunkFiles(dir);
    expect([...files.keys()].sort()).toEqual([a, c, d].map((r) => `${hexOf(r.digest)}.0`).sort());
    const before = inner.calls;
    for (const ref of [a, c, d]) await cache.readChunk(ref, 0);
    expect(inner.calls).toBe(before);
    await cache.readChunk(b, 0);
    expect(inner.calls).toBe(before + 1);
    await cache.whenIdle();
    await expectConsistent(dir);
  });

  it('never keeps more than its budget on disk under a random workload', async () => {
    const sizes = Array.from({ length: 16 }, (_, i) => 20 * KB + i * 45 * KB);
    sizes.push(2 * CHUNK_BYTES + 3);
    const maxBytes = CHUNK_BYTES + 100 * KB;
    const { dir, cache, refs, buffers } = await setup(sizes, { maxBytes });
    const next = seededRandom(99);
    for (let i = 0; i < 120; i++) {
      const k = next(refs.length);
      const ref = refs[k]!;
      const offset = next(ref.size);
      const got = await cache.read(ref, offset, 300 * KB);
      expect(got.equals(buffers[k]!.subarray(offset, offset + 300 * KB))).toBe(true);
      await cache.whenIdle();
      expect(cache.stats().bytes).toBeLessThanOrEqual(maxBytes);
      const onDisk = [...(await chunkFiles(dir)).values()].reduce((x, y) => x + y, 0);
      expect(onDisk).toBe(cache.stats().bytes);
    }
    expect(cache.stats().evictions).toBeGreaterThan(0);
    await expectConsistent(dir);
  });

  it('passes chunks larger than the budget through, uncached', async () => {
    const { dir, cache, inner, refs, buffers } = await setup([5000], { maxBytes: 4000 });
    const ref = refs[0]!;
    expect((await cache.read(ref, 0, ref.size)).equals(buffers[0]!)).toBe(true);
    expect((await cache.read(ref, 0, ref.size)).equals(buffers[0]!)).toBe(true);
    await cache.whenIdle();
    expect(inner.calls).toBe(2);
    expect(cache.stats()).toMatchObject({ passthrough: 2, writes: 0, entries: 0 });
    expect((await chunkFiles(dir)).size).toBe(0);
  });

  it('shares one inner read among concurrent misses, and serves a chunk while it is being written', async () => {
    const { cache, inner, refs, buffers } = await setup([200 * KB]);
    const ref = refs[0]!;
    const release = inner.pause();
    const reads = Array.from({ length: 8 }, () => cache.readChunk(ref, 0));
    await new Promise((r) => setTimeout(r, 10));
    release();
    for (const got of await Promise.all(reads)) expect(got.equals(buffers[0]!)).toBe(true);
    // Right after the fetch the write is (most likely) still in progress: served from memory.
    expect((await cache.readChunk(ref, 0)).equals(buffers[0]!)).toBe(true);
    await cache.whenIdle();
    expect((await cache.readChunk(ref, 0)).equals(buffers[0]!)).toBe(true);
    expect(inner.calls).toBe(1);
    expect(cache.stats()).toMatchObject({ fetches: 1, writes: 1 });
  });

  it('bounds the bytes waiting to be written: beyond the bound, chunks are served but not stored', async () => {
    const { cache, inner, refs, buffers } = await setup([1000, 2000, 3000], { maxPendingWriteBytes: 1 });
    const release = inner.pause();
    const reads = refs.map((ref) => cache.readChunk(ref, 0));
    await new Promise((r) => setTimeout(r, 5));
    release();
    (await Promise.all(reads)).forEach((got, i) => expect(got.equals(buffers[i]!)).toBe(true));
    await cache.whenIdle();
    expect(cache.stats()).toMatchObject({ writes: 1, writesSkipped: 2, entries: 1, writeErrors: 0 });
  });

  it('batches access times: hits write nothing to the index until a flush', async () => {
    const { dir, cache, refs } = await setup([1000, 2000]);
    for (const ref of refs) await cache.readChunk(ref, 0);
    await cache.whenIdle();
    const before = indexRows(dir);
    for (let i = 0; i < 50; i++) for (const ref of refs) await cache.readChunk(ref, 0);
    expect(indexRows(dir)).toEqual(before);
    cache.flushAccess();
    const after = indexRows(dir);
    expect(after.map((r) => r.hits)).toEqual([50, 50]);
    after.forEach((r, i) => expect(r.last_access).toBeGreaterThan(before[i]!.last_access));
  });

  it('flushes access times once flushBatch chunks have one pending', async () => {
    const { dir, cache, refs } = await setup([1000, 2000, 3000], { flushBatch: 3 });
    for (const ref of refs) await cache.readChunk(ref, 0);
    await cache.whenIdle();
    await cache.readChunk(refs[0]!, 0);
    await cache.readChunk(refs[1]!, 0);
    expect(indexRows(dir).map((r) => r.hits)).toEqual([0, 0, 0]);
    await cache.readChunk(refs[2]!, 0);
    expect(indexRows(dir).reduce((n, r) => n + r.hits, 0)).toBe(3);
  });

  it('keeps only whole contents of a cache written with another chunk size (1 MiB, unrecorded)', async () => {
    const MiB = 1024 * KB;
    const { dir, cache, refs, buffers, reopen } = await setup([1000, 200 * KB, 2 * MiB + 10]);
    await cache.read(refs[0]!, 0, refs[0]!.size);
    await cache.read(refs[1]!, 0, refs[1]!.size);
    await cache.whenIdle();
    await cache.close();
    // What a cairn of 1 MiB chunks left: no chunkBytes in meta, and 1 MiB chunks 0 and 1 of
    // the large content, each with its own digest beside it (so each would verify).
    const big = refs[2]!;
    const db = new Database(join(dir, 'index.db'));
    try {
      db.prepare(`DELETE FROM meta WHERE key = 'chunkBytes'`).run();
      for (const i of [0, 1]) {
        const piece = buffers[2]!.subarray(i * MiB, (i + 1) * MiB);
        await mkdir(join(chunkPath(dir, big.digest, i), '..'), { recursive: true });
        await writeFile(chunkPath(dir, big.digest, i), piece);
        db.prepare(`INSERT INTO chunks (key, chunk_digest, size, last_access) VALUES (?, ?, ?, 1)`).run(
          `${hexOf(big.digest)}.${i}`,
          sha256(piece),
          MiB,
        );
      }
    } finally {
      db.close();
    }
    const again = await reopen();
    expect(indexRows(dir).map((r) => r.key)).toEqual(
      [`${hexOf(refs[0]!.digest)}.0`, `${hexOf(refs[1]!.digest)}.0`].sort(),
    );
    expect((await chunkFiles(dir)).size).toBe(2);
    for (const [i, ref] of refs.entries()) {
      expect((await again.cache.read(ref, 0, ref.size)).equals(buffers[i]!)).toBe(true);
    }
    expect(again.inner.calls).toBe(Math.ceil(big.size / CHUNK_BYTES)); // only the large content, again
    await again.cache.whenIdle();
    await again.cache.close();
    // Recorded now: a restart keeps everything.
    const third = await reopen();
    expect(third.cache.stats().entries).toBe(2 + Math.ceil(big.size / CHUNK_BYTES));
  });

  it('survives a restart: a new instance serves what is on disk', async () => {
    const { dir, cache, refs, buffers, reopen } = await setup([1000, 200 * KB, CHUNK_BYTES + 10]);
    for (const ref of refs) await cache.read(ref, 0, ref.size);
    await cache.whenIdle();
    await cache.readChunk(refs[0]!, 0); // a hit, its access time written at close
    await cache.close();
    const again = await reopen();
    expect(again.cache.repairReport).toEqual({ rowsDropped: 0, filesIndexed: 0, filesDeleted: 0, tempsDeleted: 0 });
    for (const [i, ref] of refs.entries()) {
      expect((await again.cache.read(ref, 0, ref.size)).equals(buffers[i]!)).toBe(true);
    }
    expect(again.inner.calls).toBe(0);
    expect(again.inner.chunkDigestCalls).toBe(0); // chunk digests of the large content came from the index
    expect(again.cache.stats()).toMatchObject({ hits: 4, misses: 0, entries: 4 });
    expect(indexRows(dir).find((r) => r.key === `${hexOf(refs[0]!.digest)}.0`)?.hits).toBe(1);
  });

  it('re-fetches a chunk whose file is gone, and drops its row at open', async () => {
    const { dir, cache, refs, buffers, reopen } = await setup([1000, 2000]);
    for (const ref of refs) await cache.readChunk(ref, 0);
    await cache.whenIdle();
    // Gone while running (another process evicted it): a miss, refetched.
    await rm(chunkPath(dir, refs[0]!.digest));
    expect((await cache.readChunk(refs[0]!, 0)).equals(buffers[0]!)).toBe(true);
    expect(cache.stats()).toMatchObject({ misses: 3, corrupt: 0 });
    await cache.close();
    // Gone while stopped: the row is dropped at open.
    await rm(chunkPath(dir, refs[1]!.digest));
    const again = await reopen();
    expect(again.cache.repairReport).toMatchObject({ rowsDropped: 1, filesDeleted: 0 });
    expect(indexRows(dir).map((r) => r.key)).toEqual([`${hexOf(refs[0]!.digest)}.0`]);
    expect((await again.cache.readChunk(refs[1]!, 0)).equals(buffers[1]!)).toBe(true);
    expect(again.inner.calls).toBe(1);
    await again.cache.whenIdle();
    await expectConsistent(dir);
  });

  for (const [label, size, index] of [
    ['a whole content', 200 * KB, 0],
    ['a chunk of a large content', 2 * CHUNK_BYTES + 77, 1],
  ] as const) {
    it(`never serves a corrupt file (${label}): removes it, counts it, refetches`, async () => {
      const { dir, cache, inner, refs, buffers } = await setup([size]);
      const ref = refs[0]!;
      const expected = buffers[0]!.subarray(index * CHUNK_BYTES, (index + 1) * CHUNK_BYTES);
      await cache.read(ref, 0, ref.size);
      await cache.whenIdle();
      const callsBefore = inner.calls;
      await flipByte(chunkPath(dir, ref.digest, index), 1234);
      expect((await cache.readChunk(ref, index)).equals(expected)).toBe(true);
      expect(cache.stats().corrupt).toBe(1);
      expect(inner.calls).toBe(callsBefore + 1);
      await cache.whenIdle();
      expect((await readFile(chunkPath(dir, ref.digest, index))).equals(expected)).toBe(true);
      expect((await cache.read(ref, 0, ref.size)).equals(buffers[0]!)).toBe(true);
      expect(inner.calls).toBe(callsBefore + 1);
      await expectConsistent(dir);
    });
  }

  it('with verifyOnOpen, finds corrupt files at open', async () => {
    const { dir, cache, refs, reopen } = await setup([1000, CHUNK_BYTES + 1]);
    for (const ref of refs) await cache.read(ref, 0, ref.size);
    await cache.close();
    await flipByte(chunkPath(dir, refs[1]!.digest, 0), 0);
    const again = await reopen({ verifyOnOpen: true });
    expect(again.cache.repairReport).toMatchObject({ rowsDropped: 1, filesDeleted: 1 });
    expect(again.cache.stats().corrupt).toBe(1);
    await expectConsistent(dir);
  });

  it('deletes a file whose size differs from its row at open', async () => {
    const { dir, cache, refs, reopen } = await setup([1000, 3000]);
    for (const ref of refs) await cache.readChunk(ref, 0);
    await cache.close();
    await writeFile(chunkPath(dir, refs[1]!.digest), (await readFile(chunkPath(dir, refs[1]!.digest))).subarray(1));
    const again = await reopen();
    expect(again.cache.repairReport).toMatchObject({ rowsDropped: 1, filesDeleted: 1 });
    expect(indexRows(dir).map((r) => r.key)).toEqual([`${hexOf(refs[0]!.digest)}.0`]);
    await expectConsistent(dir);
  });

  it('indexes a whole-content file that has no row after verifying it; deletes files it cannot verify', async () => {
    const { dir, cache, refs, buffers, reopen } = await setup([1000, 2000, 2 * CHUNK_BYTES + 1]);
    for (const ref of refs) await cache.read(ref, 0, ref.size);
    await cache.close();
    // Rows lost (say, the index was restored from an older copy): drop all of them.
    const db = new Database(join(dir, 'index.db'));
    db.prepare(`DELETE FROM chunks`).run();
    db.close();
    await flipByte(chunkPath(dir, refs[1]!.digest), 10); // an unindexed corrupt file: must not be adopted
    const again = await reopen();
    // Adopted: content 0. Deleted: corrupt content 1, and the 3 chunks of content 2 (no digest to verify them by).
    expect(again.cache.repairReport).toMatchObject({ filesIndexed: 1, filesDeleted: 4, rowsDropped: 0 });
    expect(indexRows(dir).map((r) => r.key)).toEqual([`${hexOf(refs[0]!.digest)}.0`]);
    expect(again.cache.stats()).toMatchObject({ entries: 1, bytes: 1000 });
    expect((await again.cache.readChunk(refs[0]!, 0)).equals(buffers[0]!)).toBe(true);
    expect(again.inner.calls).toBe(0);
    await expectConsistent(dir);
  });

  it('deletes stale temp files and unknown files at open, keeps temp files that may be in use', async () => {
    const { dir, cache, reopen } = await setup([10]);
    await cache.close();
    const tmp = join(dir, 'tmp');
    const deadPid = 2 ** 31 - 1; // above any pid_max: never alive
    const host = hostname();
    await writeFile(join(tmp, `${deadPid}-0123456789abcdef-${host}.tmp`), 'dead writer on this host');
    await writeFile(join(tmp, 'garbage'), 'not a name the cache writes');
    await writeFile(join(tmp, `1-0123456789abcdef-other-host.example.tmp`), 'old, other host');
    await utimes(join(tmp, `1-0123456789abcdef-other-host.example.tmp`), new Date(0), new Date(0));
    const fresh = `1-fedcba9876543210-other-host.example.tmp`;
    await writeFile(join(tmp, fresh), 'fresh, other host: may be in use');
    const mine = `${process.pid}-00000000000000aa-${host}.tmp`;
    await writeFile(join(tmp, mine), 'a live process on this host');
    await mkdir(join(dir, 'chunks', 'zz'), { recursive: true });
    await writeFile(join(dir, 'chunks', 'stray-file'), 'x');
    await mkdir(join(dir, 'chunks', '00'), { recursive: true });
    await writeFile(join(dir, 'chunks', '00', 'not-a-chunk.tmp'), 'x');
    await writeFile(join(dir, 'chunks', '00', `${'11'.repeat(32)}.0`), 'in the wrong shard');
    const again = await reopen();
    expect(again.cache.repairReport).toMatchObject({ tempsDeleted: 3, filesDeleted: 3 });
    expect((await readdir(tmp)).sort()).toEqual([fresh, mine].sort());
    expect(await readdir(join(dir, 'chunks', '00'))).toEqual([]);
  });

  it('refuses bytes from the inner source that do not match their digest, and stores nothing', async () => {
    const { dir, cache, inner, refs } = await setup([1000, CHUNK_BYTES + 1]);
    inner.lie = true;
    for (const ref of refs) expect(await codeOf(cache.readChunk(ref, 0))).toBe(ErrorCode.DIGEST_MISMATCH);
    await cache.whenIdle();
    expect((await chunkFiles(dir)).size).toBe(0);
    expect(cache.stats().entries).toBe(0);
  });

  it('evicts at open when the budget shrank', async () => {
    const { dir, cache, refs, reopen } = await setup([100 * KB, 100 * KB, 100 * KB]);
    for (const ref of refs) {
      await cache.readChunk(ref, 0);
      await cache.whenIdle();
    }
    await cache.close();
    const again = await reopen({ maxBytes: 150 * KB });
    expect(again.cache.stats()).toMatchObject({ entries: 1, bytes: 100 * KB, evictions: 2 });
    expect(indexRows(dir).map((r) => r.key)).toEqual([`${hexOf(refs[2]!.digest)}.0`]);
    await expectConsistent(dir);
  });

  it('closes: waits for writes, closes the inner source once, rejects reads after', async () => {
    const { dir, cache, inner, refs } = await setup([200 * KB]);
    await cache.readChunk(refs[0]!, 0);
    await cache.close();
    await cache.close();
    expect(inner.closeCalls).toBe(1);
    expect(await codeOf(cache.readChunk(refs[0]!, 0))).toBe(ErrorCode.UNAVAILABLE);
    expect(await codeOf(cache.read(refs[0]!, 0, 1))).toBe(ErrorCode.UNAVAILABLE);
    await expectConsistent(dir);
    expect(indexRows(dir)).toHaveLength(1);
  });

  it('works as the lower tier of a MemoryCache', async () => {
    const { cache, inner, refs, buffers } = await setup([100 * KB, 2 * CHUNK_BYTES + 5]);
    const mem = new MemoryCache(cache, { maxBytes: CHUNK_BYTES, closeInner: false });
    for (let round = 0; round < 3; round++) {
      for (const [i, ref] of refs.entries()) expect((await mem.read(ref, 0, ref.size)).equals(buffers[i]!)).toBe(true);
    }
    expect(inner.calls).toBe(4); // each chunk fetched once; the rest from memory or disk
    expect(cache.stats().hits).toBeGreaterThan(0);
    expect(mem.stats().hits).toBeGreaterThan(0);
    await mem.close();
  });

  it('disk full (ENOSPC): reads succeed, writes are abandoned and cleaned up, errors counted', async (ctx) => {
    if (process.getuid?.() !== 0) ctx.skip('needs root to mount a small tmpfs');
    const mnt = await testTempDir('cairn-enospc-');
    try {
      execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', mnt], { stdio: 'pipe' });
    } catch (err) {
      ctx.skip(`cannot mount a tmpfs here: ${String((err as Error).message).split('\n')[0]}`);
    }
    try {
      const sizes = Array.from({ length: 8 }, () => 200 * KB);
      const logged: string[] = [];
      const logger = createLogger({ level: 'warn', component: 'test', write: (line) => logged.push(line) });
      const { dir, cache, refs, buffers, reopen } = await setup(sizes, { dir: join(mnt, 'cache'), logger });
      for (let round = 0; round < 2; round++) {
        for (const [i, ref] of refs.entries()) {
          expect((await cache.read(ref, 0, ref.size)).equals(buffers[i]!)).toBe(true);
        }
        await cache.whenIdle();
      }
      const s = cache.stats();
      expect(s.writeErrors).toBeGreaterThan(0);
      expect(s.writes).toBeGreaterThan(0);
      expect(s.bytes).toBeLessThan(1024 * 1024); // the tmpfs
      expect(
        logged.some((line) => /ENOSPC|SQLITE_FULL/.test(line)),
        logged.join(''),
      ).toBe(true);
      await expectConsistent(dir);
      await cache.close();
      const again = await reopen();
      expect(again.cache.repairReport).toEqual({ rowsDropped: 0, filesIndexed: 0, filesDeleted: 0, tempsDeleted: 0 });
      for (const [i, ref] of refs.entries()) {
        expect((await again.cache.read(ref, 0, ref.size)).equals(buffers[i]!)).toBe(true);
      }
      await again.cache.close();
    } finally {
      try {
        execFileSync('umount', [mnt], { stdio: 'pipe' });
      } catch {
        execFileSync('umount', ['-l', mnt], { stdio: 'pipe' });
      }
    }
  });
});
