/**
 * The two ways a view resolves names, over the same node table.
 *
 * Both answer in terms of nodes: a directory is named by its topmost node
 * (the node of the highest layer that provides it), and a lookup returns the
 * topmost node carrying the name (a dentry; for a hardlink its target holds
 * the inode). They must agree on every answer; the unit and oracle tests
 * check that they do.
 */
import { hashName, mixKey } from './names.js';
import { F_OPAQUE, K_DIR, K_FILE, K_WHITEOUT, type NodeTable } from './nodes.js';

export interface UnionStats {
  /** Distinct inodes visible, directories and the root included. */
  files: number;
  /** Sum of the sizes of the distinct regular-file inodes visible (a hardlinked file counts once). */
  bytes: number;
}

/**
 * The merged index of a flat view: merged node r has parent mParent[r] (-1 for
 * the root, r = 0), topmost layer node mTop[r] and mChain[r] merged layers;
 * `index` is an open-addressing table of merged nodes by (parent, name), -1
 * empty, a power of two long; the children of r are csrList[csrStart[r] ..
 * csrStart[r+1]), sorted by name.
 */
export interface FlatParts {
  mParent: Int32Array;
  mTop: Int32Array;
  mChain: Uint16Array;
  index: Int32Array;
  csrStart: Uint32Array;
  csrList: Int32Array;
  stats: UnionStats;
}

export interface Strategy {
  /** The topmost node named `name` in directory `dir` (a visible directory's top node), or -1. `h` = hashName(name). */
  lookup(dir: number, name: string, h: number): number;
  /** Whether `node` is the top node of a visible directory. */
  isVisibleDir(node: number): boolean;
  /** How many layers' directories merge into directory `dir` (1 = it comes from one layer only). */
  mergedLayers(dir: number): number;
  /** The top nodes of the visible names in `dir`, sorted by name. */
  children(dir: number): number[];
  stats(): UnionStats;
  /** Bytes held in typed arrays. */
  approxBytes(): number;
}

function nextPow2(n: number): number {
  let p = 16;
  while (p < n) p *= 2;
  return p;
}

/**
 * Groups `items` by `groupOf`, each group sorted by `keyOf` (a name id, so by
 * name), with two counting sorts. Returns CSR arrays: the members of group g
 * are `list[start[g] .. start[g+1])`.
 */
function groupSorted(
  items: number,
  groups: number,
  keys: number,
  groupOf: (i: number) => number,
  keyOf: (i: number) => number,
  include: (i: number) => boolean,
): { start: Uint32Array; list: Int32Array } {
  const byKey = new Uint32Array(keys + 1);
  let total = 0;
  for (let i = 0; i < items; i++) {
    if (!include(i)) continue;
    const k = keyOf(i) + 1;
    byKey[k] = (byKey[k] as number) + 1;
    total++;
  }
  for (let k = 0; k < keys; k++) byKey[k + 1] = (byKey[k + 1] as number) + (byKey[k] as number);
  const sorted = new Int32Array(total);
  for (let i = 0; i < items; i++) {
    if (!include(i)) continue;
    const k = keyOf(i);
    sorted[byKey[k] as number] = i;
    byKey[k] = (byKey[k] as number) + 1;
  }
  const start = new Uint32Array(groups + 1);
  for (let j = 0; j < total; j++) {
    const g = groupOf(sorted[j] as number) + 1;
    start[g] = (start[g] as number) + 1;
  }
  for (let g = 0; g < groups; g++) start[g + 1] = (start[g + 1] as number) + (start[g] as number);
  const fill = start.slice(0, groups);
  const list = new Int32Array(total);
  for (let j = 0; j < total; j++) {
    const i = sorted[j] as number;
    const g = groupOf(i);
    list[fill[g] as number] = i;
    fill[g] = (fill[g] as number) + 1;
  }
  return { start, list };
}

/** Walks every visible inode once through `s`, counting what statfs reports. */
function countVisible(t: NodeTable, s: Strategy, root: number): UnionStats {
  const seen = new Uint8Array(t.n);
  let files = 0;
  let bytes = 0;
  const stack = [root];
  seen[root] = 1;
  files++;
  while (stack.length > 0) {
    const dir = stack.pop() as number;
    for (const c of s.children(dir)) {
      const ino = t.inodeOf(c);
      if (seen[ino]) continue;
      seen[ino] = 1;
      files++;
      const k = t.kindOf(ino);
      if (k === K_FILE) bytes += t.size[ino] as number;
      else if (k === K_DIR) stack.push(ino);
    }
  }
  return { files, bytes };
}

/**
 * Overlayfs's way: a directory is the stack of the same directory in every
 * layer that has it, top first (its "chain"); a name is looked up in each
 * layer of its parent's chain, top down, until a non-directory, a whiteout
 * or an opaque directory stops the descent. Costs a probe per layer
 * consulted. Chains of directories are cached once computed, in a pooled
 * typed array.
 */
export class StackedStrategy implements Strategy {
  private readonly chainAt: Int32Array;
  private readonly chainLen: Uint16Array;
  private pool: Int32Array;
  private poolN = 0;
  private readonly csrStart: Uint32Array;
  private readonly csrList: Int32Array;
  private statsCache: UnionStats | undefined;

  constructor(
    private readonly t: NodeTable,
    private readonly topRoot: number,
  ) {
    this.chainAt = new Int32Array(t.n).fill(-1);
    this.chainLen = new Uint16Array(t.n);
    this.pool = new Int32Array(Math.max(64, t.layerCount * 4));
    // The root merges every layer's root: overlayfs ignores an opaque root.
    this.chainAt[topRoot] = 0;
    this.chainLen[topRoot] = t.layerCount;
    for (let k = t.layerCount - 1; k >= 0; k--) this.push(t.layerBase[k] as number);
    const { start, list } = groupSorted(
      t.n,
      t.n,
      t.namePool.count,
      (i) => t.parent[i] as number,
      (i) => t.nameId[i] as number,
      (i) => (t.parent[i] as number) >= 0,
    );
    this.csrStart = start;
    this.csrList = list;
  }

  private push(node: number): void {
    if (this.poolN === this.pool.length) {
      const next = new Int32Array(this.pool.length * 2);
      next.set(this.pool);
      this.pool = next;
    }
    this.pool[this.poolN++] = node;
  }

  /** Makes sure `dir`'s chain is known, re-resolving its path if needed; false when `dir` is not visible. */
  private ensureChain(dir: number): boolean {
    if ((this.chainAt[dir] as number) >= 0) return true;
    if (this.t.kindOf(dir) !== K_DIR) return false;
    // A directory never looked up (or looked up in another session): resolve its path from the root.
    let cur = this.topRoot;
    const path = this.t.pathOf(dir);
    for (const part of path.split('/')) {
      cur = this.lookup(cur, part, hashName(part));
      if (cur < 0 || this.t.kindOf(cur) !== K_DIR) return false;
    }
    return cur === dir;
  }

  lookup(dir: number, name: string, h: number): number {
    if (!this.ensureChain(dir)) return -1;
    const t = this.t;
    const at = this.chainAt[dir] as number;
    const len = this.chainLen[dir] as number;
    let found = -1;
    let start = -1;
    for (let i = 0; i < len; i++) {
      const c = t.child(this.pool[at + i] as number, name, h);
      if (c < 0) continue;
      const kind = t.kind[c] as number;
      const k = kind & 0x0f;
      if (found < 0) {
        if (k === K_WHITEOUT) return -1;
        found = c;
        if (k !== K_DIR || (this.chainAt[c] as number) >= 0) return c;
        start = this.poolN;
      } else if (k !== K_DIR) {
        break;
      }
      this.push(c);
      if ((kind & F_OPAQUE) !== 0) break;
    }
    if (found >= 0) {
      this.chainAt[found] = start;
      this.chainLen[found] = this.poolN - start;
    }
    return found;
  }

  isVisibleDir(node: number): boolean {
    return this.ensureChain(node);
  }

  mergedLayers(dir: number): number {
    return this.ensureChain(dir) ? (this.chainLen[dir] as number) : 0;
  }

  children(dir: number): number[] {
    if (!this.ensureChain(dir)) return [];
    const t = this.t;
    const at = this.chainAt[dir] as number;
    const len = this.chainLen[dir] as number;
    const out: number[] = [];
    if (len === 1) {
      for (let j = this.csrStart[dir] as number; j < (this.csrStart[dir + 1] as number); j++) {
        const c = this.csrList[j] as number;
        if (t.kindOf(c) !== K_WHITEOUT) out.push(c);
      }
      return out;
    }
    // The topmost node of each name wins; whiteouts among them hide the name.
    const top = new Map<number, number>();
    for (let i = 0; i < len; i++) {
      const d = this.pool[at + i] as number;
      for (let j = this.csrStart[d] as number; j < (this.csrStart[d + 1] as number); j++) {
        const c = this.csrList[j] as number;
        const id = t.nameId[c] as number;
        if (!top.has(id)) top.set(id, c);
      }
    }
    const ids = [...top.keys()].sort((a, b) => a - b);
    for (const id of ids) {
      const c = top.get(id) as number;
      if (t.kindOf(c) !== K_WHITEOUT) out.push(c);
    }
    return out;
  }

  stats(): UnionStats {
    this.statsCache ??= countVisible(this.t, this, this.topRoot);
    return this.statsCache;
  }

  approxBytes(): number {
    return (
      this.chainAt.byteLength +
      this.chainLen.byteLength +
      this.pool.byteLength +
      this.csrStart.byteLength +
      this.csrList.byteLength
    );
  }
}

/**
 * The merged index: layers applied bottom-up at construction, as extracting
 * them in order into one directory would (a whiteout removes, an opaque or
 * replacing directory starts afresh, a directory over a directory merges).
 * Each merged node records its topmost layer node and how many layers'
 * directories it merges. Unreachable nodes are then dropped and one hash
 * index keyed by (merged parent, name) answers every lookup in one probe.
 */
export class FlatStrategy implements Strategy {
  private readonly mParent: Int32Array;
  private readonly mTop: Int32Array;
  private readonly mChain: Uint16Array;
  private readonly nodeToMerged: Int32Array;
  private readonly index: Int32Array;
  private readonly mask: number;
  private readonly csrStart: Uint32Array;
  private readonly csrList: Int32Array;
  private readonly statsValue: UnionStats;

  /** Merges the table's layers, or takes the merged index `restored` from a serialized view (checked by its decoder). */
  constructor(
    private readonly t: NodeTable,
    restored?: FlatParts,
  ) {
    if (restored) {
      this.mParent = restored.mParent;
      this.mTop = restored.mTop;
      this.mChain = restored.mChain;
      this.index = restored.index;
      this.mask = restored.index.length - 1;
      this.csrStart = restored.csrStart;
      this.csrList = restored.csrList;
      this.statsValue = restored.stats;
      this.nodeToMerged = new Int32Array(t.n).fill(-1);
      for (let r = 0; r < restored.mTop.length; r++) this.nodeToMerged[restored.mTop[r] as number] = r;
      return;
    }
    const n = t.n;
    const L = t.layerCount;
    const hashes = t.namePool.hashes;
    const nameId = t.nameId;
    const mParent = new Int32Array(n + 1);
    const mTop = new Int32Array(n + 1);
    const mChain = new Uint16Array(n + 1);
    const alive = new Uint8Array(n + 1);
    let size = nextPow2(n * 2);
    let mask = size - 1;
    let index = new Int32Array(size).fill(-1);
    let maxLayer = 0;
    for (let k = 0; k < L; k++)
      maxLayer = Math.max(maxLayer, (t.layerBase[k + 1] as number) - (t.layerBase[k] as number));
    const l2m = new Int32Array(maxLayer);

    mParent[0] = -1;
    mTop[0] = t.layerBase[0] as number;
    mChain[0] = 1;
    alive[0] = 1;
    let M = 1;
    for (let k = 0; k < L; k++) {
      const base = t.layerBase[k] as number;
      const end = t.layerBase[k + 1] as number;
      if (k > 0) {
        mTop[0] = base;
        mChain[0] = (mChain[0] as number) + 1;
      }
      l2m[0] = 0;
      for (let node = base + 1; node < end; node++) {
        const mp = l2m[(t.parent[node] as number) - base] as number;
        const id = nameId[node] as number;
        let slot = mixKey(mp, hashes[id] as number) & mask;
        let ex: number;
        for (;;) {
          ex = index[slot] as number;
          if (ex === -1 || (mParent[ex] === mp && nameId[mTop[ex] as number] === id)) break;
          slot = (slot + 1) & mask;
        }
        const exAlive = ex >= 0 && alive[ex] === 1;
        const kind = t.kind[node] as number;
        const k0 = kind & 0x0f;
        if (k0 === K_WHITEOUT) {
          if (exAlive) alive[ex] = 0;
          l2m[node - base] = -1;
          continue;
        }
        if (k0 === K_DIR && exAlive && t.kindOf(mTop[ex] as number) === K_DIR && (kind & F_OPAQUE) === 0) {
          mTop[ex] = node;
          mChain[ex] = (mChain[ex] as number) + 1;
          l2m[node - base] = ex;
          continue;
        }
        if (exAlive) alive[ex] = 0;
        const m = M++;
        mParent[m] = mp;
        mTop[m] = node;
        mChain[m] = 1;
        alive[m] = 1;
        index[slot] = m;
        l2m[node - base] = m;
      }
    }

    // Keep what is reachable from the root (parents are always older than their children).
    const renum = new Int32Array(M).fill(-1);
    let R = 0;
    for (let m = 0; m < M; m++) {
      if (alive[m] === 1 && (m === 0 || (renum[mParent[m] as number] as number) >= 0)) renum[m] = R++;
    }
    const fParent = new Int32Array(R);
    const fTop = new Int32Array(R);
    const fChain = new Uint16Array(R);
    for (let m = 0; m < M; m++) {
      const r = renum[m] as number;
      if (r < 0) continue;
      fParent[r] = m === 0 ? -1 : (renum[mParent[m] as number] as number);
      fTop[r] = mTop[m] as number;
      fChain[r] = mChain[m] as number;
    }
    this.mParent = fParent;
    this.mTop = fTop;
    this.mChain = fChain;
    this.nodeToMerged = new Int32Array(n).fill(-1);
    for (let r = 0; r < R; r++) this.nodeToMerged[fTop[r] as number] = r;

    size = nextPow2(R * 2);
    mask = size - 1;
    index = new Int32Array(size).fill(-1);
    for (let r = 1; r < R; r++) {
      let slot = mixKey(fParent[r] as number, hashes[nameId[fTop[r] as number] as number] as number) & mask;
      while (index[slot] !== -1) slot = (slot + 1) & mask;
      index[slot] = r;
    }
    this.index = index;
    this.mask = mask;

    const { start, list } = groupSorted(
      R,
      R,
      t.namePool.count,
      (r) => fParent[r] as number,
      (r) => nameId[fTop[r] as number] as number,
      (r) => r > 0,
    );
    this.csrStart = start;
    this.csrList = list;
    this.statsValue = countVisible(t, this, fTop[0] as number);
  }

  lookup(dir: number, name: string, h: number): number {
    const m = this.nodeToMerged[dir] as number;
    if (m < 0) return -1;
    const pool = this.t.namePool;
    let slot = mixKey(m, h) & this.mask;
    for (;;) {
      const c = this.index[slot] as number;
      if (c === -1) return -1;
      const top = this.mTop[c] as number;
      if (this.mParent[c] === m && pool.equals(this.t.nameId[top] as number, name, h)) return top;
      slot = (slot + 1) & this.mask;
    }
  }

  isVisibleDir(node: number): boolean {
    return (this.nodeToMerged[node] as number) >= 0 && this.t.kindOf(node) === K_DIR;
  }

  /** The merged index, for serialization. */
  parts(): FlatParts {
    return {
      mParent: this.mParent,
      mTop: this.mTop,
      mChain: this.mChain,
      index: this.index,
      csrStart: this.csrStart,
      csrList: this.csrList,
      stats: this.statsValue,
    };
  }

  mergedLayers(dir: number): number {
    const m = this.nodeToMerged[dir] as number;
    return m < 0 ? 0 : (this.mChain[m] as number);
  }

  children(dir: number): number[] {
    const m = this.nodeToMerged[dir] as number;
    if (m < 0) return [];
    const out: number[] = [];
    for (let j = this.csrStart[m] as number; j < (this.csrStart[m + 1] as number); j++) {
      out.push(this.mTop[this.csrList[j] as number] as number);
    }
    return out;
  }

  stats(): UnionStats {
    return this.statsValue;
  }

  approxBytes(): number {
    return (
      this.mParent.byteLength +
      this.mTop.byteLength +
      this.mChain.byteLength +
      this.nodeToMerged.byteLength +
      this.index.byteLength +
      this.csrStart.byteLength +
      this.csrList.byteLength
    );
  }
}
