import { describe, expect, it } from 'vitest';
import {
  CHUNK_BYTES,
  chunkDigestsOf,
  isChunkBytes,
  LEGACY_CHUNK_BYTES,
  piecesOf,
  unpackChunks,
} from '../../src/model/chunks.js';
import { sha256, type Digest } from '../../src/model/digest.js';
import { CairnError, ErrorCode } from '../../src/model/errors.js';
import type { BlobRef, ReadOptions } from '../../src/fetch/blob-source.js';
import { chunkCount, chunkSpan, checkChunkIndex, readChunked, type ChunkSource } from '../../src/fetch/chunk-source.js';
import { SharedTask, SingleFlight } from '../../src/fetch/single-flight.js';
import { pseudoRandom } from '../fixtures/registry.js';

/** An in-memory ChunkSource over one content, recording which chunks were asked for. */
class MemoryChunks implements ChunkSource {
  readonly asked: number[] = [];
  fail: Map<number, CairnError> = new Map();
  /** Chunks that never answer (until aborted). */
  hang = new Set<number>();
  constructor(readonly content: Buffer) {}
  get ref(): BlobRef {
    return { digest: sha256(this.content), size: this.content.length };
  }
  chunkDigest(ref: BlobRef, index: number): Promise<Digest> {
    const { start, end } = chunkSpan(ref.size, index);
    return Promise.resolve(sha256(this.content.subarray(start, end)));
  }
  readChunk(ref: BlobRef, index: number, opts: ReadOptions = {}): Promise<Buffer> {
    checkChunkIndex(ref, index, 'memory');
    this.asked.push(index);
    const err = this.fail.get(index);
    if (err) return Promise.reject(err);
    if (this.hang.has(index)) {
      return new Promise((_resolve, reject) => {
        opts.signal?.addEventListener('abort', () => reject(new CairnError(ErrorCode.ABORTED, 'aborted')));
      });
    }
    const { start, end } = chunkSpan(ref.size, index);
    return Promise.resolve(this.content.subarray(start, end));
  }
  read(ref: BlobRef, offset: number, length: number, opts?: ReadOptions): Promise<Buffer> {
    return readChunked(this, ref, offset, length, opts);
  }
  close(): Promise<void> {
    return Promise.resolve();
  }
}

describe('chunk arithmetic', () => {
  it('counts chunks and spans them', () => {
    expect([0, 1, CHUNK_BYTES, CHUNK_BYTES + 1, 3 * CHUNK_BYTES].map(chunkCount)).toEqual([1, 1, 1, 2, 3]);
    expect(chunkSpan(0, 0)).toEqual({ start: 0, end: 0 });
    expect(chunkSpan(10, 0)).toEqual({ start: 0, end: 10 });
    expect(chunkSpan(CHUNK_BYTES + 5, 1)).toEqual({ start: CHUNK_BYTES, end: CHUNK_BYTES + 5 });
  });
});

describe('chunk sizes', () => {
  it('hashes pieces of the size asked, whatever the sizes fed', () => {
    const data = pseudoRandom(2 * LEGACY_CHUNK_BYTES + 5, 'pieces');
    for (const size of [CHUNK_BYTES, LEGACY_CHUNK_BYTES, 64 * 1024]) {
      const list = unpackChunks(chunkDigestsOf(data, size)!);
      expect(list).toHaveLength(piecesOf(data.length, size));
      list.forEach((d, i) => expect(d).toBe(sha256(data.subarray(i * size, (i + 1) * size))));
    }
    expect(chunkDigestsOf(data.subarray(0, CHUNK_BYTES))).toBeUndefined();
    expect(unpackChunks(chunkDigestsOf(data.subarray(0, CHUNK_BYTES + 1))!)).toHaveLength(2);
  });

  it('accepts powers of two from 64 KiB to 1 GiB as chunk sizes, nothing else', () => {
    expect([64 * 1024, CHUNK_BYTES, LEGACY_CHUNK_BYTES, 2 ** 30].every(isChunkBytes)).toBe(true);
    expect([0, 32 * 1024, 3 * 1024 * 1024, 2 ** 31, 1.5, '262144', -CHUNK_BYTES].some(isChunkBytes)).toBe(false);
  });
});

describe('readChunked', () => {
  const big = new MemoryChunks(pseudoRandom(3 * CHUNK_BYTES + 1000, 'chunked'));

  it('returns exactly the asked bytes, asking only for the chunks covering them', async () => {
    const ref = big.ref;
    const cases: [number, number][] = [
      [0, 10],
      [CHUNK_BYTES - 5, 10],
      [CHUNK_BYTES, CHUNK_BYTES],
      [100, 3 * CHUNK_BYTES],
      [3 * CHUNK_BYTES + 990, 100],
      [0, ref.size],
    ];
    for (const [offset, length] of cases) {
      big.asked.length = 0;
      const got = await big.read(ref, offset, length);
      const want = big.content.subarray(offset, Math.min(ref.size, offset + length));
      expect(got.equals(want), `${offset}+${length}`).toBe(true);
      const first = Math.floor(offset / CHUNK_BYTES);
      const last = Math.floor((offset + want.length - 1) / CHUNK_BYTES);
      expect(big.asked.sort()).toEqual(Array.from({ length: last - first + 1 }, (_, i) => first + i));
    }
  });

  it('returns a copy the caller may modify', async () => {
    const ref = big.ref;
    const got = await big.read(ref, 0, 4);
    got.fill(0);
    expect((await big.read(ref, 0, 4)).equals(big.content.subarray(0, 4))).toBe(true);
  });

  it('answers empty reads at or after the end, and of empty contents, without asking', async () => {
    big.asked.length = 0;
    expect((await big.read(big.ref, big.ref.size, 10)).length).toBe(0);
    expect((await big.read(big.ref, big.ref.size + 5, 10)).length).toBe(0);
    const empty = new MemoryChunks(Buffer.alloc(0));
    expect((await empty.read(empty.ref, 0, 10)).length).toBe(0);
    expect(big.asked).toEqual([]);
    expect(empty.asked).toEqual([]);
  });

  it('rejects a negative or fractional offset (RANGE) and a malformed ref (INVALID_INPUT)', async () => {
    await expect(big.read(big.ref, -1, 1)).rejects.toMatchObject({ code: ErrorCode.RANGE });
    await expect(big.read(big.ref, 1.5, 1)).rejects.toMatchObject({ code: ErrorCode.RANGE });
    await expect(big.read(big.ref, 0, Infinity)).rejects.toMatchObject({ code: ErrorCode.RANGE });
    await expect(big.read({ ...big.ref, size: 1.5 }, 0, 1)).rejects.toMatchObject({ code: ErrorCode.INVALID_INPUT });
  });

  it('rejects with the failing chunk error and cancels the other chunks of the read', async () => {
    const src = new MemoryChunks(pseudoRandom(3 * CHUNK_BYTES, 'failing'));
    src.hang.add(0);
    src.fail.set(2, new CairnError(ErrorCode.NOT_FOUND, 'gone'));
    await expect(src.read(src.ref, 0, src.ref.size)).rejects.toMatchObject({ code: ErrorCode.NOT_FOUND });
  });

  it('rejects with ABORTED when the caller aborts a multi-chunk read', async () => {
    const src = new MemoryChunks(pseudoRandom(2 * CHUNK_BYTES, 'abort'));
    src.hang.add(1);
    const ac = new AbortController();
    const p = src.read(src.ref, 0, src.ref.size, { signal: ac.signal });
    setTimeout(() => ac.abort(), 10);
    await expect(p).rejects.toMatchObject({ code: ErrorCode.ABORTED });
  });

  it('refuses a chunk of the wrong length from a broken tier (INTERNAL), never slicing garbage', async () => {
    const liar: Pick<ChunkSource, 'readChunk'> = { readChunk: () => Promise.resolve(Buffer.alloc(3)) };
    await expect(readChunked(liar, big.ref, 0, 10)).rejects.toMatchObject({ code: ErrorCode.INTERNAL });
  });
});

describe('SharedTask / SingleFlight', () => {
  const timeout = (): CairnError => new CairnError(ErrorCode.TIMEOUT, 'too slow');

  it('shares one task between callers; one caller aborting leaves the others waiting', async () => {
    const flights = new SingleFlight<string>();
    let runs = 0;
    let finish: (v: string) => void = () => {};
    const work = (): Promise<string> => {
      runs++;
      return new Promise((resolve) => (finish = resolve));
    };
    const a = new AbortController();
    const p1 = flights.task('k', work, { deadlineMs: 5000, onTimeout: timeout }).join(a.signal, 'a');
    const p2 = flights.task('k', work, { deadlineMs: 5000, onTimeout: timeout }).join(undefined, 'b');
    expect(runs).toBe(1);
    a.abort();
    await expect(p1).rejects.toMatchObject({ code: ErrorCode.ABORTED });
    expect(flights.size).toBe(1);
    finish('done');
    await expect(p2).resolves.toBe('done');
    expect(flights.size).toBe(0);
  });

  it('cancels the task when every caller has aborted, and forgets it at once', async () => {
    const flights = new SingleFlight<string>();
    let seen: AbortSignal | undefined;
    const task = flights.task(
      'k',
      (signal) => {
        seen = signal;
        return new Promise<string>(() => {});
      },
      { deadlineMs: 5000, onTimeout: timeout },
    );
    const a = new AbortController();
    const b = new AbortController();
    const pa = task.join(a.signal, 'a');
    const pb = task.join(b.signal, 'b');
    a.abort();
    expect(seen?.aborted).toBe(false);
    b.abort();
    await expect(pa).rejects.toMatchObject({ code: ErrorCode.ABORTED });
    await expect(pb).rejects.toMatchObject({ code: ErrorCode.ABORTED });
    expect(seen?.aborted).toBe(true);
    expect(flights.size).toBe(0);
    expect(task.isSettled).toBe(true);
  });

  it('rejects every waiter with the timeout error at the deadline even if the work ignores its signal', async () => {
    const started = performance.now();
    const task = new SharedTask<string>(
      () => new Promise<string>(() => {}),
      { deadlineMs: 50, onTimeout: timeout },
      () => {},
    );
    const results = await Promise.allSettled([task.join(undefined, 'a'), task.join(new AbortController().signal, 'b')]);
    expect(results.map((r) => r.status)).toEqual(['rejected', 'rejected']);
    for (const r of results) expect((r as PromiseRejectedResult).reason).toMatchObject({ code: ErrorCode.TIMEOUT });
    expect(performance.now() - started).toBeLessThan(1000);
  });

  it('runs without a timer when it has no deadline, and defaults the timeout error', async () => {
    let finish: (v: number) => void = () => {};
    const open = new SharedTask(
      () => new Promise<number>((resolve) => (finish = resolve)),
      {},
      () => {},
    );
    const p = open.join(undefined, 'x');
    await new Promise((r) => setTimeout(r, 30));
    expect(open.isSettled).toBe(false);
    finish(7);
    await expect(p).resolves.toBe(7);
    const timed = new SharedTask(
      () => new Promise<number>(() => {}),
      { deadlineMs: 10 },
      () => {},
    );
    await expect(timed.join(undefined, 'y')).rejects.toMatchObject({ code: ErrorCode.TIMEOUT, message: /10 ms/ });
  });

  it('reports how it settled, once', async () => {
    const outcomes: unknown[] = [];
    const ok = new SharedTask(
      () => Promise.resolve(1),
      { deadlineMs: 1000, onTimeout: timeout, onSettled: (o) => outcomes.push(o) },
      () => {},
    );
    await ok.join(undefined, 'x');
    const bad = new SharedTask(
      () => Promise.reject(new Error('boom')),
      { deadlineMs: 1000, onTimeout: timeout, onSettled: (o) => outcomes.push(o) },
      () => {},
    );
    await expect(bad.join(undefined, 'y')).rejects.toThrow('boom');
    const cancelled = new SharedTask(
      () => new Promise<number>(() => {}),
      { deadlineMs: 1000, onTimeout: timeout, onSettled: (o) => outcomes.push(o) },
      () => {},
    );
    const p = cancelled.join(undefined, 'z');
    cancelled.cancel(new CairnError(ErrorCode.UNAVAILABLE, 'closed'));
    await expect(p).rejects.toMatchObject({ code: ErrorCode.UNAVAILABLE });
    expect(outcomes).toEqual([
      { ok: true },
      { ok: false, error: expect.any(Error), cancelled: false },
      { ok: false, error: expect.any(CairnError), cancelled: true },
    ]);
  });
});
