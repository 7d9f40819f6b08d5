/**
 * The BlobSource contract (src/fetch/blob-source.ts) as a reusable suite: every
 * source (the fetcher, each cache tier, each stack of them) runs it.
 *
 *     blobSourceContract('MemoryCache over X', async () => ({ source, contents, cleanup }));
 *
 * `makeSource` is called before every test and `cleanup` after it. `contents`
 * are the contents the source can serve, by digest: they must include at least
 * one content of 1..CHUNK_BYTES bytes and one of more than 2 * CHUNK_BYTES
 * bytes whose size is not a multiple of CHUNK_BYTES (contractContents() has
 * those and more). `cleanup` must not fail when the test closed the source.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { BlobRef, BlobSource } from '../../src/fetch/blob-source.js';
import { CHUNK_BYTES } from '../../src/model/chunks.js';
import { sha256, type Digest } from '../../src/model/digest.js';
import { CairnError, ErrorCode, isCairnError } from '../../src/model/errors.js';
import { seededRandom } from './contents.js';

export interface ContractSubject {
  source: BlobSource;
  contents: Map<Digest, Buffer>;
  cleanup: () => Promise<void>;
}

/** Resolves with the error a promise rejects with (fails the test if it resolves). */
async function rejection(p: Promise<unknown>): Promise<unknown> {
  try {
    await p;
  } catch (err) {
    return err;
  }
  throw new Error('expected a rejection, the promise resolved');
}

async function expectCode(p: Promise<unknown>, code: ErrorCode): Promise<void> {
  const err = await rejection(p);
  expect(err).toBeInstanceOf(CairnError);
  expect((err as CairnError).code).toBe(code);
}

function slice(content: Buffer, offset: number, length: number): Buffer {
  return content.subarray(offset, offset + Math.max(0, Math.min(length, content.length - offset)));
}

export function blobSourceContract(name: string, makeSource: () => Promise<ContractSubject>): void {
  describe(`BlobSource contract: ${name}`, () => {
    let subject: ContractSubject;
    let refs: BlobRef[];
    let small: BlobRef;
    let large: BlobRef;
    const content = (ref: BlobRef): Buffer => subject.contents.get(ref.digest)!;

    beforeEach(async () => {
      subject = await makeSource();
      refs = [...subject.contents].map(([digest, data]) => ({ digest, size: data.length }));
      const s = refs.find((r) => r.size > 0 && r.size <= CHUNK_BYTES);
      const l = refs.find((r) => r.size > 2 * CHUNK_BYTES && r.size % CHUNK_BYTES !== 0);
      if (!s || !l) {
        throw new Error('contract: contents need one of 1..CHUNK_BYTES bytes and one over 2 chunks, not whole chunks');
      }
      small = s;
      large = l;
    });

    afterEach(async () => {
      await subject.cleanup();
    });

    it('contents given are what their digests say', () => {
      for (const [digest, data] of subject.contents) expect(sha256(data)).toBe(digest);
    });

    it('reads every content whole, and clips a length past the end', async () => {
      for (const ref of refs) {
        expect((await subject.source.read(ref, 0, ref.size)).equals(content(ref))).toBe(true);
        expect((await subject.source.read(ref, 0, ref.size + 12345)).equals(content(ref))).toBe(true);
      }
    });

    it('returns exact slices', async () => {
      const next = seededRandom(42);
      for (const ref of refs) {
        if (ref.size === 0) continue;
        const data = content(ref);
        const cases: [number, number][] = [
          [0, 1],
          [1, 10],
          [ref.size - 1, 1],
          [ref.size - 1, 100],
          [Math.floor(ref.size / 2), ref.size],
        ];
        for (let i = 0; i < 12; i++) cases.push([next(ref.size), 1 + next(Math.min(ref.size, 3 * CHUNK_BYTES))]);
        for (const [offset, length] of cases) {
          const got = await subject.source.read(ref, offset, length);
          expect(got.length, `${ref.size}@${offset}+${length}`).toBe(Math.max(0, Math.min(length, ref.size - offset)));
          expect(got.equals(slice(data, offset, length)), `${ref.size}@${offset}+${length}`).toBe(true);
        }
      }
    });

    it('reads zero bytes at the end, after the end, and for a zero length', async () => {
      for (const ref of refs) {
        expect((await subject.source.read(ref, ref.size, 10)).length).toBe(0);
        expect((await subject.source.read(ref, ref.size + 1, 10)).length).toBe(0);
        expect((await subject.source.read(ref, ref.size + 10 * CHUNK_BYTES, CHUNK_BYTES)).length).toBe(0);
        expect((await subject.source.read(ref, 0, 0)).length).toBe(0);
      }
    });

    it('rejects a negative offset with RANGE', async () => {
      await expectCode(subject.source.read(small, -1, 10), ErrorCode.RANGE);
      await expectCode(subject.source.read(large, -CHUNK_BYTES, 10), ErrorCode.RANGE);
    });

    it('reads across, up to and from chunk boundaries of a large content', async () => {
      const data = content(large);
      const chunks = Math.ceil(large.size / CHUNK_BYTES);
      const cases: [number, number][] = [
        [CHUNK_BYTES - 1, 2],
        [CHUNK_BYTES - 7, 7],
        [CHUNK_BYTES, 7],
        [CHUNK_BYTES, CHUNK_BYTES],
        [CHUNK_BYTES - 1, CHUNK_BYTES + 2],
        [0, 2 * CHUNK_BYTES],
        [1, large.size - 2],
        [(chunks - 1) * CHUNK_BYTES, CHUNK_BYTES],
        [(chunks - 1) * CHUNK_BYTES - 3, 10],
        [large.size - 5, 5],
      ];
      for (let k = 1; k < chunks; k++) cases.push([k * CHUNK_BYTES - 5, 10]);
      for (const [offset, length] of cases) {
        const got = await subject.source.read(large, offset, length);
        expect(got.equals(slice(data, offset, length)), `@${offset}+${length}`).toBe(true);
      }
    });

    it('serves concurrent reads, of the same chunk and of different ones', async () => {
      const next = seededRandom(7);
      const reads: { ref: BlobRef; offset: number; length: number }[] = [];
      for (let i = 0; i < 16; i++) reads.push({ ref: large, offset: 10, length: 100 });
      for (let i = 0; i < 16; i++) reads.push({ ref: small, offset: 0, length: small.size });
      for (let i = 0; i < 32; i++) {
        const ref = refs[next(refs.length)]!;
        reads.push({ ref, offset: next(ref.size + 1), length: next(2 * CHUNK_BYTES) + 1 });
      }
      const got = await Promise.all(reads.map((r) => subject.source.read(r.ref, r.offset, r.length)));
      got.forEach((buf, i) => {
        const r = reads[i]!;
        expect(buf.equals(slice(content(r.ref), r.offset, r.length)), `${r.ref.size}@${r.offset}+${r.length}`).toBe(
          true,
        );
      });
    });

    it('hands out buffers the caller may modify without affecting later reads', async () => {
      for (const ref of [small, large]) {
        const first = await subject.source.read(ref, 0, 64);
        first.fill(0xaa);
        const again = await subject.source.read(ref, 0, 64);
        expect(again.equals(slice(content(ref), 0, 64))).toBe(true);
      }
    });

    it('rejects an unknown digest with NOT_FOUND', async () => {
      const unknownSmall: BlobRef = { digest: sha256('cairn contract: nobody has this'), size: 100 };
      const unknownLarge: BlobRef = { digest: sha256('cairn contract: nor this'), size: 3 * CHUNK_BYTES + 5 };
      await expectCode(subject.source.read(unknownSmall, 0, 100), ErrorCode.NOT_FOUND);
      await expectCode(subject.source.read(unknownLarge, CHUNK_BYTES - 2, 4), ErrorCode.NOT_FOUND);
    });

    it('rejects a read whose signal is already aborted with ABORTED, cold or warm', async () => {
      const aborted = AbortSignal.abort();
      await expectCode(subject.source.read(large, 0, 100, { signal: aborted }), ErrorCode.ABORTED);
      await subject.source.read(small, 0, small.size);
      await expectCode(subject.source.read(small, 0, small.size, { signal: aborted }), ErrorCode.ABORTED);
    });

    it('ends a read aborted in flight with ABORTED (or its bytes, if it was done), and keeps serving', async () => {
      for (const ref of [small, large]) {
        const controller = new AbortController();
        const pending = subject.source.read(ref, 0, ref.size, { signal: controller.signal });
        controller.abort();
        try {
          const got = await pending;
          expect(got.equals(content(ref))).toBe(true);
        } catch (err) {
          expect(isCairnError(err, ErrorCode.ABORTED), String(err)).toBe(true);
        }
        // An abort cancels one read, not the source, nor a concurrent reader of the same chunks.
        const a = new AbortController();
        const [cancelled, kept] = await Promise.allSettled([
          subject.source.read(ref, 0, ref.size, { signal: a.signal }),
          subject.source.read(ref, 0, ref.size),
          Promise.resolve().then(() => a.abort()),
        ]);
        if (cancelled.status === 'rejected') expect(isCairnError(cancelled.reason, ErrorCode.ABORTED)).toBe(true);
        expect(kept.status).toBe('fulfilled');
        if (kept.status === 'fulfilled') expect(kept.value.equals(content(ref))).toBe(true);
        expect((await subject.source.read(ref, 0, ref.size)).equals(content(ref))).toBe(true);
      }
    });

    it('closes twice without error, and rejects reads after close', async () => {
      await subject.source.read(small, 0, 10);
      await subject.source.close();
      await subject.source.close();
      const err = await rejection(subject.source.read(small, 0, 10));
      expect(err).toBeInstanceOf(CairnError);
    });
  });
}
