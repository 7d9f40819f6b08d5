// A synthetic image corpus with realistic file sharing, for bench/reconstruct/run.js.
//
// Files are entries with a size and a content digest (sha256 of a name: no content is
// made, the planner needs none). Sharing comes from where it comes from in real
// registries: a few base distributions in a few versions (15% of files changed between
// versions), packages installed together in one "deps" layer in different combinations
// (the same package files land in many different layers), a config layer that edits or
// deletes a few base files, and a small app layer of the image's own. An image's
// repository is its first package, so images of a repository share packages.
import { createHash } from 'node:crypto';
import { prng } from '../lib/prng.js';

const T = 1_700_000_000;

export { prng as rng };

const digestOf = (name) => `sha256:${createHash('sha256').update(name).digest('hex')}`;

function fileEntry(path, contentName, size) {
  return { path, type: 'file', mode: 0o644, uid: 0, gid: 0, mtime: T, size, digest: digestOf(contentName) };
}

function dirEntry(path) {
  return { path, type: 'dir', mode: 0o755, uid: 0, gid: 0, mtime: T, size: 0 };
}

/** A layer's entries: its directories (constant attributes) and files, sorted by path. */
function layerOf(files, extra = []) {
  const dirs = new Set();
  for (const f of [...files, ...extra]) {
    const parts = f.path.split('/');
    for (let i = 1; i < parts.length; i++) dirs.add(parts.slice(0, i).join('/'));
  }
  return [...[...dirs].map(dirEntry), ...files, ...extra].sort((a, b) =>
    a.path < b.path ? -1 : a.path > b.path ? 1 : 0,
  );
}

/** Log-normal file sizes: median about 8 kB, a long tail to a few MB. */
function sizeOf(r) {
  const u = Math.max(r(), 1e-9);
  const v = r();
  const z = Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
  return Math.min(Math.round(Math.exp(9 + 1.6 * z)), 8_000_000);
}

export function makeCorpus({ images = 1250, seed = 42 } = {}) {
  const r = prng(seed);
  const pick = (xs) => xs[Math.floor(r() * xs.length)];
  // Bases: 4 distributions x 3 versions.
  const bases = [];
  for (let d = 0; d < 4; d++) {
    let files = Array.from({ length: 220 }, (_, i) => {
      const path = `${pick(['usr/bin', 'usr/lib', 'usr/share/doc', 'etc', 'usr/lib/x86_64-linux-gnu'])}/d${d}f${i}`;
      return fileEntry(path, `d${d}-v0-${i}`, sizeOf(r));
    });
    for (let v = 0; v < 3; v++) {
      if (v > 0) {
        files = files.map((f, i) => (r() < 0.15 ? fileEntry(f.path, `d${d}-v${v}-${i}`, sizeOf(r)) : f));
        for (let k = 0; k < 6; k++)
          files.push(fileEntry(`usr/lib/d${d}v${v}new${k}`, `d${d}-v${v}-new${k}`, sizeOf(r)));
      }
      bases.push({ name: `d${d}v${v}`, distro: d, files });
    }
  }
  // Packages: 40, each 1 to 3 versions.
  const packages = [];
  for (let p = 0; p < 40; p++) {
    const n = 20 + Math.floor(r() * 130);
    let files = Array.from({ length: n }, (_, i) =>
      fileEntry(`usr/lib/pkg${p}/${pick(['', 'lib/', 'share/'])}f${i}`, `p${p}-v0-${i}`, sizeOf(r)),
    );
    const versions = [files];
    const nv = 1 + Math.floor(r() * 3);
    for (let v = 1; v < nv; v++) {
      files = files.map((f, i) => (r() < 0.1 ? fileEntry(f.path, `p${p}-v${v}-${i}`, sizeOf(r)) : f));
      versions.push(files);
    }
    packages.push(versions);
  }
  const out = [];
  for (let i = 0; i < images; i++) {
    // Newer base versions and lower-numbered packages are more popular.
    const distro = Math.floor(r() ** 1.5 * 4);
    const version = 2 - Math.floor(r() ** 2 * 3);
    const base = bases[distro * 3 + Math.min(version, 2)];
    const first = Math.floor(r() ** 1.7 * 40);
    const chosen = new Set([first]);
    const extra = Math.floor(r() * 3);
    for (let k = 0; k < extra; k++) chosen.add(Math.floor(r() ** 1.7 * 40));
    const deps = [];
    for (const p of [...chosen].sort((a, b) => a - b)) {
      const versions = packages[p];
      deps.push(...versions[Math.floor(r() * versions.length)]);
    }
    const layers = [layerOf(base.files), layerOf(deps)];
    // A config layer: edits two base files (new content at the same path), sometimes deletes one.
    const cfgByPath = new Map();
    for (const k of [0, 1]) {
      const victim = pick(base.files);
      cfgByPath.set(victim.path, fileEntry(victim.path, `img${i}-cfg${k}`, 200 + Math.floor(r() * 2000)));
    }
    const cfg = [...cfgByPath.values()];
    const deleted = r() < 0.3 ? [{ ...dirEntry(pick(base.files).path), type: 'whiteout', mode: 0o644 }] : [];
    const cfgPaths = new Set(cfg.map((f) => f.path));
    layers.push(
      layerOf(
        cfg,
        deleted.filter((w) => !cfgPaths.has(w.path)),
      ),
    );
    const app = Array.from({ length: 10 + Math.floor(r() * 20) }, (_, k) =>
      fileEntry(`app/f${k}`, `img${i}-app${k}`, sizeOf(r)),
    );
    layers.push(layerOf(app));
    out.push({ name: `img${i}`, repository: `pkg${first}`, layers });
  }
  return out;
}
