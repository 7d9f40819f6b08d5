/**
 * The kernel as the oracle for UnionView.
 *
 * Each stack of fixture layers is (1) turned into entries by parseLayer, (2)
 * extracted layer by layer into directories the way container runtimes store
 * them for overlayfs (whiteouts as 0:0 character devices, opaque directories
 * with trusted.overlay.opaque=y, hardlinks as links, devices by mknod,
 * ownership, modes, xattrs and times set, a hardlink's header re-applied to
 * its inode as containerd and moby do, implied directories 0755 root:root
 * with mtime 0), (3) mounted read-only with kernel overlayfs
 * (lowerdir=top:...:bottom), (4) walked by a python3 child process (lstat,
 * readdir, readlink, sha256 of contents, xattrs), and compared with a walk of
 * the UnionView in both lookup modes.
 *
 * The one expected difference: overlayfs lists whiteouts by name in readdir
 * of a directory that comes from one layer only (a name lstat then cannot
 * find). The view never lists whiteouts; the comparison checks that every
 * such phantom is a whiteout of the layer that provides the directory.
 *
 * Needs root and overlayfs; skipped (saying why) otherwise.
 */
import { spawn } from 'node:child_process';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it, type TestContext } from 'vitest';
import { sha256, type Digest } from '../../src/model/digest.js';
import type { Entry } from '../../src/model/entry.js';
import { parseLayer, type ContentSink } from '../../src/registry/layer-parser.js';
import { ROOT_INO, UnionView, type LookupMode, type NodeAttr } from '../../src/union/index.js';
import {
  blockDev,
  charDev,
  dir,
  fifo,
  file,
  FIXTURE_MTIME,
  hardlink,
  layerTar,
  opaque,
  symlink,
  whiteout,
  type EntryOptions,
  type FixtureEntry,
} from '../fixtures/layers.js';
import { makeTempDir, type TempDir } from '../fixtures/tmp.js';

// ---- child processes ---------------------------------------------------------

interface RunResult {
  code: number;
  stdout: Buffer;
  stderr: string;
}

function run(cmd: string, args: string[], input?: string): Promise<RunResult> {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (c: Buffer) => out.push(c));
    child.stderr.on('data', (c: Buffer) => err.push(c));
    child.on('error', (e) => resolve({ code: -1, stdout: Buffer.alloc(0), stderr: e.message }));
    // A command that exits without reading its input (mount, a failing script) must not fail the test by EPIPE.
    child.stdin.on('error', () => undefined);
    child.on('close', (code) =>
      resolve({ code: code ?? -1, stdout: Buffer.concat(out), stderr: Buffer.concat(err).toString() }),
    );
    child.stdin.end(input ?? '');
  });
}

async function mustRun(cmd: string, args: string[], input?: string): Promise<Buffer> {
  const r = await run(cmd, args, input);
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')} exited with ${r.code}: ${r.stderr.trim()}`);
  return r.stdout;
}

// ---- extraction, as runtimes store layers for overlayfs ----------------------

const EXTRACT_PY = String.raw`
import base64, json, os, stat, sys

def extract(root, entries):
    os.makedirs(root, exist_ok=True)
    implicit = {''}  # the layer directory itself, unless the layer has a root entry
    def full(rel):
        return os.path.join(root, rel) if rel else root
    def mkdirs(rel):
        cur = ''
        for part in (rel.split('/') if rel else []):
            cur = part if cur == '' else cur + '/' + part
            if not os.path.lexists(full(cur)):
                os.mkdir(full(cur))
                implicit.add(cur)
    def parent(rel):
        return rel.rsplit('/', 1)[0] if '/' in rel else ''
    # Directories every entry and marker implies.
    for e in entries:
        if e['type'] == 'opaque':
            mkdirs(e['path'])
        elif e['path'] != '':
            mkdirs(parent(e['path']))
    for e in entries:
        t, rel = e['type'], e['path']
        p = full(rel)
        if t in ('whiteout', 'opaque'):
            continue
        if t == 'dir':
            if not os.path.lexists(p):
                os.mkdir(p)
            implicit.discard(rel)
        elif t == 'file':
            with open(p, 'wb') as f:
                f.write(base64.b64decode(e['content']))
        elif t == 'hardlink':
            os.link(full(e['linkTarget']), p, follow_symlinks=False)
        elif t == 'symlink':
            os.symlink(e['linkTarget'], p)
        elif t in ('char', 'block'):
            kind = stat.S_IFCHR if t == 'char' else stat.S_IFBLK
            os.mknod(p, kind | 0o600, os.makedev(e['devMajor'], e['devMinor']))
        elif t == 'fifo':
            os.mkfifo(p, 0o600)
    # Markers: a whiteout is a 0:0 character device, unless the layer has something at that path:
    # a directory of its own then replaces the lower one (opaque), a non-directory wins by itself.
    for e in entries:
        p = full(e['path'])
        if e['type'] == 'whiteout':
            if os.path.lexists(p):
                if stat.S_ISDIR(os.lstat(p).st_mode):
                    os.setxattr(p, 'trusted.overlay.opaque', b'y')
            else:
                os.mknod(p, stat.S_IFCHR | 0o600, os.makedev(0, 0))
        elif e['type'] == 'opaque':
            os.setxattr(p, 'trusted.overlay.opaque', b'y')
    # Ownership, xattrs, modes, in layer order: a hardlink's header re-applies to the shared inode.
    for e in entries:
        if e['type'] in ('whiteout', 'opaque'):
            continue
        p = full(e['path'])
        os.lchown(p, e['uid'], e['gid'])
        for name, value in (e.get('xattrs') or {}).items():
            try:
                os.setxattr(p, name, base64.b64decode(value), follow_symlinks=False)
            except OSError:
                pass  # user.* on a symlink or device: Linux refuses, runtimes carry on
        if not stat.S_ISLNK(os.lstat(p).st_mode):
            os.chmod(p, e['mode'])
    for rel in implicit:
        os.lchown(full(rel), 0, 0)
        os.chmod(full(rel), 0o755)
    # Times last: creating entries changes their directories' mtimes.
    for e in entries:
        if e['type'] in ('whiteout', 'opaque'):
            continue
        ns = int(e['mtimeNs'])
        os.utime(full(e['path']), ns=(ns, ns), follow_symlinks=False)
    for rel in implicit:
        os.utime(full(rel), ns=(0, 0), follow_symlinks=False)

for layer in json.load(sys.stdin)['layers']:
    extract(layer['dir'], layer['entries'])
`;

const WALK_PY = String.raw`
import base64, hashlib, json, os, stat, sys

root = sys.argv[1]
out = {}

def kind(m):
    for test, name in ((stat.S_ISREG, 'file'), (stat.S_ISDIR, 'dir'), (stat.S_ISLNK, 'symlink'),
                       (stat.S_ISCHR, 'char'), (stat.S_ISBLK, 'block'), (stat.S_ISFIFO, 'fifo')):
        if test(m):
            return name
    return 'other'

def visit(rel):
    p = os.path.join(root, rel) if rel else root
    st = os.lstat(p)
    k = kind(st.st_mode)
    rec = {'type': k, 'mode': stat.S_IMODE(st.st_mode), 'uid': st.st_uid, 'gid': st.st_gid,
           'size': st.st_size, 'mtimeNs': str(st.st_mtime_ns), 'nlink': st.st_nlink,
           'inode': '%d:%d' % (st.st_dev, st.st_ino)}
    if k == 'file':
        with open(p, 'rb') as f:
            rec['sha256'] = 'sha256:' + hashlib.sha256(f.read()).hexdigest()
    elif k == 'symlink':
        rec['target'] = os.readlink(p)
    elif k in ('char', 'block'):
        rec['rdev'] = [os.major(st.st_rdev), os.minor(st.st_rdev)]
    xattrs = {}
    for name in os.listxattr(p, follow_symlinks=False):
        xattrs[name] = base64.b64encode(os.getxattr(p, name, follow_symlinks=False)).decode()
    rec['xattrs'] = xattrs
    out[rel] = rec
    if k == 'dir':
        names = sorted(os.listdir(p))
        rec['listing'] = names
        rec['phantoms'] = []
        for n in names:
            try:
                os.lstat(os.path.join(p, n))
            except FileNotFoundError:
                rec['phantoms'].append(n)
                continue
            visit(n if rel == '' else rel + '/' + n)

visit('')
json.dump(out, sys.stdout)
`;

interface KernelRec {
  type: string;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  mtimeNs: string;
  nlink: number;
  inode: string;
  sha256?: string;
  target?: string;
  rdev?: [number, number];
  xattrs: Record<string, string>;
  listing?: string[];
  phantoms?: string[];
}
type KernelTree = Record<string, KernelRec>;

/** Seconds (possibly fractional) to integer nanoseconds, exactly as far as a double allows. */
function toNs(seconds: number): bigint {
  const whole = Math.floor(seconds);
  return BigInt(whole) * 1_000_000_000n + BigInt(Math.round((seconds - whole) * 1e9));
}

interface Layer {
  entries: Entry[];
  contents: Map<Digest, Buffer>;
}

async function* once(b: Buffer): AsyncIterable<Buffer> {
  yield b;
}

/** The layer's entries as cairn parses them, and the contents of its files. */
async function parseFixture(entries: FixtureEntry[]): Promise<Layer> {
  const contents = new Map<Digest, Buffer>();
  const sink: ContentSink = {
    async store(body) {
      let buf: Buffer;
      if (Buffer.isBuffer(body)) buf = body;
      else {
        const parts: Buffer[] = [];
        for await (const c of body) parts.push(c);
        buf = Buffer.concat(parts);
      }
      const digest = sha256(buf);
      contents.set(digest, buf);
      return { digest, created: true };
    },
  };
  const parsed = await parseLayer(once(layerTar(entries)), sink, 'fixture layer');
  return { entries: parsed.entries, contents };
}

async function extractLayers(dirs: string[], layers: Layer[]): Promise<void> {
  const spec = {
    layers: layers.map((l, i) => ({
      dir: dirs[i],
      entries: l.entries.map((e) => ({
        ...e,
        mtimeNs: toNs(e.mtime).toString(),
        content: e.digest ? (l.contents.get(e.digest) as Buffer).toString('base64') : undefined,
      })),
    })),
  };
  await mustRun('python3', ['-c', EXTRACT_PY], JSON.stringify(spec));
}

// ---- mounts --------------------------------------------------------------------

const mounted = new Set<string>();

async function mountOverlay(lowerTopFirst: string[], target: string): Promise<void> {
  await mkdir(target, { recursive: true });
  await mustRun('mount', ['-t', 'overlay', 'overlay', '-o', `lowerdir=${lowerTopFirst.join(':')}`, target]);
  mounted.add(target);
}

async function unmount(target: string): Promise<void> {
  if (!mounted.has(target)) return;
  const r = await run('umount', [target]);
  if (r.code !== 0) await mustRun('umount', ['-l', target]);
  mounted.delete(target);
}

async function ourMounts(): Promise<string[]> {
  const text = await readFile('/proc/mounts', 'utf8');
  return text
    .split('\n')
    .map((l) => l.split(' ')[1] ?? '')
    .filter((m) => m.includes('cairn-union-oracle-'));
}

/** Why the oracle cannot run here, or undefined when it can. */
async function probe(): Promise<string | undefined> {
  if (process.platform !== 'linux') return 'kernel overlayfs needs Linux';
  if (process.getuid?.() !== 0) return 'mounting overlayfs needs root';
  const py = await run('python3', ['-c', 'import os; os.setxattr; os.mknod']);
  if (py.code !== 0) return `python3 with os.setxattr/os.mknod is needed: ${py.stderr.trim()}`;
  const tmp = await makeTempDir('cairn-union-oracle-');
  try {
    const a = join(tmp.path, 'a');
    const b = join(tmp.path, 'b');
    await mkdir(a);
    await mkdir(b);
    await writeFile(join(b, 'x'), 'x');
    const mnt = join(tmp.path, 'mnt');
    try {
      await mountOverlay([a, b], mnt);
    } catch (err) {
      return `overlayfs mount failed: ${(err as Error).message}`;
    }
    await unmount(mnt);
    return undefined;
  } finally {
    await tmp.cleanup();
  }
}

// ---- the view's side -----------------------------------------------------------

interface ViewRec {
  attr: NodeAttr;
  depth: number;
  listing?: string[];
  xattrs: Record<string, string>;
}

function walkView(v: UnionView): Map<string, ViewRec> {
  const out = new Map<string, ViewRec>();
  const visit = (path: string, ino: number, depth: number): void => {
    const attr = v.getattr(ino);
    if (!attr) throw new Error(`getattr(${ino}) of ${path} failed`);
    const xattrs: Record<string, string> = {};
    for (const n of v.listxattr(ino) ?? []) xattrs[n] = (v.getxattr(ino, n) as Buffer).toString('base64');
    const rec: ViewRec = { attr, depth, xattrs };
    out.set(path, rec);
    if (attr.type !== 'dir') return;
    rec.listing = v.readdir(ino) ?? [];
    for (const name of rec.listing) {
      const r = v.lookup(ino, name);
      if (!r) throw new Error(`lookup of ${name} in ${path} failed`);
      visit(path === '' ? name : `${path}/${name}`, r.ino, r.depth);
    }
  };
  visit('', ROOT_INO, 1);
  return out;
}

/** xattrs compared: overlayfs keeps trusted.* for itself and security.* may be added by the host. */
function comparable(x: Record<string, string>): Record<string, string> {
  return Object.fromEntries(
    Object.entries(x)
      .filter(([k]) => !k.startsWith('trusted.') && !k.startsWith('security.'))
      .sort(([a], [b]) => (a < b ? -1 : 1)),
  );
}

/** Whether `path` is, in that layer, only a whiteout (no entry of its own). */
function isLayerWhiteout(entries: Entry[], path: string): boolean {
  const at = entries.filter((e) => e.path === path && e.type !== 'opaque');
  const whiteoutish = (e: Entry): boolean => e.type === 'whiteout' || (e.type === 'char' && !e.devMajor && !e.devMinor);
  return (
    at.length > 0 &&
    at.every(
      (e) =>
        whiteoutish(e) || (e.type === 'hardlink' && entries.some((t) => t.path === e.linkTarget && whiteoutish(t))),
    )
  );
}

function compareWithKernel(kernel: KernelTree, v: UnionView, layers: Entry[][]): string[] {
  const problems: string[] = [];
  const view = walkView(v);
  const kpaths = Object.keys(kernel).sort();
  const vpaths = [...view.keys()].sort();
  for (const p of kpaths) if (!view.has(p)) problems.push(`/${p}: in the kernel's tree only`);
  for (const p of vpaths) if (!(p in kernel)) problems.push(`/${p}: in the view only`);
  for (const p of kpaths) {
    const k = kernel[p] as KernelRec;
    const r = view.get(p);
    if (!r) continue;
    const a = r.attr;
    const diff = (what: string, kv: unknown, vv: unknown): void => {
      if (JSON.stringify(kv) !== JSON.stringify(vv)) {
        problems.push(`/${p}: ${what}: kernel ${JSON.stringify(kv)}, view ${JSON.stringify(vv)}`);
      }
    };
    diff('type', k.type, a.type);
    diff('mode', k.mode.toString(8), a.mode.toString(8));
    diff('uid', k.uid, a.uid);
    diff('gid', k.gid, a.gid);
    if (k.type !== 'dir') diff('size', k.size, a.size);
    diff('mtime', k.mtimeNs, toNs(a.mtime).toString());
    diff('nlink', k.nlink, a.nlink);
    if (k.type === 'file') diff('content', k.sha256, a.digest);
    if (k.type === 'symlink') diff('target', k.target, a.linkTarget);
    if (k.rdev) diff('rdev', k.rdev, [a.rdevMajor, a.rdevMinor]);
    diff('xattrs', comparable(k.xattrs), comparable(r.xattrs));
    if (k.type === 'dir') {
      const phantoms = k.phantoms ?? [];
      diff(
        'listing',
        (k.listing ?? []).filter((n) => !phantoms.includes(n)),
        r.listing,
      );
      for (const n of phantoms) {
        const child = p === '' ? n : `${p}/${n}`;
        if (a.nlink === 1 || !isLayerWhiteout(layers[a.layer] as Entry[], child)) {
          problems.push(`/${p}: the kernel lists ${n}, which is not a whiteout of its only layer ${a.layer}`);
        }
      }
    }
  }
  // Hardlinks: the same names share an inode on both sides.
  const groups = (pairs: [string, string][]): string[] => {
    const m = new Map<string, string[]>();
    for (const [path, ino] of pairs) m.set(ino, [...(m.get(ino) ?? []), path]);
    return [...m.values()].map((g) => g.sort().join(' = ')).sort();
  };
  const kGroups = groups(kpaths.filter((p) => kernel[p]?.type !== 'dir').map((p) => [p, kernel[p]?.inode as string]));
  const vGroups = groups(
    vpaths.filter((p) => view.get(p)?.attr.type !== 'dir').map((p) => [p, String(view.get(p)?.attr.ino)]),
  );
  if (JSON.stringify(kGroups) !== JSON.stringify(vGroups)) {
    problems.push(`inode groups differ: kernel ${JSON.stringify(kGroups)}, view ${JSON.stringify(vGroups)}`);
  }
  // statfs: distinct inodes and the bytes of distinct regular files.
  const seen = new Set<string>();
  let bytes = 0;
  for (const p of kpaths) {
    const k = kernel[p] as KernelRec;
    if (seen.has(k.inode)) continue;
    seen.add(k.inode);
    if (k.type === 'file') bytes += k.size;
  }
  const st = v.statfs();
  if (st.files !== seen.size || st.bytes !== bytes) {
    problems.push(`statfs: kernel tree has ${seen.size} inodes, ${bytes} bytes; view says ${JSON.stringify(st)}`);
  }
  return problems;
}

// ---- the oracle ------------------------------------------------------------------

let skipReason: string | undefined;
const temps = new Set<TempDir>();

beforeAll(async () => {
  skipReason = await probe();
});

afterEach(async () => {
  for (const m of [...mounted]) await unmount(m);
  for (const t of [...temps]) {
    await t.cleanup();
    temps.delete(t);
  }
});

afterAll(async () => {
  expect(await ourMounts()).toEqual([]);
});

/** Runs the whole comparison for one stack of layers, bottom first. */
async function oracle(ctx: TestContext, fixtureLayers: FixtureEntry[][]): Promise<KernelTree> {
  if (skipReason) ctx.skip(skipReason);
  const layers = await Promise.all(fixtureLayers.map(parseFixture));
  const tmp = await makeTempDir('cairn-union-oracle-');
  temps.add(tmp);
  const dirs = layers.map((_, i) => join(tmp.path, `L${i}`));
  const mnt = join(tmp.path, 'mnt');
  let kernel: KernelTree;
  try {
    await extractLayers(dirs, layers);
    await mountOverlay([...dirs].reverse(), mnt);
    try {
      kernel = JSON.parse((await mustRun('python3', ['-c', WALK_PY, mnt])).toString()) as KernelTree;
    } finally {
      await unmount(mnt);
    }
  } finally {
    if (!mounted.has(mnt)) {
      await tmp.cleanup();
      temps.delete(tmp);
    }
  }
  const entries = layers.map((l) => l.entries);
  const walks: Map<string, ViewRec>[] = [];
  for (const lookup of ['stacked', 'flat'] as LookupMode[]) {
    const v = UnionView.build(entries, { lookup });
    expect(compareWithKernel(kernel, v, entries), `${lookup} lookup vs kernel overlayfs`).toEqual([]);
    walks.push(walkView(v));
  }
  // Both modes agree on everything, inode numbers and resolution depths included.
  expect(walks[0]).toEqual(walks[1]);
  return kernel;
}

// ---- fixture stacks ----------------------------------------------------------------

const T = FIXTURE_MTIME;

describe('UnionView against kernel overlayfs', () => {
  it('every entry type, in a single layer under an empty one', async (ctx) => {
    await oracle(ctx, [
      [
        dir('bin', { mode: 0o711, uid: 2, gid: 3, mtime: T + 1 }),
        file('bin/tool', 'binary tool\n', { mode: 0o4755, uid: 1000, gid: 100, xattrs: { 'user.note': 'hi' } }),
        hardlink('bin/tool-link', 'bin/tool', { mode: 0o4755, uid: 1000, gid: 100 }),
        symlink('bin/sh', '/bin/tool', { uid: 5, mtime: T + 2 }),
        symlink('bin/rel', '../etc/passwd'),
        symlink('bin/dangling', 'nowhere/at/all'),
        dir('dev'),
        charDev('dev/null', 1, 3),
        blockDev('dev/sda', 8, 0, { gid: 6 }),
        fifo('dev/pipe', { mode: 0o620 }),
        dir('tmp', { mode: 0o1777 }),
        dir('etc', { xattrs: { 'user.dir': 'x' } }),
        file('etc/passwd', 'root:x:0:0::/root:/bin/sh\n', { mtime: 1_700_000_123.5 }),
        file('etc/empty', ''),
        file('etc/big', Buffer.alloc(200_000, 7)),
        file('etc/élan-ü', 'unicode\n'),
        file(`deep/${'x'.repeat(120)}/${'long-name-'.repeat(12)}.txt`, 'long path\n'),
        file('a/b/c/d/e/f/g', 'implicit parents\n'),
        file('with space', 's'),
        file('colon:name', 'c'),
        file('.whatever', 'not a whiteout: the prefix is .wh. with the dot'),
        file('..dots', 'd'),
      ],
      [],
    ]);
  });

  it('every entry type in the top layer over a populated one', async (ctx) => {
    await oracle(ctx, [
      [file('base', 'b'), dir('dev'), file('dev/null', 'not a device yet')],
      [
        charDev('dev/null', 1, 3),
        charDev('dev/tty', 5, 0, { uid: 4 }),
        blockDev('dev/loop0', 7, 0),
        fifo('dev/fifo'),
        symlink('link', 'base'),
        file('f', 'top', { mode: 0o600 }),
        hardlink('g', 'f'),
      ],
    ]);
  });

  it('a file replaced by a directory, a directory replaced by a file', async (ctx) => {
    await oracle(ctx, [
      [dir('x', { mode: 0o700 }), file('x/a'), dir('x/sub'), file('x/sub/b'), file('y', 'file y'), symlink('z', 'x')],
      [file('x', 'now a file'), dir('y', { mode: 0o750 }), file('y/b'), dir('z'), file('z/inside')],
      [file('other')],
    ]);
  });

  it('a directory over a file over a directory', async (ctx) => {
    await oracle(ctx, [[file('a/low'), dir('a/sub')], [file('a', 'file')], [file('a/top'), dir('a/sub2')]]);
  });

  it('whiteouts: a file, a directory with children, then re-created higher up', async (ctx) => {
    await oracle(ctx, [
      [file('f', 'f'), dir('d', { mode: 0o700 }), file('d/a'), dir('d/sub'), file('d/sub/b'), file('keep')],
      [whiteout('f'), whiteout('d'), whiteout('never-existed')],
      [file('f', 're-created'), dir('d', { mode: 0o711 }), file('d/new')],
      [file('d/newer')],
    ]);
  });

  it('a whiteout in the bottom layer and a whiteout whose parent is implied', async (ctx) => {
    await oracle(ctx, [
      [whiteout('ghost'), file('x/y')],
      [whiteout('x/y'), whiteout('q/r/s')],
    ]);
  });

  it('opaque directories: with new children, the marker after the files, a whiteout under it', async (ctx) => {
    await oracle(ctx, [
      [dir('d'), file('d/low1'), dir('d/low-sub'), file('d/low-sub/x'), dir('e'), file('e/low'), file('e/low2')],
      [
        file('d/mine'),
        dir('d', { mode: 0o750 }),
        opaque('d'),
        file('e/own'),
        opaque('e'),
        whiteout('e/low'),
        whiteout('e/nothing'),
      ],
      [file('d/upper'), file('e/upper')],
    ]);
  });

  it('an opaque directory in the top layer with a whiteout in it (kernel lists the whiteout)', async (ctx) => {
    const k = await oracle(ctx, [
      [file('d/a'), file('d/b'), file('m/a'), file('m/b')],
      [opaque('d'), whiteout('d/a'), file('d/c'), whiteout('m/a'), file('m/c')],
    ]);
    // d comes from one layer only (opaque): readdir is the real directory's, whiteout included.
    expect(k['d']?.listing).toEqual(['a', 'c']);
    expect(k['d']?.phantoms).toEqual(['a']);
    expect(k['d']?.nlink).toBe(2);
    // m merges two layers: overlayfs filters whiteouts and reports nlink 1.
    expect(k['m']?.listing).toEqual(['b', 'c']);
    expect(k['m']?.phantoms).toEqual([]);
    expect(k['m']?.nlink).toBe(1);
  });

  it('an opaque marker on the root is ignored; root attributes come from the top layer', async (ctx) => {
    const k = await oracle(ctx, [
      [dir('.', { mode: 0o755, mtime: T + 3 }), file('low')],
      [file('.wh..wh..opq', ''), file('mid')],
      [dir('.', { mode: 0o750, uid: 1, gid: 2, mtime: T + 9, xattrs: { 'user.root': 'r' } }), file('top')],
    ]);
    expect(k['']?.listing).toEqual(['low', 'mid', 'top']);
    expect(k['']).toMatchObject({ mode: 0o750, uid: 1, gid: 2, nlink: 1 });
  });

  it('whiteout and entry at one path in one layer', async (ctx) => {
    await oracle(ctx, [
      [file('d/old'), file('f', 'old'), file('g/old')],
      [whiteout('d'), dir('d'), file('d/new'), file('f', 'new'), whiteout('f'), whiteout('g'), file('g/new')],
    ]);
  });

  it('a 0:0 character device is a whiteout', async (ctx) => {
    const k = await oracle(ctx, [
      [file('a'), file('b'), dir('c'), file('c/x')],
      [charDev('a', 0, 0), charDev('c', 0, 0), charDev('new', 0, 0), charDev('real', 0, 1)],
    ]);
    expect(k['']?.listing).toEqual(['b', 'real']);
  });

  it('hardlinks, incl. across an upper change and with link headers that differ', async (ctx) => {
    const k = await oracle(ctx, [
      [
        file('a', 'shared', { mode: 0o755, xattrs: { 'user.x': '1' } }),
        hardlink('b', 'a', { mode: 0o700, uid: 7, xattrs: { 'user.y': '2' } }),
        hardlink('dir/c', 'a', { mode: 0o700, uid: 7 }),
        hardlink('d', 'a', { mode: 0o700, uid: 7 }),
        symlink('s', 'a'),
        hardlink('s2', 's'),
        fifo('p'),
        hardlink('p2', 'p'),
      ],
      [file('a', 'replaced'), whiteout('d'), whiteout('p')],
      [file('x/y', 'top'), hardlink('x/z', 'x/y'), hardlink('w', 'x/y')],
    ]);
    // The lower inode keeps its own link count (a, b, dir/c, d) though a is replaced and d whited out,
    // and carries the last link header's attributes and every header's xattrs.
    expect(k['b']).toMatchObject({ nlink: 4, mode: 0o700, uid: 7, sha256: sha256('shared') });
    expect(Object.keys(k['b']?.xattrs ?? {}).sort()).toEqual(['user.x', 'user.y']);
    expect(k['a']).toMatchObject({ nlink: 1, sha256: sha256('replaced') });
    expect(k['b']?.inode).toBe(k['dir/c']?.inode);
    expect(k['p2']?.nlink).toBe(2);
  });

  it('xattrs: user.* on files and directories, dropped on symlinks and devices, directory xattrs from the top', async (ctx) => {
    await oracle(ctx, [
      [
        dir('d', { xattrs: { 'user.low': 'l', 'user.both': 'low' } }),
        file('d/f', 'x', { xattrs: { 'user.bin': Buffer.from([0, 1, 2, 255]) } }),
        symlink('d/l', 'f', { xattrs: { 'user.sym': 's' } }),
        fifo('d/p', { xattrs: { 'user.fifo': 'p' } }),
      ],
      [dir('d', { xattrs: { 'user.both': 'up', 'user.up': 'u' } }), file('d/g')],
    ]);
  });

  it('a directory carrying trusted.overlay.opaque=y in its tar entry', async (ctx) => {
    await oracle(ctx, [[file('d/low')], [dir('d', { xattrs: { 'trusted.overlay.opaque': 'y' } }), file('d/up')]]);
  });

  it('deep implicit directories and directory attribute overrides in upper layers', async (ctx) => {
    const k = await oracle(ctx, [
      [
        dir('usr', { mode: 0o755, uid: 1, mtime: T + 1 }),
        dir('usr/lib', { mode: 0o700, uid: 2, gid: 2, mtime: T + 2, xattrs: { 'user.a': 'a' } }),
        file('usr/lib/x'),
        dir('tmp', { mode: 0o1777, mtime: T + 3 }),
        dir('opt/app', { mode: 0o2775, gid: 50 }),
      ],
      [dir('usr/lib', { mode: 0o751, uid: 3, gid: 4, mtime: T + 20 }), file('usr/lib/y'), file('tmp/a/b/c')],
      [file('usr/lib/deeper/still/z'), file('opt/app/new'), dir('brand/new/tree', { mode: 0o700 })],
    ]);
    // The topmost occurrence wins even when it is only implied by a deeper path.
    expect(k['usr/lib']).toMatchObject({ mode: 0o755, uid: 0, gid: 0, mtimeNs: '0', xattrs: {} });
    expect(k['tmp']).toMatchObject({ mode: 0o755, mtimeNs: '0' });
    expect(k['opt/app']).toMatchObject({ mode: 0o755, gid: 0 });
  });
});

// ---- random stacks ------------------------------------------------------------------

/** mulberry32 */
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

/** A random layer obeying parseLayer's rules: no path twice, nothing under a non-directory. */
function randomLayer(r: () => number): FixtureEntry[] {
  const pick = <T>(xs: T[]): T => xs[Math.floor(r() * xs.length)] as T;
  const entries = new Map<string, 'dir' | 'other'>();
  const implied = new Set<string>();
  const whiteouts = new Set<string>();
  const opaques = new Set<string>();
  const out: FixtureEntry[] = [];
  const linkable: string[] = [];
  const n = 1 + Math.floor(r() * 14);
  if (r() < 0.1) out.push(dir('.', { mode: pick([0o755, 0o700]), uid: pick([0, 1]), mtime: T + 5 }));
  if (r() < 0.1) out.push(file('.wh..wh..opq', ''));
  for (let i = 0; i < n; i++) {
    const parts = Array.from({ length: 1 + Math.floor(r() * 3) }, () => pick(['a', 'b', 'c', 'd']));
    const path = parts.join('/');
    const ancestors = parts.slice(0, -1).map((_, j) => parts.slice(0, j + 1).join('/'));
    if (ancestors.some((a) => entries.get(a) === 'other')) continue;
    const roll = r();
    if (roll < 0.15) {
      if (whiteouts.has(path)) continue;
      whiteouts.add(path);
      out.push(whiteout(path));
      for (const a of ancestors) implied.add(a);
      continue;
    }
    if (roll < 0.22) {
      if (opaques.has(path) || entries.get(path) === 'other') continue;
      opaques.add(path);
      out.push(opaque(path));
      for (const a of [...ancestors, path]) implied.add(a);
      continue;
    }
    if (entries.has(path)) continue;
    const o: EntryOptions = {
      mode: pick([0o644, 0o755, 0o600, 0o4755, 0o1777]),
      uid: pick([0, 1, 1000]),
      gid: pick([0, 2]),
      mtime: T + Math.floor(r() * 3),
    };
    if (r() < 0.25) o.xattrs = { [`user.${pick(['k', 'j'])}`]: pick(['1', '2']) };
    const t = r();
    let e: FixtureEntry;
    let isDir = false;
    if (implied.has(path) || t < 0.3) {
      e = dir(path, o);
      isDir = true;
    } else if (t < 0.6) e = file(path, pick(['x', 'yy', 'zzz', '']), o);
    else if (t < 0.7 && linkable.length > 0) e = hardlink(path, pick(linkable), o);
    else if (t < 0.8) e = symlink(path, pick(['a', '../b', '/c/d']), o);
    else if (t < 0.87) e = charDev(path, pick([0, 1]), pick([0, 3]), o);
    else if (t < 0.93) e = blockDev(path, 8, pick([0, 1]), o);
    else e = fifo(path, o);
    out.push(e);
    entries.set(path, isDir ? 'dir' : 'other');
    for (const a of ancestors) implied.add(a);
    if (!isDir && e.header.type !== 'hardlink') linkable.push(path);
  }
  return out;
}

describe('UnionView against kernel overlayfs: random stacks', () => {
  // CAIRN_UNION_ORACLE_SEEDS=500 to search harder.
  const count = Number(process.env.CAIRN_UNION_ORACLE_SEEDS ?? 50);
  const seeds = Array.from({ length: count }, (_, i) => i + 1);
  it.for(seeds)('seed %i', async (seed, ctx) => {
    const r = rng(seed * 7919);
    const layers = Array.from({ length: 2 + Math.floor(r() * 4) }, () => randomLayer(r));
    try {
      await oracle(ctx, layers);
    } catch (err) {
      if (ctx.task.result?.state === 'skip') throw err;
      const shown = layers.map((l) =>
        l.map((e) => `${e.header.type} ${e.header.name}${e.header.linkname ? ` -> ${e.header.linkname}` : ''}`),
      );
      throw new Error(`seed ${seed}, layers bottom first: ${JSON.stringify(shown)}\n${(err as Error).message}`, {
        cause: err,
      });
    }
  });
});
