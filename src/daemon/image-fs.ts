import { CairnError, ErrorCode, isCairnError } from '../model/errors.js';
import { deeperTier, type BlobRef, type BlobSource, type ContentTier } from '../fetch/blob-source.js';
import type { FsOperation } from '../metrics/fs-metrics.js';
import type { FsAttr, FsStatfs, ReadOnlyFs } from '../fuse/filesystem.js';
import { statMode, type NodeAttr, type Resolved, type UnionView } from '../union/view.js';

/** What an ImageFs reports about each operation, for the daemon's measurements. */
export interface FsObserver {
  /**
   * A path operation ended after `seconds` (name resolution included). `depth`
   * is the layer the path resolved in (1 = top layer), undefined when the name
   * does not exist (then `error` is the NOT_FOUND); `error` when it failed.
   */
  lookup?(op: PathOperation, depth: number | undefined, seconds: number, error?: unknown): void;
  /** A read ended: see ReadReport. */
  read?(report: ReadReport): void;
}

/** The operations that resolve a path (every one but read and release). */
export type PathOperation = Exclude<FsOperation, 'read'>;

export interface ReadReport {
  ref: BlobRef;
  /** Where in the content the read started. */
  position: number;
  /** The depth of the layer the file resolved in (1 = top layer). */
  depth: number;
  bytes: number;
  seconds: number;
  /** The furthest tier that answered a chunk of the read; undefined when no chunk was needed or no tier said. */
  source?: ContentTier;
  error?: unknown;
  /** The read failed because its deadline passed (`readDeadlineMs`). */
  deadlineMissed: boolean;
}

export interface ImageFsOptions {
  /** Deadline of one read, remote fetch included; past it the read fails (EIO at the FUSE edge). */
  readDeadlineMs: number;
  observer?: FsObserver;
}

/** Linux's encoding of a device number in a 32-bit st_rdev (what FUSE passes on). */
function makedev(major: number, minor: number): number {
  return ((minor & 0xff) | ((major & 0xfff) << 8) | ((minor & 0xfff00) << 12)) >>> 0;
}

function toFsAttr(a: NodeAttr): FsAttr {
  return {
    ino: a.ino,
    mode: statMode(a),
    nlink: a.nlink,
    uid: a.uid,
    gid: a.gid,
    size: a.size,
    mtimeMs: Math.round(a.mtime * 1000),
    rdev: a.type === 'char' || a.type === 'block' ? makedev(a.rdevMajor, a.rdevMinor) : 0,
  };
}

/**
 * An image as a read-only filesystem: names and attributes from the union
 * view (metadata only), contents from a BlobSource (fetched on first read,
 * cached by the tiers behind it). This is where a mount's policy lives; the
 * FUSE adapter only translates.
 */
export class ImageFs implements ReadOnlyFs {
  constructor(
    readonly view: UnionView,
    private readonly content: BlobSource,
    private readonly opts: ImageFsOptions,
  ) {
    if (!Number.isSafeInteger(opts.readDeadlineMs) || opts.readDeadlineMs <= 0) {
      throw new CairnError(ErrorCode.INVALID_OPTION, 'ImageFs: option readDeadlineMs must be a positive integer');
    }
  }

  /**
   * Runs a path operation: resolves `path`, then `fn` on what it resolved to,
   * reporting the depth and the time of the whole operation to the observer.
   */
  private pathOp<T>(op: PathOperation, path: string, fn: (r: Resolved) => T): T {
    const report = this.opts.observer?.lookup;
    const started = report ? performance.now() : 0;
    const r = this.view.resolvePath(path);
    let out: T;
    try {
      if (!r) throw new CairnError(ErrorCode.NOT_FOUND, `${path}: no such file or directory`);
      out = fn(r);
    } catch (err) {
      report?.(op, r?.depth, (performance.now() - started) / 1000, err);
      throw err;
    }
    report?.(op, r.depth, (performance.now() - started) / 1000);
    return out;
  }

  private attrOf(path: string, r: Resolved): NodeAttr {
    const a = this.view.getattr(r.ino);
    if (!a) throw new CairnError(ErrorCode.NOT_FOUND, `${path}: no such file or directory`);
    return a;
  }

  getattr(path: string): FsAttr {
    return this.pathOp('getattr', path, (r) => toFsAttr(this.attrOf(path, r)));
  }

  readdir(path: string): { names: string[]; attrs: FsAttr[] } {
    return this.pathOp('readdir', path, (r) => {
      const entries = this.view.readdirEntries(this.attrOf(path, r).ino);
      if (!entries) throw new CairnError(ErrorCode.NOT_A_DIRECTORY, `${path}: not a directory`);
      const names: string[] = [];
      const attrs: FsAttr[] = [];
      for (const e of entries) {
        const a = this.view.getattr(e.ino);
        if (!a) continue;
        names.push(e.name);
        attrs.push(toFsAttr(a));
      }
      return { names, attrs };
    });
  }

  readlink(path: string): string {
    return this.pathOp('readlink', path, (r) => {
      const target = this.view.readlink(r.ino);
      if (target === undefined) throw new CairnError(ErrorCode.INVALID_INPUT, `${path}: not a symlink`);
      return target;
    });
  }

  getxattr(path: string, name: string): Buffer | undefined {
    return this.pathOp('getxattr', path, (r) => this.view.getxattr(r.ino, name));
  }

  listxattr(path: string): string[] {
    return this.pathOp('listxattr', path, (r) => this.view.listxattr(r.ino) ?? []);
  }

  open(path: string): void {
    this.pathOp('open', path, (r) => {
      const a = this.attrOf(path, r);
      if (a.type === 'dir') throw new CairnError(ErrorCode.IS_A_DIRECTORY, `${path}: is a directory`);
      if (a.type !== 'file') throw new CairnError(ErrorCode.INVALID_INPUT, `${path}: not a regular file`);
    });
  }

  async read(path: string, length: number, position: number): Promise<Buffer> {
    // One probe of the view per read; reads that the page cache answers never get here.
    // Opens usually stay with libfuse (see ReadOnlyFs.open), so the depth comes from this probe.
    const r = this.view.resolvePath(path);
    const a = r ? this.attrOf(path, r) : undefined;
    if (!r || !a) throw new CairnError(ErrorCode.NOT_FOUND, `${path}: no such file or directory`);
    if (a.type === 'dir') throw new CairnError(ErrorCode.IS_A_DIRECTORY, `${path}: is a directory`);
    if (a.type !== 'file') throw new CairnError(ErrorCode.INVALID_INPUT, `${path}: not a regular file`);
    const depth = r.depth;
    if (a.size === 0 || position >= a.size) return Buffer.alloc(0);
    if (!a.digest) throw new CairnError(ErrorCode.INTERNAL, `${path}: regular file without a content digest`);
    const report = this.opts.observer?.read;
    const started = performance.now();
    const ref = { digest: a.digest, size: a.size };
    const signal = AbortSignal.timeout(this.opts.readDeadlineMs);
    let source: ContentTier | undefined;
    const onServed = report ? (t: ContentTier): void => void (source = deeperTier(source, t)) : undefined;
    try {
      const data = await this.content.read(ref, position, length, { signal, ...(onServed ? { onServed } : {}) });
      report?.({
        ref,
        position,
        depth,
        bytes: data.byteLength,
        seconds: (performance.now() - started) / 1000,
        source,
        deadlineMissed: false,
      });
      return data;
    } catch (err) {
      const seconds = (performance.now() - started) / 1000;
      const deadlineMissed = signal.aborted || isCairnError(err, ErrorCode.TIMEOUT);
      report?.({ ref, position, depth, bytes: 0, seconds, source, error: err, deadlineMissed });
      throw err;
    }
  }

  statfs(): FsStatfs {
    return this.view.statfs();
  }

  /** Sum of regular-file sizes in the merged view. */
  get imageBytes(): number {
    return this.view.imageBytes;
  }
}
