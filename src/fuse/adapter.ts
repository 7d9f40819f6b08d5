import Fuse, { type FuseOps, type FuseStat } from 'fuse-native';
import { CairnError, ErrorCode } from '../model/errors.js';
import { errnoOf } from './errno.js';
import type { FsAttr, ReadOnlyFs } from './filesystem.js';

export interface FuseMountOptions {
  /**
   * cairn's own deadline for one remote read. fuse-native answers ETIMEDOUT on
   * its own after its per-operation timeout; it is set past this deadline so
   * cairn's EIO always comes first.
   */
  readDeadlineMs: number;
  /** How long the kernel may cache attributes and names (the image is immutable). */
  cacheSeconds?: number;
  debug?: boolean;
  /** Shown as the filesystem source in /proc/mounts. */
  fsname?: string;
  /** Send opens to the filesystem's `open` (one round trip each) instead of letting libfuse answer them. */
  routeOpens?: boolean;
}

const BLOCK = 512;
/** Kernel readahead on a cairn mount (FUSE max_readahead); see the mount options below. */
const MAX_READAHEAD_BYTES = 64 * 1024;

function toStat(a: FsAttr): FuseStat {
  const t = new Date(a.mtimeMs);
  return {
    mode: a.mode,
    uid: a.uid,
    gid: a.gid,
    size: a.size,
    nlink: a.nlink,
    ino: a.ino,
    rdev: a.rdev,
    blksize: 4096,
    blocks: Math.ceil(a.size / BLOCK),
    atime: t,
    mtime: t,
    ctime: t,
  };
}

/**
 * Serves a ReadOnlyFs through fuse-native (the only importer of fuse-native).
 * Translation only: paths in, attributes and bytes out, CairnErrors to errno.
 */
export class FuseMount {
  private readonly fuse: Fuse;
  private mounted = false;

  constructor(
    readonly mountpoint: string,
    fs: ReadOnlyFs,
    opts: FuseMountOptions,
  ) {
    if (!Number.isSafeInteger(opts.readDeadlineMs) || opts.readDeadlineMs <= 0) {
      throw new CairnError(ErrorCode.INVALID_OPTION, 'FuseMount: option readDeadlineMs must be a positive integer');
    }
    // Runs a synchronous filesystem call and answers FUSE with its result or its errno.
    const sync =
      <T extends unknown[]>(fn: () => T) =>
      (cb: (err: number, ...r: T) => void): void => {
        let result: T;
        try {
          result = fn();
        } catch (err) {
          (cb as unknown as (err: number) => void)(errnoOf(err));
          return;
        }
        cb(0, ...result);
      };
    const ops: FuseOps = {
      getattr: (path, cb) => sync(() => [toStat(fs.getattr(path))] as [FuseStat])(cb),
      readdir: (path, cb) =>
        sync(() => {
          const r = fs.readdir(path);
          return [r.names, r.attrs.map(toStat)] as [string[], FuseStat[]];
        })(cb),
      readlink: (path, cb) => sync(() => [fs.readlink(path)] as [string])(cb),
      getxattr: (path, name, _position, cb) => sync(() => [fs.getxattr(path, name)] as [Buffer | undefined])(cb),
      listxattr: (path, cb) => sync(() => [fs.listxattr(path)] as [string[]])(cb),
      // No open (unless routeOpens), release or flush: libfuse answers them itself (open with
      // keep_cache from kernel_cache), so opening and closing a file costs no hop to JavaScript.
      // The mount is read-only (`ro`), so the kernel refuses write opens before FUSE.
      statfs: (_path, cb) =>
        sync(() => {
          const s = fs.statfs();
          const blocks = Math.ceil(s.bytes / 4096);
          return [
            {
              bsize: 4096,
              frsize: 4096,
              blocks,
              bfree: 0,
              bavail: 0,
              files: s.files,
              ffree: 0,
              favail: 0,
              fsid: 0,
              flag: 1,
              namemax: 255,
            },
          ];
        })(cb),
      read: (path, _handle, buf, len, pos, cb) => {
        fs.read(path, len, pos).then(
          (data) => {
            data.copy(buf, 0, 0, Math.min(len, data.byteLength));
            cb(Math.min(len, data.byteLength));
          },
          (err: unknown) => cb(errnoOf(err)),
        );
      },
    };
    const open = fs.open?.bind(fs);
    if (opts.routeOpens && open) ops.open = (path, _flags, cb) => sync(() => (open(path), [0] as [number]))(cb);
    const cacheSeconds = opts.cacheSeconds ?? 3600;
    this.fuse = new Fuse(mountpoint, ops, {
      // Reads only, past cairn's deadline, so cairn's EIO (not fuse-native's ETIMEDOUT) is what a
      // reader sees. The other operations answer synchronously: no timer per operation for them.
      timeout: {
        read: opts.readDeadlineMs + 5000,
        open: false,
        getattr: false,
        readdir: false,
        readlink: false,
        getxattr: false,
        listxattr: false,
        statfs: false,
      },
      force: true,
      mkdir: false,
      debug: opts.debug ?? false,
      // fuse-native has no option for use_ino; libfuse reads it from the same -o list,
      // and without it hardlinks would not share an inode number. max_readahead: the
      // kernel's default 128 KiB window made a cold start read (and fetch) pages nobody
      // used (bench/results/coldstart: tools/net:1 13.3 % of its bytes fetched instead of
      // 14.6 %); sequential reads still get 1 MiB requests from the fetcher's windows.
      // negative_timeout: a name that does not exist never will (the image is immutable), so the
      // kernel may remember its absence; libfuse2 otherwise asks again on every lookup (python's
      // start-up probes the same missing names many times).
      fsname: `${opts.fsname ?? 'cairn'},use_ino,readdir_ino,ro,max_readahead=${MAX_READAHEAD_BYTES},negative_timeout=${cacheSeconds}`,
      subtype: 'cairn',
      // The image is immutable: let the kernel keep pages, names and attributes.
      kernelCache: true,
      entryTimeout: cacheSeconds,
      attrTimeout: cacheSeconds,
    });
  }

  mount(): Promise<void> {
    return new Promise((resolve, reject) => {
      this.fuse.mount((err) => {
        if (err) {
          reject(new CairnError(ErrorCode.STORAGE, `mounting ${this.mountpoint}: ${err.message}`, { cause: err }));
          return;
        }
        this.mounted = true;
        resolve();
      });
    });
  }

  /** Unmounts; safe to call twice. */
  unmount(): Promise<void> {
    if (!this.mounted) return Promise.resolve();
    this.mounted = false;
    return new Promise((resolve, reject) => {
      this.fuse.unmount((err) => {
        if (err)
          reject(new CairnError(ErrorCode.STORAGE, `unmounting ${this.mountpoint}: ${err.message}`, { cause: err }));
        else resolve();
      });
    });
  }

  /** Lazily detaches a mount left by a process that died (fusermount -uz). */
  static clearStale(mountpoint: string): Promise<void> {
    return new Promise((resolve, reject) => {
      Fuse.unmount(mountpoint, (err) => (err ? reject(err) : resolve()));
    });
  }
}
