/**
 * The merged tree of an image's layers, with the semantics Linux overlayfs
 * shows for the same layers extracted to directories the way container
 * runtimes store them (each layer in its own directory, whiteouts as 0:0
 * character devices, opaque directories with `trusted.overlay.opaque=y`,
 * mounted `lowerdir=top:...:bottom`). Pure: no file system, no FUSE.
 *
 * Semantics, checked against the kernel by test/integration/union-oracle.test.ts:
 * - An upper layer's name hides the same name below. A whiteout hides it (and
 *   its subtree) in every lower layer and is never visible itself. A non-
 *   directory hides a lower directory's whole subtree; a directory over a
 *   lower non-directory (or over a whiteout) starts afresh. A directory
 *   present in consecutive layers merges: its children are the union, its
 *   attributes and xattrs come from the topmost layer that has it.
 * - An opaque directory hides everything below it in lower layers; its own
 *   layer's children and upper layers' remain. An opaque marker on the root
 *   is ignored, as overlayfs ignores the opaque xattr on a layer's root.
 * - A whiteout and an entry at the same path in one layer: the entry wins
 *   (the OCI rule: a whiteout applies to lower layers only); a directory so
 *   whited out in its own layer is opaque. A 0:0 character device is a
 *   whiteout, whichever way the layer spelt it.
 * - Implicit directories (a layer with `a/b/c` and no `a/` entry) are real
 *   directories of that layer with mode 0755, uid 0, gid 0, mtime 0 and no
 *   xattrs: what `mkdir -p` at extraction makes, with the time fixed so the
 *   view is deterministic. Being the topmost occurrence, they override the
 *   attributes of the same directory in lower layers, as they do in the kernel.
 *   (containerd's applier would instead copy a lower directory's attributes
 *   into such a directory; moby's and plain extraction do not.)
 * - Hardlinks of one layer share an inode: attributes are those of the last
 *   of its names in the layer (runtimes chown/chmod/utime the link path, so
 *   the link's header wins) and nlink is the number of names the inode has
 *   in its layer, hidden ones included: overlayfs reports the lower file's
 *   own link count. A link whose target name an upper layer hides or replaces
 *   still shows the layer's content.
 * - Directories report nlink 1 when merged from several layers (as overlayfs
 *   does) and 2 + subdirectories when they come from one layer only; size 0.
 *   Symlinks have mode 0777 and size = byte length of the target. xattrs:
 *   `trusted.overlay.*` are hidden (a directory carrying
 *   `trusted.overlay.opaque=y` in its tar entry is opaque), and `user.*` on
 *   anything but files and directories is dropped (Linux refuses to set them).
 *
 * One kernel behaviour is deliberately not reproduced: overlayfs lists a
 * whiteout by name (as a name lstat cannot find) in readdir of a directory
 * that comes from a single layer. This view never lists whiteouts.
 *
 * Inode numbers are stable: a function of the layers' entries alone, the
 * same in both lookup modes and across constructions. The root is 1.
 */
import type { Digest } from '../model/digest.js';
import type { Entry } from '../model/entry.js';
import { CairnError, ErrorCode } from '../model/errors.js';
import { hashName } from './names.js';
import { encodeTable, decodeTable } from './serialize.js';
import { K_BLOCK, K_CHAR, K_DIR, K_FIFO, K_FILE, K_HARDLINK, K_SYMLINK, K_WHITEOUT, NodeTable } from './nodes.js';
import { FlatStrategy, StackedStrategy, type FlatParts, type Strategy, type UnionStats } from './strategies.js';

export type { UnionStats } from './strategies.js';

/**
 * `stacked` resolves each name by walking the layers top-down as overlayfs
 * does (per-layer directory indexes; cost grows with the depth of the
 * layer that has the name). `flat` resolves from a merged index built at
 * construction (one probe).
 */
export type LookupMode = 'stacked' | 'flat';

export type NodeType = 'file' | 'symlink' | 'dir' | 'char' | 'block' | 'fifo';

export const ROOT_INO = 1;

/** A resolved name. */
export interface Resolved {
  ino: number;
  /** The layer the name was resolved in, counted from the top: 1 = the top layer. */
  depth: number;
}

export interface NodeAttr {
  ino: number;
  type: NodeType;
  /** Permission bits, mask 0o7777 (setuid, setgid, sticky included); 0o777 for symlinks. */
  mode: number;
  uid: number;
  gid: number;
  /** File: content bytes. Symlink: UTF-8 bytes of the target. Otherwise 0. */
  size: number;
  /** Seconds since the epoch, possibly fractional. */
  mtime: number;
  nlink: number;
  /** Device numbers of a character or block device; 0 otherwise. */
  rdevMajor: number;
  rdevMinor: number;
  /** A regular file's content digest (when the entry carried one). */
  digest?: Digest;
  /** A symlink's target, as written in the layer. */
  linkTarget?: string;
  /** The layer that provides this inode, as an index into the layers given to `build` (0 = bottom). */
  layer: number;
}

export interface DirEntry {
  name: string;
  ino: number;
  type: NodeType;
}

export interface BuildOptions {
  lookup: LookupMode;
}

const TYPE_NAMES: Record<number, NodeType> = {
  [K_FILE]: 'file',
  [K_SYMLINK]: 'symlink',
  [K_DIR]: 'dir',
  [K_CHAR]: 'char',
  [K_BLOCK]: 'block',
  [K_FIFO]: 'fifo',
};

const S_IFMT_OF: Record<NodeType, number> = {
  file: 0o100000,
  symlink: 0o120000,
  dir: 0o040000,
  char: 0o020000,
  block: 0o060000,
  fifo: 0o010000,
};

/** The full st_mode (file type bits and permission bits) of an attribute record. */
export function statMode(attr: Pick<NodeAttr, 'type' | 'mode'>): number {
  return S_IFMT_OF[attr.type] | attr.mode;
}

export class UnionView {
  readonly root = ROOT_INO;
  readonly lookupMode: LookupMode;
  /** Number of layers (an empty list of layers is one empty layer). */
  readonly layerCount: number;
  private readonly topRoot: number;

  private constructor(
    private readonly t: NodeTable,
    private readonly s: Strategy,
    lookupMode: LookupMode,
  ) {
    this.lookupMode = lookupMode;
    this.layerCount = t.layerCount;
    this.topRoot = t.layerBase[t.layerCount - 1] as number;
  }

  /**
   * Builds the view of `layers`, bottom layer first, each a layer's entries
   * in layer order (as `parseLayer` or a decoded recipe gives them). Keeps
   * no reference to the entries or their path strings. Throws CairnError
   * INVALID_INPUT for a layer that cannot be extracted: a path twice, a
   * path that is both a directory and not, a hardlink to nothing earlier.
   */
  static build(layers: Entry[][], opts: BuildOptions): UnionView {
    return UnionView.over(new NodeTable(layers.length === 0 ? [[]] : layers), opts);
  }

  /**
   * The bytes of the view of `layers` (bottom first), to be restored by
   * `decode`: what a registry serves so that mounts skip building. `recipes`
   * names the layers (one id each) and travels with the bytes.
   */
  static encode(layers: Entry[][], recipes: string[]): Buffer {
    if (recipes.length !== Math.max(1, layers.length)) {
      throw new CairnError(ErrorCode.INVALID_INPUT, `view: ${recipes.length} recipe ids for ${layers.length} layers`);
    }
    const t = new NodeTable(layers.length === 0 ? [[]] : layers);
    return encodeTable(t, new FlatStrategy(t).parts(), recipes);
  }

  /**
   * Restores a view from `encode`'s bytes, checked (INVALID_INPUT when they are
   * not a view); `recipes` are the ids it says it was built from. Equal to
   * `build` of the same layers in every answer.
   */
  static decode(bytes: Buffer, opts: BuildOptions): { view: UnionView; recipes: string[] } {
    const { table, recipes, flat } = decodeTable(bytes, { flat: opts.lookup === 'flat' });
    return { view: UnionView.over(table, opts, flat), recipes };
  }

  private static over(t: NodeTable, opts: BuildOptions, flat?: FlatParts): UnionView {
    const topRoot = t.layerBase[t.layerCount - 1] as number;
    let s: Strategy;
    if (opts.lookup === 'flat') {
      s = new FlatStrategy(t, flat);
      t.dropIndex();
    } else {
      t.ensureIndex();
      s = new StackedStrategy(t, topRoot);
    }
    return new UnionView(t, s, opts.lookup);
  }

  // ---- ino <-> node ----------------------------------------------------------

  private inoOf(node: number): number {
    return node === this.topRoot ? ROOT_INO : node + 2;
  }

  /** The node holding inode `ino`, or -1 when no visible name refers to it. */
  private nodeOf(ino: number): number {
    if (ino === ROOT_INO) return this.topRoot;
    const node = ino - 2;
    const t = this.t;
    if (!Number.isInteger(node) || node < 0 || node >= t.n || (t.parent[node] as number) < 0) return -1;
    const k = t.kindOf(node);
    if (k === K_WHITEOUT || k === K_HARDLINK) return -1;
    if (k === K_DIR && !this.s.isVisibleDir(node)) return -1;
    return node;
  }

  private dirOf(ino: number): number {
    const node = this.nodeOf(ino);
    return node >= 0 && this.t.kindOf(node) === K_DIR ? node : -1;
  }

  private resolved(dentry: number): Resolved {
    return { ino: this.inoOf(this.t.inodeOf(dentry)), depth: this.layerCount - this.t.layerOf(dentry) };
  }

  // ---- FUSE-shaped queries -------------------------------------------------

  /**
   * Resolves `name` in directory `parentIno`. Undefined when the parent is not
   * a visible directory or has no such visible name (`.` and `..` are the
   * FUSE layer's business and are never found here).
   */
  lookup(parentIno: number, name: string): Resolved | undefined {
    const dir = this.dirOf(parentIno);
    if (dir < 0 || name === '' || name.includes('/')) return undefined;
    const d = this.s.lookup(dir, name, hashName(name));
    return d < 0 ? undefined : this.resolved(d);
  }

  /**
   * Resolves a path from the root, component by component through `lookup`:
   * symlinks are not followed, `.` and empty components are skipped, `..` is
   * not interpreted (it is never found). `""` and `"/"` are the root (depth 1).
   */
  resolvePath(path: string): Resolved | undefined {
    let cur: Resolved = { ino: ROOT_INO, depth: 1 };
    for (const part of path.split('/')) {
      if (part === '' || part === '.') continue;
      const next = this.lookup(cur.ino, part);
      if (!next) return undefined;
      cur = next;
    }
    return cur;
  }

  /**
   * Attributes of inode `ino` (one a lookup returned, or the root); undefined
   * for a number no visible name refers to. Hidden non-directory nodes are
   * not checked for in stacked mode: pass only inos this view returned.
   */
  getattr(ino: number): NodeAttr | undefined {
    const node = this.nodeOf(ino);
    if (node < 0) return undefined;
    const t = this.t;
    const k = t.kindOf(node);
    const type = TYPE_NAMES[k] as NodeType;
    const attr: NodeAttr = {
      ino,
      type,
      mode: k === K_SYMLINK ? 0o777 : (t.mode[node] as number),
      uid: t.uid[node] as number,
      gid: t.gid[node] as number,
      size: k === K_FILE || k === K_SYMLINK ? (t.size[node] as number) : 0,
      mtime: t.mtime[node] as number,
      nlink:
        k === K_DIR ? (this.s.mergedLayers(node) > 1 ? 1 : 2 + (t.count[node] as number)) : (t.count[node] as number),
      rdevMajor: 0,
      rdevMinor: 0,
      layer: t.layerOf(node),
    };
    if (k === K_FILE) {
      const hex = t.digestHex(node);
      if (hex !== undefined) attr.digest = `sha256:${hex}`;
    } else if (k === K_SYMLINK) {
      attr.linkTarget = t.targets[t.extra[node] as number] as string;
    } else if (k === K_CHAR || k === K_BLOCK) {
      const i = (t.extra[node] as number) * 2;
      attr.rdevMajor = t.devs[i] as number;
      attr.rdevMinor = t.devs[i + 1] as number;
    }
    return attr;
  }

  /** Names in directory `ino`, sorted (UTF-16 code unit order), without `.` and `..`; undefined if not a directory. */
  readdir(ino: number): string[] | undefined {
    const dir = this.dirOf(ino);
    if (dir < 0) return undefined;
    const pool = this.t.namePool;
    return this.s.children(dir).map((c) => pool.name(this.t.nameId[c] as number));
  }

  /** As `readdir`, with each name's inode and type. */
  readdirEntries(ino: number): DirEntry[] | undefined {
    const dir = this.dirOf(ino);
    if (dir < 0) return undefined;
    const t = this.t;
    return this.s.children(dir).map((c) => {
      const inode = t.inodeOf(c);
      return {
        name: t.namePool.name(t.nameId[c] as number),
        ino: this.inoOf(inode),
        type: TYPE_NAMES[t.kindOf(inode)] as NodeType,
      };
    });
  }

  /** A symlink's target; undefined for anything else. */
  readlink(ino: number): string | undefined {
    const node = this.nodeOf(ino);
    if (node < 0 || this.t.kindOf(node) !== K_SYMLINK) return undefined;
    return this.t.targets[this.t.extra[node] as number];
  }

  /** One xattr's value; undefined when absent. */
  getxattr(ino: number, name: string): Buffer | undefined {
    const node = this.nodeOf(ino);
    if (node < 0) return undefined;
    const v = this.t.xattrs.get(node)?.[name];
    return v === undefined ? undefined : Buffer.from(v, 'base64');
  }

  /** Names of the xattrs of `ino`, sorted; undefined for an unknown ino. */
  listxattr(ino: number): string[] | undefined {
    const node = this.nodeOf(ino);
    if (node < 0) return undefined;
    const x = this.t.xattrs.get(node);
    return x ? Object.keys(x).sort() : [];
  }

  /**
   * Totals for statfs: distinct visible inodes and bytes of distinct regular
   * files. Computed at construction in flat mode, by a walk on first call in
   * stacked mode.
   */
  statfs(): UnionStats {
    const s = this.s.stats();
    return { files: s.files, bytes: s.bytes };
  }

  /** Sum of the sizes of the regular files in the merged view (each inode once). */
  get imageBytes(): number {
    return this.s.stats().bytes;
  }

  /** Bytes in the view's typed arrays (names, side tables and maps not counted): a floor for its heap. */
  get arrayBytes(): number {
    return this.t.approxBytes() + this.s.approxBytes() + this.t.namePool.chars;
  }
}
