import { randomBytes } from 'node:crypto';
import { mkdir, open, readdir, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { CairnError, ErrorCode, toCairnError } from '../../model/errors.js';
import { DigestBuilder, hexOf, type Digest } from '../../model/digest.js';

const WRITE_BATCH_BYTES = 1024 * 1024;
/** Age past which a temp file is a leftover of a killed build, not a build under way. */
const STALE_TEMP_MS = 3600_000;

/**
 * Layer tars rebuilt from recipes, kept on disk under a byte bound (least
 * recently used out first). A tar enters only after it hashed to the digest
 * it is served under; concurrent requests for one digest share one build.
 * Server processes sharing the directory each keep their own LRU order: a tar
 * one evicts is rebuilt by another that needs it (a reader with the file open
 * keeps its data), so the directory holds up to about N times the bound.
 */
export class GeneratedCache {
  /** digest → size, oldest use first (Map keeps insertion order). */
  private readonly entries = new Map<Digest, number>();
  private readonly building = new Map<Digest, Promise<string>>();
  private totalBytes = 0;

  constructor(private readonly opts: { dir: string; maxBytes: number }) {
    if (!opts.dir) throw new CairnError(ErrorCode.INVALID_OPTION, 'GeneratedCache: option dir is required');
    if (!Number.isSafeInteger(opts.maxBytes) || opts.maxBytes < 0)
      throw new CairnError(ErrorCode.INVALID_OPTION, 'GeneratedCache: option maxBytes must be an integer ≥ 0');
  }

  async init(): Promise<void> {
    await mkdir(this.opts.dir, { recursive: true });
    for (const name of await readdir(this.opts.dir)) {
      const path = join(this.opts.dir, name);
      if (!/^[0-9a-f]{64}$/.test(name)) {
        // A temp file of a build under way in another server process is young: leave it.
        const s = await stat(path).catch(() => undefined);
        if (s && Date.now() - s.mtimeMs > STALE_TEMP_MS) await rm(path, { force: true });
        continue;
      }
      const size = (await stat(path)).size;
      this.entries.set(`sha256:${name}`, size);
      this.totalBytes += size;
    }
    await this.evict(undefined);
  }

  get bytes(): number {
    return this.totalBytes;
  }

  private path(digest: Digest): string {
    return join(this.opts.dir, hexOf(digest));
  }

  /** The path of the verified tar for `digest`, building it with `build` when absent. */
  async get(digest: Digest, build: () => AsyncIterable<Buffer>): Promise<string> {
    // The directory is shared by every server process (`--workers`): another one may have
    // built the tar (adopt it) or evicted it (forget it and build again).
    const onDisk = await stat(this.path(digest)).then(
      (s) => s.size,
      () => undefined,
    );
    const size = this.entries.get(digest);
    if (size !== undefined) {
      this.entries.delete(digest);
      this.totalBytes -= size;
    }
    if (onDisk !== undefined) {
      this.entries.set(digest, onDisk);
      this.totalBytes += onDisk;
      return this.path(digest);
    }
    let pending = this.building.get(digest);
    if (!pending) {
      pending = this.build(digest, build).finally(() => this.building.delete(digest));
      this.building.set(digest, pending);
    }
    return pending;
  }

  private async build(digest: Digest, build: () => AsyncIterable<Buffer>): Promise<string> {
    const tmp = join(this.opts.dir, `.tmp-${randomBytes(8).toString('hex')}`);
    const hasher = new DigestBuilder();
    const fh = await open(tmp, 'wx', 0o600);
    try {
      // A layer is many small pieces (headers, padding, small files): written in 1 MiB batches.
      let batch: Buffer[] = [];
      let batchBytes = 0;
      for await (const chunk of build()) {
        hasher.update(chunk);
        batch.push(chunk);
        batchBytes += chunk.byteLength;
        if (batchBytes >= WRITE_BATCH_BYTES) {
          await fh.write(Buffer.concat(batch, batchBytes));
          batch = [];
          batchBytes = 0;
        }
      }
      if (batchBytes > 0) await fh.write(Buffer.concat(batch, batchBytes));
      await fh.close();
      if (hasher.digest() !== digest) {
        throw new CairnError(
          ErrorCode.DIGEST_MISMATCH,
          `rebuilt layer ${digest} hashes to ${hasher.digest()}: the store is inconsistent`,
        );
      }
      await rename(tmp, this.path(digest));
    } catch (err) {
      await fh.close().catch(() => undefined);
      await rm(tmp, { force: true });
      throw toCairnError(err, ErrorCode.STORAGE, `rebuilding layer ${digest}`);
    }
    this.entries.set(digest, hasher.bytes);
    this.totalBytes += hasher.bytes;
    await this.evict(digest);
    return this.path(digest);
  }

  /** Removes least recently used tars over the bound (never `keep`; an open reader keeps its file). */
  private async evict(keep: Digest | undefined): Promise<void> {
    for (const [d, size] of this.entries) {
      if (this.totalBytes <= this.opts.maxBytes) break;
      if (d === keep) continue;
      this.entries.delete(d);
      this.totalBytes -= size;
      await rm(this.path(d), { force: true });
    }
  }
}
