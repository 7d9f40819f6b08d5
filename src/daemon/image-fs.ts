import { CairnError, ErrorCode } from '../model/errors.js';
import type { BlobRef, BlobSource } from '../fetch/blob-source.js';
import type { FsAttr, FsStatfs, ReadOnlyFs } from '../fuse/filesystem.js';
import { statMode, type NodeAttr, type Resolved, type UnionView } from '../union/view.js';

/** What an ImageFs reports about each operation, for the daemon's measurements. */
export interface FsObserver {
  /** A path was resolved (or not) at `depth` (1 = top layer), taking `seconds`. */
  lookup?(op: string, depth: number | undefined, seconds: number): void;
  /** A read of content `ref` returned `bytes` in `seconds`, or failed with `error`. */
  read?(ref: BlobRef, bytes: number, seconds: number, error?: unknown): void;
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

  /** Resolves a FUSE path ("/", "/etc/passwd"), reporting the depth it resolved at. */
  private resolve(op: string, path: string): Resolved {
    const started = performance.now();
    const r = this.view.resolvePath(path);
    this.opts.observer?.lookup?.(op, r?.depth, (performance.now() - started) / 1000);
    if (!r) throw new CairnError(ErrorCode.NOT_FOUND, `${path}: no such file or directory`);
    return r;
  }

  private attr(op: string, path: string): NodeAttr {
    const a = this.view.getattr(this.resolve(op, path).ino);
    if (!a) throw new CairnError(ErrorCode.NOT_FOUND, `${path}: no such file or directory`);
    return a;
  }

  getattr(path: string): FsAttr {
    return toFsAttr(this.attr('getattr', path));
  }

  readdir(path: string): { names: string[]; attrs: FsAttr[] } {
    const dir = this.attr('readdir', path);
    const entries = this.view.readdirEntries(dir.ino);
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
  }

  readlink(path: string): string {
    const target = this.view.readlink(this.resolve('readlink', path).ino);
    if (target === undefined) throw new CairnError(ErrorCode.INVALID_INPUT, `${path}: not a symlink`);
    return target;
  }

  getxattr(path: string, name: string): Buffer | undefined {
    return this.view.getxattr(this.resolve('getxattr', path).ino, name);
  }

  listxattr(path: string): string[] {
    return this.view.listxattr(this.resolve('listxattr', path).ino) ?? [];
  }

  async read(path: string, length: number, position: number): Promise<Buffer> {
    // One probe of the view per read; reads that the page cache answers never get here.
    const a = this.attr('read', path);
    if (a.type === 'dir') throw new CairnError(ErrorCode.IS_A_DIRECTORY, `${path}: is a directory`);
    if (a.type !== 'file') throw new CairnError(ErrorCode.INVALID_INPUT, `${path}: not a regular file`);
    if (a.size === 0 || position >= a.size) return Buffer.alloc(0);
    if (!a.digest) throw new CairnError(ErrorCode.INTERNAL, `${path}: regular file without a content digest`);
    const started = performance.now();
    const ref = { digest: a.digest, size: a.size };
    try {
      const data = await this.content.read(ref, position, length, {
        signal: AbortSignal.timeout(this.opts.readDeadlineMs),
      });
      this.opts.observer?.read?.(ref, data.byteLength, (performance.now() - started) / 1000);
      return data;
    } catch (err) {
      this.opts.observer?.read?.(ref, 0, (performance.now() - started) / 1000, err);
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
