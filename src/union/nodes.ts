/**
 * The layers of a view as one node table, struct-of-arrays.
 *
 * A node is one name in one layer: an entry of the layer, a directory the
 * layer implies (`a/b/c` without an `a/` entry), or a whiteout. Nodes of
 * layer k occupy ids `[layerBase[k], layerBase[k+1])`, the layer's root
 * directory first, parents always before their children. Opaque markers are
 * not nodes but a flag on their directory. Numeric attributes live in typed
 * arrays indexed by node id; the few variable-size ones (digests, symlink
 * targets, device numbers, xattrs) in side tables that `extra` points into.
 *
 * The node table is built layer by layer from `Entry` objects and keeps no
 * reference to them.
 */
import { CairnError, ErrorCode } from '../model/errors.js';
import { displayPath, type Entry } from '../model/entry.js';
import { mixKey, NamePoolBuilder, type NamePool } from './names.js';

/** Node kinds (low 4 bits of `kind`). */
export const K_FILE = 0;
export const K_HARDLINK = 1;
export const K_SYMLINK = 2;
export const K_DIR = 3;
export const K_CHAR = 4;
export const K_BLOCK = 5;
export const K_FIFO = 6;
export const K_WHITEOUT = 7;
export const KIND_MASK = 0x0f;
/** A directory that hides the same directory of lower layers. */
export const F_OPAQUE = 0x10;
/** A directory with no entry of its own in the layer. */
export const F_IMPLICIT = 0x20;

/** Attributes of a directory a layer implies without an entry: what `mkdir -p` leaves, made deterministic. */
export const IMPLICIT_DIR_MODE = 0o755;
export const IMPLICIT_DIR_MTIME = 0;

/** Overlayfs keeps its own state in these xattrs and never shows them. */
const OVERLAY_XATTR_PREFIX = 'trusted.overlay.';
const OPAQUE_XATTR = 'trusted.overlay.opaque';

/** The most layers a view takes (overlayfs stacks at most 500 lower layers). */
export const MAX_LAYERS = 500;

function kindOfType(e: Entry): number {
  switch (e.type) {
    case 'file':
      return K_FILE;
    case 'hardlink':
      return K_HARDLINK;
    case 'symlink':
      return K_SYMLINK;
    case 'dir':
      return K_DIR;
    case 'char':
      // The kernel reads a 0:0 character device in a layer as a whiteout, whoever put it there.
      return (e.devMajor ?? 0) === 0 && (e.devMinor ?? 0) === 0 ? K_WHITEOUT : K_CHAR;
    case 'block':
      return K_BLOCK;
    case 'fifo':
      return K_FIFO;
    case 'whiteout':
      return K_WHITEOUT;
    case 'opaque':
      return -1;
  }
}

function bad(message: string): never {
  throw new CairnError(ErrorCode.INVALID_INPUT, message);
}

function nextPow2(n: number): number {
  let p = 16;
  while (p < n) p *= 2;
  return p;
}

export const DIGEST_BYTES = 32;

/** Everything a node table holds once built (what a serialized view carries). */
export interface TableParts {
  layerBase: Int32Array;
  parent: Int32Array;
  nameId: Uint32Array;
  kind: Uint8Array;
  mode: Uint16Array;
  uid: Uint32Array;
  gid: Uint32Array;
  mtime: Float64Array;
  size: Float64Array;
  extra: Int32Array;
  count: Uint32Array;
  /** `DIGEST_BYTES` per file digest slot. */
  digests: Uint8Array;
  targets: string[];
  devs: number[];
  xattrs: Map<number, Record<string, string>>;
  names: NamePool;
}

/** Growable struct-of-arrays node storage plus the per-layer name index. */
export class NodeTable {
  /** Number of nodes. */
  n = 0;
  parent: Int32Array;
  nameId: Uint32Array;
  kind: Uint8Array;
  mode: Uint16Array;
  uid: Uint32Array;
  gid: Uint32Array;
  mtime: Float64Array;
  size: Float64Array;
  /** File: digest slot (-1 none). Hardlink: target node. Symlink: index into `targets`. Device: index into `devs` / 2. */
  extra: Int32Array;
  /** Directory: number of child directories in its layer. Non-directory: names of the inode in its layer. */
  count: Uint32Array;
  /** sha256 digests, 32 bytes per slot. */
  digests: Uint8Array;
  private digestSlots = 0;
  private digestBuf: Buffer | undefined;
  readonly targets: string[];
  readonly devs: number[];
  /** Xattrs as given (base64 values), overlay's private ones and ones the kernel refuses left out. */
  readonly xattrs: Map<number, Record<string, string>>;
  /** First node id of each layer, plus the total at the end. */
  readonly layerBase: Int32Array;
  readonly layerCount: number;

  /** The name index: node ids by (parent, name), open addressing, -1 empty. Dropped by `dropIndex`. */
  private index: Int32Array | null;
  private mask: number;
  private names: NamePoolBuilder | null;
  private pool: NamePool | null;

  /** Builds the table of `layers` (bottom first), or restores one from `encodeTable`'s parts (checked by the decoder). */
  constructor(source: Entry[][] | TableParts) {
    if (!Array.isArray(source)) {
      const p = source;
      this.n = p.parent.length;
      this.layerCount = p.layerBase.length - 1;
      this.layerBase = p.layerBase;
      this.parent = p.parent;
      this.nameId = p.nameId;
      this.kind = p.kind;
      this.mode = p.mode;
      this.uid = p.uid;
      this.gid = p.gid;
      this.mtime = p.mtime;
      this.size = p.size;
      this.extra = p.extra;
      this.count = p.count;
      this.digests = p.digests;
      this.digestSlots = p.digests.length / DIGEST_BYTES;
      this.targets = p.targets;
      this.devs = p.devs;
      this.xattrs = p.xattrs;
      this.names = null;
      this.pool = p.names;
      this.index = null;
      this.mask = 0;
      return;
    }
    const layers = source;
    this.targets = [];
    this.devs = [];
    this.xattrs = new Map();
    this.names = new NamePoolBuilder();
    this.pool = null;
    if (layers.length > MAX_LAYERS) bad(`union: ${layers.length} layers, at most ${MAX_LAYERS} are supported`);
    this.layerCount = layers.length;
    this.layerBase = new Int32Array(layers.length + 1);
    let entries = 0;
    let files = 0;
    for (const layer of layers) {
      entries += layer.length;
      for (const e of layer) if (e.type === 'file' && e.digest !== undefined) files++;
    }
    // Room for implied directories too (growing means copying every array and rehashing).
    const cap = entries + (entries >> 3) + layers.length + 64;
    this.parent = new Int32Array(cap);
    this.nameId = new Uint32Array(cap);
    this.kind = new Uint8Array(cap);
    this.mode = new Uint16Array(cap);
    this.uid = new Uint32Array(cap);
    this.gid = new Uint32Array(cap);
    this.mtime = new Float64Array(cap);
    this.size = new Float64Array(cap);
    this.extra = new Int32Array(cap);
    this.count = new Uint32Array(cap);
    this.digests = new Uint8Array(files * DIGEST_BYTES);
    this.mask = nextPow2(cap * 2) - 1;
    this.index = new Int32Array(this.mask + 1).fill(-1);
    for (let k = 0; k < layers.length; k++) {
      this.layerBase[k] = this.n;
      new LayerBuilder(this, k, layers[k] as Entry[]).build();
    }
    this.layerBase[layers.length] = this.n;
    this.finishNames();
    this.trim();
  }

  /** Gives back the spare capacity reserved for implied directories. */
  private trim(): void {
    if (this.parent.length - this.n < 1024) return;
    const n = this.n;
    this.parent = this.parent.slice(0, n);
    this.nameId = this.nameId.slice(0, n);
    this.kind = this.kind.slice(0, n);
    this.mode = this.mode.slice(0, n);
    this.uid = this.uid.slice(0, n);
    this.gid = this.gid.slice(0, n);
    this.mtime = this.mtime.slice(0, n);
    this.size = this.size.slice(0, n);
    this.extra = this.extra.slice(0, n);
    this.count = this.count.slice(0, n);
  }

  // ---- construction --------------------------------------------------------

  private grow(): void {
    const cap = Math.ceil(this.parent.length * 1.5) + 16;
    const g = <T extends Int32Array | Uint32Array | Uint16Array | Uint8Array | Float64Array>(
      a: T,
      ctor: new (n: number) => T,
    ): T => {
      const b = new ctor(cap);
      b.set(a);
      return b;
    };
    this.parent = g(this.parent, Int32Array);
    this.nameId = g(this.nameId, Uint32Array);
    this.kind = g(this.kind, Uint8Array);
    this.mode = g(this.mode, Uint16Array);
    this.uid = g(this.uid, Uint32Array);
    this.gid = g(this.gid, Uint32Array);
    this.mtime = g(this.mtime, Float64Array);
    this.size = g(this.size, Float64Array);
    this.extra = g(this.extra, Int32Array);
    this.count = g(this.count, Uint32Array);
    if (nextPow2(cap * 2) - 1 > this.mask) this.rehash(nextPow2(cap * 2));
  }

  private rehash(size: number): void {
    const index = new Int32Array(size).fill(-1);
    const mask = size - 1;
    const names = this.names as NamePoolBuilder;
    for (let node = 0; node < this.n; node++) {
      if (this.parent[node] === -1) continue;
      let i = mixKey(this.parent[node] as number, names.hashOf(this.nameId[node] as number)) & mask;
      while (index[i] !== -1) i = (i + 1) & mask;
      index[i] = node;
    }
    this.index = index;
    this.mask = mask;
  }

  internName(s: string): number {
    return (this.names as NamePoolBuilder).intern(s);
  }

  /** A new node under `parent` (-1 for a layer root), indexed unless it is a root. */
  addNode(parent: number, nameId: number, kind: number): number {
    if (this.n === this.parent.length) this.grow();
    const node = this.n++;
    this.parent[node] = parent;
    this.nameId[node] = nameId;
    this.kind[node] = kind;
    this.extra[node] = -1;
    this.count[node] = (kind & KIND_MASK) === K_DIR ? 0 : 1;
    if ((kind & KIND_MASK) === K_DIR && parent >= 0) this.count[parent] = (this.count[parent] as number) + 1;
    if ((kind & F_IMPLICIT) !== 0) this.mode[node] = IMPLICIT_DIR_MODE; // uid, gid, mtime stay 0
    if (parent >= 0) {
      const index = this.index as Int32Array;
      let i = mixKey(parent, (this.names as NamePoolBuilder).hashOf(nameId)) & this.mask;
      while (index[i] !== -1) i = (i + 1) & this.mask;
      index[i] = node;
    }
    return node;
  }

  /** During construction: the child of `parent` named by provisional id `nameId`, or -1. */
  childById(parent: number, nameId: number): number {
    const index = this.index as Int32Array;
    let i = mixKey(parent, (this.names as NamePoolBuilder).hashOf(nameId)) & this.mask;
    for (;;) {
      const c = index[i] as number;
      if (c === -1) return -1;
      if (this.parent[c] === parent && this.nameId[c] === nameId) return c;
      i = (i + 1) & this.mask;
    }
  }

  /** Turns a node into a directory (from a whiteout it replaces), keeping the parent's directory count right. */
  makeDir(node: number, flags: number): void {
    const wasDir = ((this.kind[node] as number) & KIND_MASK) === K_DIR;
    this.kind[node] = K_DIR | flags;
    this.count[node] = 0;
    if ((flags & F_IMPLICIT) !== 0) {
      this.mode[node] = IMPLICIT_DIR_MODE;
      this.uid[node] = 0;
      this.gid[node] = 0;
      this.mtime[node] = IMPLICIT_DIR_MTIME;
    }
    const p = this.parent[node] as number;
    if (!wasDir) this.count[p] = (this.count[p] as number) + 1;
  }

  setAttrs(node: number, e: Entry): void {
    this.mode[node] = e.mode & 0o7777;
    this.uid[node] = e.uid;
    this.gid[node] = e.gid;
    this.mtime[node] = e.mtime;
  }

  /** Stores `sha256:<64 hex>`; false when it is not one. */
  setDigest(node: number, digest: string): boolean {
    if (digest.length !== 7 + 2 * DIGEST_BYTES || !digest.startsWith('sha256:')) return false;
    this.digestBuf ??= Buffer.from(this.digests.buffer, this.digests.byteOffset, this.digests.byteLength);
    const slot = this.digestSlots;
    // Buffer's hex decoder is native and stops at the first non-hex character.
    if (this.digestBuf.write(digest.slice(7), slot * DIGEST_BYTES, DIGEST_BYTES, 'hex') !== DIGEST_BYTES) return false;
    this.digestSlots++;
    this.extra[node] = slot;
    return true;
  }

  setXattrs(node: number, kind: number, x: Record<string, string> | undefined): void {
    if (!x) return;
    let out: Record<string, string> | undefined;
    for (const name of Object.keys(x)) {
      if (name.startsWith(OVERLAY_XATTR_PREFIX)) continue;
      // Linux allows user.* xattrs on regular files and directories only; extraction drops the others.
      if (name.startsWith('user.') && kind !== K_FILE && kind !== K_DIR) continue;
      out ??= {};
      out[name] = x[name] as string;
    }
    if (out) this.xattrs.set(node, out);
    else this.xattrs.delete(node);
  }

  private finishNames(): void {
    const { pool, remap } = (this.names as NamePoolBuilder).finish();
    for (let node = 0; node < this.n; node++) this.nameId[node] = remap[this.nameId[node] as number] as number;
    this.names = null;
    this.pool = pool;
    // Bucket positions depend on name hashes, not ids, so the index stays valid under the new ids.
  }

  // ---- queries -------------------------------------------------------------

  get namePool(): NamePool {
    return this.pool as NamePool;
  }

  /** The child of `parent` named `name` in the parent's layer, or -1; `h` is `hashName(name)`. */
  child(parent: number, name: string, h: number): number {
    const index = this.index as Int32Array;
    const pool = this.pool as NamePool;
    let i = mixKey(parent, h) & this.mask;
    for (;;) {
      const c = index[i] as number;
      if (c === -1) return -1;
      if (this.parent[c] === parent && pool.equals(this.nameId[c] as number, name, h)) return c;
      i = (i + 1) & this.mask;
    }
  }

  /** The built table's contents (digest slots trimmed to those used). */
  parts(): TableParts {
    return {
      layerBase: this.layerBase,
      parent: this.parent.subarray(0, this.n),
      nameId: this.nameId.subarray(0, this.n),
      kind: this.kind.subarray(0, this.n),
      mode: this.mode.subarray(0, this.n),
      uid: this.uid.subarray(0, this.n),
      gid: this.gid.subarray(0, this.n),
      mtime: this.mtime.subarray(0, this.n),
      size: this.size.subarray(0, this.n),
      extra: this.extra.subarray(0, this.n),
      count: this.count.subarray(0, this.n),
      digests: this.digests.subarray(0, this.digestSlots * DIGEST_BYTES),
      targets: this.targets,
      devs: this.devs,
      xattrs: this.xattrs,
      names: this.namePool,
    };
  }

  /** Builds the per-layer name index of a restored table (stacked lookups probe it). */
  ensureIndex(): void {
    if (this.index) return;
    const size = nextPow2(this.n * 2);
    const mask = size - 1;
    const index = new Int32Array(size).fill(-1);
    const hashes = this.namePool.hashes;
    for (let node = 0; node < this.n; node++) {
      const p = this.parent[node] as number;
      if (p < 0) continue;
      let i = mixKey(p, hashes[this.nameId[node] as number] as number) & mask;
      while (index[i] !== -1) i = (i + 1) & mask;
      index[i] = node;
    }
    this.index = index;
    this.mask = mask;
  }

  /** Frees the name index (a flat view never looks names up per layer after construction). */
  dropIndex(): void {
    this.index = null;
  }

  get indexBytes(): number {
    return this.index ? this.index.byteLength : 0;
  }

  /** The layer (0 = bottom) that node belongs to. */
  layerOf(node: number): number {
    let lo = 0;
    let hi = this.layerCount - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if ((this.layerBase[mid] as number) <= node) lo = mid;
      else hi = mid - 1;
    }
    return lo;
  }

  kindOf(node: number): number {
    return (this.kind[node] as number) & KIND_MASK;
  }

  /** The node holding the inode a name refers to: a hardlink's target, else the node itself. */
  inodeOf(node: number): number {
    return this.kindOf(node) === K_HARDLINK ? (this.extra[node] as number) : node;
  }

  digestHex(node: number): string | undefined {
    const slot = this.extra[node] as number;
    if (slot < 0 || slot >= this.digestSlots) return undefined;
    this.digestBuf ??= Buffer.from(this.digests.buffer, this.digests.byteOffset, this.digests.byteLength);
    return this.digestBuf.toString('hex', slot * DIGEST_BYTES, (slot + 1) * DIGEST_BYTES);
  }

  /** A node's path in its layer, for messages and for re-resolving a directory. */
  pathOf(node: number): string {
    const parts: string[] = [];
    let cur = node;
    while ((this.parent[cur] as number) >= 0) {
      parts.push(this.namePool.name(this.nameId[cur] as number));
      cur = this.parent[cur] as number;
    }
    return parts.reverse().join('/');
  }

  /** Bytes held in typed arrays and side tables (an estimate for strings and maps). */
  approxBytes(): number {
    let b = 0;
    for (const a of [
      this.parent,
      this.nameId,
      this.kind,
      this.mode,
      this.uid,
      this.gid,
      this.mtime,
      this.size,
      this.extra,
      this.count,
      this.digests,
    ]) {
      b += a.byteLength;
    }
    return b + this.indexBytes;
  }
}

/** Builds the nodes of one layer, checking that the layer is coherent. */
class LayerBuilder {
  private readonly root: number;
  /** Parent directory of the previous entry: consecutive entries usually share it. */
  private lastDirPath = '';
  private lastDir: number;

  constructor(
    private readonly t: NodeTable,
    private readonly layer: number,
    private readonly entries: Entry[],
  ) {
    this.root = t.addNode(-1, t.internName(''), K_DIR | F_IMPLICIT);
    this.lastDir = this.root;
  }

  private where(e: Entry): string {
    return `union: layer ${this.layer}: ${e.type} ${displayPath(e.path)}`;
  }

  build(): void {
    const hardlinks: Entry[] = [];
    for (const e of this.entries) {
      if (e.type === 'hardlink') hardlinks.push(e);
      else this.add(e);
    }
    // Hardlinks point at earlier entries of the layer; adding them last lets those entries exist whatever the order.
    for (const e of hardlinks) this.add(e);
  }

  /** The directory node at `path`, creating implied directories; throws when a non-directory is in the way. */
  private dirAt(path: string, e: Entry): number {
    if (path === this.lastDirPath) return this.lastDir;
    const t = this.t;
    let cur = this.root;
    if (path !== '') {
      const parts = path.split('/');
      for (let i = 0; i < parts.length; i++) {
        const id = t.internName(parts[i] as string);
        let c = t.childById(cur, id);
        if (c === -1) c = t.addNode(cur, id, K_DIR | F_IMPLICIT);
        else {
          const k = t.kindOf(c);
          // A whiteout with entries under it in the same layer: the directory is new in this layer, so opaque.
          if (k === K_WHITEOUT) t.makeDir(c, F_IMPLICIT | F_OPAQUE);
          else if (k !== K_DIR) {
            bad(`${this.where(e)}: ${displayPath(parts.slice(0, i + 1).join('/'))} is not a directory in this layer`);
          }
        }
        cur = c;
      }
    }
    this.lastDirPath = path;
    this.lastDir = cur;
    return cur;
  }

  private add(e: Entry): void {
    const t = this.t;
    const kind = kindOfType(e);
    if (e.path === '') {
      // Overlayfs ignores an opaque root (and a root cannot be whited out): only a root directory entry counts.
      if (kind === -1 || kind === K_WHITEOUT) return;
      if (kind !== K_DIR) bad(`${this.where(e)}: the root must be a directory`);
      if (((t.kind[this.root] as number) & F_IMPLICIT) === 0) bad(`${this.where(e)}: root directory appears twice`);
      t.kind[this.root] = K_DIR;
      t.setAttrs(this.root, e);
      t.setXattrs(this.root, K_DIR, e.xattrs);
      return;
    }
    if (kind === -1) {
      // Opaque marker: the directory itself, implied if the layer has no entry for it.
      const node = this.dirAt(e.path, e);
      t.kind[node] = (t.kind[node] as number) | F_OPAQUE;
      return;
    }
    const slash = e.path.lastIndexOf('/');
    let parent: number;
    if (slash < 0) parent = this.root;
    else if (slash === this.lastDirPath.length && e.path.startsWith(this.lastDirPath)) parent = this.lastDir;
    else parent = this.dirAt(e.path.slice(0, slash), e);
    const nameId = t.internName(e.path.slice(slash + 1));
    let node = t.childById(parent, nameId);
    if (kind === K_WHITEOUT) {
      if (node === -1) t.addNode(parent, nameId, K_WHITEOUT);
      // A directory of this layer that also whites out its path replaces the lower one entirely.
      else if (t.kindOf(node) === K_DIR) t.kind[node] = (t.kind[node] as number) | F_OPAQUE;
      // A non-directory of this layer hides the lower path anyway; a second whiteout changes nothing.
      return;
    }
    if (node !== -1) {
      const k = t.kindOf(node);
      const flags = t.kind[node] as number;
      if (k === K_WHITEOUT) {
        // Whited out and re-created in the same layer: the entry wins, and a directory is opaque.
        if (kind === K_DIR) t.makeDir(node, F_OPAQUE);
        else t.kind[node] = kind;
      } else if (kind === K_DIR && k === K_DIR && (flags & F_IMPLICIT) !== 0) {
        t.kind[node] = flags & ~F_IMPLICIT;
      } else {
        const both = k === K_DIR || kind === K_DIR ? ' (both a directory and not)' : '';
        bad(`${this.where(e)}: path appears twice in the layer${both}`);
      }
    } else {
      node = t.addNode(parent, nameId, kind);
    }
    if (kind !== K_HARDLINK) {
      t.setAttrs(node, e);
      t.setXattrs(node, kind, e.xattrs);
    }
    switch (kind) {
      case K_DIR:
        if (
          e.xattrs?.[OPAQUE_XATTR] !== undefined &&
          Buffer.from(e.xattrs[OPAQUE_XATTR], 'base64').toString() === 'y'
        ) {
          // A layer that carries overlay's own opaque xattr is read as opaque by the kernel once extracted.
          t.kind[node] = (t.kind[node] as number) | F_OPAQUE;
        }
        this.lastDirPath = e.path;
        this.lastDir = node;
        break;
      case K_FILE:
        t.size[node] = e.size;
        if (e.digest !== undefined && !t.setDigest(node, e.digest)) {
          bad(`${this.where(e)}: digest ${JSON.stringify(e.digest)} is not sha256:<64 lowercase hex>`);
        }
        break;
      case K_SYMLINK:
        if (e.linkTarget === undefined || e.linkTarget === '') bad(`${this.where(e)}: symlink without a target`);
        t.extra[node] = t.targets.length;
        t.targets.push(e.linkTarget);
        t.size[node] = Buffer.byteLength(e.linkTarget);
        break;
      case K_CHAR:
      case K_BLOCK:
        t.extra[node] = t.devs.length / 2;
        t.devs.push(e.devMajor ?? 0, e.devMinor ?? 0);
        break;
      case K_HARDLINK:
        this.link(node, e);
        break;
      default:
        break;
    }
  }

  private link(node: number, e: Entry): void {
    const t = this.t;
    if (e.linkTarget === undefined) bad(`${this.where(e)}: hardlink without a target`);
    let target = this.find(e.linkTarget);
    if (target !== -1 && t.kindOf(target) === K_HARDLINK) target = t.extra[target] as number;
    if (target === -1 || target === node || t.kindOf(target) === K_DIR) {
      bad(`${this.where(e)}: hardlink to ${displayPath(e.linkTarget)}, which is not a non-directory of this layer`);
    }
    if (t.kindOf(target) === K_WHITEOUT) {
      // A link to a 0:0 character device is one too, so a whiteout as well.
      t.kind[node] = K_WHITEOUT;
      return;
    }
    t.extra[node] = target;
    t.count[target] = (t.count[target] as number) + 1;
    // Runtimes (containerd, moby) chown, chmod, setxattr and utime the link path after link(2): the
    // shared inode ends up with the attributes of its last name in the layer, xattrs accumulating.
    t.setAttrs(target, e);
    const x = t.xattrs.get(target);
    t.setXattrs(target, t.kindOf(target), x || e.xattrs ? { ...x, ...e.xattrs } : undefined);
  }

  /** The node at `path` in this layer, or -1; never creates anything. */
  private find(path: string): number {
    const t = this.t;
    let cur = this.root;
    if (path === '') return cur;
    for (const part of path.split('/')) {
      const id = t.internName(part);
      cur = t.childById(cur, id);
      if (cur === -1) return -1;
    }
    return cur;
  }
}
