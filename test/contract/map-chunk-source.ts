/**
 * A ChunkSource test double: contents from a Map, verified like the fetcher
 * verifies (whole contents by their digest, larger ones chunk by chunk), with
 * knobs for tests: a delay, a pause (hold reads in flight), call counts, and a
 * liar mode that flips a byte of what it returns.
 */
import type { BlobRef, ReadOptions } from '../../src/fetch/blob-source.js';
import { abortedError, checkChunkIndex, chunkSpan, readChunked } from '../../src/fetch/chunk-source.js';
import type { ChunkDigestSource } from '../../src/cache/types.js';
import { CHUNK_BYTES } from '../../src/model/chunks.js';
import { sha256, type Digest } from '../../src/model/digest.js';
import { CairnError, ErrorCode } from '../../src/model/errors.js';

export interface MapChunkSourceOptions {
  /** Milliseconds every readChunk takes (abortable). */
  delayMs?: number;
}

export class MapChunkSource implements ChunkDigestSource {
  /** readChunk calls that reached the contents (after argument checks), in total and by `<digest>#<index>`. */
  calls = 0;
  readonly callsByChunk = new Map<string, number>();
  /** readChunk calls whose signal aborted while they waited. */
  aborted = 0;
  chunkDigestCalls = 0;
  closeCalls = 0;
  /** When true, returned chunks have one byte flipped (a source breaking its contract). */
  lie = false;
  delayMs: number;
  private readonly chunkDigests = new Map<Digest, Digest[]>();
  private paused: { promise: Promise<void>; release: () => void } | undefined;
  private closed = false;

  constructor(
    readonly contents: Map<Digest, Buffer>,
    opts: MapChunkSourceOptions = {},
  ) {
    this.delayMs = opts.delayMs ?? 0;
  }

  /** Holds the readChunk calls that start from now on until the returned function is called. */
  pause(): () => void {
    if (!this.paused) {
      let release!: () => void;
      const promise = new Promise<void>((resolve) => (release = resolve));
      this.paused = { promise, release };
    }
    const p = this.paused;
    return () => {
      if (this.paused === p) this.paused = undefined;
      p.release();
    };
  }

  callsFor(digest: Digest, index = 0): number {
    return this.callsByChunk.get(`${digest}#${index}`) ?? 0;
  }

  async readChunk(ref: BlobRef, index: number, opts: ReadOptions = {}): Promise<Buffer> {
    const what = `map source: ${ref.digest} chunk ${index}`;
    if (this.closed) throw new CairnError(ErrorCode.UNAVAILABLE, 'map source: closed');
    checkChunkIndex(ref, index, what);
    if (opts.signal?.aborted) throw abortedError(what, opts.signal);
    const content = this.contents.get(ref.digest);
    if (!content) throw new CairnError(ErrorCode.NOT_FOUND, `${what}: unknown content`);
    if (content.length !== ref.size) {
      throw new CairnError(ErrorCode.INVALID_INPUT, `${what}: size ${ref.size}, the content has ${content.length}`);
    }
    this.calls++;
    const key = `${ref.digest}#${index}`;
    this.callsByChunk.set(key, (this.callsByChunk.get(key) ?? 0) + 1);
    await this.wait(opts.signal, what);
    const span = chunkSpan(ref.size, index);
    const chunk = Buffer.from(content.subarray(span.start, span.end));
    const expected = await this.digestOf(ref, index);
    if (sha256(chunk) !== expected) throw new CairnError(ErrorCode.DIGEST_MISMATCH, `${what}: mismatch`);
    if (this.lie && chunk.length > 0) chunk[0] = chunk[0]! ^ 0xff;
    return chunk;
  }

  read(ref: BlobRef, offset: number, length: number, opts: ReadOptions = {}): Promise<Buffer> {
    if (this.closed) return Promise.reject(new CairnError(ErrorCode.UNAVAILABLE, 'map source: closed'));
    return readChunked(this, ref, offset, length, opts);
  }

  async chunkDigest(ref: BlobRef, index: number, opts: ReadOptions = {}): Promise<Digest> {
    const what = `map source: ${ref.digest} chunk ${index} digest`;
    if (this.closed) throw new CairnError(ErrorCode.UNAVAILABLE, 'map source: closed');
    checkChunkIndex(ref, index, what);
    if (opts.signal?.aborted) throw abortedError(what, opts.signal);
    if (!this.contents.has(ref.digest)) throw new CairnError(ErrorCode.NOT_FOUND, `${what}: unknown content`);
    this.chunkDigestCalls++;
    return this.digestOf(ref, index);
  }

  async close(): Promise<void> {
    this.closeCalls++;
    this.closed = true;
  }

  private digestOf(ref: BlobRef, index: number): Promise<Digest> {
    if (ref.size <= CHUNK_BYTES) return Promise.resolve(ref.digest);
    let list = this.chunkDigests.get(ref.digest);
    if (!list) {
      const content = this.contents.get(ref.digest)!;
      list = [];
      for (let off = 0; off < content.length; off += CHUNK_BYTES) {
        list.push(sha256(content.subarray(off, off + CHUNK_BYTES)));
      }
      this.chunkDigests.set(ref.digest, list);
    }
    return Promise.resolve(list[index]!);
  }

  private async wait(signal: AbortSignal | undefined, what: string): Promise<void> {
    const waits: Promise<unknown>[] = [];
    if (this.delayMs > 0) waits.push(new Promise((resolve) => setTimeout(resolve, this.delayMs)));
    if (this.paused) waits.push(this.paused.promise);
    if (waits.length === 0) return;
    if (!signal) {
      await Promise.all(waits);
      return;
    }
    await new Promise<void>((resolve, reject) => {
      const onAbort = (): void => {
        this.aborted++;
        reject(abortedError(what, signal));
      };
      signal.addEventListener('abort', onAbort, { once: true });
      void Promise.all(waits).then(() => {
        signal.removeEventListener('abort', onAbort);
        resolve();
      });
    });
  }
}
