import { createHash, randomUUID, type Hash } from 'node:crypto';
import { mkdir, open, readdir, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { CairnError, ErrorCode, toCairnError } from '../../model/errors.js';
import type { Digest } from '../../model/digest.js';
import type { BlobStore } from '../blob-store.js';

/** How much of a body past the size limit is read (and dropped) before the connection is cut. */
export const DRAIN_BYTES = 8 * 1024 * 1024;

/** One blob upload in progress: data appended to a private file, hashed as it arrives. */
export interface Upload {
  readonly id: string;
  readonly repository: string;
  /** Bytes received so far. */
  size: number;
  updatedMs: number;
  readonly path: string;
  hash: Hash;
  /** A request is appending now (uploads are strictly sequential). */
  busy: boolean;
}

export interface UploadStoreOptions {
  /** Directory of upload files (emptied at start: sessions do not survive a restart). */
  dir: string;
  /** Where finished blobs go. */
  blobs: BlobStore;
  maxBlobBytes: number;
  ttlMs: number;
}

/**
 * Blob uploads. An upload's data lives under a random name in `dir` and is
 * never visible as a blob: only `finish` moves it into the blob store, after
 * its digest has been checked and the file fsynced.
 */
export class UploadStore {
  private readonly uploads = new Map<string, Upload>();

  constructor(private readonly opts: UploadStoreOptions) {
    if (!opts.dir) throw new CairnError(ErrorCode.INVALID_OPTION, 'UploadStore: option dir is required');
    if (!(opts.ttlMs > 0)) throw new CairnError(ErrorCode.INVALID_OPTION, 'UploadStore: option ttlMs must be > 0');
  }

  async init(): Promise<void> {
    await mkdir(this.opts.dir, { recursive: true });
    for (const name of await readdir(this.opts.dir)) await rm(join(this.opts.dir, name), { force: true });
  }

  get count(): number {
    return this.uploads.size;
  }

  async create(repository: string): Promise<Upload> {
    const id = randomUUID();
    const path = join(this.opts.dir, id);
    const fh = await open(path, 'wx', 0o600).catch((err: unknown) => {
      throw toCairnError(err, ErrorCode.STORAGE, 'starting an upload');
    });
    await fh.close();
    const up: Upload = {
      id,
      repository,
      size: 0,
      updatedMs: Date.now(),
      path,
      hash: createHash('sha256'),
      busy: false,
    };
    this.uploads.set(id, up);
    return up;
  }

  /** The upload `id` of `repository`; NOT_FOUND when unknown, expired or of another repository. */
  get(repository: string, id: string): Upload {
    const up = this.uploads.get(id);
    if (!up || up.repository !== repository)
      throw new CairnError(ErrorCode.NOT_FOUND, `upload ${JSON.stringify(id.slice(0, 64))} is unknown or expired`);
    return up;
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
    if (up.busy) throw new CairnError(ErrorCode.RANGE, `upload ${up.id}: another request is writing to it`);
    if (opts.start !== undefined && opts.start !== up.size) {
      throw new CairnError(
        ErrorCode.RANGE,
        `upload ${up.id}: chunk starts at ${opts.start} but ${up.size} bytes are stored`,
      );
    }
    const tooLarge = (): CairnError =>
      new CairnError(ErrorCode.TOO_LARGE, `upload ${up.id}: larger than the ${this.opts.maxBlobBytes}-byte blob limit`);
    if (opts.declaredBytes !== undefined && up.size + opts.declaredBytes > this.opts.maxBlobBytes) throw tooLarge();
    up.busy = true;
    const fh = await open(up.path, 'a');
    // Past the limit the rest of the body is read and dropped (up to a bound) so the refusal reaches
    // the client: leaving the loop early would destroy the request and reset the connection.
    let overBytes = 0;
    try {
      for await (const chunk of body) {
        if (overBytes > 0 || up.size + chunk.byteLength > this.opts.maxBlobBytes) {
          overBytes += chunk.byteLength;
          if (overBytes > DRAIN_BYTES) throw tooLarge();
          continue;
        }
        await fh.write(chunk);
        up.hash.update(chunk);
        up.size += chunk.byteLength;
        up.updatedMs = Date.now();
      }
      if (overBytes > 0) throw tooLarge();
    } catch (err) {
      if (err instanceof CairnError) throw err;
      const sys = err as NodeJS.ErrnoException;
      if (sys.code === 'ECONNRESET' || sys.code === 'ERR_STREAM_PREMATURE_CLOSE' || sys.name === 'AbortError')
        throw err;
      // A failed write leaves the file's length unknown: the upload cannot continue.
      await this.cancel(up);
      throw toCairnError(err, ErrorCode.STORAGE, `upload ${up.id}`);
    } finally {
      up.busy = false;
      await fh.close().catch(() => undefined);
    }
  }

  /** Checks the digest and moves the data into the blob store; the upload ends either way. */
  async finish(up: Upload, expected: Digest): Promise<{ size: number }> {
    if (up.busy) throw new CairnError(ErrorCode.RANGE, `upload ${up.id}: another request is writing to it`);
    const actual = `sha256:${up.hash.copy().digest('hex')}`;
    if (actual !== expected) {
      await this.cancel(up);
      throw new CairnError(ErrorCode.DIGEST_MISMATCH, `upload: expected ${expected} but the data hashes to ${actual}`);
    }
    try {
      const fh = await open(up.path, 'r+');
      await fh.sync();
      await fh.close();
      const final = this.opts.blobs.path(expected);
      await mkdir(join(final, '..'), { recursive: true });
      await rename(up.path, final);
    } catch (err) {
      await this.cancel(up);
      throw toCairnError(err, ErrorCode.STORAGE, `storing blob ${expected}`);
    }
    this.uploads.delete(up.id);
    return { size: up.size };
  }

  async cancel(up: Upload): Promise<void> {
    this.uploads.delete(up.id);
    await rm(up.path, { force: true });
  }

  /** Deletes uploads untouched for longer than the TTL; returns how many. */
  async expire(nowMs = Date.now()): Promise<number> {
    let n = 0;
    for (const up of [...this.uploads.values()]) {
      if (!up.busy && nowMs - up.updatedMs > this.opts.ttlMs) {
        await this.cancel(up);
        n += 1;
      }
    }
    return n;
  }
}
