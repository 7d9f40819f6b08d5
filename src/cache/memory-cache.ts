/**
 * The memory tier: verified chunks in an LRU with a byte budget, over any
 * ChunkSource (the disk cache, or the fetcher directly in diskless mode).
 */
import { LRUCache } from 'lru-cache';
import type { BlobRef, ReadOptions } from '../fetch/blob-source.js';
import { abortedError, checkChunkIndex, readChunked, type ChunkSource } from '../fetch/chunk-source.js';
import { SingleFlight } from '../fetch/single-flight.js';
import type { Digest } from '../model/digest.js';
import { CairnError, ErrorCode } from '../model/errors.js';
import { chunkKey, chunkLength, isWholeContent } from './chunks.js';
import { readServed, type ChunkDigestSource, type ServedChunk } from './types.js';

export interface MemoryCacheOptions {
  /** Byte budget: the sum of the lengths of the cached chunks never exceeds it. */
  maxBytes: number;
  /** Close the inner source when this cache is closed (default true: the top of a stack owns the stack). */
  closeInner?: boolean;
}

export interface MemoryCacheStats {
  /** readChunk calls served from memory. */
  hits: number;
  /** readChunk calls not served from memory (whether they started a fetch or joined one). */
  misses: number;
  /** Reads actually issued to the inner source for cacheable chunks (concurrent misses share one). */
  fetches: number;
  /** readChunk calls passed straight through: chunks larger than the budget, and empty contents. */
  passthrough: number;
  /** Chunks dropped to stay under the budget. */
  evictions: number;
  /** Bytes cached now. */
  bytes: number;
  /** Chunks cached now. */
  entries: number;
}

/**
 * A ChunkSource decorator caching verified chunks in memory, keyed by content
 * digest and chunk index, least recently used evicted first.
 *
 * - Only what the inner source returned (verified) is cached; failures are not.
 * - Concurrent misses of one chunk share one inner read; a caller aborting
 *   does not abort the others (see SingleFlight).
 * - Chunk buffers are shared between callers and with the cache: callers must
 *   not modify the buffers `readChunk` returns.
 * - `close()` drops the cache and, unless `closeInner` is false, closes the
 *   inner source; it is idempotent, and reads after it reject (UNAVAILABLE).
 */
export class MemoryCache implements ChunkDigestSource {
  private readonly lru: LRUCache<string, Buffer>;
  private readonly flights = new SingleFlight<ServedChunk>();
  private readonly maxBytes: number;
  private readonly closeInner: boolean;
  private closed = false;
  private closing: Promise<void> | undefined;
  private counters = { hits: 0, misses: 0, fetches: 0, passthrough: 0, evictions: 0 };

  constructor(
    private readonly inner: ChunkSource,
    opts: MemoryCacheOptions,
  ) {
    if (!Number.isSafeInteger(opts.maxBytes) || opts.maxBytes < 1) {
      throw new CairnError(
        ErrorCode.INVALID_OPTION,
        `memory cache: maxBytes must be a positive integer, got ${opts.maxBytes}`,
      );
    }
    this.maxBytes = opts.maxBytes;
    this.closeInner = opts.closeInner ?? true;
    this.lru = new LRUCache<string, Buffer>({
      maxSize: opts.maxBytes,
      maxEntrySize: opts.maxBytes,
      sizeCalculation: (chunk) => chunk.length,
      dispose: (_chunk, _key, reason) => {
        if (reason === 'evict') this.counters.evictions++;
      },
    });
  }

  async readChunk(ref: BlobRef, index: number, opts: ReadOptions = {}): Promise<Buffer> {
    this.checkOpen();
    const what = `memory cache: ${ref.digest} chunk ${index}`;
    checkChunkIndex(ref, index, what);
    if (opts.signal?.aborted) throw abortedError(what, opts.signal);
    const length = chunkLength(ref.size, index);
    if (length === 0 || length > this.maxBytes) {
      this.counters.passthrough++;
      return this.inner.readChunk(ref, index, opts);
    }
    const key = chunkKey(ref.digest, index);
    const cached = this.lru.get(key);
    // A length that disagrees with ref.size is not this caller's chunk: let the inner source decide.
    if (cached !== undefined && cached.length === length) {
      this.counters.hits++;
      opts.onServed?.('memory');
      return cached;
    }
    this.counters.misses++;
    // No deadline of our own: the inner source enforces its deadlines.
    const task = this.flights.task(
      key,
      async (signal) => {
        this.counters.fetches++;
        const served = await readServed(this.inner, ref, index, signal);
        if (served.chunk.length === length && !this.closed) this.lru.set(key, served.chunk);
        return served;
      },
      {},
    );
    const served = await task.join(opts.signal, what);
    if (served.tier) opts.onServed?.(served.tier);
    return served.chunk;
  }

  async read(ref: BlobRef, offset: number, length: number, opts: ReadOptions = {}): Promise<Buffer> {
    this.checkOpen();
    return readChunked(this, ref, offset, length, opts);
  }

  /** See ChunkSource: `ref.digest` for whole contents, else asked of the inner source. */
  async chunkDigest(ref: BlobRef, index: number, opts: ReadOptions = {}): Promise<Digest> {
    this.checkOpen();
    checkChunkIndex(ref, index, 'memory cache: chunk digest');
    if (isWholeContent(ref)) return ref.digest;
    return this.inner.chunkDigest(ref, index, opts);
  }

  stats(): MemoryCacheStats {
    return { ...this.counters, bytes: this.lru.calculatedSize, entries: this.lru.size };
  }

  /** Drops every cached chunk (not counted as evictions). */
  clear(): void {
    this.lru.clear();
  }

  close(): Promise<void> {
    if (!this.closing) {
      this.closed = true;
      this.flights.cancelAll(new CairnError(ErrorCode.UNAVAILABLE, 'memory cache: closed'));
      this.lru.clear();
      this.closing = this.closeInner ? this.inner.close() : Promise.resolve();
    }
    return this.closing;
  }

  private checkOpen(): void {
    if (this.closed) throw new CairnError(ErrorCode.UNAVAILABLE, 'memory cache: closed');
  }
}
