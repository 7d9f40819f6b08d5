import { createReadStream, type ReadStream } from 'node:fs';
import { mkdir, open, readdir, rename, rm, stat, unlink, utimes } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { CairnError, ErrorCode, toCairnError } from '../model/errors.js';
import { DigestBuilder, hexOf, isDigest, type Digest } from '../model/digest.js';
import { ChunkHasher } from '../model/chunks.js';

export interface PutResult {
  digest: Digest;
  size: number;
  /** False when the content was already stored (nothing new written). */
  created: boolean;
  /** Packed chunk digests (see model/chunks.ts), for content larger than one chunk. */
  chunks?: Buffer;
}

/**
 * Content-addressed file store: `blobs/sha256/<2 hex>/<64 hex>`.
 * Contract: a blob visible under its digest is complete, fsynced and hashes to
 * that digest. Writes go to `tmp/`, are hashed while written, fsynced, checked
 * against the expected digest when one is given, then renamed into place.
 */
export class BlobStore {
  readonly dir: string;
  readonly tmpDir: string;

  constructor(opts: { root: string }) {
    if (typeof opts.root !== 'string' || opts.root === '') {
      throw new CairnError(ErrorCode.INVALID_OPTION, 'BlobStore: option root must be a non-empty path');
    }
    this.dir = join(opts.root, 'blobs', 'sha256');
    this.tmpDir = join(opts.root, 'tmp');
  }

  async init(): Promise<void> {
    await mkdir(this.dir, { recursive: true });
    await mkdir(this.tmpDir, { recursive: true });
  }

  /** Path of a blob; the digest is validated so nothing unchecked reaches the filesystem. */
  path(digest: Digest): string {
    if (!isDigest(digest))
      throw new CairnError(ErrorCode.INVALID_INPUT, `blob path: ${String(digest)} is not a digest`);
    const hex = hexOf(digest);
    return join(this.dir, hex.slice(0, 2), hex);
  }

  async size(digest: Digest): Promise<number | undefined> {
    try {
      return (await stat(this.path(digest))).size;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw toCairnError(err, ErrorCode.STORAGE, `blob ${digest}`);
    }
  }

  async has(digest: Digest): Promise<boolean> {
    return (await this.size(digest)) !== undefined;
  }

  /** Stores content from a buffer or a stream of chunks. */
  async put(source: Uint8Array | AsyncIterable<Uint8Array>, opts: { expected?: Digest } = {}): Promise<PutResult> {
    const tmp = join(this.tmpDir, `${Date.now()}-${randomBytes(8).toString('hex')}`);
    const hasher = new DigestBuilder();
    const chunker = new ChunkHasher();
    let fh;
    try {
      fh = await open(tmp, 'wx', 0o644);
      if (source instanceof Uint8Array) {
        hasher.update(source);
        chunker.update(source);
        await fh.writeFile(source);
      } else {
        for await (const chunk of source) {
          hasher.update(chunk);
          chunker.update(chunk);
          await fh.write(chunk);
        }
      }
      await fh.sync();
      await fh.close();
      fh = undefined;
      const digest = hasher.digest();
      const chunks = chunker.finish(hasher.bytes);
      if (opts.expected !== undefined && opts.expected !== digest) {
        throw new CairnError(
          ErrorCode.DIGEST_MISMATCH,
          `blob: expected ${opts.expected} but content hashes to ${digest}`,
        );
      }
      const final = this.path(digest);
      if (await this.has(digest)) {
        await unlink(tmp);
        // Refreshed so gc's grace period protects a stray blob an import is about to reference again.
        const now = new Date();
        await utimes(final, now, now).catch(() => undefined);
        return { digest, size: hasher.bytes, created: false, ...(chunks ? { chunks } : {}) };
      }
      await mkdir(join(final, '..'), { recursive: true });
      await rename(tmp, final);
      return { digest, size: hasher.bytes, created: true, ...(chunks ? { chunks } : {}) };
    } catch (err) {
      await fh?.close().catch(() => undefined);
      await rm(tmp, { force: true }).catch(() => undefined);
      throw toCairnError(err, ErrorCode.STORAGE, 'storing blob');
    }
  }

  /** Opens a blob for reading, whole or an inclusive byte range. */
  openRead(digest: Digest, range?: { start: number; end: number }, highWaterMark = 1024 * 1024): ReadStream {
    return createReadStream(this.path(digest), { ...range, highWaterMark });
  }

  /** Every stored digest (for gc and repair). */
  async *list(): AsyncGenerator<Digest> {
    let shards: string[];
    try {
      shards = await readdir(this.dir);
    } catch {
      return;
    }
    for (const shard of shards.sort()) {
      for (const name of (await readdir(join(this.dir, shard))).sort()) {
        const d = `sha256:${name}`;
        if (isDigest(d) && name.startsWith(shard)) yield d;
      }
    }
  }

  async remove(digest: Digest): Promise<void> {
    await rm(this.path(digest), { force: true });
  }
}
