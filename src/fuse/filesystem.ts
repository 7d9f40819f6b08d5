/**
 * What the FUSE adapter serves: a read-only filesystem addressed by path.
 * The adapter only translates; every decision (what a path is, where its bytes
 * come from, what is measured) lives behind this interface.
 *
 * Methods throw (or reject with) CairnErrors; the adapter maps their codes to
 * errno in one place (errno.ts). Synchronous methods must not block.
 */
export interface FsAttr {
  ino: number;
  /** Full st_mode: file type and permission bits. */
  mode: number;
  nlink: number;
  uid: number;
  gid: number;
  size: number;
  /** Milliseconds since the epoch. */
  mtimeMs: number;
  /** Encoded device number (makedev) for character and block devices. */
  rdev: number;
}

export interface FsStatfs {
  files: number;
  bytes: number;
}

export interface ReadOnlyFs {
  getattr(path: string): FsAttr;
  /** Child names (without `.` and `..`) with their attributes. */
  readdir(path: string): { names: string[]; attrs: FsAttr[] };
  readlink(path: string): string;
  getxattr(path: string, name: string): Buffer | undefined;
  listxattr(path: string): string[];
  /**
   * Reads a regular file by path. There is no open/release: the adapter leaves
   * them to libfuse (the mount is read-only and the kernel only opens regular
   * files through FUSE), so opening a file costs no round trip to JavaScript.
   */
  read(path: string, length: number, position: number): Promise<Buffer>;
  /**
   * Checks that `path` is a regular file that can be opened. Called only on a
   * mount that routes opens to cairn (to time them); otherwise libfuse answers
   * opens without a round trip to JavaScript.
   */
  open?(path: string): void;
  statfs(): FsStatfs;
}
