// Synthetic container images for the mount benches: deterministic layers with realistic
// path shapes (Debian package trees, Python and Node modules, locales, shared libraries with
// their symlinks, docs), several layers with overwrites, whiteouts and opaque directories,
// written as OCI layouts with cairn's own tar and layout writers (dist/).
//
// An "entry" is one tar member of one layer (directories, files, symlinks, whiteouts and
// opaque markers included), which is what a layer recipe holds and what a mount indexes.
import { join } from 'node:path';
import { prng } from '../lib/prng.js';

const MTIME = 1_700_000_000;
const POOL = 512;

const WORDS = [
  'core',
  'util',
  'http',
  'json',
  'parser',
  'client',
  'server',
  'models',
  'tests',
  'internal',
  'common',
  'config',
  'crypto',
  'io',
  'net',
  'data',
  'api',
  'handlers',
  'plugins',
  'vendor',
  'schema',
  'cache',
  'auth',
  'stream',
  'codec',
  'render',
  'template',
  'locale',
  'storage',
  'queue',
  'worker',
  'events',
  'logging',
  'metrics',
  'compat',
  'types',
  'helpers',
  'backend',
  'frontend',
  'cli',
];
const LANGS = ['de', 'fr', 'es', 'it', 'ja', 'pt_BR', 'ru', 'zh_CN', 'pl', 'nl', 'sv', 'cs', 'uk', 'tr'];
const DOCS = ['copyright', 'changelog.Debian.gz', 'README.md', 'NEWS.gz', 'changelog.gz'];
const EXTS = ['dat', 'xml', 'json', 'txt', 'conf', 'png', 'svg'];

/**
 * Layers of about `total` entries in all (the last layer may overshoot by a few parent
 * directories). Returns the uncompressed tars, the entry count of each layer, `probe` (a
 * regular file of the bottom layer at depth 7 that stays visible, for a first read) and
 * `visible`: the regular files of the merged view, path -> size.
 *
 * opts: layers (default 4), seed, whiteouts (default true: upper layers get whiteouts of
 * lower files and one opaque directory each; upper layers always overwrite 4 % of lower files), buildTar (from dist/tar/writer.js),
 * extra: [{ layer, path, content }] files added verbatim.
 */
export function syntheticLayers(total, opts) {
  const nLayers = opts.layers ?? 4;
  const rand = prng(opts.seed ?? 42);
  const pick = (arr) => arr[Math.floor(rand() * arr.length)];
  const fracs = nLayers === 1 ? [1] : [0.55, 0.25, 0.15, 0.05].slice(0, nLayers);
  const fsum = fracs.reduce((a, b) => a + b, 0);
  const targets = fracs.map((f) => Math.max(8, Math.round((total * f) / fsum)));
  const pkgsPerLayer = (n) => Math.max(4, Math.round(n / 45));
  // File contents come from a pool (mount time and daemon heap depend on metadata only: every
  // file entry still carries its own digest; a pool keeps the import of 100k files quick).
  // First POOL: small files (90 % 64 B-2 KiB, 10 % 2-16 KiB); then POOL larger ones (4-100 KiB).
  const pool = [];
  for (let i = 0; i < 2 * POOL; i++) {
    const size =
      i < POOL
        ? i % 10 === 9
          ? 2048 + Math.floor(rand() * 14336)
          : 64 + Math.floor(rand() * 1984)
        : 4096 + Math.floor(rand() * 28672);
    const line = Buffer.from(`synthetic content ${i} ${Math.floor(rand() * 1e9)}\n`);
    const content = Buffer.alloc(size);
    for (let o = 0; o < size; o += line.length) line.copy(content, o, 0, Math.min(line.length, size - o));
    pool.push(content);
  }
  const visible = new Map(); // merged view: file path -> size
  const visibleDirs = new Set();
  const tars = [];
  const counts = [];
  let probe;
  let pkgSerial = 0;
  for (let k = 0; k < nLayers; k++) {
    const entries = new Map(); // path -> header (+content); dirs end without slash here
    const target = targets[k];
    const addDirs = (path) => {
      const parts = path.split('/');
      for (let i = 1; i < parts.length; i++) {
        const d = parts.slice(0, i).join('/');
        if (!entries.has(d)) entries.set(d, { header: { name: `${d}/`, type: 'dir', mode: 0o755, mtime: MTIME } });
      }
    };
    const addFile = (path, content, mode = 0o644) => {
      if (entries.has(path)) return false;
      addDirs(path);
      entries.set(path, { header: { name: path, type: 'file', mode, mtime: MTIME }, content });
      return true;
    };
    const addLink = (path, target) => {
      if (entries.has(path)) return;
      addDirs(path);
      entries.set(path, { header: { name: path, type: 'symlink', linkname: target, mtime: MTIME } });
    };
    const fileSize = () => pool[Math.floor(rand() * POOL)];
    const bigFile = () => pool[POOL + Math.floor(rand() * POOL)];
    const lowerFiles = k > 0 ? [...visible.keys()].filter((p) => p !== probe) : [];
    // What upper layers do to lower ones: overwrite some files, delete some, replace one directory.
    const removed = [];
    let opaqueDir;
    if (k > 0 && lowerFiles.length > 0) {
      const nOver = Math.max(1, Math.round(target * 0.04));
      for (let i = 0; i < nOver; i++) {
        const p = pick(lowerFiles);
        if (addFile(p, fileSize())) visible.set(p, entries.get(p).content.length);
      }
    }
    if (k > 0 && opts.whiteouts !== false && lowerFiles.length > 0) {
      const nWh = Math.max(1, Math.round(target * 0.01));
      for (let i = 0; i < nWh; i++) {
        const p = pick(lowerFiles);
        if (entries.has(p) || !visible.has(p)) continue;
        const slash = p.lastIndexOf('/');
        const wh = `${p.slice(0, slash)}/.wh.${p.slice(slash + 1)}`;
        addDirs(wh);
        entries.set(wh, { header: { name: wh, type: 'file', mode: 0o600, mtime: MTIME }, content: Buffer.alloc(0) });
        removed.push(p);
      }
      const docs = [...visibleDirs].filter((d) => d.startsWith('usr/share/doc/') && !probe.startsWith(`${d}/`));
      if (docs.length > 0) {
        opaqueDir = pick(docs);
        const marker = `${opaqueDir}/.wh..wh..opq`;
        addDirs(marker);
        entries.set(marker, {
          header: { name: marker, type: 'file', mode: 0o600, mtime: MTIME },
          content: Buffer.alloc(0),
        });
        addFile(`${opaqueDir}/copyright`, fileSize());
      }
    }
    for (const x of opts.extra ?? [])
      if (x.layer === k) {
        addDirs(x.path);
        entries.set(x.path, { header: { name: x.path, type: 'file', mode: 0o644, mtime: MTIME }, content: x.content });
      }
    const pkgs = [];
    const newPkg = () => {
      const p = { name: `${pick(WORDS)}-${pick(WORDS)}${pkgSerial++}`, subs: [] };
      for (let i = 1 + Math.floor(rand() * 3); i > 0; i--) p.subs.push(pick(WORDS));
      pkgs.push(p);
      return p;
    };
    for (let i = 0; i < pkgsPerLayer(target); i++) newPkg();
    while (entries.size < target) {
      const p = rand() < 0.02 ? newPkg() : pick(pkgs);
      const pkg = p.name;
      const sub = pick(p.subs);
      const n = Math.floor(rand() * 60);
      const r = rand();
      if (r < 0.3) {
        const mod = `usr/lib/python3/dist-packages/${pkg.replace(/-/g, '_')}`;
        const path = rand() < 0.8 ? `${mod}/${sub}/${pick(WORDS)}_${n}.py` : `${mod}/${pick(WORDS)}.py`;
        if (addFile(path, fileSize()) && k === 0 && probe === undefined && path.split('/').length === 7) probe = path;
      } else if (r < 0.5) {
        addFile(`opt/app/node_modules/${pkg}/lib/${sub}/${pick(WORDS)}${n}.js`, fileSize());
      } else if (r < 0.6) {
        addFile(`usr/share/doc/${pkg}/${pick(DOCS)}`, fileSize());
      } else if (r < 0.68) {
        addFile(`usr/share/locale/${pick(LANGS)}/LC_MESSAGES/${pkg}.mo`, fileSize());
      } else if (r < 0.76) {
        const so = `lib${pkg}.so.${n % 9}`;
        const real = `${so}.${Math.floor(rand() * 20)}.${Math.floor(rand() * 5)}`;
        if (addFile(`usr/lib/x86_64-linux-gnu/${real}`, bigFile())) addLink(`usr/lib/x86_64-linux-gnu/${so}`, real);
      } else if (r < 0.86) {
        addFile(`usr/include/${pkg}/${pick(WORDS)}${n}.h`, fileSize());
      } else if (r < 0.95) {
        addFile(`usr/share/${pkg}/${sub}/${pick(WORDS)}${n}.${pick(EXTS)}`, fileSize());
      } else {
        const bin = `usr/bin/${pkg}${rand() < 0.5 ? '' : `-${pick(WORDS)}`}`;
        if (rand() < 0.3) addLink(bin, `../lib/${pkg}/${sub}`);
        else addFile(bin, bigFile(), 0o755);
      }
    }
    // The merged view after this layer (overlay semantics).
    for (const p of removed) visible.delete(p);
    if (opaqueDir !== undefined) {
      for (const p of [...visible.keys()]) if (p.startsWith(`${opaqueDir}/`)) visible.delete(p);
    }
    for (const [p, e] of entries) {
      if (e.header.type === 'dir') visibleDirs.add(p);
      else if (e.header.type === 'file' && !p.split('/').pop().startsWith('.wh.')) visible.set(p, e.content.length);
    }
    const sorted = [...entries.entries()].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
    tars.push(opts.buildTar(sorted.map(([, e]) => e)));
    counts.push(entries.size);
  }
  return { tars, counts, entries: counts.reduce((a, b) => a + b, 0), probe, visible };
}

/** Writes `layers` as an OCI layout at `dir` with ref `ref` (uncompressed layers unless told). */
export async function writeLayout(dist, dir, ref, tars, compression = 'none') {
  const { writeOciLayout } = await import(join(dist, 'image/layout-writer.js'));
  return writeOciLayout(dir, [
    {
      ref,
      layers: tars.map((tar) => ({ tar, compression })),
      config: { Env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'], Cmd: ['/bin/sh'] },
    },
  ]);
}
