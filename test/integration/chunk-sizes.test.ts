/**
 * Chunk sizes: contents imported now are recorded in CHUNK_BYTES pieces; a store
 * written before chunk sizes were recorded (1 MiB pieces, no files.chunk_bytes)
 * keeps working: the registry serves its lists with chunkBytes 1 MiB and the
 * fetcher verifies whole 1 MiB pieces before cutting them into chunks.
 */
import Database from 'better-sqlite3';
import { open } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest';
import { DiskCache } from '../../src/cache/disk-cache.js';
import type { BlobRef } from '../../src/fetch/blob-source.js';
import { HttpBlobSource, type FetchEvent } from '../../src/fetch/http-source.js';
import { CHUNK_BYTES, chunkDigestsOf, LEGACY_CHUNK_BYTES, unpackChunks } from '../../src/model/chunks.js';
import { sha256 } from '../../src/model/digest.js';
import { CairnError, ErrorCode } from '../../src/model/errors.js';
import { RegistryStore } from '../../src/registry/store.js';
import { dir, file, layer } from '../fixtures/layers.js';
import {
  fetchRaw,
  importFixtureImage,
  pseudoRandom,
  startRegistry,
  type RunningRegistry,
} from '../fixtures/registry.js';
import { startProxy } from '../fixtures/proxy.js';
import { makeTempDir, testTempDir, type TempDir } from '../fixtures/tmp.js';

/** Old rows: three 1 MiB pieces and a partial fourth; a content whole under 1 MiB but chunked now. */
const OLD_BIG = pseudoRandom(3 * LEGACY_CHUNK_BYTES + 4321, 'sizes old big');
const OLD_MID = pseudoRandom(LEGACY_CHUNK_BYTES - 1000, 'sizes old mid');
const OLD_CORRUPT = pseudoRandom(2 * LEGACY_CHUNK_BYTES + 77, 'sizes old corrupt');
/** New rows, in CHUNK_BYTES pieces. */
const NEW_BIG = pseudoRandom(5 * CHUNK_BYTES + 999, 'sizes new big');
const NEW_CORRUPT = pseudoRandom(4 * CHUNK_BYTES + 5, 'sizes new corrupt');

const refOf = (content: Buffer): BlobRef => ({ digest: sha256(content), size: content.length });
const OLD = [OLD_BIG, OLD_MID, OLD_CORRUPT];

interface ListBody {
  digest: string;
  size: number;
  chunkBytes: number;
  chunks: string[];
}

let tmp: TempDir;
let store: RegistryStore;
let reg: RunningRegistry;

beforeAll(async () => {
  tmp = await makeTempDir('cairn-chunk-sizes-');
  const root = join(tmp.path, 'registry');
  const first = await RegistryStore.open(root);
  try {
    await importFixtureImage(first, {
      image: {
        ref: 'old:1',
        layers: [
          layer(
            [dir('f'), file('f/old-big', OLD_BIG), file('f/old-mid', OLD_MID), file('f/old-corrupt', OLD_CORRUPT)],
            'none',
          ),
        ],
      },
      target: 'lib/old:1',
    });
  } finally {
    first.close();
  }
  // Turn the store into one written before chunk sizes were recorded: no
  // chunk_bytes column, 1 MiB chunk lists (none for a content of at most 1 MiB).
  const db = new Database(join(root, 'registry.db'));
  try {
    const set = db.prepare('UPDATE files SET chunks = ? WHERE digest = ?');
    for (const c of OLD) set.run(chunkDigestsOf(c, LEGACY_CHUNK_BYTES) ?? null, sha256(c));
    db.exec('ALTER TABLE files DROP COLUMN chunk_bytes');
  } finally {
    db.close();
  }
  // Opened by this cairn, then a new image imported on top.
  store = await RegistryStore.open(root);
  await importFixtureImage(store, {
    image: {
      ref: 'new:1',
      layers: [layer([dir('g'), file('g/new-big', NEW_BIG), file('g/new-corrupt', NEW_CORRUPT)], 'none')],
    },
    target: 'lib/new:1',
  });
  reg = await startRegistry(store, { closeAfterTest: false });
});

afterAll(async () => {
  await reg?.close();
  store?.close();
  await tmp?.cleanup();
});

function source(url: string): { src: HttpBlobSource; events: FetchEvent[] } {
  const events: FetchEvent[] = [];
  const src = new HttpBlobSource({ url, retries: 1, backoffMs: 1, onEvent: (e) => events.push(e) });
  onTestFinished(() => src.close());
  return { src, events };
}

async function list(content: Buffer): Promise<ListBody> {
  const res = await fetchRaw(reg.url, `/api/v1/files/${sha256(content)}/chunks`);
  expect(res.status).toBe(200);
  return res.json<ListBody>();
}

async function rejectionOf(p: Promise<unknown>): Promise<CairnError> {
  try {
    await p;
  } catch (err) {
    expect(err).toBeInstanceOf(CairnError);
    return err as CairnError;
  }
  throw new Error('expected a rejection');
}

/** Overwrites `n` bytes of a stored content at `at`, in the registry's blob file. */
async function corruptStored(content: Buffer, at: number, n = 16): Promise<void> {
  const fh = await open(store.blobs.path(sha256(content)), 'r+');
  try {
    await fh.write(Buffer.alloc(n, 0x5a), 0, n, at);
  } finally {
    await fh.close();
  }
}

describe('chunk sizes in the registry', () => {
  it('adds the chunk size column to an old store and serves old lists with chunkBytes 1 MiB', async () => {
    const cols = store.meta.db.prepare(`SELECT name FROM pragma_table_info('files')`).all() as { name: string }[];
    expect(cols.map((c) => c.name)).toContain('chunk_bytes');
    const big = await list(OLD_BIG);
    expect(big).toMatchObject({ size: OLD_BIG.length, chunkBytes: LEGACY_CHUNK_BYTES });
    expect(big.chunks).toEqual(unpackChunks(chunkDigestsOf(OLD_BIG, LEGACY_CHUNK_BYTES)!));
    expect(big.chunks).toHaveLength(4);
    // At most 1 MiB: one piece, the content itself.
    expect(await list(OLD_MID)).toMatchObject({ chunkBytes: LEGACY_CHUNK_BYTES, chunks: [sha256(OLD_MID)] });
  });

  it('records new contents in CHUNK_BYTES pieces, and says so', async () => {
    const l = await list(NEW_BIG);
    expect(l.chunkBytes).toBe(CHUNK_BYTES);
    expect(l.chunks).toHaveLength(Math.ceil(NEW_BIG.length / CHUNK_BYTES));
    l.chunks.forEach((c, i) => expect(c).toBe(sha256(NEW_BIG.subarray(i * CHUNK_BYTES, (i + 1) * CHUNK_BYTES))));
    expect(store.meta.file(sha256(NEW_BIG))?.chunkBytes).toBe(CHUNK_BYTES);
  });

  it('a later import of old contents keeps their lists and the size of their pieces together', async () => {
    await importFixtureImage(store, {
      image: { ref: 'again:1', layers: [layer([file('again', OLD_MID), file('big-again', OLD_BIG)], 'none')] },
      target: 'lib/again:1',
    });
    // Already stored: not hashed again, so their 1 MiB lists (or none) stay, with their size.
    expect(await list(OLD_MID)).toMatchObject({ chunkBytes: LEGACY_CHUNK_BYTES, chunks: [sha256(OLD_MID)] });
    expect(await list(OLD_BIG)).toMatchObject({ chunkBytes: LEGACY_CHUNK_BYTES });
    expect((await list(OLD_BIG)).chunks).toEqual(unpackChunks(chunkDigestsOf(OLD_BIG, LEGACY_CHUNK_BYTES)!));
  });
});

describe('HttpBlobSource: chunk by chunk, or ahead for sequential readers', () => {
  it('fetches sparse reads one chunk each, and a sequential reader in growing windows of verified chunks', async () => {
    const proxy = await startProxy(reg.url);
    onTestFinished(() => proxy.close());
    const { src } = source(proxy.url);
    const ref = refOf(NEW_BIG);
    const range = (first: number, last: number): string =>
      `bytes=${first * CHUNK_BYTES}-${Math.min(ref.size, (last + 1) * CHUNK_BYTES) - 1}`;
    // Sparse: chunks 4 and 1, one chunk a request.
    expect(
      (await src.read(ref, 4 * CHUNK_BYTES + 10, 10)).equals(
        NEW_BIG.subarray(4 * CHUNK_BYTES + 10, 4 * CHUNK_BYTES + 20),
      ),
    ).toBe(true);
    expect((await src.read(ref, CHUNK_BYTES, 10)).equals(NEW_BIG.subarray(CHUNK_BYTES, CHUNK_BYTES + 10))).toBe(true);
    // In order from chunk 1: the third chunk in order (3) brings chunk 4 with it; chunk 5 is the last.
    for (let i = 2; i < 6; i++) {
      const got = await src.readChunk(ref, i);
      expect(got.equals(NEW_BIG.subarray(i * CHUNK_BYTES, (i + 1) * CHUNK_BYTES))).toBe(true);
      expect(got.length).toBe(Math.min(CHUNK_BYTES, ref.size - i * CHUNK_BYTES));
    }
    expect(proxy.requests.filter((r) => r.range !== undefined).map((r) => r.range)).toEqual([
      range(4, 4),
      range(1, 1),
      range(2, 2),
      range(3, 4),
      range(5, 5),
    ]);
  });
});

describe('HttpBlobSource over an old store', () => {
  it('reads an old content correctly: each 1 MiB piece fetched once, verified, cut into chunks', async () => {
    const proxy = await startProxy(reg.url);
    onTestFinished(() => proxy.close());
    const { src } = source(proxy.url);
    const ref = refOf(OLD_BIG);
    // Sequential 64 KiB reads, as the kernel issues them.
    const parts: Buffer[] = [];
    for (let off = 0; off < ref.size; off += 64 * 1024) parts.push(await src.read(ref, off, 64 * 1024));
    expect(Buffer.concat(parts).equals(OLD_BIG)).toBe(true);
    const ranges = proxy.requests.filter((r) => r.range !== undefined).map((r) => r.range);
    expect(ranges).toEqual([
      `bytes=0-${LEGACY_CHUNK_BYTES - 1}`,
      `bytes=${LEGACY_CHUNK_BYTES}-${2 * LEGACY_CHUNK_BYTES - 1}`,
      `bytes=${2 * LEGACY_CHUNK_BYTES}-${3 * LEGACY_CHUNK_BYTES - 1}`,
      `bytes=${3 * LEGACY_CHUNK_BYTES}-${OLD_BIG.length - 1}`,
    ]);
    // Slices across chunk and piece boundaries.
    for (const [off, len] of [
      [CHUNK_BYTES - 3, 7],
      [LEGACY_CHUNK_BYTES - 10, 20],
      [LEGACY_CHUNK_BYTES + CHUNK_BYTES - 1, 2 * CHUNK_BYTES],
      [OLD_BIG.length - 100, 1000],
    ] as const) {
      expect((await src.read(ref, off, len)).equals(OLD_BIG.subarray(off, off + len))).toBe(true);
    }
  });

  it('gives the digest of an old content chunk: that of its bytes, as verified against the 1 MiB piece', async () => {
    const { src } = source(reg.url);
    const ref = refOf(OLD_BIG);
    for (const i of [0, 5, Math.ceil(ref.size / CHUNK_BYTES) - 1]) {
      expect(await src.chunkDigest(ref, i)).toBe(sha256(OLD_BIG.subarray(i * CHUNK_BYTES, (i + 1) * CHUNK_BYTES)));
    }
  });

  it('reads an old whole content of more than one chunk with one request, verified by its digest', async () => {
    const proxy = await startProxy(reg.url);
    onTestFinished(() => proxy.close());
    const { src } = source(proxy.url);
    const ref = refOf(OLD_MID);
    expect((await src.read(ref, 0, ref.size)).equals(OLD_MID)).toBe(true);
    expect(
      (await src.read(ref, CHUNK_BYTES + 5, 100)).equals(OLD_MID.subarray(CHUNK_BYTES + 5, CHUNK_BYTES + 105)),
    ).toBe(true);
  });

  it('serves an old content from a disk cache once the registry is gone', async () => {
    const cacheDir = await testTempDir('cairn-sizes-disk-');
    const ref = refOf(OLD_BIG);
    const online = await DiskCache.open(source(reg.url).src, { dir: cacheDir, maxBytes: 64 * LEGACY_CHUNK_BYTES });
    expect((await online.read(ref, 0, ref.size)).equals(OLD_BIG)).toBe(true);
    await online.whenIdle();
    await online.close();
    const gone = new HttpBlobSource({ url: 'http://127.0.0.1:9', retries: 0, deadlineMs: 500 });
    const offline = await DiskCache.open(gone, { dir: cacheDir, maxBytes: 64 * LEGACY_CHUNK_BYTES });
    onTestFinished(() => offline.close());
    expect((await offline.read(ref, 0, ref.size)).equals(OLD_BIG)).toBe(true);
    expect(offline.stats()).toMatchObject({ misses: 0, corrupt: 0 });
  });
});

describe('a corrupt stored chunk is never served', () => {
  it('old store: a read of the corrupt 1 MiB piece fails DIGEST_MISMATCH; other pieces still read', async () => {
    await corruptStored(OLD_CORRUPT, LEGACY_CHUNK_BYTES + 500);
    const { src, events } = source(reg.url);
    const ref = refOf(OLD_CORRUPT);
    // Chunk 0 of the piece: the corruption is in another chunk of it, the whole piece is refused.
    const idx = LEGACY_CHUNK_BYTES / CHUNK_BYTES;
    const err = await rejectionOf(src.readChunk(ref, idx));
    expect(err.code).toBe(ErrorCode.DIGEST_MISMATCH);
    expect(events.filter((e) => e.kind === 'verify-failed').length).toBeGreaterThan(0);
    expect((await src.read(ref, 0, 100)).equals(OLD_CORRUPT.subarray(0, 100))).toBe(true);
    expect((await src.read(ref, 2 * LEGACY_CHUNK_BYTES, 77)).equals(OLD_CORRUPT.subarray(2 * LEGACY_CHUNK_BYTES))).toBe(
      true,
    );
  });

  it('new store: the corrupt chunk fails DIGEST_MISMATCH and nothing of it reaches a disk cache', async () => {
    await corruptStored(NEW_CORRUPT, 2 * CHUNK_BYTES + 10);
    const cacheDir = await testTempDir('cairn-sizes-corrupt-');
    const cache = await DiskCache.open(source(reg.url).src, { dir: cacheDir, maxBytes: 64 * CHUNK_BYTES });
    onTestFinished(() => cache.close());
    const ref = refOf(NEW_CORRUPT);
    expect((await rejectionOf(cache.read(ref, 2 * CHUNK_BYTES, 100))).code).toBe(ErrorCode.DIGEST_MISMATCH);
    expect((await rejectionOf(cache.read(ref, CHUNK_BYTES, 2 * CHUNK_BYTES))).code).toBe(ErrorCode.DIGEST_MISMATCH);
    expect((await cache.read(ref, CHUNK_BYTES, 100)).equals(NEW_CORRUPT.subarray(CHUNK_BYTES, CHUNK_BYTES + 100))).toBe(
      true,
    );
    await cache.whenIdle();
    const index = new Database(join(cacheDir, 'index.db'), { readonly: true });
    onTestFinished(() => void index.close());
    const keys = (index.prepare('SELECT key FROM chunks').all() as { key: string }[]).map((r) => r.key);
    expect(keys).toEqual([`${ref.digest.slice(7)}.1`]);
  });
});
