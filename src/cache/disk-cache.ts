/**
 * The disk tier: verified chunks in files under a cache directory, indexed in
 * SQLite, least recently accessed evicted first under a byte budget, shared by
 * every mount on the machine (and by several processes at once).
 *
 * Layout of `dir`:
 *
 *     index.db (+ -wal, -shm)   SQLite (WAL): one row per chunk file
 *     chunks/ab/<hex>.<i>       chunk i of content sha256:<hex> (ab = first two hex digits)
 *     tmp/<pid>-<rand>-<host>.tmp   writes in progress
 *
 * Index row: key (`<hex>.<i>`, = file name), chunk_digest (the sha256 the
 * file's bytes must hash to: the content digest for a whole content), size,
 * last_access (ms since the epoch), hits. A `totals` row kept by triggers
 * holds the sum of sizes and the row count, so the budget check is one lookup.
 *
 * Invariants and how they are kept with several processes on one directory:
 * - A file under chunks/ is always complete: it is written under tmp/, fsynced,
 *   verified (hashed, compared with the expected digest), then renamed into
 *   place (atomic), and only then indexed.
 * - Bytes are verified every time they are read from disk, against the index
 *   row's chunk digest (or the content digest for a whole content): a file that
 *   does not match is deleted, unindexed, counted (`corrupt`), and the chunk is
 *   fetched again from the inner source. Bytes that do not match are never served.
 * - Files may disappear at any time (another process evicted them): a missing
 *   file is a miss; its row is dropped unless someone touched or rewrote it since.
 * - Every write to the index is a short IMMEDIATE transaction with a busy timeout.
 * - Access times are collected in memory and written in one transaction every
 *   `flushIntervalMs` (or every `flushBatch` distinct chunks, and before an
 *   eviction and at close): the hit path reads SQLite but never writes it.
 */
import Database from 'better-sqlite3';
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, open, readdir, readFile, rename, rm, stat, unlink, type FileHandle } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import type { BlobRef, ReadOptions } from '../fetch/blob-source.js';
import { abortedError, checkChunkIndex, readChunked } from '../fetch/chunk-source.js';
import { SingleFlight } from '../fetch/single-flight.js';
import { CHUNK_BYTES, LEGACY_CHUNK_BYTES } from '../model/chunks.js';
import type { Digest } from '../model/digest.js';
import { CairnError, ErrorCode, toCairnError } from '../model/errors.js';
import { createLogger, type Logger } from '../util/log.js';
import { chunkKey, chunkLength, isWholeContent, parseChunkKey } from './chunks.js';
import { readServed, type ChunkDigestSource, type ServedChunk } from './types.js';

export interface DiskCacheOptions {
  /** The cache directory (created if missing). */
  dir: string;
  /** Byte budget for chunk files (the index and temp files are not counted). */
  maxBytes: number;
  /** Close the inner source when this cache is closed (default true). */
  closeInner?: boolean;
  /** Longest time access updates wait in memory before they are written to the index (default 1000 ms). */
  flushIntervalMs?: number;
  /** Write access updates as soon as this many distinct chunks have one pending (default 1024). */
  flushBatch?: number;
  /** How long an index write waits for another process's transaction (SQLite busy_timeout, default 10 s). */
  busyTimeoutMs?: number;
  /**
   * Temp files left by another host (or not named by cairn) are deleted at open
   * once older than this (default 1 h). Temp files of this host are deleted at
   * open as soon as the process that wrote them is gone.
   */
  staleTempMs?: number;
  /**
   * Bytes of fetched chunks waiting to be written (default 64 MiB). A chunk
   * fetched while that much is queued (the disk is slower than the network) is
   * served but not stored (`writesSkipped`), so memory stays bounded.
   */
  maxPendingWriteBytes?: number;
  /** Check the directory against the index at open (default true). See DiskCache.open. */
  repair?: boolean;
  /** At open, also hash every indexed file (default false: files are verified when read). */
  verifyOnOpen?: boolean;
  logger?: Logger;
  /** Clock for access times (tests). */
  now?: () => number;
}

export interface DiskCacheStats {
  /** readChunk calls served from disk (or from a chunk being written). */
  hits: number;
  /** readChunk calls not served from disk. */
  misses: number;
  /** Reads issued to the inner source (concurrent misses share one). */
  fetches: number;
  /** readChunk calls passed straight through: chunks larger than the budget, empty contents. */
  passthrough: number;
  /** Chunk files written and indexed by this instance. */
  writes: number;
  /** Writes abandoned (disk full, I/O or index error); the reads themselves succeeded. */
  writeErrors: number;
  /** Chunks served but not stored because too many bytes were already waiting to be written. */
  writesSkipped: number;
  /** Files that failed to read for another reason than being gone (served from the inner source). */
  readErrors: number;
  /** Files whose bytes did not match their digest (deleted, refetched). */
  corrupt: number;
  /** Files evicted by this instance to stay under the budget. */
  evictions: number;
  /** Index operations that failed (access-time flushes, lookups). */
  indexErrors: number;
  /** Bytes of chunk files in the index now (all processes). */
  bytes: number;
  /** Chunk files in the index now (all processes). */
  entries: number;
}

/** What `open()` found and fixed. */
export interface DiskCacheRepairReport {
  /** Index rows whose file was missing or had the wrong size. */
  rowsDropped: number;
  /** Files without a row that verified against the digest in their name, indexed. */
  filesIndexed: number;
  /** Files deleted: no row and no way to verify them, wrong size, corrupt (verifyOnOpen), unknown names. */
  filesDeleted: number;
  /** Stale temp files deleted. */
  tempsDeleted: number;
}

interface Row {
  chunk_digest: Digest;
  size: number;
  last_access: number;
}

const SCHEMA_VERSION = 1;

const SCHEMA = `
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS chunks (
  key TEXT PRIMARY KEY,
  chunk_digest TEXT NOT NULL,
  size INTEGER NOT NULL,
  last_access INTEGER NOT NULL,
  hits INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS chunks_by_access ON chunks(last_access, key);
CREATE TABLE IF NOT EXISTS totals (
  id INTEGER PRIMARY KEY CHECK (id = 0),
  bytes INTEGER NOT NULL,
  entries INTEGER NOT NULL
);
INSERT OR IGNORE INTO totals (id, bytes, entries) VALUES (0, 0, 0);
CREATE TRIGGER IF NOT EXISTS chunks_insert AFTER INSERT ON chunks BEGIN
  UPDATE totals SET bytes = bytes + new.size, entries = entries + 1 WHERE id = 0;
END;
CREATE TRIGGER IF NOT EXISTS chunks_delete AFTER DELETE ON chunks BEGIN
  UPDATE totals SET bytes = bytes - old.size, entries = entries - 1 WHERE id = 0;
END;
CREATE TRIGGER IF NOT EXISTS chunks_resize AFTER UPDATE OF size ON chunks BEGIN
  UPDATE totals SET bytes = bytes - old.size + new.size WHERE id = 0;
END;
`;

const TEMP_RE = /^([1-9][0-9]{0,9})-([0-9a-f]{16})-(.+)\.tmp$/;
const SHARD_RE = /^[0-9a-f]{2}$/;

function errnoOf(err: unknown): string | undefined {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : undefined;
}

function sha256Of(data: Uint8Array): Digest {
  return `sha256:${createHash('sha256').update(data).digest('hex')}`;
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return errnoOf(err) === 'EPERM';
  }
}

function sleepSync(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

/** Opens (creating if needed) the index; retries while another process holds the lock during its own setup. */
function openIndex(file: string, busyTimeoutMs: number): Database.Database {
  const deadline = Date.now() + busyTimeoutMs;
  for (;;) {
    let db: Database.Database | undefined;
    try {
      db = new Database(file, { timeout: busyTimeoutMs });
      db.pragma(`busy_timeout = ${Math.max(0, Math.floor(busyTimeoutMs))}`);
      db.pragma('journal_mode = WAL');
      // A cache: a power cut may lose the last transactions; open() repairs whatever the index then misses.
      db.pragma('synchronous = NORMAL');
      const setup = db.transaction(() => {
        db!.exec(SCHEMA);
        const v = db!.prepare(`SELECT value FROM meta WHERE key = 'schema'`).get() as { value: string } | undefined;
        if (!v) db!.prepare(`INSERT INTO meta (key, value) VALUES ('schema', ?)`).run(String(SCHEMA_VERSION));
        else if (Number(v.value) !== SCHEMA_VERSION) {
          throw new CairnError(
            ErrorCode.STORAGE,
            `${file}: cache schema ${v.value}, this cairn reads ${SCHEMA_VERSION}`,
          );
        }
        const cb = db!.prepare(`SELECT value FROM meta WHERE key = 'chunkBytes'`).get() as
          { value: string } | undefined;
        if (Number(cb?.value ?? LEGACY_CHUNK_BYTES) !== CHUNK_BYTES) {
          // Chunk i named another byte range under another chunk size (a cache written by a
          // cairn of 1 MiB chunks has no chunkBytes): only whole contents, verified by the
          // digest in their name, keep their meaning. open() then deletes the other files.
          db!.prepare(`DELETE FROM chunks WHERE NOT (key LIKE '%.0' AND size <= ?)`).run(CHUNK_BYTES);
        }
        if (cb === undefined || Number(cb.value) !== CHUNK_BYTES) {
          db!.prepare(`INSERT OR REPLACE INTO meta (key, value) VALUES ('chunkBytes', ?)`).run(String(CHUNK_BYTES));
        }
      });
      setup.immediate();
      return db;
    } catch (err) {
      db?.close();
      if (errnoOf(err)?.startsWith('SQLITE_BUSY') && Date.now() < deadline) {
        sleepSync(20);
        continue;
      }
      throw toCairnError(err, ErrorCode.STORAGE, `disk cache: opening ${file}`);
    }
  }
}

/**
 * A ChunkSource decorator keeping verified chunks on disk. See the module
 * comment for the layout and the invariants; construct with `DiskCache.open`.
 *
 * - `readChunk`: from disk when indexed and the bytes verify; else from the
 *   inner source (concurrent misses share one read), verified against the
 *   expected digest, returned, and written to disk in the background (see
 *   `whenIdle`). A failed write (disk full...) is cleaned up and counted; the
 *   read still succeeds.
 * - Chunks larger than `maxBytes`, and empty contents, pass through uncached.
 * - `close()` waits for the writes in progress, writes pending access times,
 *   closes the index and (unless `closeInner` is false) the inner source.
 *   Idempotent; reads after it reject (UNAVAILABLE).
 */
export class DiskCache implements ChunkDigestSource {
  readonly dir: string;
  private readonly chunksDir: string;
  private readonly tmpDir: string;
  private readonly maxBytes: number;
  private readonly closeInner: boolean;
  private readonly flushBatch: number;
  private readonly staleTempMs: number;
  private readonly verifyOnOpen: boolean;
  private readonly log: Logger;
  private readonly now: () => number;
  private readonly host = hostname();

  private readonly stmts: {
    get: Database.Statement<[string], Row>;
    upsert: Database.Statement<[string, string, number, number]>;
    adopt: Database.Statement<[string, string, number, number]>;
    touch: Database.Statement<[number, number, string]>;
    remove: Database.Statement<[string]>;
    removeIfUntouched: Database.Statement<[string, number]>;
    removeIfSize: Database.Statement<[string, number]>;
    totals: Database.Statement<[], { bytes: number; entries: number }>;
    byAccess: Database.Statement<[], { key: string; size: number }>;
    all: Database.Statement<[], { key: string; chunk_digest: Digest; size: number }>;
    recount: Database.Statement<[]>;
  };

  private readonly flights = new SingleFlight<ServedChunk>();
  /** Chunks fetched and being written: served from memory until they are on disk. */
  private readonly writing = new Map<string, Buffer>();
  private readonly pendingWrites = new Set<Promise<void>>();
  private pendingWriteBytes = 0;
  private readonly maxPendingWriteBytes: number;
  private touches = new Map<string, { at: number; hits: number }>();
  private readonly timer: NodeJS.Timeout;
  private closed = false;
  private closing: Promise<void> | undefined;
  private lastTotals = { bytes: 0, entries: 0 };
  private readonly counters = {
    hits: 0,
    misses: 0,
    fetches: 0,
    passthrough: 0,
    writes: 0,
    writeErrors: 0,
    writesSkipped: 0,
    readErrors: 0,
    corrupt: 0,
    evictions: 0,
    indexErrors: 0,
  };
  /** What open() repaired. */
  repairReport: DiskCacheRepairReport = { rowsDropped: 0, filesIndexed: 0, filesDeleted: 0, tempsDeleted: 0 };

  /**
   * Opens the cache in `opts.dir`, creating it if needed, and (unless `repair`
   * is false) reconciles the directory with the index:
   * - an index row whose file is missing, or whose file has another size, is
   *   dropped (and the file deleted);
   * - a file without a row is indexed when it can be verified without the
   *   inner source (a whole content, `<hex>.0`, hashing to `sha256:<hex>`),
   *   else deleted (chunks of large contents need the digest from their row);
   * - stale temp files are deleted (see `staleTempMs`), and files with names
   *   the cache does not write;
   * then evicts down to `maxBytes` (which may be smaller than last time).
   */
  static async open(inner: ChunkDigestSource, opts: DiskCacheOptions): Promise<DiskCache> {
    if (!Number.isSafeInteger(opts.maxBytes) || opts.maxBytes < 1) {
      throw new CairnError(
        ErrorCode.INVALID_OPTION,
        `disk cache: maxBytes must be a positive integer, got ${opts.maxBytes}`,
      );
    }
    try {
      await mkdir(join(opts.dir, 'chunks'), { recursive: true });
      await mkdir(join(opts.dir, 'tmp'), { recursive: true });
    } catch (err) {
      throw toCairnError(err, ErrorCode.STORAGE, `disk cache: creating ${opts.dir}`);
    }
    const db = openIndex(join(opts.dir, 'index.db'), opts.busyTimeoutMs ?? 10_000);
    let cache: DiskCache;
    try {
      cache = new DiskCache(inner, opts, db);
    } catch (err) {
      db.close();
      throw toCairnError(err, ErrorCode.STORAGE, `disk cache: opening ${opts.dir}`);
    }
    try {
      if (opts.repair ?? true) await cache.repair();
      await cache.evictIfNeeded();
    } catch (err) {
      await cache.close();
      throw toCairnError(err, ErrorCode.STORAGE, `disk cache: repairing ${opts.dir}`);
    }
    return cache;
  }

  private constructor(
    private readonly inner: ChunkDigestSource,
    opts: DiskCacheOptions,
    private readonly db: Database.Database,
  ) {
    this.dir = opts.dir;
    this.chunksDir = join(opts.dir, 'chunks');
    this.tmpDir = join(opts.dir, 'tmp');
    this.maxBytes = opts.maxBytes;
    this.closeInner = opts.closeInner ?? true;
    this.flushBatch = Math.max(1, opts.flushBatch ?? 1024);
    this.staleTempMs = opts.staleTempMs ?? 3_600_000;
    this.verifyOnOpen = opts.verifyOnOpen ?? false;
    this.maxPendingWriteBytes = opts.maxPendingWriteBytes ?? 64 * 1024 * 1024;
    this.log = opts.logger ?? createLogger({ level: 'silent', component: 'disk-cache' });
    this.now = opts.now ?? Date.now;
    this.stmts = {
      get: db.prepare(`SELECT chunk_digest, size, last_access FROM chunks WHERE key = ?`),
      upsert: db.prepare(
        `INSERT INTO chunks (key, chunk_digest, size, last_access, hits) VALUES (?, ?, ?, ?, 0)
         ON CONFLICT (key) DO UPDATE SET chunk_digest = excluded.chunk_digest, size = excluded.size,
           last_access = max(last_access, excluded.last_access)`,
      ),
      adopt: db.prepare(
        `INSERT INTO chunks (key, chunk_digest, size, last_access, hits) VALUES (?, ?, ?, ?, 0)
         ON CONFLICT (key) DO NOTHING`,
      ),
      touch: db.prepare(`UPDATE chunks SET last_access = max(last_access, ?), hits = hits + ? WHERE key = ?`),
      remove: db.prepare(`DELETE FROM chunks WHERE key = ?`),
      removeIfUntouched: db.prepare(`DELETE FROM chunks WHERE key = ? AND last_access <= ?`),
      removeIfSize: db.prepare(`DELETE FROM chunks WHERE key = ? AND size = ?`),
      totals: db.prepare(`SELECT bytes, entries FROM totals WHERE id = 0`),
      byAccess: db.prepare(`SELECT key, size FROM chunks ORDER BY last_access, key`),
      all: db.prepare(`SELECT key, chunk_digest, size FROM chunks`),
      recount: db.prepare(
        `UPDATE totals SET bytes = (SELECT coalesce(sum(size), 0) FROM chunks),
           entries = (SELECT count(*) FROM chunks) WHERE id = 0`,
      ),
    };
    this.timer = setInterval(() => this.flushAccess(), opts.flushIntervalMs ?? 1000);
    this.timer.unref();
  }

  async readChunk(ref: BlobRef, index: number, opts: ReadOptions = {}): Promise<Buffer> {
    this.checkOpen();
    const what = `disk cache: ${ref.digest} chunk ${index}`;
    checkChunkIndex(ref, index, what);
    if (opts.signal?.aborted) throw abortedError(what, opts.signal);
    const length = chunkLength(ref.size, index);
    if (length === 0 || length > this.maxBytes) {
      this.counters.passthrough++;
      return this.inner.readChunk(ref, index, opts);
    }
    const key = chunkKey(ref.digest, index);
    const beingWritten = this.writing.get(key);
    if (beingWritten !== undefined && beingWritten.length === length) {
      this.counters.hits++;
      opts.onServed?.('disk');
      return beingWritten;
    }
    const fromDisk = await this.readFromDisk(ref, key, length);
    if (opts.signal?.aborted) throw abortedError(what, opts.signal);
    if (fromDisk !== undefined) {
      this.counters.hits++;
      opts.onServed?.('disk');
      return fromDisk;
    }
    this.counters.misses++;
    // No deadline of our own: the inner source enforces its deadlines.
    const task = this.flights.task(key, (signal) => this.fetch(ref, index, key, length, signal), {});
    const served = await task.join(opts.signal, what);
    if (served.tier) opts.onServed?.(served.tier);
    return served.chunk;
  }

  async read(ref: BlobRef, offset: number, length: number, opts: ReadOptions = {}): Promise<Buffer> {
    this.checkOpen();
    return readChunked(this, ref, offset, length, opts);
  }

  /** See ChunkSource: the content digest, the indexed chunk digest, or the inner source's. */
  async chunkDigest(ref: BlobRef, index: number, opts: ReadOptions = {}): Promise<Digest> {
    this.checkOpen();
    checkChunkIndex(ref, index, 'disk cache: chunk digest');
    if (isWholeContent(ref)) return ref.digest;
    const row = this.lookup(chunkKey(ref.digest, index));
    if (row !== undefined && row.size === chunkLength(ref.size, index)) return row.chunk_digest;
    return this.inner.chunkDigest(ref, index, opts);
  }

  /** Counters of this instance; `bytes` and `entries` are the index's (all processes), as of close once closed. */
  stats(): DiskCacheStats {
    if (!this.closed) {
      try {
        this.lastTotals = this.stmts.totals.get() ?? this.lastTotals;
      } catch (err) {
        this.indexError('reading totals', err);
      }
    }
    return { ...this.counters, ...this.lastTotals };
  }

  /** Resolves when the writes started so far are done (or abandoned) and pending access times are written. */
  async whenIdle(): Promise<void> {
    while (this.pendingWrites.size > 0) await Promise.allSettled([...this.pendingWrites]);
    if (!this.closed) this.flushAccess();
  }

  /** Writes the access times collected in memory to the index (normally done by a timer). */
  flushAccess(): void {
    if (this.touches.size === 0 || this.closed) return;
    const batch = this.touches;
    this.touches = new Map();
    try {
      this.db
        .transaction(() => {
          for (const [key, t] of batch) this.stmts.touch.run(t.at, t.hits, key);
        })
        .immediate();
    } catch (err) {
      // Access times only order evictions: losing a batch is harmless.
      this.indexError('writing access times', err);
    }
  }

  close(): Promise<void> {
    this.closing ??= this.shutdown();
    return this.closing;
  }

  private async shutdown(): Promise<void> {
    clearInterval(this.timer);
    this.flights.cancelAll(new CairnError(ErrorCode.UNAVAILABLE, 'disk cache: closed'));
    await this.whenIdle();
    this.flushAccess();
    this.stats();
    this.closed = true;
    try {
      this.db.close();
    } finally {
      if (this.closeInner) await this.inner.close();
    }
  }

  private checkOpen(): void {
    if (this.closed || this.closing) throw new CairnError(ErrorCode.UNAVAILABLE, 'disk cache: closed');
  }

  private pathOf(key: string): string {
    return join(this.chunksDir, key.slice(0, 2), key);
  }

  private indexError(what: string, err: unknown): void {
    this.counters.indexErrors++;
    this.log.warn(`disk cache: ${what} failed`, { dir: this.dir, error: (err as Error).message });
  }

  private lookup(key: string): Row | undefined {
    try {
      return this.stmts.get.get(key);
    } catch (err) {
      this.indexError('index lookup', err);
      return undefined;
    }
  }

  private dropRow(key: string, seenAccess: number): void {
    try {
      this.stmts.removeIfUntouched.run(key, seenAccess);
    } catch (err) {
      this.indexError('dropping a row', err);
    }
  }

  /** The verified chunk from disk, or undefined (not cached, gone, unreadable, corrupt: all misses). */
  private async readFromDisk(ref: BlobRef, key: string, length: number): Promise<Buffer | undefined> {
    const row = this.lookup(key);
    // A size that disagrees with ref.size: the caller's ref is not this content's; let the inner source decide.
    if (row === undefined || row.size !== length) return undefined;
    const path = this.pathOf(key);
    let data: Buffer;
    try {
      data = await readFile(path);
    } catch (err) {
      if (errnoOf(err) === 'ENOENT') {
        // Evicted by another process (or lost): forget it, unless someone touched or rewrote it since.
        this.dropRow(key, row.last_access);
      } else {
        this.counters.readErrors++;
        this.log.warn('disk cache: reading a chunk file failed', { path, error: (err as Error).message });
      }
      return undefined;
    }
    const expected = isWholeContent(ref) ? ref.digest : row.chunk_digest;
    const actual = data.length === row.size ? sha256Of(data) : undefined;
    if (actual !== expected) {
      this.counters.corrupt++;
      this.log.warn('disk cache: corrupt chunk file removed', {
        path,
        expected,
        actual: actual ?? `${data.length} bytes, not ${row.size}`,
      });
      this.dropRow(key, row.last_access);
      await unlink(path).catch(() => undefined);
      return undefined;
    }
    this.touch(key);
    return data;
  }

  private touch(key: string): void {
    const at = this.now();
    const t = this.touches.get(key);
    if (t) {
      t.at = Math.max(t.at, at);
      t.hits++;
    } else this.touches.set(key, { at, hits: 1 });
    if (this.touches.size >= this.flushBatch) this.flushAccess();
  }

  /** A miss: read from the inner source, check it, hand it out, write it in the background. */
  private async fetch(
    ref: BlobRef,
    index: number,
    key: string,
    length: number,
    signal: AbortSignal,
  ): Promise<ServedChunk> {
    this.counters.fetches++;
    const served = await readServed(this.inner, ref, index, signal);
    const chunk = served.chunk;
    if (chunk.length !== length) {
      // Not this content's chunk (a ref whose size is wrong): serve what the source said, store nothing.
      return served;
    }
    let expected: Digest;
    try {
      expected = isWholeContent(ref) ? ref.digest : await this.inner.chunkDigest(ref, index, { signal });
    } catch (err) {
      if (signal.aborted) throw err;
      this.counters.writeErrors++;
      this.log.warn('disk cache: no chunk digest, chunk not stored', { key, error: (err as Error).message });
      return served;
    }
    const actual = sha256Of(chunk);
    if (actual !== expected) {
      throw new CairnError(
        ErrorCode.DIGEST_MISMATCH,
        `disk cache: ${ref.digest} chunk ${index} from the inner source hashes to ${actual}, expected ${expected}`,
      );
    }
    if (!this.closed && !this.closing) this.startWrite(key, chunk, expected);
    return served;
  }

  private startWrite(key: string, chunk: Buffer, chunkDigest: Digest): void {
    if (this.pendingWriteBytes > 0 && this.pendingWriteBytes + chunk.length > this.maxPendingWriteBytes) {
      this.counters.writesSkipped++;
      return;
    }
    this.pendingWriteBytes += chunk.length;
    this.writing.set(key, chunk);
    const done: Promise<void> = this.write(key, chunk, chunkDigest)
      .catch((err: unknown) => {
        this.counters.writeErrors++;
        this.log.warn('disk cache: chunk not stored', { key, error: (err as Error).message, code: errnoOf(err) });
      })
      .finally(() => {
        if (this.writing.get(key) === chunk) this.writing.delete(key);
        this.pendingWriteBytes -= chunk.length;
        this.pendingWrites.delete(done);
      });
    this.pendingWrites.add(done);
  }

  /** temp file, fsync, rename into place, index; anything failing is undone and rethrown. */
  private async write(key: string, chunk: Buffer, chunkDigest: Digest): Promise<void> {
    const tmp = join(this.tmpDir, `${process.pid}-${randomBytes(8).toString('hex')}-${this.host}.tmp`);
    const path = this.pathOf(key);
    let fh: FileHandle | undefined;
    let renamed = false;
    try {
      fh = await open(tmp, 'wx', 0o644);
      await fh.writeFile(chunk);
      await fh.sync();
      await fh.close();
      fh = undefined;
      await mkdir(join(this.chunksDir, key.slice(0, 2)), { recursive: true });
      await rename(tmp, path);
      renamed = true;
      if (this.closed) throw new CairnError(ErrorCode.UNAVAILABLE, 'disk cache: closed');
      this.db.transaction(() => this.stmts.upsert.run(key, chunkDigest, chunk.length, this.now())).immediate();
      this.counters.writes++;
    } catch (err) {
      await fh?.close().catch(() => undefined);
      await unlink(tmp).catch(() => undefined);
      // A file in place but not indexed would only be deleted at the next open: remove it now.
      if (renamed) await unlink(path).catch(() => undefined);
      throw err;
    }
    try {
      await this.evictIfNeeded();
    } catch (err) {
      this.indexError('evicting', err);
    }
  }

  /** Deletes least recently accessed chunks until the index is under the budget. */
  private async evictIfNeeded(): Promise<void> {
    if (this.closed) return;
    const totals = this.stmts.totals.get();
    if (!totals || totals.bytes <= this.maxBytes) return;
    this.flushAccess();
    const victims = this.db
      .transaction(() => {
        let bytes = this.stmts.totals.get()?.bytes ?? 0;
        const out: string[] = [];
        if (bytes <= this.maxBytes) return out;
        for (const row of this.stmts.byAccess.iterate()) {
          out.push(row.key);
          bytes -= row.size;
          if (bytes <= this.maxBytes) break;
        }
        for (const key of out) this.stmts.remove.run(key);
        return out;
      })
      .immediate();
    for (const key of victims) {
      await unlink(this.pathOf(key)).catch((err: unknown) => {
        if (errnoOf(err) !== 'ENOENT') this.log.warn('disk cache: evicting a file failed', { key, error: String(err) });
      });
      this.counters.evictions++;
    }
    if (victims.length > 0) this.log.debug('disk cache: evicted', { chunks: victims.length });
  }

  private isStaleTemp(name: string, mtimeMs: number): boolean {
    const m = TEMP_RE.exec(name);
    if (!m) return true;
    if (m[3] === this.host && !processAlive(Number(m[1]))) return true;
    return Date.now() - mtimeMs > this.staleTempMs;
  }

  private async repair(): Promise<void> {
    const report = this.repairReport;
    const removeFile = async (path: string): Promise<void> => {
      await rm(path, { force: true });
      report.filesDeleted++;
    };

    // 1. Temp files of writers that are gone.
    for (const name of await readdir(this.tmpDir)) {
      const path = join(this.tmpDir, name);
      const st = await stat(path).catch(() => undefined);
      if (!st) continue;
      if (st.isFile() && this.isStaleTemp(name, st.mtimeMs)) {
        await rm(path, { force: true });
        report.tempsDeleted++;
      }
    }

    // 2. Files against rows.
    const rows = new Map<string, { chunk_digest: Digest; size: number }>();
    for (const row of this.stmts.all.iterate()) rows.set(row.key, row);
    const seen = new Set<string>();
    for (const shard of await readdir(this.chunksDir, { withFileTypes: true })) {
      const shardPath = join(this.chunksDir, shard.name);
      if (!shard.isDirectory() || !SHARD_RE.test(shard.name)) {
        if (shard.isDirectory()) this.log.warn('disk cache: unknown directory left alone', { path: shardPath });
        else await removeFile(shardPath);
        continue;
      }
      const names = await readdir(shardPath, { withFileTypes: true }).catch(() => []);
      for (const entry of names) {
        const path = join(shardPath, entry.name);
        const parsed = parseChunkKey(entry.name);
        if (!entry.isFile() || !parsed || !entry.name.startsWith(shard.name)) {
          if (entry.isFile()) await removeFile(path);
          else this.log.warn('disk cache: unknown entry left alone', { path });
          continue;
        }
        const st = await stat(path).catch(() => undefined);
        if (!st) continue; // gone meanwhile
        const row = rows.get(entry.name);
        if (row) {
          seen.add(entry.name);
          let bad = st.size !== row.size;
          if (!bad && this.verifyOnOpen) {
            const data = await readFile(path).catch(() => undefined);
            bad = data !== undefined && sha256Of(data) !== row.chunk_digest;
            if (bad) this.counters.corrupt++;
          }
          if (bad) {
            this.stmts.removeIfSize.run(entry.name, row.size);
            report.rowsDropped++;
            await removeFile(path);
          }
          continue;
        }
        // Indexed since the snapshot of the rows (another process just wrote it): leave it be.
        if (this.lookup(entry.name) !== undefined) {
          seen.add(entry.name);
          continue;
        }
        // No row: only a whole content can be verified without one (its name is its digest).
        if (parsed.index === 0 && st.size <= CHUNK_BYTES) {
          const data = await readFile(path).catch(() => undefined);
          if (data !== undefined && data.length === st.size && sha256Of(data) === parsed.digest) {
            const added = this.stmts.adopt.run(entry.name, parsed.digest, data.length, Math.floor(st.mtimeMs));
            if (added.changes > 0) report.filesIndexed++;
            continue;
          }
        }
        await removeFile(path);
      }
    }

    // 3. Rows without files (stat again: a writer may have just renamed it into place).
    for (const key of rows.keys()) {
      if (seen.has(key)) continue;
      const st = await stat(this.pathOf(key)).catch(() => undefined);
      if (st) continue;
      this.stmts.remove.run(key);
      report.rowsDropped++;
    }

    // 4. Totals from scratch (the triggers keep them, this is cheap insurance).
    this.db.transaction(() => this.stmts.recount.run()).immediate();
    const r = report;
    if (r.rowsDropped + r.filesIndexed + r.filesDeleted + r.tempsDeleted > 0) {
      this.log.info('disk cache: repaired', { dir: this.dir, ...r });
    }
  }
}
