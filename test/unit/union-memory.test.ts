/**
 * Construction time and memory of a UnionView over a synthetic 100k-entry,
 * 5-layer image. Prints the figures; asserts only a generous memory bound.
 *
 *   npx vitest run test/unit/union-memory.test.ts
 *
 * Memory counts the V8 heap and ArrayBuffer backing stores (typed arrays live
 * outside the heap), measured after forced garbage collections.
 */
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import type { Digest } from '../../src/model/digest.js';
import type { Entry } from '../../src/model/entry.js';
import { UnionView, type LookupMode } from '../../src/union/index.js';

function getGc(): () => void {
  const g = (globalThis as { gc?: () => void }).gc;
  if (g) return g;
  setFlagsFromString('--expose-gc');
  return runInNewContext('gc') as () => void;
}

function used(gc: () => void): number {
  for (let i = 0; i < 3; i++) gc();
  const m = process.memoryUsage();
  return m.heapUsed + m.arrayBuffers;
}

const T = 1_700_000_000;

function digestOf(i: number): Digest {
  return `sha256:${createHash('sha256').update(String(i)).digest('hex')}`;
}

/**
 * A base layer of 60k entries (1000 packages of 2 directories and ~58 files,
 * symlinks and hardlinks), then 4 layers of 10k entries each: replaced files,
 * new packages, whiteouts of files and whole packages, opaque directories.
 */
function synthImage(): Entry[][] {
  let seq = 0;
  const dir = (path: string): Entry => ({ path, type: 'dir', mode: 0o755, uid: 0, gid: 0, mtime: T, size: 0 });
  const file = (path: string): Entry => ({
    path,
    type: 'file',
    mode: 0o644,
    uid: 0,
    gid: 0,
    mtime: T + (seq % 1000),
    size: 100 + (seq % 5000),
    digest: digestOf(seq++),
  });
  const layers: Entry[][] = [];
  const base: Entry[] = [dir('usr'), dir('usr/lib')];
  for (let p = 0; base.length < 60_000; p++) {
    const pkg = `usr/lib/python3.12/site-packages/package_${p}`;
    base.push(dir(pkg), dir(`${pkg}/sub`));
    for (let j = 0; j < 50 && base.length < 60_000; j++) base.push(file(`${pkg}/module_${j}.py`));
    for (let j = 0; j < 4 && base.length < 60_000; j++) base.push(file(`${pkg}/sub/data_${j}.json`));
    if (base.length < 60_000) {
      base.push({
        path: `${pkg}/link`,
        type: 'symlink',
        mode: 0o777,
        uid: 0,
        gid: 0,
        mtime: T,
        size: 0,
        linkTarget: 'module_0.py',
      });
    }
    if (base.length < 60_000) {
      base.push({
        path: `${pkg}/hard`,
        type: 'hardlink',
        mode: 0o644,
        uid: 0,
        gid: 0,
        mtime: T,
        size: 0,
        linkTarget: `${pkg}/module_1.py`,
      });
    }
  }
  layers.push(base);
  for (let l = 1; l <= 4; l++) {
    const layer: Entry[] = [];
    let p = l * 37;
    while (layer.length < 10_000) {
      const pkg = `usr/lib/python3.12/site-packages/package_${p % 1000}`;
      const roll = p % 10;
      if (roll === 0) {
        layer.push({ path: pkg, type: 'whiteout', mode: 0, uid: 0, gid: 0, mtime: T, size: 0 });
      } else if (roll === 1) {
        layer.push(dir(pkg), { path: pkg, type: 'opaque', mode: 0, uid: 0, gid: 0, mtime: T, size: 0 });
        for (let j = 0; j < 20; j++) layer.push(file(`${pkg}/module_${j}.py`));
      } else if (roll === 2) {
        const fresh = `opt/app${l}/pkg_${p}`;
        for (let j = 0; j < 30; j++) layer.push(file(`${fresh}/file_${j}.bin`));
      } else {
        layer.push(dir(pkg));
        for (let j = 0; j < 15; j++) layer.push(file(`${pkg}/module_${(j * 3 + l) % 50}.py`));
        layer.push({ path: `${pkg}/module_49.py`, type: 'whiteout', mode: 0, uid: 0, gid: 0, mtime: T, size: 0 });
      }
      p += 7;
    }
    layers.push(layer.slice(0, 10_000));
  }
  return layers;
}

/** Resolves every visible path (what `find` over the mount would do). */
function walk(v: UnionView): number {
  let n = 0;
  const stack = [v.root];
  while (stack.length > 0) {
    const ino = stack.pop() as number;
    for (const e of v.readdirEntries(ino) ?? []) {
      const r = v.lookup(ino, e.name);
      if (!r) throw new Error(`lookup of ${e.name} failed`);
      n++;
      if (e.type === 'dir') stack.push(r.ino);
    }
  }
  return n;
}

const report: string[] = [];

function measure(mode: LookupMode): void {
  const gc = getGc();
  const m0 = used(gc);
  let layers: Entry[][] | null = synthImage();
  const entries = layers.reduce((n, l) => n + l.length, 0);
  expect(entries).toBe(100_000);
  const m1 = used(gc);
  const t0 = performance.now();
  const c0 = process.cpuUsage();
  const view = UnionView.build(layers, { lookup: mode });
  const c1 = process.cpuUsage(c0);
  const buildMs = performance.now() - t0;
  const m2 = used(gc);
  layers = null;
  const m3 = used(gc);
  const t1 = performance.now();
  const visible = walk(view);
  const walkMs = performance.now() - t1;
  const m4 = used(gc);
  const perEntry = (m3 - m0) / entries;
  const b = (x: number): string => `${(x / entries).toFixed(0)} B/entry`;
  report.push(
    `${mode}: build ${buildMs.toFixed(0)} ms wall (${((c1.user + c1.system) / 1000).toFixed(0)} ms CPU); ` +
      `view ${b(m2 - m1)} with the entries alive, ${b(m3 - m0)} once they are dropped ` +
      `(typed arrays and name pool: ${b(view.arrayBytes)}); the Entry objects: ${b(m1 - m0)}; ` +
      `full walk (${visible} names) ${walkMs.toFixed(0)} ms, after it ${b(m4 - m0)}; statfs ${JSON.stringify(view.statfs())}`,
  );
  expect(perEntry).toBeLessThan(600);
  expect((m4 - m0) / entries).toBeLessThan(600);
}

describe('UnionView memory and construction time (100k entries, 5 layers)', () => {
  it('cold: the first build in a fresh process', () => {
    const layers = synthImage();
    const t0 = performance.now();
    UnionView.build(layers, { lookup: 'flat' });
    report.push(
      `cold first build (flat, code not yet optimized by the JIT): ${(performance.now() - t0).toFixed(0)} ms`,
    );
  });
  it('flat', () => measure('flat'));
  it('stacked', () => measure('stacked'));
  it('report', () => {
    console.log(`UnionView, 100k entries / 5 layers:\n  ${report.join('\n  ')}`);
  });
});
