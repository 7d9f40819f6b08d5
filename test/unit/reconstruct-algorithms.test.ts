/**
 * SOIRA, GOIRA, OFPL and LIDH on small images whose best reconstruction is
 * known, and the cost model (weights, the cost-model file).
 */
import { describe, expect, it } from 'vitest';
import type { Entry } from '../../src/model/entry.js';
import { isCairnError } from '../../src/model/errors.js';
import { recipeId } from '../../src/model/recipe.js';
import {
  DEFAULT_COST,
  LayerCatalog,
  operationCost,
  parseCostModel,
  reconstructImage,
  reconstructOffline,
  weightedCost,
} from '../../src/reconstruct/index.js';
import { dir, file, whiteout } from '../fixtures/layers.js';
import { OPTS, parseStack } from '../fixtures/reconstruct.js';

const MB = 'x'.repeat(1_000_000);
const big = (tag: string): string => `${tag}${MB}`;

function catalogOf(layers: Entry[][]): LayerCatalog {
  const c = new LayerCatalog();
  layers.forEach((l, i) => c.add(`existing-${i}`, l));
  return c;
}

describe('SOIRA', () => {
  it('moves a file out of a layer so the rest is a layer the repository has', async () => {
    const [existing] = await parseStack([
      [dir('x'), file('x/1', big('1')), file('x/2', big('2')), file('x/3', big('3'))],
    ]);
    const image = await parseStack([
      [dir('x'), file('x/1', big('1')), file('x/2', big('2')), file('x/3', big('3')), file('x/4', 'four')],
      [dir('y'), file('y/z', 'z')],
    ]);
    const catalog = catalogOf([existing!]);
    const lidh = reconstructImage(image, 'lidh', catalog, OPTS);
    const p = reconstructImage(image, 'soira', catalog, OPTS);
    expect(p.valid).toBe(true);
    // The reused layer, the remainder (x/4 under its x), y: no directory layer needed.
    expect(p.layerCount).toBe(3);
    expect(p.layers[0]!.reusedId).toBe('existing-0');
    expect(recipeId({ entries: p.layers[0]!.entries })).toBe(recipeId({ entries: existing! }));
    expect(p.layers[1]!.entries.map((e) => e.path)).toEqual(['x', 'x/4']);
    expect(p.newBytes).toBe(4 + 1);
    expect(lidh.newBytes).toBeGreaterThan(3_000_000);
    expect(p.cost).toBeLessThan(lidh.cost);
  });

  it('pulls a file down from an upper layer, and puts a remainder below when the edges say so', async () => {
    const [existing] = await parseStack([[dir('x'), file('x/1', big('1')), file('x/2', '2'), file('x/3', big('new'))]]);
    const image = await parseStack([
      [dir('x'), file('x/1', big('1')), file('x/2', '2'), file('x/3', 'old')],
      // x listed again on top, so its final attributes are the listed ones (an implied x would win otherwise).
      [dir('x'), file('x/3', big('new')), file('y', 'y')],
    ]);
    const p = reconstructImage(image, 'soira', catalogOf([existing!]), OPTS);
    expect(p.valid).toBe(true);
    // x/3 "old" must stay below x/3 "new": the remainder goes under the reused layer.
    expect(p.layers.map((l) => l.reusedId ?? l.entries.map((e) => e.path).join(','))).toEqual([
      'x,x/3',
      'existing-0',
      'x,y',
    ]);
  });

  it('does not pull a file below a whiteout that must stay under it: pulls the other one up instead', async () => {
    const [existing] = await parseStack([[dir('x'), file('x/1', big('1')), file('x/3', big('3'))]]);
    const image = await parseStack([[dir('x'), file('x/1', big('1'))], [whiteout('x/3')], [file('x/3', big('3'))]]);
    const p = reconstructImage(image, 'soira', catalogOf([existing!]), OPTS);
    expect(p.valid).toBe(true);
    const reused = p.layers.findIndex((l) => l.reusedId === 'existing-0');
    const wh = p.layers.findIndex((l) => l.entries.some((e) => e.type === 'whiteout'));
    expect(wh).toBeGreaterThanOrEqual(0);
    expect(reused).toBeGreaterThan(wh);
    expect(p.newBytes).toBe(0);
  });

  it("borrows a catalog layer's directory entries when only their mtimes differ (under a directory layer)", async () => {
    const [existing] = await parseStack([[dir('usr', { mtime: 5 }), file('usr/lib', big('lib')), file('usr/z', 'z')]]);
    const image = await parseStack([
      [dir('usr', { mtime: 9 }), file('usr/lib', big('lib')), file('usr/z', 'z'), file('usr/mine', 'm')],
    ]);
    const p = reconstructImage(image, 'soira', catalogOf([existing!]), OPTS);
    expect(p.valid).toBe(true);
    expect(p.layers[0]!.reusedId).toBe('existing-0');
    expect(p.newBytes).toBe(1);
    // The directory layer on top gives usr the image's mtime.
    expect(p.layers.at(-1)!.entries.find((e) => e.path === 'usr')?.mtime).toBe(9);
  });

  it('keeps the layers when storage is worth nothing (beta = 0)', async () => {
    const [existing] = await parseStack([[dir('x'), file('x/1', big('1'))]]);
    const image = await parseStack([[dir('x'), file('x/1', big('1')), file('x/2', '2')]]);
    const p = reconstructImage(image, 'soira', catalogOf([existing!]), { cost: { ...DEFAULT_COST, beta: 0 } });
    expect(p.layerCount).toBe(1);
    expect(p.layers[0]!.original).toBe(0);
  });
});

describe('GOIRA, OFPL, LIDH', () => {
  it('GOIRA stores shared files once, in layers the images share', async () => {
    const base = [dir('usr'), file('usr/libc', big('libc')), file('usr/sh', big('sh'))];
    const images = await Promise.all([
      parseStack([base, [file('app1', big('a1'))]]),
      parseStack([[...base, file('usr/extra', big('extra'))], [file('app2', big('a2'))]]),
      parseStack([
        [dir('usr'), file('usr/libc', big('libc'))],
        // usr listed on top too: with usr implied there, its final attributes would differ from the others'.
        [dir('usr'), file('usr/sh', big('sh')), file('app3', 'small')],
      ]),
    ]);
    const storageOf = (plans: { layers: { entries: Entry[]; bytes: number }[] }[]): number => {
      const seen = new Map<string, number>();
      for (const p of plans) for (const l of p.layers) seen.set(recipeId({ entries: l.entries }), l.bytes);
      return [...seen.values()].reduce((a, b) => a + b, 0);
    };
    const lidh = images.map((im) => reconstructImage(im, 'lidh', undefined, OPTS));
    const g = reconstructOffline(images, undefined, OPTS);
    expect(g.plans.every((p) => p.valid)).toBe(true);
    expect(g.fallback).toEqual([]);
    // Every distinct content once: libc, sh, extra, a1, a2 (MB each) and "small".
    expect(storageOf(g.plans)).toBeLessThan(storageOf(lidh.filter(() => true)));
    expect(storageOf(g.plans)).toBe(5 * 1_000_000 + 'libcshextraa1a2'.length + 'small'.length);
    const libcLayer = (p: { layers: { entries: Entry[] }[] }) =>
      recipeId({ entries: p.layers.find((l) => l.entries.some((e) => e.path === 'usr/libc'))!.entries });
    expect(new Set(g.plans.map(libcLayer)).size).toBe(1);
  });

  it('OFPL puts each unit in its own layer; LIDH keeps the layers', async () => {
    const image = await parseStack([
      [dir('a'), file('a/1', '1'), file('a/2', '2')],
      [whiteout('a/1'), file('b', 'b')],
    ]);
    const o = reconstructImage(image, 'ofpl', undefined, OPTS);
    expect(o.valid).toBe(true);
    expect(o.layerCount).toBe(5 + 1); // five units, then the directory layer
    const l = reconstructImage(image, 'lidh', undefined, OPTS);
    expect(l.layers.map((x) => x.original)).toEqual([0, 1]);
  });
});

describe('cost model', () => {
  it('C_o = a N(N+1)/2 + b N, C_s in MB, weighted by alpha and beta', () => {
    expect(operationCost(4, { a: 0.001526, b: 0.03087 })).toBeCloseTo(0.001526 * 10 + 0.03087 * 4, 12);
    expect(weightedCost(2, 3_000_000, { alpha: 2, beta: 0.5, a: 1, b: 1 })).toBeCloseTo(2 * (3 + 2) + 0.5 * 3, 12);
  });

  it('reads a cost-model file, clamps a negative intercept and names bad fields', () => {
    const good = { kind: 'cairn.cost-model', version: 1, a: 0.00001, b: 0.00005, r2: 0.9, extra: true };
    expect(parseCostModel(JSON.stringify(good), 'm.json')).toEqual({ a: 0.00001, b: 0.00005 });
    expect(parseCostModel(JSON.stringify({ ...good, b: -0.1 }), 'm.json')).toEqual({
      a: 0.00001,
      b: 0,
      clampedB: true,
    });
    const bad = (v: unknown, re: RegExp): void => {
      try {
        parseCostModel(typeof v === 'string' ? v : JSON.stringify(v), 'm.json');
        expect.unreachable();
      } catch (err) {
        expect(isCairnError(err)).toBe(true);
        expect((err as Error).message).toMatch(re);
      }
    };
    bad('{', /m\.json: not JSON/);
    bad({ ...good, kind: 'x' }, /m\.json: field "kind"/);
    bad({ ...good, version: 2 }, /m\.json: field "version"/);
    bad({ ...good, a: 'x' }, /m\.json: field "a"/);
    bad({ ...good, a: -1 }, /m\.json: field "a" is -1/);
    bad({ ...good, b: null }, /m\.json: field "b"/);
  });
});
