/**
 * The registry fetcher: file contents by digest over HTTP from cairn's
 * registry (`GET /api/v1/files/{digest}`, `GET /api/v1/files/{digest}/chunks`),
 * verified chunk by chunk, with a deadline per read and retries inside it.
 */
import { createHash } from 'node:crypto';
import { CHUNK_BYTES, isChunkBytes, MIN_CHUNK_BYTES, piecesOf } from '../model/chunks.js';
import { isDigest, sha256, type Digest } from '../model/digest.js';
import { CairnError, ErrorCode } from '../model/errors.js';
import type { BlobRef, ReadOptions } from './blob-source.js';
import { abortedError, checkChunkIndex, chunkSpan, readChunked, type ChunkSource } from './chunk-source.js';
import { SingleFlight } from './single-flight.js';
import { HttpPool, IDLE_TIMEOUT_CODE, type HttpResponse } from './http-pool.js';

/** What happened to one request (or one read), for metrics and logs. */
export interface FetchEvent {
  /**
   * - `fetch`: an attempt succeeded and its bytes were verified (or, for the
   *   chunk list, parsed);
   * - `retry`: an attempt failed and another one follows;
   * - `verify-failed`: an attempt's bytes did not match their digest (followed
   *   by a `retry`, or by an `error` with DIGEST_MISMATCH);
   * - `error`: a chunk fetch failed for good; every reader waiting for it
   *   rejects with `code`. Reads cancelled by their callers (every reader
   *   aborted) or by `close()` are not errors and report nothing.
   */
  kind: 'fetch' | 'retry' | 'error' | 'verify-failed';
  digest: Digest;
  /** The chunk index (0 for a content of at most one chunk, fetched whole), or `list` for its chunk digests. */
  chunk: number | 'list';
  /** Response body bytes received by the attempt (0 for `error`). */
  bytes: number;
  /** The attempt's duration; for `error`, the time since the fetch started. */
  ms: number;
  /** 1-based attempt number; for `error`, the attempts made for the chunk itself (0 when it failed before any, e.g. on its chunk list). */
  attempt: number;
  /** Why the attempt or the fetch failed. */
  reason?: string;
  /** For `error`: the CairnError code the readers reject with. */
  code?: ErrorCode;
}

export interface HttpBlobSourceOptions {
  /** The registry's base URL, e.g. `http://registry:5000` (a path prefix is kept). */
  url: string;
  /**
   * Time allowed for one chunk fetch, retries included (default 10000 ms). A
   * read resolves or rejects within it, whatever the server does (never
   * answers, trickles bytes); concurrent chunk fetches of one read run in parallel.
   */
  deadlineMs?: number;
  /** Time allowed for one attempt, headers and body (default: half the deadline, rounded up). */
  attemptTimeoutMs?: number;
  /** Attempts after the first on failures that may pass: refused or reset connections, 5xx, 408, 429, timed-out attempts (default 3). */
  retries?: number;
  /** Base of the jittered exponential backoff between attempts (default 100 ms); never waits past the deadline. */
  backoffMs?: number;
  /** Keep-alive connections to the registry (default 8). */
  connections?: number;
  /** Called synchronously for every FetchEvent; exceptions it throws are ignored. */
  onEvent?: (e: FetchEvent) => void;
}

const MAX_TIMER_MS = 2_147_483_647;
/** Chunk lists kept in memory (a 1 GiB content's list is 32 KiB packed). */
const CHUNK_LISTS_KEPT = 256;
/** Verified registry pieces larger than a chunk (a store chunked at 1 MiB) kept for the neighbouring chunks. */
const PIECE_CACHE_BYTES = 16 * 1024 * 1024;
/** Chunk digests derived from verified pieces of another size (what a disk tier stores beside the chunk). */
const DERIVED_DIGESTS_KEPT = 4096;
/**
 * Sequential readers get several chunks per request: from the third chunk
 * read in order the window doubles with each, up to this many chunks (1 MiB),
 * and falls back to one on a jump, so sparse readers (two neighbouring pages
 * of a mapped library are no stream) still fetch chunk by chunk.
 */
const MAX_AHEAD_CHUNKS = 4;
/** Chunks fetched ahead and not asked for yet, at most. */
const AHEAD_KEPT = 64;
/** Contents whose last chunk read is remembered, to tell sequential readers. */
const STREAMS_KEPT = 256;
/** Most bytes of an error response body read for its message. */
const ERROR_BODY_BYTES = 4096;
const BACKOFF_CAP_MS = 5000;

const KNOWN_OPTIONS = new Set([
  'url',
  'deadlineMs',
  'attemptTimeoutMs',
  'retries',
  'backoffMs',
  'connections',
  'onEvent',
]);

function optionError(message: string): CairnError {
  return new CairnError(ErrorCode.INVALID_OPTION, `HttpBlobSource: ${message}`);
}

function shown(v: unknown): string {
  if (typeof v === 'string') return JSON.stringify(v.slice(0, 200));
  if (typeof v === 'number' || typeof v === 'boolean' || typeof v === 'bigint') return String(v);
  return v === null ? 'null' : typeof v;
}

function intOption(
  opts: Record<string, unknown>,
  name: string,
  fallback: number,
  min: 0 | 1,
  max: number,
  maxText = String(max),
): number {
  const v = opts[name];
  if (v === undefined) return fallback;
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min) {
    throw optionError(`option ${name} must be a ${min === 1 ? 'positive' : 'non-negative'} integer (got ${shown(v)})`);
  }
  if (v > max) throw optionError(`option ${name} must be at most ${maxText} (got ${v})`);
  return v;
}

/** An attempt that failed in a way another attempt may not. */
class AttemptFailure extends Error {
  constructor(
    readonly kind: 'transport' | 'timeout' | 'status' | 'mismatch' | 'malformed',
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'AttemptFailure';
  }
}

interface Target {
  digest: Digest;
  chunk: number | 'list';
  /** e.g. `sha256:… chunk 3`, for messages. */
  label: string;
  /** Attempts made so far. */
  attempts: number;
}

interface Progress {
  bytes: number;
}

/** Rejects with `signal.reason` as soon as `signal` aborts, whatever `p` does. */
function raceSignal<T>(p: Promise<T>, signal: AbortSignal): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(signal.reason);
    if (signal.aborted) onAbort();
    else signal.addEventListener('abort', onAbort, { once: true });
    p.then(
      (v) => {
        signal.removeEventListener('abort', onAbort);
        resolve(v);
      },
      (err: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(err);
      },
    );
  });
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    if (signal.aborted) {
      reject(signal.reason);
      return;
    }
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(signal.reason);
    };
    const timer = setTimeout(() => {
      signal.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal.addEventListener('abort', onAbort, { once: true });
  });
}

function header(res: HttpResponse, name: string): string | undefined {
  const v = res.headers[name];
  return Array.isArray(v) ? v.join(', ') : v;
}

/** Reads at most `limit` bytes of a body; undefined when it is longer. */
async function readLimited(body: HttpResponse['body'], limit: number): Promise<Buffer | undefined> {
  const parts: Buffer[] = [];
  let total = 0;
  for await (const piece of body as AsyncIterable<Buffer>) {
    total += piece.length;
    if (total > limit) return undefined; // leaving the loop destroys the body
    parts.push(piece);
  }
  return Buffer.concat(parts, total);
}

/** A chunk list as served: the content's size, the size of its pieces and their packed 32-byte digests. */
interface ChunkList {
  size: number;
  chunkBytes: number;
  packed: Buffer;
}

/** Verified bytes `[start, start + body.length)` of a content. */
interface Cover {
  start: number;
  body: Buffer;
}

/**
 * A BlobSource (and ChunkSource) reading contents from cairn's registry over
 * HTTP with a pool of keep-alive connections (node:http).
 *
 * - A content of at most CHUNK_BYTES is fetched whole (`GET /files/{digest}`)
 *   and verified against its digest. A larger one is fetched by chunk
 *   (chunk-aligned Range requests), only the chunks a read covers, each
 *   verified against the registry's chunk list (fetched once per digest, kept
 *   in a small bounded map). The first bytes of a 1 GiB file cost one chunk.
 * - The list says the size of the registry's pieces (`chunkBytes`, a power of
 *   two): pieces of CHUNK_BYTES or less are fetched by chunk and each piece
 *   verified; a larger piece (a store chunked at 1 MiB before chunk sizes were
 *   recorded) is fetched whole, verified, and cut into chunks, and kept a little
 *   while (PIECE_CACHE_BYTES) for its neighbouring chunks. Either way no byte is
 *   returned before the registry's digest of its piece matched.
 * - A reader going through a content in order gets the next chunks in the
 *   same request (up to MAX_AHEAD_CHUNKS, each verified), kept until asked
 *   for: fewer round trips for a cold sequential read.
 * - Concurrent reads of one chunk share one fetch; a caller that aborts rejects
 *   at once (ABORTED) without aborting the fetch for the others; the fetch is
 *   cancelled when every caller has aborted.
 * - Each chunk fetch has a deadline (`deadlineMs`, from its start, covering the
 *   chunk list, every attempt and the backoff between them), enforced by a
 *   timer, not by socket idle timeouts: a server that never answers or that
 *   trickles bytes fails the read with TIMEOUT within the deadline.
 * - Retries (jittered exponential backoff, never past the deadline): refused
 *   or reset connections, 5xx, 408, 429, attempts that time out, malformed
 *   responses. No retry: 404 (NOT_FOUND), 400 (INVALID_INPUT), 416 (RANGE).
 *   Bytes that do not match their digest are fetched once more, then the read
 *   rejects with DIGEST_MISMATCH; unverified bytes are never returned.
 *   Retries exhausted: UNAVAILABLE (TIMEOUT when the last attempt timed out),
 *   naming the URL and the digest.
 * - `close()` cancels fetches in flight (their readers reject with
 *   UNAVAILABLE), destroys the pool, and is idempotent; later reads reject
 *   with UNAVAILABLE.
 */
export class HttpBlobSource implements ChunkSource {
  /** The registry base URL as used in messages (no trailing slash). */
  readonly url: string;
  readonly deadlineMs: number;
  readonly attemptTimeoutMs: number;
  readonly retries: number;
  readonly backoffMs: number;
  readonly connections: number;
  private readonly onEvent: ((e: FetchEvent) => void) | undefined;
  private readonly basePath: string;
  private readonly pool: HttpPool;
  private readonly chunkFlights = new SingleFlight<Buffer>();
  private readonly listFlights = new SingleFlight<ChunkList>();
  private readonly pieceFlights = new SingleFlight<Cover>();
  /** Verified pieces larger than a chunk, least recently used first. */
  private readonly pieces = new Map<string, Cover>();
  private pieceBytes = 0;
  /** Digests of chunks cut from (or made of) pieces of another size, by `digest/index`. */
  private readonly derived = new Map<string, Digest>();
  /** Verified chunks fetched ahead (or being fetched), by `digest/index`, oldest first. */
  private readonly ahead = new Map<string, Promise<Buffer>>();
  /** Per content: the chunk a sequential reader would ask for next, and how many it read in order. */
  private readonly streams = new Map<Digest, { next: number; run: number }>();
  /** Chunk lists by digest, least recently used first. */
  private readonly lists = new Map<Digest, ChunkList>();
  private closed = false;
  private closing: Promise<void> | undefined;

  constructor(options: HttpBlobSourceOptions) {
    if (typeof options !== 'object' || options === null) throw optionError('options must be an object with a url');
    const opts = options as unknown as Record<string, unknown>;
    for (const key of Object.keys(opts)) {
      if (!KNOWN_OPTIONS.has(key)) throw optionError(`unknown option ${key}`);
    }
    const rawUrl = opts.url;
    if (typeof rawUrl !== 'string') throw optionError(`option url must be a string (got ${shown(rawUrl)})`);
    let u: URL;
    try {
      u = new URL(rawUrl);
    } catch {
      throw optionError(`option url must be an http:// or https:// URL (got ${shown(rawUrl)})`);
    }
    if (u.protocol !== 'http:' && u.protocol !== 'https:') {
      throw optionError(`option url must be an http:// or https:// URL (got ${shown(rawUrl)})`);
    }
    if (u.username !== '' || u.password !== '' || u.search !== '' || u.hash !== '') {
      throw optionError(`option url must not have credentials, a query or a fragment (got ${shown(rawUrl)})`);
    }
    this.basePath = u.pathname.replace(/\/+$/, '');
    this.url = `${u.origin}${this.basePath}`;

    this.deadlineMs = intOption(opts, 'deadlineMs', 10_000, 1, MAX_TIMER_MS);
    this.attemptTimeoutMs = intOption(
      opts,
      'attemptTimeoutMs',
      Math.ceil(this.deadlineMs / 2),
      1,
      this.deadlineMs,
      `deadlineMs (${this.deadlineMs})`,
    );
    this.retries = intOption(opts, 'retries', 3, 0, 100);
    this.backoffMs = intOption(opts, 'backoffMs', 100, 0, 60_000);
    this.connections = intOption(opts, 'connections', 8, 1, 1024);
    const onEvent = opts.onEvent;
    if (onEvent !== undefined && typeof onEvent !== 'function') {
      throw optionError(`option onEvent must be a function (got ${shown(onEvent)})`);
    }
    this.onEvent = onEvent as ((e: FetchEvent) => void) | undefined;

    // Our own timers bound each attempt and each fetch; a socket's idle timer
    // resets on every byte, so a trickling server would never trip it. It stays
    // as a backstop, above the deadline.
    this.pool = new HttpPool(u, {
      connections: this.connections,
      idleTimeoutMs: Math.min(MAX_TIMER_MS, this.deadlineMs + 1000),
    });
  }

  /** Chunk fetches and chunk-list fetches in flight. */
  get inFlight(): number {
    return this.chunkFlights.size + this.listFlights.size + this.pieceFlights.size;
  }

  read(ref: BlobRef, offset: number, length: number, opts: ReadOptions = {}): Promise<Buffer> {
    if (this.closed) return Promise.reject(this.closedError());
    return readChunked(this, ref, offset, length, opts);
  }

  readChunk(ref: BlobRef, index: number, opts: ReadOptions = {}): Promise<Buffer> {
    try {
      if (this.closed) throw this.closedError();
      checkChunkIndex(ref, index, 'HttpBlobSource');
    } catch (err) {
      return Promise.reject(err);
    }
    const target = this.target(ref, index);
    const what = `HttpBlobSource: read of ${target.label}`;
    // An aborted caller starts nothing.
    if (opts.signal?.aborted) return Promise.reject(abortedError(what, opts.signal));
    const task = this.chunkFlights.task(
      `${ref.digest}/${ref.size}/${index}`,
      (signal) => this.fetchChunk(ref, index, target, signal, performance.now() + this.deadlineMs),
      {
        deadlineMs: this.deadlineMs,
        onTimeout: () => this.deadlineError(target),
        onSettled: (outcome) => {
          if (outcome.ok || outcome.cancelled) return;
          const err = outcome.error;
          this.emit({
            kind: 'error',
            digest: ref.digest,
            chunk: index,
            bytes: 0,
            ms: performance.now() - task.startedAt,
            attempt: target.attempts,
            reason: err instanceof Error ? err.message : String(err),
            code: err instanceof CairnError ? err.code : ErrorCode.INTERNAL,
          });
        },
      },
    );
    const joined = task.join(opts.signal, what);
    const onServed = opts.onServed;
    return onServed ? joined.then((chunk) => (onServed('network'), chunk)) : joined;
  }

  /**
   * The sha256 the bytes of chunk `index` hash to: `ref.digest` for a content
   * of at most CHUNK_BYTES, else the registry's chunk digest (its chunk list is
   * fetched, within the deadline, if it is not known yet). When the registry's
   * pieces are of another size, the digest of the chunk's bytes as verified
   * against them (remembered from its fetch, else the chunk is read). Rejects
   * like readChunk.
   */
  async chunkDigest(ref: BlobRef, index: number, opts: ReadOptions = {}): Promise<Digest> {
    if (this.closed) throw this.closedError();
    checkChunkIndex(ref, index, 'HttpBlobSource');
    if (ref.size <= CHUNK_BYTES) return ref.digest;
    if (opts.signal?.aborted) throw abortedError(`HttpBlobSource: chunk digest of ${ref.digest}`, opts.signal);
    const list = await this.chunkList(ref, opts.signal);
    this.checkListSize(ref, list);
    if (list.chunkBytes === CHUNK_BYTES) return `sha256:${list.packed.toString('hex', index * 32, index * 32 + 32)}`;
    const known = this.derived.get(`${ref.digest}/${index}`);
    if (known !== undefined) return known;
    return sha256(await this.readChunk(ref, index, opts));
  }

  close(): Promise<void> {
    if (!this.closing) {
      this.closed = true;
      const err = this.closedError();
      this.chunkFlights.cancelAll(err);
      this.listFlights.cancelAll(err);
      this.pieceFlights.cancelAll(err);
      this.lists.clear();
      this.pieces.clear();
      this.pieceBytes = 0;
      this.derived.clear();
      this.ahead.clear();
      this.streams.clear();
      this.closing = this.pool.close().catch(() => undefined);
    }
    return this.closing;
  }

  // ---- fetching ------------------------------------------------------------

  private async fetchChunk(
    ref: BlobRef,
    index: number,
    target: Target,
    signal: AbortSignal,
    deadlineAt: number,
  ): Promise<Buffer> {
    const path = this.filePath(ref.digest);
    if (ref.size <= CHUNK_BYTES) {
      return this.withRetries(target, signal, deadlineAt, async (s, progress) => {
        const body = await this.getBytes(path, undefined, ref.size, s, progress, target);
        const got = sha256(body);
        if (got !== ref.digest) throw new AttemptFailure('mismatch', `the body hashes to ${got}`);
        return body;
      });
    }
    const list = await this.chunkList(ref, signal);
    this.checkListSize(ref, list);
    const span = chunkSpan(ref.size, index);
    if (list.chunkBytes === CHUNK_BYTES) return this.fetchInOrder(ref, index, list, target, signal, deadlineAt);
    const cover =
      list.chunkBytes < CHUNK_BYTES
        ? await this.fetchCover(ref, span, list, target, signal, deadlineAt)
        : await this.piece(ref, span, list, signal, deadlineAt);
    // Copied: a chunk kept by a cache must not pin the whole piece.
    const chunk = Buffer.from(cover.body.subarray(span.start - cover.start, span.end - cover.start));
    this.derived.set(`${ref.digest}/${index}`, sha256(chunk));
    while (this.derived.size > DERIVED_DIGESTS_KEPT) {
      const oldest = this.derived.keys().next();
      if (oldest.done) break;
      this.derived.delete(oldest.value);
    }
    return chunk;
  }

  /**
   * Chunk `index` of a content in CHUNK_BYTES pieces: fetched ahead already,
   * or fetched now with the window of following chunks its reader has earned
   * (chunks being fetched by someone else end the window).
   */
  private async fetchInOrder(
    ref: BlobRef,
    index: number,
    list: ChunkList,
    target: Target,
    signal: AbortSignal,
    deadlineAt: number,
  ): Promise<Buffer> {
    const window = this.stream(ref.digest, index);
    const mine = this.ahead.get(`${ref.digest}/${index}`);
    if (mine !== undefined) {
      this.ahead.delete(`${ref.digest}/${index}`);
      // A failed fetch ahead (its first reader aborted...) is no answer: fetch it again below.
      const got = await mine.catch(() => undefined);
      if (got !== undefined) return got;
    }
    const count = Math.ceil(ref.size / CHUNK_BYTES);
    let last = index;
    while (
      last + 1 < Math.min(count, index + window) &&
      !this.ahead.has(`${ref.digest}/${last + 1}`) &&
      !this.chunkFlights.has(`${ref.digest}/${ref.size}/${last + 1}`)
    ) {
      last++;
    }
    const span = { start: index * CHUNK_BYTES, end: Math.min(ref.size, (last + 1) * CHUNK_BYTES) };
    const cover = this.fetchCover(ref, span, list, target, signal, deadlineAt);
    for (let i = index + 1; i <= last; i++) {
      const from = (i - index) * CHUNK_BYTES;
      // Copies: a chunk kept by a cache must not pin the whole window.
      const chunk = cover.then((c) => Buffer.from(c.body.subarray(from, Math.min(c.body.length, from + CHUNK_BYTES))));
      chunk.catch(() => undefined); // nobody may ever ask
      this.ahead.set(`${ref.digest}/${i}`, chunk);
    }
    while (this.ahead.size > AHEAD_KEPT) {
      const oldest = this.ahead.keys().next();
      if (oldest.done) break;
      this.ahead.delete(oldest.value);
    }
    const c = await cover;
    return last === index ? c.body : Buffer.from(c.body.subarray(0, CHUNK_BYTES));
  }

  /** Notes a read of chunk `index`; returns the window (in chunks) its reader has earned. */
  private stream(digest: Digest, index: number): number {
    const s = this.streams.get(digest);
    this.streams.delete(digest);
    const run = s !== undefined && s.next === index ? s.run + 1 : 1;
    this.streams.set(digest, { next: index + 1, run });
    const window = run < 3 ? 1 : Math.min(MAX_AHEAD_CHUNKS, 2 ** (run - 2));
    while (this.streams.size > STREAMS_KEPT) {
      const oldest = this.streams.keys().next();
      if (oldest.done) break;
      this.streams.delete(oldest.value);
    }
    return window;
  }

  /**
   * The registry piece (of `list.chunkBytes` > CHUNK_BYTES) holding `span`:
   * kept, joined in flight, or fetched and verified (with its own deadline);
   * the chunks of one piece share one fetch.
   */
  private piece(
    ref: BlobRef,
    span: { start: number; end: number },
    list: ChunkList,
    signal: AbortSignal,
    deadlineAt: number,
  ): Promise<Cover> {
    const p = Math.floor(span.start / list.chunkBytes);
    const key = `${ref.digest}/${list.chunkBytes}/${p}`;
    const kept = this.pieces.get(key);
    if (kept && kept.start <= span.start && kept.start + kept.body.length >= span.end) {
      this.pieces.delete(key);
      this.pieces.set(key, kept);
      return Promise.resolve(kept);
    }
    const target: Target = {
      digest: ref.digest,
      chunk: Math.floor((p * list.chunkBytes) / CHUNK_BYTES),
      label: `${ref.digest} piece ${p} (${list.chunkBytes} bytes a piece)`,
      attempts: 0,
    };
    const task = this.pieceFlights.task(
      key,
      async (s) => {
        const cover = await this.fetchCover(ref, span, list, target, s, deadlineAt);
        if (!this.closed && cover.body.length <= PIECE_CACHE_BYTES) {
          this.pieces.set(key, cover);
          this.pieceBytes += cover.body.length;
          while (this.pieceBytes > PIECE_CACHE_BYTES) {
            const oldest = this.pieces.entries().next();
            if (oldest.done) break;
            this.pieces.delete(oldest.value[0]);
            this.pieceBytes -= oldest.value[1].body.length;
          }
        }
        return cover;
      },
      { deadlineMs: this.deadlineMs, onTimeout: () => this.deadlineError(target) },
    );
    return task.join(signal, `HttpBlobSource: read of ${target.label}`);
  }

  /**
   * Fetches the registry pieces covering `span` in one Range request and
   * verifies each against the list; returns the covered bytes. A mismatch
   * drops the list (it may be what was corrupted) and the next attempt
   * fetches it again, pieces recomputed from it.
   */
  private fetchCover(
    ref: BlobRef,
    span: { start: number; end: number },
    first: ChunkList,
    target: Target,
    signal: AbortSignal,
    deadlineAt: number,
  ): Promise<Cover> {
    let list: ChunkList | undefined = first;
    const path = this.filePath(ref.digest);
    return this.withRetries(target, signal, deadlineAt, async (s, progress) => {
      if (list === undefined) {
        list = await this.chunkList(ref, s);
        this.checkListSize(ref, list);
      }
      const c = list.chunkBytes;
      const firstPiece = Math.floor(span.start / c);
      const lastPiece = Math.floor((span.end - 1) / c);
      const cover = { start: firstPiece * c, end: Math.min(ref.size, (lastPiece + 1) * c) };
      const body = await this.getBytes(path, cover, cover.end - cover.start, s, progress, target);
      for (let p = firstPiece; p <= lastPiece; p++) {
        const from = p * c - cover.start;
        const got = createHash('sha256')
          .update(body.subarray(from, Math.min(body.length, from + c)))
          .digest();
        const want = list.packed.subarray(p * 32, p * 32 + 32);
        if (!got.equals(want)) {
          this.lists.delete(ref.digest);
          list = undefined;
          throw new AttemptFailure(
            'mismatch',
            `piece ${p} hashes to sha256:${got.toString('hex')}, not sha256:${want.toString('hex')}`,
          );
        }
      }
      return { start: cover.start, body };
    });
  }

  /** The content's chunk list: remembered, joined in flight, or fetched (with its own deadline). */
  private chunkList(ref: BlobRef, signal: AbortSignal | undefined): Promise<ChunkList> {
    const known = this.lists.get(ref.digest);
    if (known) {
      this.lists.delete(ref.digest);
      this.lists.set(ref.digest, known);
      return Promise.resolve(known);
    }
    const target: Target = { digest: ref.digest, chunk: 'list', label: `${ref.digest} chunk list`, attempts: 0 };
    const task = this.listFlights.task(
      ref.digest,
      async (s) => {
        const list = await this.fetchChunkList(ref, target, s, performance.now() + this.deadlineMs);
        if (!this.closed) {
          this.lists.set(ref.digest, list);
          while (this.lists.size > CHUNK_LISTS_KEPT) {
            const oldest = this.lists.keys().next();
            if (oldest.done) break;
            this.lists.delete(oldest.value);
          }
        }
        return list;
      },
      { deadlineMs: this.deadlineMs, onTimeout: () => this.deadlineError(target) },
    );
    return task.join(signal, `HttpBlobSource: read of ${target.label}`);
  }

  private fetchChunkList(ref: BlobRef, target: Target, signal: AbortSignal, deadlineAt: number): Promise<ChunkList> {
    const path = `${this.filePath(ref.digest)}/chunks`;
    // About 70 bytes of JSON a piece, of the smallest size allowed; generous, so only nonsense is refused.
    const limit = 64 * 1024 + piecesOf(ref.size, MIN_CHUNK_BYTES) * 160;
    return this.withRetries(target, signal, deadlineAt, async (s, progress) => {
      const res = await this.request(path, {}, s);
      if (res.statusCode !== 200) throw await this.statusError(res, target);
      const body = await readLimited(res.body, limit);
      if (body === undefined) throw new AttemptFailure('malformed', `chunk list longer than ${limit} bytes`);
      progress.bytes = body.length;
      return this.parseChunkList(ref.digest, body);
    });
  }

  private parseChunkList(digest: Digest, body: Buffer): ChunkList {
    let doc: unknown;
    try {
      doc = JSON.parse(body.toString('utf8'));
    } catch {
      throw new AttemptFailure('malformed', 'the chunk list is not JSON');
    }
    const d = doc as { digest?: unknown; size?: unknown; chunkBytes?: unknown; chunks?: unknown };
    if (typeof doc !== 'object' || doc === null)
      throw new AttemptFailure('malformed', 'the chunk list is not an object');
    if (d.digest !== digest) throw new AttemptFailure('malformed', `the chunk list is for ${shown(d.digest)}`);
    const chunkBytes = d.chunkBytes;
    if (!isChunkBytes(chunkBytes)) {
      throw new AttemptFailure(
        'malformed',
        `the chunk list has chunkBytes ${shown(chunkBytes)}, not a power of two from ${MIN_CHUNK_BYTES} to 1 GiB`,
      );
    }
    const size = d.size;
    if (typeof size !== 'number' || !Number.isSafeInteger(size) || size < 0) {
      throw new AttemptFailure('malformed', `the chunk list has size ${shown(size)}`);
    }
    const chunks = d.chunks;
    const count = piecesOf(size, chunkBytes);
    if (!Array.isArray(chunks) || chunks.length !== count || !chunks.every(isDigest)) {
      throw new AttemptFailure('malformed', `the chunk list does not have ${count} sha256 digests`);
    }
    const packed = Buffer.allocUnsafe(count * 32);
    chunks.forEach((c, i) => packed.write(c.slice(7), i * 32, 32, 'hex'));
    return { size, chunkBytes, packed };
  }

  private checkListSize(ref: BlobRef, list: ChunkList): void {
    if (list.size !== ref.size) {
      throw new CairnError(
        ErrorCode.INVALID_INPUT,
        `HttpBlobSource: ${this.url} has ${list.size} bytes for ${ref.digest}, the read expects ${ref.size}`,
      );
    }
  }

  /**
   * Runs `attempt` until it succeeds, a final error (a CairnError) comes out,
   * the retries are spent, or the next backoff would pass the deadline. The
   * task's signal (deadline, cancel, close) ends everything at once with its reason.
   */
  private async withRetries<T>(
    target: Target,
    signal: AbortSignal,
    deadlineAt: number,
    attempt: (signal: AbortSignal, progress: Progress) => Promise<T>,
  ): Promise<T> {
    let mismatches = 0;
    for (let n = 1; ; n++) {
      if (signal.aborted) throw signal.reason;
      target.attempts++;
      const controller = new AbortController();
      const attemptSignal = controller.signal;
      const relay = (): void => controller.abort(signal.reason);
      signal.addEventListener('abort', relay, { once: true });
      const allowed = Math.max(1, Math.min(this.attemptTimeoutMs, Math.ceil(deadlineAt - performance.now())));
      const timer = setTimeout(
        () => controller.abort(new AttemptFailure('timeout', `no complete answer within ${allowed} ms`)),
        allowed,
      );
      const progress: Progress = { bytes: 0 };
      const started = performance.now();
      let failure: AttemptFailure;
      try {
        const value = await raceSignal(attempt(attemptSignal, progress), attemptSignal);
        this.emit({
          kind: 'fetch',
          digest: target.digest,
          chunk: target.chunk,
          bytes: progress.bytes,
          ms: performance.now() - started,
          attempt: n,
        });
        return value;
      } catch (err) {
        if (signal.aborted) throw signal.reason;
        if (attemptSignal.aborted) failure = attemptSignal.reason as AttemptFailure;
        else if (err instanceof CairnError) throw err;
        else failure = this.toFailure(err);
      } finally {
        clearTimeout(timer);
        signal.removeEventListener('abort', relay);
      }
      const ms = performance.now() - started;
      const base = { digest: target.digest, chunk: target.chunk, bytes: progress.bytes, ms, attempt: n };
      let delay: number;
      if (failure.kind === 'mismatch') {
        mismatches++;
        this.emit({ kind: 'verify-failed', ...base, reason: failure.message });
        if (mismatches >= 2 || n > this.retries) throw this.mismatchError(target, failure, mismatches);
        delay = 0; // a bad body is not a busy server
      } else {
        if (n > this.retries) throw this.finalError(target, failure, n);
        delay = this.backoff(n);
      }
      if (performance.now() + delay >= deadlineAt) {
        throw failure.kind === 'mismatch'
          ? this.mismatchError(target, failure, mismatches)
          : this.finalError(target, failure, n);
      }
      this.emit({ kind: 'retry', ...base, reason: failure.message });
      if (delay > 0) await sleep(delay, signal);
    }
  }

  /** Jittered exponential backoff before attempt `n + 1`: between half and all of `backoffMs * 2^(n-1)`. */
  private backoff(n: number): number {
    const full = Math.min(BACKOFF_CAP_MS, this.backoffMs * 2 ** (n - 1));
    return Math.round(full / 2 + (Math.random() * full) / 2);
  }

  private toFailure(err: unknown): AttemptFailure {
    if (err instanceof AttemptFailure) return err;
    const e = err as { code?: unknown; message?: unknown; errors?: unknown } | undefined;
    const code = typeof e?.code === 'string' ? e.code : undefined;
    if (code?.startsWith('ERR_INVALID_')) {
      throw new CairnError(ErrorCode.INTERNAL, `HttpBlobSource: node:http refused the request: ${String(e?.message)}`, {
        cause: err,
      });
    }
    let message = typeof e?.message === 'string' ? e.message : String(err);
    // Connecting to a name with several addresses fails with an AggregateError and an empty message.
    if (message === '' && Array.isArray(e?.errors)) {
      message = (e.errors as unknown[]).map((x) => (x instanceof Error ? x.message : String(x))).join('; ');
    }
    const text = code && !message.includes(code) ? `${code}: ${message}` : message || String(code);
    const timeout = code === IDLE_TIMEOUT_CODE || code === 'ETIMEDOUT';
    return new AttemptFailure(timeout ? 'timeout' : 'transport', text, { cause: err });
  }

  private async request(path: string, headers: Record<string, string>, signal: AbortSignal): Promise<HttpResponse> {
    const res = await this.pool.request({ path, headers, signal });
    if (signal.aborted) {
      res.body.destroy();
      throw signal.reason;
    }
    return res;
  }

  /**
   * GETs exactly `expected` bytes: the whole content, or the chunk `span` with
   * a Range request. Anything else (status, Content-Range, Content-Length,
   * body length) fails the attempt; only a digest check makes the bytes good.
   */
  private async getBytes(
    path: string,
    span: { start: number; end: number } | undefined,
    expected: number,
    signal: AbortSignal,
    progress: Progress,
    target: Target,
  ): Promise<Buffer> {
    const headers: Record<string, string> = {};
    if (span) headers.range = `bytes=${span.start}-${span.end - 1}`;
    const res = await this.request(path, headers, signal);
    let finished = false;
    try {
      if (span) {
        if (res.statusCode === 200) throw new AttemptFailure('malformed', 'the server ignored the Range header');
        if (res.statusCode !== 206) throw await this.statusError(res, target);
        const range = header(res, 'content-range');
        const want = new RegExp(`^bytes ${span.start}-${span.end - 1}/\\d+$`);
        if (range === undefined || !want.test(range)) {
          throw new AttemptFailure('mismatch', `Content-Range ${shown(range)} for bytes ${span.start}-${span.end - 1}`);
        }
      } else if (res.statusCode !== 200) {
        throw await this.statusError(res, target);
      }
      const length = header(res, 'content-length');
      if (length !== undefined && Number(length) !== expected) {
        throw new AttemptFailure('mismatch', `Content-Length ${length}, expected ${expected}`);
      }
      const out = Buffer.allocUnsafe(expected);
      let filled = 0;
      for await (const piece of res.body as AsyncIterable<Buffer>) {
        if (filled + piece.length > expected) throw new AttemptFailure('mismatch', `more than ${expected} bytes`);
        piece.copy(out, filled);
        filled += piece.length;
        progress.bytes = filled;
      }
      finished = true;
      if (filled !== expected) throw new AttemptFailure('mismatch', `${filled} bytes, expected ${expected}`);
      return out;
    } finally {
      if (!finished) res.body.destroy();
    }
  }

  /** The error for a status other than the one asked for: final (CairnError) or worth another attempt. */
  private async statusError(res: HttpResponse, target: Target): Promise<Error> {
    const status = res.statusCode;
    let detail = '';
    try {
      const body = await readLimited(res.body, ERROR_BODY_BYTES);
      if (body !== undefined && body.length > 0) {
        const text = body.toString('utf8');
        try {
          const msg = (JSON.parse(text) as { error?: { message?: unknown } }).error?.message;
          detail = typeof msg === 'string' ? msg : text.slice(0, 200);
        } catch {
          detail = text.slice(0, 200);
        }
      }
    } catch {
      // The status says enough.
    }
    const said = `HTTP ${status}${detail ? `: ${detail}` : ''}`;
    const where = `HttpBlobSource: ${this.url}`;
    if (status === 404) return new CairnError(ErrorCode.NOT_FOUND, `${where} does not have ${target.label} (${said})`);
    if (status === 400) {
      return new CairnError(ErrorCode.INVALID_INPUT, `${where} refused the request for ${target.label} (${said})`);
    }
    if (status === 416)
      return new CairnError(ErrorCode.RANGE, `${where} refused the range of ${target.label} (${said})`);
    if (status === 408 || status === 429 || status >= 500) return new AttemptFailure('status', said);
    return new CairnError(ErrorCode.UNAVAILABLE, `${where} answered ${said} for ${target.label}`);
  }

  // ---- errors and events ---------------------------------------------------

  private target(ref: BlobRef, index: number): Target {
    const label = ref.size <= CHUNK_BYTES ? ref.digest : `${ref.digest} chunk ${index}`;
    return { digest: ref.digest, chunk: index, label, attempts: 0 };
  }

  private filePath(digest: Digest): string {
    return `${this.basePath}/api/v1/files/${digest}`;
  }

  private closedError(): CairnError {
    return new CairnError(ErrorCode.UNAVAILABLE, `HttpBlobSource: closed (${this.url})`);
  }

  private deadlineError(target: Target): CairnError {
    return new CairnError(
      ErrorCode.TIMEOUT,
      `HttpBlobSource: no complete answer from ${this.url} for ${target.label} within ${this.deadlineMs} ms`,
    );
  }

  private finalError(target: Target, failure: AttemptFailure, attempts: number): CairnError {
    const tries = `${attempts} attempt${attempts === 1 ? '' : 's'}`;
    if (failure.kind === 'timeout') {
      return new CairnError(
        ErrorCode.TIMEOUT,
        `HttpBlobSource: ${this.url} did not answer in time for ${target.label} (${tries}; last: ${failure.message})`,
        { cause: failure },
      );
    }
    return new CairnError(
      ErrorCode.UNAVAILABLE,
      `HttpBlobSource: ${this.url} is unavailable for ${target.label} (${tries}; last: ${failure.message})`,
      { cause: failure },
    );
  }

  private mismatchError(target: Target, failure: AttemptFailure, times: number): CairnError {
    return new CairnError(
      ErrorCode.DIGEST_MISMATCH,
      `HttpBlobSource: ${this.url} sent bytes for ${target.label} that do not match their digest ` +
        `(${times} time${times === 1 ? '' : 's'}; last: ${failure.message})`,
      { cause: failure },
    );
  }

  private emit(e: FetchEvent): void {
    if (!this.onEvent) return;
    try {
      this.onEvent(e);
    } catch {
      // Metrics must not break reads.
    }
  }
}
