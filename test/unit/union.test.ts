import { describe, expect, it } from 'vitest';
import { sha256 } from '../../src/model/digest.js';
import type { Entry } from '../../src/model/entry.js';
import { CairnError, ErrorCode } from '../../src/model/errors.js';
import { ROOT_INO, statMode, UnionView, type LookupMode, type NodeAttr } from '../../src/union/index.js';

// ---- entry builders --------------------------------------------------------

const T = 1_700_000_000;

interface Opts {
  mode?: number;
  uid?: number;
  gid?: number;
  mtime?: number;
  xattrs?: Record<string, string>;
}

function base(path: string, type: Entry['type'], mode: number, o: Opts): Entry {
  const e: Entry = { path, type, mode: o.mode ?? mode, uid: o.uid ?? 0, gid: o.gid ?? 0, mtime: o.mtime ?? T, size: 0 };
  if (o.xattrs) {
    e.xattrs = Object.fromEntries(Object.entries(o.xattrs).map(([k, v]) => [k, Buffer.from(v).toString('base64')]));
  }
  return e;
}
const f = (path: string, content = '', o: Opts = {}): Entry => ({
  ...base(path, 'file', 0o644, o),
  size: Buffer.byteLength(content),
  digest: sha256(content),
});
const d = (path: string, o: Opts = {}): Entry => base(path, 'dir', 0o755, o);
const sl = (path: string, target: string, o: Opts = {}): Entry => ({
  ...base(path, 'symlink', 0o777, o),
  linkTarget: target,
});
const hl = (path: string, target: string, o: Opts = {}): Entry => ({
  ...base(path, 'hardlink', 0o644, o),
  linkTarget: target,
});
const wh = (path: string): Entry => base(path, 'whiteout', 0o644, {});
const opq = (path: string): Entry => base(path, 'opaque', 0o644, {});
const chr = (path: string, major: number, minor: number, o: Opts = {}): Entry => ({
  ...base(path, 'char', 0o666, o),
  devMajor: major,
  devMinor: minor,
});
const blk = (path: string, major: number, minor: number, o: Opts = {}): Entry => ({
  ...base(path, 'block', 0o660, o),
  devMajor: major,
  devMinor: minor,
});
const fifo = (path: string, o: Opts = {}): Entry => base(path, 'fifo', 0o644, o);

// ---- whole-tree snapshots --------------------------------------------------

interface Snap {
  attr: NodeAttr;
  depth: number;
  listing?: string[];
  xattrs: Record<string, string>;
}

/** Every visible path of a view with everything the view says about it. */
function snapshot(v: UnionView): Map<string, Snap> {
  const out = new Map<string, Snap>();
  const visit = (path: string, ino: number, depth: number): void => {
    const attr = v.getattr(ino) as NodeAttr;
    expect(attr, path).toBeDefined();
    const xattrs: Record<string, string> = {};
    for (const n of v.listxattr(ino) ?? []) xattrs[n] = (v.getxattr(ino, n) as Buffer).toString('base64');
    const s: Snap = { attr, depth, xattrs };
    out.set(path, s);
    if (attr.type !== 'dir') return;
    s.listing = v.readdir(ino) as string[];
    const entries = v.readdirEntries(ino) ?? [];
    expect(entries.map((e) => e.name)).toEqual(s.listing);
    for (const e of entries) {
      const r = v.lookup(ino, e.name);
      expect(r, `${path}/${e.name}`).toBeDefined();
      expect(r?.ino).toBe(e.ino);
      visit(path === '' ? e.name : `${path}/${e.name}`, e.ino, r?.depth ?? -1);
    }
  };
  visit('', ROOT_INO, 1);
  return out;
}

/** Builds both modes, checks they agree on everything, returns the flat one and its snapshot. */
function both(layers: Entry[][]): { v: UnionView; snap: Map<string, Snap>; stacked: UnionView } {
  const flat = UnionView.build(layers, { lookup: 'flat' });
  const stacked = UnionView.build(layers, { lookup: 'stacked' });
  const a = snapshot(flat);
  const b = snapshot(stacked);
  expect([...b.keys()]).toEqual([...a.keys()]);
  expect(b).toEqual(a);
  expect(stacked.statfs()).toEqual(flat.statfs());
  // The view as a registry serves it: restored in either mode, it must answer exactly as built.
  const recipes = Array.from({ length: Math.max(1, layers.length) }, (_, i) => `recipe-${i}`);
  const bytes = UnionView.encode(layers, recipes);
  for (const lookup of ['flat', 'stacked'] as const) {
    const restored = UnionView.decode(bytes, { lookup });
    expect(restored.recipes).toEqual(recipes);
    expect(snapshot(restored.view)).toEqual(a);
    expect(restored.view.statfs()).toEqual(flat.statfs());
  }
  return { v: flat, snap: a, stacked };
}

const paths = (snap: Map<string, Snap>): string[] => [...snap.keys()].sort();
const at = (snap: Map<string, Snap>, p: string): Snap => {
  const s = snap.get(p);
  if (!s) throw new Error(`${p} is not visible`);
  return s;
};

// ---- semantics ---------------------------------------------------------------

describe('UnionView: one layer', () => {
  it('shows entries with their attributes, implicit directories as 0755 root-owned with mtime 0', () => {
    const { snap, v } = both([
      [
        d('etc', { mode: 0o750, uid: 5, gid: 6, mtime: T + 1 }),
        f('etc/passwd', 'root\n', { mode: 0o4755, uid: 7 }),
        f('usr/lib/deep/lib.so', 'elf'),
      ],
    ]);
    expect(paths(snap)).toEqual(['', 'etc', 'etc/passwd', 'usr', 'usr/lib', 'usr/lib/deep', 'usr/lib/deep/lib.so']);
    expect(at(snap, 'etc').attr).toMatchObject({ type: 'dir', mode: 0o750, uid: 5, gid: 6, mtime: T + 1, nlink: 2 });
    expect(at(snap, 'etc/passwd').attr).toMatchObject({
      type: 'file',
      mode: 0o4755,
      uid: 7,
      size: 5,
      nlink: 1,
      digest: sha256('root\n'),
      layer: 0,
    });
    for (const p of ['usr', 'usr/lib', 'usr/lib/deep']) {
      expect(at(snap, p).attr).toMatchObject({ type: 'dir', mode: 0o755, uid: 0, gid: 0, mtime: 0 });
    }
    // The root of a single layer is that layer's directory: implicit, nlink 2 + subdirectories.
    expect(at(snap, '').attr).toMatchObject({ ino: ROOT_INO, mode: 0o755, nlink: 4 });
    expect(at(snap, '').listing).toEqual(['etc', 'usr']);
    expect(v.imageBytes).toBe(8);
    expect(v.statfs()).toEqual({ files: 7, bytes: 8 });
  });

  it('takes the root directory entry as the root', () => {
    const { snap } = both([[d('', { mode: 0o700, uid: 3, mtime: T + 9 }), f('a')]]);
    expect(at(snap, '').attr).toMatchObject({ mode: 0o700, uid: 3, mtime: T + 9 });
  });

  it('lists names sorted by code unit whatever the entry order', () => {
    const { snap } = both([[f('b'), f('a/z'), f('A'), f('a/b'), f('_'), f('é')]]);
    expect(at(snap, '').listing).toEqual(['A', '_', 'a', 'b', 'é']);
    expect(at(snap, 'a').listing).toEqual(['b', 'z']);
  });

  it('symlinks: mode 0777, size in UTF-8 bytes, target as written', () => {
    const { snap, v } = both([[sl('l', '../é/x', { mode: 0o755, uid: 4 })]]);
    expect(at(snap, 'l').attr).toMatchObject({ type: 'symlink', mode: 0o777, uid: 4, size: 7, linkTarget: '../é/x' });
    const ino = v.resolvePath('l')?.ino as number;
    expect(v.readlink(ino)).toBe('../é/x');
    expect(v.readlink(ROOT_INO)).toBeUndefined();
    expect(statMode(at(snap, 'l').attr)).toBe(0o120777);
  });

  it('devices carry major/minor, fifos are fifos', () => {
    const { snap } = both([[chr('dev/null', 1, 3), blk('dev/sda', 8, 0, { gid: 6 }), fifo('dev/p', { mode: 0o600 })]]);
    expect(at(snap, 'dev/null').attr).toMatchObject({ type: 'char', rdevMajor: 1, rdevMinor: 3, mode: 0o666 });
    expect(at(snap, 'dev/sda').attr).toMatchObject({ type: 'block', rdevMajor: 8, rdevMinor: 0, gid: 6 });
    expect(at(snap, 'dev/p').attr).toMatchObject({ type: 'fifo', mode: 0o600, rdevMajor: 0, size: 0 });
    expect(statMode(at(snap, 'dev/null').attr)).toBe(0o020666);
  });

  it('xattrs: kept on files and directories, user.* dropped elsewhere, trusted.overlay.* hidden', () => {
    const { snap } = both([
      [
        d('d', { xattrs: { 'user.a': '1', 'trusted.overlay.redirect': 'x' } }),
        f('d/f', 'x', { xattrs: { 'user.b': '2', 'security.capability': 'cap' } }),
        sl('d/l', 'f', { xattrs: { 'user.c': '3', 'trusted.t': 't' } }),
        fifo('d/p', { xattrs: { 'user.d': '4' } }),
      ],
    ]);
    const b64 = (s: string): string => Buffer.from(s).toString('base64');
    expect(at(snap, 'd').xattrs).toEqual({ 'user.a': b64('1') });
    expect(at(snap, 'd/f').xattrs).toEqual({ 'user.b': b64('2'), 'security.capability': b64('cap') });
    expect(at(snap, 'd/l').xattrs).toEqual({ 'trusted.t': b64('t') });
    expect(at(snap, 'd/p').xattrs).toEqual({});
  });

  it('hardlinks share an inode, nlink counts the names, the last header sets the attributes', () => {
    const { snap, v } = both([
      [
        f('a', 'data', { mode: 0o755, xattrs: { 'user.x': '1' } }),
        hl('b', 'a', { mode: 0o700, uid: 9, xattrs: { 'user.y': '2' } }),
        hl('dir/c', 'a', { mode: 0o700, uid: 9 }),
      ],
    ]);
    const a = at(snap, 'a').attr;
    expect(at(snap, 'b').attr).toEqual(a);
    expect(at(snap, 'dir/c').attr).toEqual(a);
    expect(a).toMatchObject({ type: 'file', nlink: 3, mode: 0o700, uid: 9, digest: sha256('data') });
    expect(at(snap, 'b').xattrs).toEqual(at(snap, 'a').xattrs);
    expect(Object.keys(at(snap, 'a').xattrs)).toEqual(['user.x', 'user.y']);
    expect(v.statfs()).toEqual({ files: 3, bytes: 4 }); // root, dir, one file inode
  });

  it('hardlinks may come before their target in the entry list and may link to symlinks', () => {
    const { snap } = both([[hl('b', 'a'), sl('a', 'target'), hl('c', 'b')]]);
    expect(at(snap, 'b').attr).toEqual(at(snap, 'a').attr);
    expect(at(snap, 'c').attr).toMatchObject({ type: 'symlink', nlink: 3, linkTarget: 'target' });
  });

  it('a 0:0 character device is a whiteout, and so is a hardlink to one', () => {
    const { snap } = both([
      [f('a'), f('b')],
      [chr('a', 0, 0), hl('c', 'a'), chr('d', 0, 1)],
    ]);
    expect(paths(snap)).toEqual(['', 'b', 'd']);
  });

  it('refuses layers that cannot be extracted', () => {
    const cases: Entry[][] = [
      [f('a'), f('a')],
      [f('a'), d('a')],
      [f('a'), f('a/b')],
      [f('a/b'), f('a')],
      [f('a'), opq('a')],
      [hl('b', 'missing')],
      [d('x'), hl('b', 'x')],
      [d(''), d('')],
      [f('')],
    ];
    for (const layer of cases) {
      for (const lookup of ['flat', 'stacked'] as LookupMode[]) {
        let err: unknown;
        try {
          UnionView.build([layer], { lookup });
        } catch (e) {
          err = e;
        }
        expect(err, JSON.stringify(layer.map((e) => [e.type, e.path]))).toBeInstanceOf(CairnError);
        expect((err as CairnError).code).toBe(ErrorCode.INVALID_INPUT);
      }
    }
  });

  it('an empty list of layers is an empty root', () => {
    const { snap } = both([]);
    expect(paths(snap)).toEqual(['']);
  });
});

describe('UnionView: layers over layers', () => {
  it('upper entries hide lower ones; depth says where a name resolved', () => {
    const layers = [[f('a', 'old'), f('keep', 'k'), d('d'), f('d/x', 'dx')], [f('a', 'new!')], [f('top')]];
    const { snap, stacked } = both(layers);
    expect(at(snap, 'a').attr).toMatchObject({ size: 4, digest: sha256('new!'), layer: 1 });
    expect(at(snap, 'a').depth).toBe(2);
    expect(at(snap, 'keep').depth).toBe(3);
    expect(at(snap, 'top').depth).toBe(1);
    expect(at(snap, 'd/x').depth).toBe(3);
    for (const lookup of ['flat', 'stacked'] as LookupMode[]) {
      const v = lookup === 'flat' ? UnionView.build(layers, { lookup }) : stacked;
      expect(v.resolvePath('/d/x')).toEqual({ ino: at(snap, 'd/x').attr.ino, depth: 3 });
      expect(v.resolvePath('')).toEqual({ ino: ROOT_INO, depth: 1 });
      expect(v.resolvePath('d/missing')).toBeUndefined();
      expect(v.resolvePath('a/x')).toBeUndefined();
    }
  });

  it('a whiteout deletes a file, a directory and its subtree, and a re-created path starts afresh', () => {
    const { snap } = both([
      [f('f'), d('dir', { mode: 0o700 }), f('dir/a'), f('dir/sub/b'), f('other')],
      [wh('f'), wh('dir')],
      [f('dir/new')],
    ]);
    expect(paths(snap)).toEqual(['', 'dir', 'dir/new', 'other']);
    // The re-created directory is an implicit one of the top layer, not the old one.
    expect(at(snap, 'dir').attr).toMatchObject({ mode: 0o755, mtime: 0, nlink: 2, layer: 2 });
  });

  it('a whiteout of something absent, and a whiteout in the bottom layer, do nothing visible', () => {
    const { snap } = both([
      [wh('ghost'), f('a')],
      [wh('nothing'), wh('sub/deeper')],
    ]);
    expect(paths(snap)).toEqual(['', 'a', 'sub']);
  });

  it('an opaque directory hides lower children, keeps its own and upper ones', () => {
    const { snap } = both([
      [d('d'), f('d/low1'), f('d/sub/low2'), f('outside')],
      [d('d', { mode: 0o711 }), opq('d'), f('d/mine')],
      [f('d/upper')],
    ]);
    expect(paths(snap)).toEqual(['', 'd', 'd/mine', 'd/upper', 'outside']);
    // Merged from layers 1 and 2 (the opaque one stops the descent): nlink 1, attributes of layer 2's implicit d.
    expect(at(snap, 'd').attr).toMatchObject({ nlink: 1, mode: 0o755, layer: 2 });
  });

  it('an opaque marker alone makes its directory (implicitly) and a whiteout under it hides nothing extra', () => {
    const { snap } = both([
      [f('d/a'), f('d/b')],
      [opq('d'), wh('d/a'), f('d/c')],
    ]);
    expect(paths(snap)).toEqual(['', 'd', 'd/c']);
    expect(at(snap, 'd').attr).toMatchObject({ mode: 0o755, nlink: 2, layer: 1 });
  });

  it('ignores an opaque marker on the root, as overlayfs does', () => {
    const { snap } = both([[f('low')], [opq(''), f('up')]]);
    expect(paths(snap)).toEqual(['', 'low', 'up']);
  });

  it('a directory carrying trusted.overlay.opaque=y is opaque', () => {
    const { snap } = both([[f('d/low')], [d('d', { xattrs: { 'trusted.overlay.opaque': 'y' } }), f('d/up')]]);
    expect(paths(snap)).toEqual(['', 'd', 'd/up']);
    expect(at(snap, 'd').xattrs).toEqual({});
  });

  it('a file replacing a directory hides its subtree; a directory replacing a file is new', () => {
    const { snap } = both([
      [d('x'), f('x/a'), f('y', 'file')],
      [f('x', 'now a file'), d('y'), f('y/b')],
    ]);
    expect(paths(snap)).toEqual(['', 'x', 'y', 'y/b']);
    expect(at(snap, 'x').attr.type).toBe('file');
    expect(at(snap, 'y').attr).toMatchObject({ type: 'dir', nlink: 2, layer: 1 });
  });

  it('a directory over a file over a directory merges only down to the file', () => {
    const { snap } = both([[f('a/low')], [f('a')], [f('a/top')]]);
    expect(paths(snap)).toEqual(['', 'a', 'a/top']);
    expect(at(snap, 'a').attr.nlink).toBe(2);
  });

  it('merged directories take attributes and xattrs from the topmost layer and report nlink 1', () => {
    const { snap } = both([
      [d('d', { mode: 0o700, uid: 1, xattrs: { 'user.low': 'l' } }), d('d/s1'), f('d/f1')],
      [d('d', { mode: 0o750, uid: 2, mtime: T + 5, xattrs: { 'user.up': 'u' } }), d('d/s2')],
    ]);
    expect(at(snap, 'd').attr).toMatchObject({ mode: 0o750, uid: 2, mtime: T + 5, nlink: 1, layer: 1 });
    expect(Object.keys(at(snap, 'd').xattrs)).toEqual(['user.up']);
    expect(at(snap, 'd').listing).toEqual(['f1', 's1', 's2']);
    expect(at(snap, '').attr.nlink).toBe(1);
  });

  it('an implicit directory in an upper layer overrides the attributes below it', () => {
    const { snap } = both([[d('tmp', { mode: 0o1777, mtime: T + 3 }), f('tmp/a')], [f('tmp/b')]]);
    expect(at(snap, 'tmp').attr).toMatchObject({ mode: 0o755, uid: 0, mtime: 0, nlink: 1 });
    expect(at(snap, 'tmp').listing).toEqual(['a', 'b']);
  });

  it('whiteout and entry at one path in one layer: the entry wins, a directory becomes opaque', () => {
    const { snap } = both([
      [f('d/old'), f('f', 'old')],
      [wh('d'), d('d'), f('d/new'), f('f', 'new'), wh('f')],
    ]);
    expect(paths(snap)).toEqual(['', 'd', 'd/new', 'f']);
    expect(at(snap, 'f').attr.digest).toBe(sha256('new'));
    // Entries under a whited-out path make it an (implicit, opaque) directory too.
    const { snap: s2 } = both([[f('e/old')], [wh('e'), f('e/new')]]);
    expect(paths(s2)).toEqual(['', 'e', 'e/new']);
    expect(at(s2, 'e').attr).toMatchObject({ mode: 0o755, uid: 0, gid: 0, mtime: 0, nlink: 2 });
  });

  it('hardlinks keep the lower content when an upper layer replaces or hides the target name', () => {
    const { snap } = both([
      [f('a', 'shared'), hl('b', 'a'), hl('c', 'a')],
      [f('a', 'replaced'), wh('c')],
    ]);
    expect(paths(snap)).toEqual(['', 'a', 'b']);
    expect(at(snap, 'a').attr).toMatchObject({ digest: sha256('replaced'), nlink: 1, layer: 1 });
    // Overlayfs reports the lower inode's own link count: 3 names in its layer, 2 of them hidden now.
    expect(at(snap, 'b').attr).toMatchObject({ digest: sha256('shared'), nlink: 3, layer: 0 });
    expect(at(snap, 'b').depth).toBe(2);
  });

  it('inode numbers are stable across constructions and equal in both modes', () => {
    const layers = [
      [f('a'), d('b'), f('b/c'), hl('h', 'a')],
      [f('b/d'), wh('a')],
    ];
    const one = snapshot(UnionView.build(layers, { lookup: 'flat' }));
    const two = snapshot(UnionView.build(layers, { lookup: 'flat' }));
    const three = snapshot(UnionView.build(layers, { lookup: 'stacked' }));
    const inos = (s: Map<string, Snap>): [string, number][] => [...s].map(([p, x]) => [p, x.attr.ino]);
    expect(inos(two)).toEqual(inos(one));
    expect(inos(three)).toEqual(inos(one));
    expect(new Set(inos(one).map(([, i]) => i)).size).toBe(one.size);
  });

  it('answers inos it never handed out: directories re-resolve in stacked mode, hidden ones are unknown', () => {
    const layers = [
      [d('x'), d('x/y'), f('x/y/z'), d('gone')],
      [wh('gone'), f('x/y/w')],
    ];
    const flat = UnionView.build(layers, { lookup: 'flat' });
    const y = flat.resolvePath('x/y')?.ino as number;
    const fresh = UnionView.build(layers, { lookup: 'stacked' });
    expect(fresh.getattr(y)).toEqual(flat.getattr(y));
    expect(fresh.readdir(y)).toEqual(['w', 'z']);
    // The whited-out directory's node exists in layer 0 but is not visible.
    const v0 = UnionView.build([layers[0] as Entry[]], { lookup: 'flat' });
    const gone = v0.resolvePath('gone')?.ino as number;
    for (const v of [flat, UnionView.build(layers, { lookup: 'stacked' })]) {
      expect(v.getattr(gone)).toBeUndefined();
      expect(v.readdir(gone)).toBeUndefined();
      expect(v.lookup(gone, 'anything')).toBeUndefined();
      expect(v.getattr(0)).toBeUndefined();
      expect(v.getattr(2 ** 40)).toBeUndefined();
      expect(v.getattr(1.5)).toBeUndefined();
      const file = v.resolvePath('x/y/z')?.ino as number;
      expect(v.readdir(file)).toBeUndefined();
      expect(v.lookup(file, 'a')).toBeUndefined();
      expect(v.lookup(ROOT_INO, '')).toBeUndefined();
      expect(v.lookup(ROOT_INO, 'x/y')).toBeUndefined();
      expect(v.lookup(ROOT_INO, '..')).toBeUndefined();
    }
  });

  it('statfs counts each visible inode once and the bytes of visible files', () => {
    const { v } = both([
      [f('a', '12345'), hl('b', 'a'), f('gone', 'xxxxxxxxxx'), d('d')],
      [wh('gone'), f('d/e', '123')],
    ]);
    expect(v.statfs()).toEqual({ files: 4, bytes: 8 });
    expect(v.imageBytes).toBe(8);
  });
});

// ---- stacked vs flat on random stacks ----------------------------------------

/** A small deterministic PRNG (mulberry32). */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** A random layer that a tar could hold (parseLayer's rules): no path twice, nothing under a non-directory. */
function randomLayer(r: () => number): Entry[] {
  const pick = <T>(xs: T[]): T => xs[Math.floor(r() * xs.length)] as T;
  const entries = new Map<string, 'dir' | 'other'>();
  const implied = new Set<string>();
  const whiteouts = new Set<string>();
  const opaques = new Set<string>();
  const out: Entry[] = [];
  const linkable: string[] = [];
  const n = 1 + Math.floor(r() * 12);
  for (let i = 0; i < n; i++) {
    const parts = Array.from({ length: 1 + Math.floor(r() * 3) }, () => pick(['a', 'b', 'c', 'd']));
    const path = parts.join('/');
    const ancestors = parts.slice(0, -1).map((_, j) => parts.slice(0, j + 1).join('/'));
    if (ancestors.some((a) => entries.get(a) === 'other')) continue;
    const roll = r();
    if (roll < 0.15) {
      if (whiteouts.has(path)) continue;
      whiteouts.add(path);
      out.push(wh(path));
      for (const a of ancestors) implied.add(a);
      continue;
    }
    if (roll < 0.22) {
      if (opaques.has(path) || entries.get(path) === 'other') continue;
      opaques.add(path);
      out.push(opq(path));
      for (const a of [...ancestors, path]) implied.add(a);
      continue;
    }
    if (entries.has(path)) continue;
    const o: Opts = { mode: pick([0o644, 0o755, 0o600]), uid: pick([0, 1]), mtime: T + Math.floor(r() * 3) };
    if (r() < 0.2) o.xattrs = { 'user.k': pick(['1', '2']) };
    const t = r();
    let e: Entry;
    if (implied.has(path) || t < 0.3) e = d(path, o);
    else if (t < 0.6) e = f(path, pick(['x', 'yy', 'zzz']), o);
    else if (t < 0.7 && linkable.length > 0) e = hl(path, pick(linkable), o);
    else if (t < 0.8) e = sl(path, pick(['a', '../b', '/c']), o);
    else if (t < 0.87) e = chr(path, pick([0, 1]), pick([0, 3]), o);
    else if (t < 0.93) e = blk(path, 8, 1, o);
    else e = fifo(path, o);
    out.push(e);
    entries.set(path, e.type === 'dir' ? 'dir' : 'other');
    for (const a of ancestors) implied.add(a);
    if (e.type !== 'dir' && e.type !== 'hardlink') linkable.push(path);
  }
  return out;
}

describe('UnionView: stacked and flat agree', () => {
  it('on 300 random stacks of up to 6 layers', () => {
    for (let seed = 1; seed <= 300; seed++) {
      const r = rng(seed);
      const layers = Array.from({ length: 1 + Math.floor(r() * 6) }, () => randomLayer(r));
      try {
        both(layers);
      } catch (err) {
        throw new Error(`seed ${seed}: ${(err as Error).message}\n${JSON.stringify(layers)}`, { cause: err });
      }
    }
  });
});

// ---- the serialized view -------------------------------------------------------

describe('UnionView.encode / decode', () => {
  const layers = (): Entry[][] => [
    [d('etc'), f('etc/passwd', 'root'), sl('etc/link', 'passwd'), hl('etc/hard', 'etc/passwd'), chr('dev/tty', 5, 0)],
    [f('etc/passwd', 'root2', { xattrs: { 'user.k': 'v' } }), wh('etc/link'), opq('var'), f('var/x', 'x')],
  ];
  const recipes = ['sha256:r0', 'sha256:r1'];
  const good = (): Buffer => UnionView.encode(layers(), recipes);
  const code = (fn: () => unknown): string | undefined => {
    try {
      fn();
    } catch (err) {
      return err instanceof CairnError ? `${err.code}: ${err.message}` : String(err);
    }
    return undefined;
  };
  /** Offsets of the sections (the header's length decides where they start). */
  const layout = (buf: Buffer): { start: number; nodes: number } => {
    const len = buf.readUInt32LE(8);
    const h = JSON.parse(buf.toString('utf8', 12, 12 + len)) as { nodes: number; layers: number };
    const start = (12 + len + 7) & ~7;
    // layerBase (layers + 1 Int32) comes first, then parent (nodes Int32).
    return { start: start + (((h.layers + 1) * 4 + 7) & ~7), nodes: h.nodes };
  };

  it('restores from an unaligned buffer (a copy is made) and names the recipes', () => {
    const bytes = good();
    const shifted = Buffer.alloc(bytes.length + 1).subarray(1);
    bytes.copy(shifted);
    const { view, recipes: got } = UnionView.decode(shifted, { lookup: 'flat' });
    expect(got).toEqual(recipes);
    expect(view.resolvePath('etc/passwd')?.depth).toBe(1);
    expect(view.getattr(view.resolvePath('etc/passwd')?.ino ?? 0)?.digest).toBe(sha256('root2'));
    expect(view.resolvePath('etc/link')).toBeUndefined();
  });

  it('refuses bytes that are not a view, with INVALID_INPUT naming the problem', () => {
    const bytes = good();
    expect(code(() => UnionView.decode(Buffer.from('hello world, not a view'), { lookup: 'flat' }))).toMatch(
      /INVALID_INPUT: view: not a cairn view/,
    );
    expect(code(() => UnionView.decode(bytes.subarray(0, bytes.length - 9), { lookup: 'flat' }))).toMatch(
      /INVALID_INPUT: view: .*(past the end|trailing)/,
    );
    expect(code(() => UnionView.decode(Buffer.concat([bytes, Buffer.alloc(8)]), { lookup: 'flat' }))).toMatch(
      /INVALID_INPUT: view: 8 bytes of trailing data/,
    );
    const hugeHeader = Buffer.from(bytes);
    hugeHeader.writeUInt32LE(0x7fffffff, 8);
    expect(code(() => UnionView.decode(hugeHeader, { lookup: 'flat' }))).toMatch(/header of \d+ bytes runs past/);
  });

  it('refuses a node whose parent comes later (no cycles), and a name that does not match its hash', () => {
    const bytes = good();
    const { start, nodes } = layout(bytes);
    const forward = Buffer.from(bytes);
    // The last node's parent is set to itself.
    forward.writeInt32LE(nodes - 1, start + (nodes - 1) * 4);
    expect(code(() => UnionView.decode(forward, { lookup: 'stacked' }))).toMatch(
      /INVALID_INPUT: view: node \d+: parent \d+ is not an earlier directory/,
    );
    const renamed = Buffer.from(bytes);
    const at = renamed.lastIndexOf('passwd');
    renamed.write('x', at, 'latin1');
    expect(code(() => UnionView.decode(renamed, { lookup: 'flat' }))).toMatch(/does not match its hash/);
    for (let i = 0; i < 400; i++) {
      // Random byte flips in the sections either decode to some valid view or fail with INVALID_INPUT.
      const flipped = Buffer.from(bytes);
      const pos = start + ((i * 7919) % (bytes.length - start));
      flipped[pos] = (flipped[pos] as number) ^ (1 << (i % 8));
      const why = code(() => UnionView.decode(flipped, { lookup: i % 2 ? 'flat' : 'stacked' }));
      if (why !== undefined) expect(why).toMatch(/^CAIRN_ERR_INVALID_INPUT: view: /);
    }
  });

  it('refuses a flat index whose probes would never end or point outside the view', () => {
    const bytes = good();
    const len = bytes.readUInt32LE(8);
    const h = JSON.parse(bytes.toString('utf8', 12, 12 + len)) as {
      layers: number;
      nodes: number;
      names: number;
      nameBytes: number;
      digestSlots: number;
      flat: { merged: number; indexSlots: number };
    };
    const p8 = (x: number): number => (x + 7) & ~7;
    const n = h.nodes;
    let pos = p8(12 + len) + p8((h.layers + 1) * 4);
    for (const w of [4, 4, 1, 2, 4, 4, 8, 8, 4, 4]) pos += p8(n * w);
    pos += p8(h.digestSlots * 32) + 3 * p8(h.names * 4) + p8(h.nameBytes);
    const m = h.flat.merged;
    const indexAt = pos + 2 * p8(m * 4) + p8(m * 2);
    const full = Buffer.from(bytes);
    for (let i = 0; i < h.flat.indexSlots; i++) full.writeInt32LE(1, indexAt + i * 4);
    expect(code(() => UnionView.decode(full, { lookup: 'flat' }))).toMatch(/flat index: no free slot/);
    // The stacked lookup does not use the flat index, so it does not refuse it.
    expect(code(() => UnionView.decode(full, { lookup: 'stacked' }))).toBeUndefined();
    const outside = Buffer.from(bytes);
    outside.writeInt32LE(m + 5, indexAt);
    expect(code(() => UnionView.decode(outside, { lookup: 'flat' }))).toMatch(/flat index: slot 0 out of range/);
  });

  it('refuses recipe ids that do not match the layers', () => {
    expect(code(() => UnionView.encode(layers(), ['sha256:r0']))).toMatch(/1 recipe ids for 2 layers/);
  });
});
