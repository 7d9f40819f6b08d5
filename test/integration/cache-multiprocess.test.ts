/**
 * Several processes sharing one disk cache directory (an HPC node's shared
 * cache): three child processes and this one read at random through their own
 * DiskCache on the same directory, under a budget far smaller than the data, so
 * that they constantly evict each other's chunks. No reader may ever get wrong
 * bytes, no write may fail, and a fresh open afterwards must find a cache whose
 * every file verifies.
 *
 * The children run the compiled cache (tsc, transpile only, into a temp dir).
 */
import { execFile, spawn } from 'node:child_process';
import { readdir, symlink, writeFile } from 'node:fs/promises';
import { basename, join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DiskCache, type DiskCacheStats } from '../../src/cache/disk-cache.js';
import type { BlobRef } from '../../src/fetch/blob-source.js';
import { CHUNK_BYTES } from '../../src/model/chunks.js';
import { hexOf, sha256 } from '../../src/model/digest.js';
import { parseChunkKey } from '../../src/cache/chunks.js';
import { contentsMap, seededBytes, seededRandom } from '../contract/contents.js';
import { MapChunkSource } from '../contract/map-chunk-source.js';
import { makeTempDir, testTempDir, type TempDir } from '../fixtures/tmp.js';
import Database from 'better-sqlite3';

const KB = 1024;
const REPO = resolve(import.meta.dirname, '../..');
const SIZES = [
  ...Array.from({ length: 10 }, (_, i) => 30 * KB + i * 140 * KB),
  CHUNK_BYTES,
  2 * CHUNK_BYTES + 12345,
  3 * CHUNK_BYTES + 1,
];
const MAX_BYTES = 3 * CHUNK_BYTES;
/** Reads per process, 4 at a time (CAIRN_MP_ITER raises it for a longer stress run). */
const ITERATIONS = Number(process.env.CAIRN_MP_ITER ?? 120);
const CHILDREN = 3;

/** The workload, identical in the children (as JavaScript) and here. */
const WORKER = `
const out = process.env.CAIRN_CACHE_BUILD;
const { DiskCache } = await import(out + '/src/cache/disk-cache.js');
const { MapChunkSource } = await import(out + '/test/contract/map-chunk-source.js');
const { contentsMap, seededBytes, seededRandom } = await import(out + '/test/contract/contents.js');
const { sha256 } = await import(out + '/src/model/digest.js');
const [dir, seedText, iterationsText, maxBytesText, sizesText] = process.argv.slice(2);
const buffers = JSON.parse(sizesText).map((size, i) => seededBytes(size, 'mp/' + i));
const refs = buffers.map((b) => ({ digest: sha256(b), size: b.length }));
const cache = await DiskCache.open(new MapChunkSource(contentsMap(buffers), { delayMs: 2 }), {
  dir, maxBytes: Number(maxBytesText), flushIntervalMs: 20, flushBatch: 16,
});
const next = seededRandom(Number(seedText));
let mismatches = 0;
for (let i = 0; i < Number(iterationsText); i++) {
  await Promise.all([0, 1, 2, 3].map(async () => {
    const k = next(refs.length);
    const offset = next(refs[k].size);
    const length = 1 + next(1536 * 1024);
    const got = await cache.read(refs[k], offset, length);
    if (!got.equals(buffers[k].subarray(offset, offset + length))) mismatches++;
  }));
}
const repair = cache.repairReport;
await cache.close();
process.stdout.write(JSON.stringify({ mismatches, stats: cache.stats(), repair }));
`;

interface WorkerResult {
  mismatches: number;
  stats: DiskCacheStats;
}

let build: TempDir;

beforeAll(async () => {
  build = await makeTempDir('cairn-cache-build-');
  const tsc = join(REPO, 'node_modules/typescript/bin/tsc');
  await promisify(execFile)(
    process.execPath,
    [
      tsc,
      '--noCheck',
      '--outDir',
      build.path,
      '--rootDir',
      REPO,
      '--module',
      'NodeNext',
      '--moduleResolution',
      'NodeNext',
      '--target',
      'ES2022',
      '--skipLibCheck',
      '--types',
      'node',
      join(REPO, 'src/cache/index.ts'),
      join(REPO, 'test/contract/map-chunk-source.ts'),
      join(REPO, 'test/contract/contents.ts'),
    ],
    { cwd: REPO },
  );
  await writeFile(join(build.path, 'package.json'), '{"type":"module"}\n');
  await symlink(join(REPO, 'node_modules'), join(build.path, 'node_modules'), 'dir');
  await writeFile(join(build.path, 'worker.mjs'), WORKER);
});

afterAll(async () => {
  await build?.cleanup();
});

function runWorker(dir: string, seed: number): Promise<WorkerResult> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(
      process.execPath,
      [join(build.path, 'worker.mjs'), dir, String(seed), String(ITERATIONS), String(MAX_BYTES), JSON.stringify(SIZES)],
      { env: { ...process.env, CAIRN_CACHE_BUILD: build.path }, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => {
      if (code !== 0) reject(new Error(`worker ${seed} exited with ${code}: ${stderr}`));
      else resolvePromise(JSON.parse(stdout) as WorkerResult);
    });
  });
}

/** The same workload, in this process (the TypeScript sources). */
async function runHere(dir: string, seed: number): Promise<WorkerResult> {
  const buffers = SIZES.map((size, i) => seededBytes(size, `mp/${i}`));
  const refs: BlobRef[] = buffers.map((b) => ({ digest: sha256(b), size: b.length }));
  const cache = await DiskCache.open(new MapChunkSource(contentsMap(buffers), { delayMs: 2 }), {
    dir,
    maxBytes: MAX_BYTES,
    flushIntervalMs: 20,
    flushBatch: 16,
  });
  const next = seededRandom(seed);
  let mismatches = 0;
  for (let i = 0; i < ITERATIONS; i++) {
    await Promise.all(
      [0, 1, 2, 3].map(async () => {
        const k = next(refs.length);
        const offset = next(refs[k]!.size);
        const length = 1 + next(1536 * KB);
        const got = await cache.read(refs[k]!, offset, length);
        if (!got.equals(buffers[k]!.subarray(offset, offset + length))) mismatches++;
      }),
    );
  }
  await cache.close();
  return { mismatches, stats: cache.stats() };
}

describe('DiskCache shared by several processes', () => {
  it('never serves wrong bytes, never fails a write, and leaves a cache that verifies', async () => {
    const dir = join(await testTempDir('cairn-cache-shared-'), 'cache');
    const results = await Promise.all([
      ...Array.from({ length: CHILDREN }, (_, i) => runWorker(dir, 1000 + i)),
      runHere(dir, 7),
    ]);
    for (const r of results) {
      expect(r.mismatches).toBe(0);
      expect(r.stats.corrupt).toBe(0);
      expect(r.stats.writeErrors).toBe(0);
      expect(r.stats.indexErrors).toBe(0);
    }
    const total = (k: keyof DiskCacheStats): number => results.reduce((n, r) => n + r.stats[k], 0);

    // The processes did share: some chunks were served that another process wrote, and they evicted each other.
    expect(total('hits')).toBeGreaterThan(0);
    expect(total('evictions')).toBeGreaterThan(0);

    // The index is under budget and its totals are right.
    const db = new Database(join(dir, 'index.db'), { readonly: true });
    try {
      const totals = db.prepare(`SELECT bytes, entries FROM totals`).get() as { bytes: number; entries: number };
      const actual = db.prepare(`SELECT coalesce(sum(size), 0) AS bytes, count(*) AS entries FROM chunks`).get();
      expect(totals).toEqual(actual);
      expect(totals.bytes).toBeLessThanOrEqual(MAX_BYTES);
    } finally {
      db.close();
    }

    // A fresh open that hashes every file: nothing corrupt, and every chunk it kept is served without a fetch.
    const buffers = SIZES.map((size, i) => seededBytes(size, `mp/${i}`));
    const byHex = new Map(buffers.map((b) => [hexOf(sha256(b)), { ref: { digest: sha256(b), size: b.length }, b }]));
    const inner = new MapChunkSource(contentsMap(buffers));
    const check = await DiskCache.open(inner, { dir, maxBytes: MAX_BYTES, verifyOnOpen: true });
    try {
      expect(check.stats().corrupt).toBe(0);
      expect(check.repairReport.filesIndexed + check.repairReport.tempsDeleted).toBe(0);
      const keys = (await readdir(join(dir, 'chunks'), { recursive: true })).flatMap((p) => {
        const parsed = parseChunkKey(basename(p));
        return parsed ? [parsed] : [];
      });
      expect(keys.length).toBe(check.stats().entries);
      expect(keys.length).toBeGreaterThan(0);
      for (const { digest, index } of keys) {
        const { ref, b } = byHex.get(hexOf(digest))!;
        const chunk = await check.readChunk(ref, index);
        expect(chunk.equals(b.subarray(index * CHUNK_BYTES, (index + 1) * CHUNK_BYTES))).toBe(true);
      }
      expect(inner.calls).toBe(0);
      expect(check.stats()).toMatchObject({ hits: keys.length, corrupt: 0 });
    } finally {
      await check.close();
    }
  });
});
