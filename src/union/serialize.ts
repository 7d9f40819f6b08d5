/**
 * The built node table of a view as bytes, so that a view is built once (by
 * the registry) and restored by every mount without parsing recipes or
 * interning names: the typed arrays are laid out 8-byte aligned and restored
 * as views over the received buffer.
 *
 * Layout: "CAIRNVW1", u32 LE length of a JSON header, the header, then the
 * sections of SECTIONS in order, each padded to 8 bytes. The header holds the
 * counts, the recipe ids the view was built from, and the few variable-size
 * side tables (symlink targets, device numbers, xattrs).
 *
 * A decoded table is checked node by node before use (parents before children
 * and in their own layer, kinds and side-table indexes in range, names within
 * the pool and hashing to their stored hash), so bytes that are not a view fail
 * with INVALID_INPUT instead of making a mount loop or throw later.
 */
import { CairnError, ErrorCode } from '../model/errors.js';
import { hashName, NamePool } from './names.js';
import {
  DIGEST_BYTES,
  F_IMPLICIT,
  F_OPAQUE,
  K_BLOCK,
  K_CHAR,
  K_DIR,
  K_FILE,
  K_HARDLINK,
  K_SYMLINK,
  K_WHITEOUT,
  KIND_MASK,
  MAX_LAYERS,
  NodeTable,
  type TableParts,
} from './nodes.js';
import type { FlatParts } from './strategies.js';

export const VIEW_MEDIA_TYPE = 'application/vnd.cairn.view.v1';
const MAGIC = 'CAIRNVW1';

interface Header {
  v: 1;
  layers: number;
  nodes: number;
  names: number;
  /** Bytes of the name pool; latin1 when every name is, else UTF-16LE. */
  nameBytes: number;
  nameEncoding: 'latin1' | 'utf16le';
  digestSlots: number;
  recipes: string[];
  targets: string[];
  devs: number[];
  xattrs: [number, Record<string, string>][];
  /** The flat lookup's merged index (sections after the name pool). */
  flat: { merged: number; indexSlots: number; children: number; files: number; bytes: number };
}

type Section =
  'layerBase' | 'parent' | 'nameId' | 'kind' | 'mode' | 'uid' | 'gid' | 'mtime' | 'size' | 'extra' | 'count';
const NODE_SECTIONS: [Section, number][] = [
  ['parent', 4],
  ['nameId', 4],
  ['kind', 1],
  ['mode', 2],
  ['uid', 4],
  ['gid', 4],
  ['mtime', 8],
  ['size', 8],
  ['extra', 4],
  ['count', 4],
];

const pad8 = (n: number): number => (n + 7) & ~7;

function bad(message: string): never {
  throw new CairnError(ErrorCode.INVALID_INPUT, `view: ${message}`);
}

/**
 * Serializes a built table and its flat strategy's merged index; `recipes`
 * names the layers it was built from, bottom first.
 */
export function encodeTable(t: NodeTable, flat: FlatParts, recipes: string[]): Buffer {
  const p = t.parts();
  const names = p.names.parts();
  // eslint-disable-next-line no-control-regex
  const latin1 = /^[\u0000-\u00ff]*$/.test(names.pool);
  const nameBytes = latin1 ? names.pool.length : names.pool.length * 2;
  const header: Header = {
    v: 1,
    layers: p.layerBase.length - 1,
    nodes: p.parent.length,
    names: names.off.length,
    nameBytes,
    nameEncoding: latin1 ? 'latin1' : 'utf16le',
    digestSlots: p.digests.length / DIGEST_BYTES,
    recipes,
    targets: p.targets,
    devs: p.devs,
    xattrs: [...p.xattrs.entries()],
    flat: {
      merged: flat.mParent.length,
      indexSlots: flat.index.length,
      children: flat.csrList.length,
      files: flat.stats.files,
      bytes: flat.stats.bytes,
    },
  };
  const headerBytes = Buffer.from(JSON.stringify(header), 'utf8');
  const arrays: ArrayBufferView[] = [
    p.layerBase,
    ...NODE_SECTIONS.map(([name]) => p[name]),
    p.digests,
    names.off,
    names.len,
    names.hashes,
  ];
  const flatArrays: ArrayBufferView[] = [flat.mParent, flat.mTop, flat.mChain, flat.index, flat.csrStart, flat.csrList];
  let total = pad8(MAGIC.length + 4 + headerBytes.length);
  for (const a of arrays) total += pad8(a.byteLength);
  total += pad8(nameBytes);
  for (const a of flatArrays) total += pad8(a.byteLength);
  const out = Buffer.alloc(total);
  out.write(MAGIC, 0, 'latin1');
  out.writeUInt32LE(headerBytes.length, MAGIC.length);
  headerBytes.copy(out, MAGIC.length + 4);
  let pos = pad8(MAGIC.length + 4 + headerBytes.length);
  for (const a of arrays) {
    out.set(new Uint8Array(a.buffer, a.byteOffset, a.byteLength), pos);
    pos += pad8(a.byteLength);
  }
  out.write(names.pool, pos, nameBytes, latin1 ? 'latin1' : 'utf16le');
  pos += pad8(nameBytes);
  for (const a of flatArrays) {
    out.set(new Uint8Array(a.buffer, a.byteOffset, a.byteLength), pos);
    pos += pad8(a.byteLength);
  }
  return out;
}

/** What `decodeTable` gives back. */
export interface DecodedTable {
  table: NodeTable;
  /** The recipe ids the view says it was built from, bottom first. */
  recipes: string[];
  /** The flat lookup's merged index, checked; only when asked for. */
  flat?: FlatParts;
}

function parseHeader(buf: Buffer): { h: Header; at: number } {
  if (buf.length < MAGIC.length + 4 || buf.toString('latin1', 0, MAGIC.length) !== MAGIC) bad('not a cairn view');
  const len = buf.readUInt32LE(MAGIC.length);
  if (MAGIC.length + 4 + len > buf.length) bad(`header of ${len} bytes runs past the end (${buf.length} bytes)`);
  let h: Header;
  try {
    h = JSON.parse(buf.toString('utf8', MAGIC.length + 4, MAGIC.length + 4 + len)) as Header;
  } catch (err) {
    bad(`header is not JSON (${(err as Error).message})`);
  }
  if (h === null || typeof h !== 'object' || h.v !== 1) bad('unknown version');
  const count = (x: unknown, what: string, max = 0x7fffffff): number => {
    if (!Number.isSafeInteger(x) || (x as number) < 0 || (x as number) > max) bad(`${what} is not a count`);
    return x as number;
  };
  count(h.layers, 'layers', MAX_LAYERS);
  if (h.layers < 1) bad('no layers');
  count(h.nodes, 'nodes');
  count(h.names, 'names');
  count(h.nameBytes, 'nameBytes');
  count(h.digestSlots, 'digestSlots');
  if (h.nameEncoding !== 'latin1' && h.nameEncoding !== 'utf16le') bad('unknown name encoding');
  if (!Array.isArray(h.recipes) || h.recipes.length !== h.layers || !h.recipes.every((r) => typeof r === 'string'))
    bad('recipes do not match the layers');
  if (!Array.isArray(h.targets) || !h.targets.every((x) => typeof x === 'string' && x !== ''))
    bad('symlink targets malformed');
  if (!Array.isArray(h.devs) || h.devs.length % 2 !== 0 || !h.devs.every((x) => Number.isSafeInteger(x) && x >= 0))
    bad('device numbers malformed');
  if (!Array.isArray(h.xattrs)) bad('xattrs malformed');
  const f = h.flat as Partial<Header['flat']> | undefined;
  if (f === null || typeof f !== 'object') bad('no flat index');
  count(f.merged, 'merged nodes');
  count(f.indexSlots, 'index slots');
  count(f.children, 'children');
  count(f.files, 'files');
  if (typeof f.bytes !== 'number' || !(f.bytes >= 0) || !Number.isFinite(f.bytes)) bad('bytes is not a size');
  return { h, at: pad8(MAGIC.length + 4 + len) };
}

/**
 * Restores a table from `encodeTable`'s bytes, checking it. The typed arrays
 * view `buf` when it is 8-byte aligned (a copy is made otherwise).
 */
export function decodeTable(input: Buffer, opts: { flat: boolean }): DecodedTable {
  const { h, at } = parseHeader(input);
  let buf = input;
  if (input.byteOffset % 8 !== 0) {
    // Buffer.alloc never hands out a slice of the shared pool, so the copy starts aligned.
    buf = Buffer.alloc(input.length);
    input.copy(buf);
  }
  const n = h.nodes;
  let pos = at;
  const take = <T>(
    ctor: { new (b: ArrayBuffer, o: number, l: number): T; BYTES_PER_ELEMENT: number },
    count: number,
  ): T => {
    const bytes = count * ctor.BYTES_PER_ELEMENT;
    if (pos + bytes > buf.length) bad(`sections run past the end (${buf.length} bytes)`);
    const a = new ctor(buf.buffer as ArrayBuffer, buf.byteOffset + pos, count);
    pos += pad8(bytes);
    return a;
  };
  const layerBase = take(Int32Array, h.layers + 1);
  const parent = take(Int32Array, n);
  const nameId = take(Uint32Array, n);
  const kind = take(Uint8Array, n);
  const mode = take(Uint16Array, n);
  const uid = take(Uint32Array, n);
  const gid = take(Uint32Array, n);
  const mtime = take(Float64Array, n);
  const size = take(Float64Array, n);
  const extra = take(Int32Array, n);
  const count = take(Uint32Array, n);
  const digests = take(Uint8Array, h.digestSlots * DIGEST_BYTES);
  const off = take(Uint32Array, h.names);
  const len = take(Uint32Array, h.names);
  const hashes = take(Uint32Array, h.names);
  if (pos + h.nameBytes > buf.length) bad('name pool runs past the end');
  const pool = buf.toString(h.nameEncoding, pos, pos + h.nameBytes);
  pos += pad8(h.nameBytes);
  const fh = h.flat;
  const mParent = take(Int32Array, fh.merged);
  const mTop = take(Int32Array, fh.merged);
  const mChain = take(Uint16Array, fh.merged);
  const index = take(Int32Array, fh.indexSlots);
  const csrStart = take(Uint32Array, fh.merged + 1);
  const csrList = take(Int32Array, fh.children);
  if (pos !== buf.length) bad(`${buf.length - pos} bytes of trailing data`);

  // Names: inside the pool, and hashing as stored (lookups trust the hash).
  for (let id = 0; id < h.names; id++) {
    const o = off[id] as number;
    const l = len[id] as number;
    if (o + l > pool.length) bad(`name ${id} runs past the pool`);
    if (hashName(pool.slice(o, o + l)) !== hashes[id]) bad(`name ${id} does not match its hash`);
  }
  // Layers: each starts with its root, in order, and they cover every node.
  if (layerBase[0] !== 0 || layerBase[h.layers] !== n) bad('layer bounds do not cover the nodes');
  for (let k = 0; k < h.layers; k++) {
    if ((layerBase[k] as number) >= (layerBase[k + 1] as number)) bad(`layer ${k} has no root`);
  }
  const targets = h.targets;
  const devCount = h.devs.length / 2;
  let k = 0;
  for (let node = 0; node < n; node++) {
    while (node >= (layerBase[k + 1] as number)) k++;
    const base = layerBase[k] as number;
    const kd = kind[node] as number;
    const kk = kd & KIND_MASK;
    if ((kd & ~(KIND_MASK | F_OPAQUE | F_IMPLICIT)) !== 0 || kk > K_WHITEOUT) bad(`node ${node}: unknown kind ${kd}`);
    if ((nameId[node] as number) >= h.names) bad(`node ${node}: name out of range`);
    const p = parent[node] as number;
    if (node === base) {
      if (p !== -1 || kk !== K_DIR) bad(`node ${node}: a layer root must be a directory without a parent`);
    } else if (p < base || p >= node || ((kind[p] as number) & KIND_MASK) !== K_DIR) {
      bad(`node ${node}: parent ${p} is not an earlier directory of layer ${k}`);
    }
    if ((mode[node] as number) > 0o7777) bad(`node ${node}: mode ${mode[node]} has more than permission bits`);
    if (!Number.isFinite(mtime[node]) || !Number.isFinite(size[node]) || (size[node] as number) < 0)
      bad(`node ${node}: bad time or size`);
    const x = extra[node] as number;
    switch (kk) {
      case K_FILE:
        if (x < -1 || x >= h.digestSlots) bad(`node ${node}: digest slot out of range`);
        break;
      case K_HARDLINK: {
        const tk = x >= base && x < (layerBase[k + 1] as number) ? (kind[x] as number) & KIND_MASK : -1;
        if (tk < 0 || tk === K_DIR || tk === K_HARDLINK || tk === K_WHITEOUT)
          bad(`node ${node}: hardlink target is not a non-directory of its layer`);
        break;
      }
      case K_SYMLINK:
        if (x < 0 || x >= targets.length) bad(`node ${node}: symlink target out of range`);
        break;
      case K_CHAR:
      case K_BLOCK:
        if (x < 0 || x >= devCount) bad(`node ${node}: device numbers out of range`);
        break;
      default:
        break;
    }
  }
  const xattrs = new Map<number, Record<string, string>>();
  for (const item of h.xattrs) {
    const [node, values] = Array.isArray(item) ? (item as [unknown, unknown]) : [undefined, undefined];
    if (!Number.isSafeInteger(node) || (node as number) < 0 || (node as number) >= n) bad('xattr of no node');
    if (values === null || typeof values !== 'object' || !Object.values(values).every((v) => typeof v === 'string'))
      bad(`xattrs of node ${String(node)} malformed`);
    xattrs.set(node as number, values as Record<string, string>);
  }
  const parts: TableParts = {
    layerBase,
    parent,
    nameId,
    kind,
    mode,
    uid,
    gid,
    mtime,
    size,
    extra,
    count,
    digests,
    targets,
    devs: h.devs,
    xattrs,
    names: new NamePool(pool, off, len, hashes),
  };
  const table = new NodeTable(parts);
  if (!opts.flat) return { table, recipes: h.recipes };
  const flat = { mParent, mTop, mChain, index, csrStart, csrList, stats: { files: fh.files, bytes: fh.bytes } };
  checkFlat(table, flat);
  return { table, recipes: h.recipes, flat };
}

/** Checks a merged index against its table: every value a lookup or a listing follows is in range. */
function checkFlat(t: NodeTable, f: FlatParts): void {
  const R = f.mParent.length;
  const L = t.layerCount;
  if (R < 1 || f.mParent[0] !== -1 || f.mTop[0] !== t.layerBase[L - 1]) bad('flat index: no root');
  for (let r = 1; r < R; r++) {
    const p = f.mParent[r] as number;
    const top = f.mTop[r] as number;
    if (p < 0 || p >= r || t.kindOf(f.mTop[p] as number) !== K_DIR)
      bad(`flat index: node ${r} has no parent directory`);
    if (top < 0 || top >= t.n || t.kindOf(top) === K_WHITEOUT) bad(`flat index: node ${r} refers to no entry`);
  }
  for (let r = 0; r < R; r++) {
    const c = f.mChain[r] as number;
    if (c < 1 || c > L) bad(`flat index: node ${r} merges ${c} layers`);
  }
  const slots = f.index.length;
  // A power of two with a free slot, or a probe for a missing name would never end.
  if (slots < 2 || (slots & (slots - 1)) !== 0) bad('flat index: size is not a power of two');
  let free = 0;
  for (let i = 0; i < slots; i++) {
    const v = f.index[i] as number;
    if (v === -1) free++;
    else if (v < 1 || v >= R) bad(`flat index: slot ${i} out of range`);
  }
  if (free === 0) bad('flat index: no free slot');
  if (f.csrStart[0] !== 0 || f.csrStart[R] !== f.csrList.length) bad('flat index: children do not add up');
  for (let r = 0; r < R; r++) {
    if ((f.csrStart[r] as number) > (f.csrStart[r + 1] as number)) bad(`flat index: children of ${r} out of order`);
  }
  for (let j = 0; j < f.csrList.length; j++) {
    const v = f.csrList[j] as number;
    if (v < 1 || v >= R) bad(`flat index: child ${j} out of range`);
  }
}
