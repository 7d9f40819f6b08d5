import { createHash, randomUUID, type Hash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, open, readFile, readdir, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { CairnError, ErrorCode, toCairnError } from '../../model/errors.js';
import type { Digest } from '../../model/digest.js';
import type { BlobStore } from '../blob-store.js';

/** How much of a body past the size limit is read (and dropped) before the connection is cut. */
export const DRAIN_BYTES = 8 * 1024 * 1024;

const UPLOAD_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** One blob upload in progress, as read from its files: what a request may rely on. */
export interface Upload {
  readonly id: string;
  readonly repository: string;
  /** Bytes received so far (the data file's length). */
  size: number;
}

export interface UploadStoreOptions {
  /** Directory of upload files, shared by every server process of the store. */
  dir: string;
  /** Where finished blobs go. */
  blobs: BlobStore;
  maxBlobBytes: number;
  ttlMs: number;
}

/**
 * Blob uploads. An upload is two files in `dir`: `ID` (the data received so
 * far) and `ID.json` (its repository), plus `ID.lock` while a request appends.
 * Everything an upload is lives on disk, so the requests of one upload may
 * reach different server processes (`registry serve --workers N`) and an
 * upload survives a restart. Data is never visible as a blob: only `finish`
 * moves it into the blob store, after its digest has been checked and the file
 * fsynced. The running hash is kept in memory by the process that appended,
 * as a shortcut: `finish` rehashes the file when another process has written.
 */
export class UploadStore {
  /** Hashes of uploads this process appended to, valid while the file's size equals `size`. */
  private readonly hashes = new Map<string, { hash: Hash; size: number }>();

  constructor(private readonly opts: UploadStoreOptions) {
    if (!opts.dir) throw new CairnError(ErrorCode.INVALID_OPTION, 'UploadStore: option dir is required');
    if (!(opts.ttlMs > 0)) throw new CairnError(ErrorCode.INVALID_OPTION, 'UploadStore: option ttlMs must be > 0');
  }

  /** Creates the directory; uploads left by an earlier run stay until they expire. */
  async init(): Promise<void> {
    await mkdir(this.opts.dir, { recursive: true });
  }

  private dataPath(id: string): string {
    return join(this.opts.dir, id);
  }

  async create(repository: string): Promise<Upload> {
    const id = randomUUID();
    try {
      await writeFile(`${this.dataPath(id)}.json`, JSON.stringify({ repository }), { flag: 'wx', mode: 0o600 });
      await writeFile(this.dataPath(id), '', { flag: 'wx', mode: 0o600 });
    } catch (err) {
      await this.remove(id);
      throw toCairnError(err, ErrorCode.STORAGE, 'starting an upload');
    }
    this.hashes.set(id, { hash: createHash('sha256'), size: 0 });
    return { id, repository, size: 0 };
  }

  /** The upload `id` of `repository`; NOT_FOUND when unknown, expired or of another repository. */
  async get(repository: string, id: string): Promise<Upload> {
    const unknown = (): CairnError =>
      new CairnError(ErrorCode.NOT_FOUND, `upload ${JSON.stringify(id.slice(0, 64))} is unknown or expired`);
    if (!UPLOAD_ID.test(id)) throw unknown();
    let owner: unknown;
    let size: number;
    try {
      owner = (JSON.parse(await readFile(`${this.dataPath(id)}.json`, 'utf8')) as { repository?: unknown }).repository;
      size = (await stat(this.dataPath(id))).size;
    } catch {
      throw unknown();
    }
    if (owner !== repository) throw unknown();
    return { id, repository, size };
  }

  /** Takes the upload's append lock (one writer at a time, across processes). */
  private async lock(up: Upload, retry = true): Promise<() => Promise<void>> {
    const path = `${this.dataPath(up.id)}.lock`;
    try {
      await writeFile(path, String(process.pid), { flag: 'wx', mode: 0o600 });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST')
        throw toCairnError(err, ErrorCode.STORAGE, `upload ${up.id}`);
      // A lock whose process is gone (a worker killed mid-request) is stale: break it once.
      const holder = Number(await readFile(path, 'utf8').catch(() => ''));
      if (retry && Number.isSafeInteger(holder) && holder > 0 && !isAlive(holder)) {
        await rm(path, { force: true });
        return this.lock(up, false);
      }
      throw new CairnError(ErrorCode.RANGE, `upload ${up.id}: another request is writing to it`);
    }
    return () => rm(path, { force: true });
  }

  /**
   * Appends a request body. `start` (from Content-Range) must equal the bytes
   * received so far. On a client abort the bytes that did arrive stay and
   * the upload can resume from its new size.
   */
  async append(
    up: Upload,
    body: AsyncIterable<Buffer>,
    opts: { start?: number; declaredBytes?: number } = {},
  ): Promise<void> {
    const unlock = await this.lock(up);
    let fh;
    try {
      // The size under the lock is the one that counts: another process may have appended since `get`.
      up.size = (await stat(this.dataPath(up.id))).size;
      if (opts.start !== undefined && opts.start !== up.size) {
        throw new CairnError(
          ErrorCode.RANGE,
          `upload ${up.id}: chunk starts at ${opts.start} but ${up.size} bytes are stored`,
        );
      }
      if (opts.declaredBytes !== undefined && up.size + opts.declaredBytes > this.opts.maxBlobBytes)
        throw this.tooLarge(up);
      fh = await open(this.dataPath(up.id), 'a');
    } catch (err) {
      await unlock();
      throw err instanceof CairnError ? err : toCairnError(err, ErrorCode.NOT_FOUND, `upload ${up.id}`);
    }
    const known = this.hashes.get(up.id);
    const hash = known && known.size === up.size ? known.hash : undefined;
    if (!hash) this.hashes.delete(up.id);
    // Past the limit the rest of the body is read and dropped (up to a bound) so the refusal reaches
    // the client: leaving the loop early would destroy the request and reset the connection.
    let overBytes = 0;
    try {
      for await (const chunk of body) {
        if (overBytes > 0 || up.size + chunk.byteLength > this.opts.maxBlobBytes) {
          overBytes += chunk.byteLength;
          if (overBytes > DRAIN_BYTES) throw this.tooLarge(up);
          continue;
        }
        await fh.write(chunk);
        hash?.update(chunk);
        up.size += chunk.byteLength;
      }
      if (hash) this.hashes.set(up.id, { hash, size: up.size });
      if (overBytes > 0) throw this.tooLarge(up);
    } catch (err) {
      this.hashes.delete(up.id);
      if (err instanceof CairnError) throw err;
      const sys = err as NodeJS.ErrnoException;
      if (sys.code === 'ECONNRESET' || sys.code === 'ERR_STREAM_PREMATURE_CLOSE' || sys.name === 'AbortError')
        throw err;
      // A failed write leaves the file's length unknown: the upload cannot continue.
      await fh.close().catch(() => undefined);
      await this.cancel(up);
      throw toCairnError(err, ErrorCode.STORAGE, `upload ${up.id}`);
    } finally {
      await fh.close().catch(() => undefined);
      await unlock();
    }
  }

  private tooLarge(up: Upload): CairnError {
    return new CairnError(
      ErrorCode.TOO_LARGE,
      `upload ${up.id}: larger than the ${this.opts.maxBlobBytes}-byte blob limit`,
    );
  }

  /** The sha256 of the upload's data: the running hash when this process wrote all of it, else read back. */
  private async digestOf(up: Upload): Promise<Digest> {
    const known = this.hashes.get(up.id);
    if (known && known.size === up.size) return `sha256:${known.hash.copy().digest('hex')}`;
    const hash = createHash('sha256');
    for await (const chunk of createReadStream(this.dataPath(up.id)) as AsyncIterable<Buffer>) hash.update(chunk);
    return `sha256:${hash.digest('hex')}`;
  }

  /** Checks the digest and moves the data into the blob store; the upload ends either way. */
  async finish(up: Upload, expected: Digest): Promise<{ size: number }> {
    const unlock = await this.lock(up);
    try {
      up.size = (await stat(this.dataPath(up.id))).size;
      const actual = await this.digestOf(up);
      if (actual !== expected) {
        throw new CairnError(
          ErrorCode.DIGEST_MISMATCH,
          `upload: expected ${expected} but the data hashes to ${actual}`,
        );
      }
      const fh = await open(this.dataPath(up.id), 'r+');
      await fh.sync();
      await fh.close();
      const final = this.opts.blobs.path(expected);
      await mkdir(join(final, '..'), { recursive: true });
      await rename(this.dataPath(up.id), final);
    } catch (err) {
      await this.remove(up.id);
      throw err instanceof CairnError ? err : toCairnError(err, ErrorCode.STORAGE, `storing blob ${expected}`);
    } finally {
      await unlock();
    }
    await this.remove(up.id);
    return { size: up.size };
  }

  async cancel(up: Upload): Promise<void> {
    await this.remove(up.id);
  }

  private async remove(id: string): Promise<void> {
    this.hashes.delete(id);
    await rm(this.dataPath(id), { force: true });
    await rm(`${this.dataPath(id)}.json`, { force: true });
  }

  /**
   * Deletes uploads untouched (data and lock files) for longer than the TTL;
   * returns how many. Any process may run it: an upload being appended to
   * has fresh files.
   */
  async expire(nowMs = Date.now()): Promise<number> {
    let names: string[];
    try {
      names = await readdir(this.opts.dir);
    } catch {
      return 0;
    }
    const ids = new Set(names.map((n) => n.replace(/\.(json|lock)$/, '')).filter((id) => UPLOAD_ID.test(id)));
    let n = 0;
    for (const id of ids) {
      let newest = 0;
      for (const p of [this.dataPath(id), `${this.dataPath(id)}.json`, `${this.dataPath(id)}.lock`]) {
        const s = await stat(p).catch(() => undefined);
        if (s) newest = Math.max(newest, s.mtimeMs);
      }
      if (nowMs - newest <= this.opts.ttlMs) continue;
      await this.remove(id);
      await rm(`${this.dataPath(id)}.lock`, { force: true });
      n += 1;
    }
    return n;
  }
}
