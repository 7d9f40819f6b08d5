import type { Digest } from './digest.js';

/**
 * What one layer entry is. `whiteout` and `opaque` are the OCI markers
 * (`.wh.NAME`, `.wh..wh..opq`), recorded as markers and never as files.
 */
export type EntryType = 'file' | 'hardlink' | 'symlink' | 'dir' | 'char' | 'block' | 'fifo' | 'whiteout' | 'opaque';

export const ENTRY_TYPES: readonly EntryType[] = [
  'file',
  'hardlink',
  'symlink',
  'dir',
  'char',
  'block',
  'fifo',
  'whiteout',
  'opaque',
];

/**
 * One entry of a layer, in the layer's order.
 *
 * `path` is normalized: relative, no `.`/`..` components, no trailing slash;
 * the root directory is `""`. For a whiteout it is the path being deleted, for
 * an opaque marker the directory made opaque.
 */
export interface Entry {
  path: string;
  type: EntryType;
  /** Permission bits including setuid/setgid/sticky (mask 0o7777). */
  mode: number;
  uid: number;
  gid: number;
  uname?: string;
  gname?: string;
  /** Seconds since the epoch; fractional when the tar carried a PAX mtime. */
  mtime: number;
  /** Content size of a regular file; 0 for everything else. */
  size: number;
  /** sha256 of a regular file's content. */
  digest?: Digest;
  /** Symlink target as written in the tar, or the normalized path a hardlink points to. */
  linkTarget?: string;
  devMajor?: number;
  devMinor?: number;
  /** Extended attributes, values base64-encoded (they are binary, e.g. security.capability). */
  xattrs?: Record<string, string>;
}

/** Shows a normalized path to a person. */
export function displayPath(path: string): string {
  return `/${path}`;
}

export function parentOf(path: string): string {
  const slash = path.lastIndexOf('/');
  return slash < 0 ? '' : path.slice(0, slash);
}

export function baseName(path: string): string {
  return path.slice(path.lastIndexOf('/') + 1);
}

/** All ancestors of a path, nearest last, excluding the root and the path itself. */
export function ancestorsOf(path: string): string[] {
  const out: string[] = [];
  let i = path.indexOf('/');
  while (i >= 0) {
    out.push(path.slice(0, i));
    i = path.indexOf('/', i + 1);
  }
  return out;
}

export function isMarker(entry: Entry): boolean {
  return entry.type === 'whiteout' || entry.type === 'opaque';
}
