/**
 * The commutativity rules, case by case: which units of an image get an
 * ordering edge, and that plans keeping the edges give the original merged
 * view while plans breaking a needed one do not.
 */
import { describe, expect, it } from 'vitest';
import type { Entry } from '../../src/model/entry.js';
import {
  checkValidity,
  emitPlan,
  modelImage,
  planViolation,
  type ImageModel,
  type Plan,
} from '../../src/reconstruct/index.js';
import { charDev, dir, file, hardlink, opaque, symlink, whiteout, type FixtureEntry } from '../fixtures/layers.js';
import { parseStack } from '../fixtures/reconstruct.js';

async function model(stack: FixtureEntry[][]): Promise<ImageModel> {
  return modelImage(await parseStack(stack));
}

/** The unit holding the entry at `path` in original layer `layer`. */
function unitAt(m: ImageModel, layer: number, path: string, type?: Entry['type']): number {
  const u = m.units.find(
    (x) => x.layer === layer && x.entries.some((e) => e.path === path && (!type || e.type === type)),
  );
  if (!u) throw new Error(`no unit at ${layer}:${path}`);
  return u.id;
}

function hasEdge(m: ImageModel, from: number, to: number, strict = true): boolean {
  return m.edges.some((e) => e.from === from && e.to === to && e.strict === strict);
}

function related(m: ImageModel, a: number, b: number): boolean {
  return m.edges.some((e) => (e.from === a && e.to === b) || (e.from === b && e.to === a));
}

function viewOf(m: ImageModel, plan: Plan) {
  return checkValidity(
    m.layers,
    emitPlan(m, plan).map((l) => l.entries),
  );
}

describe('commutativity: same path', () => {
  it('a file replaced by a file in an upper layer stays below it; unrelated files commute', async () => {
    const m = await model([
      [dir('etc'), file('etc/a', 'old'), file('etc/b', 'b')],
      [dir('etc'), file('etc/a', 'new'), file('etc/c', 'c')],
    ]);
    const a0 = unitAt(m, 0, 'etc/a');
    const a1 = unitAt(m, 1, 'etc/a');
    expect(hasEdge(m, a0, a1)).toBe(true);
    expect(related(m, unitAt(m, 0, 'etc/b'), unitAt(m, 1, 'etc/c'))).toBe(false);
    expect(related(m, a0, unitAt(m, 1, 'etc/c'))).toBe(false);
    // Swapping the two versions of etc/a breaks the edge and the view.
    const swapped: Plan = [
      [a1],
      m.unitsByLayer[0]!.filter((u) => u !== a0).concat(m.unitsByLayer[1]!.filter((u) => u !== a1)),
      [a0],
    ];
    expect(planViolation(m, swapped)).toMatch(/must stay below/);
    expect(viewOf(m, swapped).valid).toBe(false);
    // Moving etc/b up and etc/c down (they commute) keeps the view.
    const moved: Plan = [
      m.unitsByLayer[0]!.filter((u) => u !== unitAt(m, 0, 'etc/b')).concat([unitAt(m, 1, 'etc/c')]),
      m.unitsByLayer[1]!.filter((u) => u !== unitAt(m, 1, 'etc/c')).concat([unitAt(m, 0, 'etc/b')]),
    ];
    expect(planViolation(m, moved)).toBeUndefined();
    expect(viewOf(m, moved)).toEqual({ valid: true });
  });

  it('a directory whose attributes a later entry overrides stays below it', async () => {
    const m = await model([
      [dir('usr', { mtime: 1 }), file('usr/a', 'a')],
      [dir('usr', { mtime: 2 }), file('usr/b', 'b')],
    ]);
    expect(hasEdge(m, unitAt(m, 0, 'usr', 'dir'), unitAt(m, 1, 'usr', 'dir'))).toBe(true);
    expect(related(m, unitAt(m, 0, 'usr/a'), unitAt(m, 1, 'usr/b'))).toBe(false);
  });
});

describe('commutativity: whiteouts and opaque directories', () => {
  it('a whiteout stays above what it hides and below what re-creates it', async () => {
    const m = await model([[dir('d'), file('d/x', '1'), file('keep', 'k')], [whiteout('d/x')], [file('d/x', '3')]]);
    const w = unitAt(m, 1, 'd/x');
    expect(hasEdge(m, unitAt(m, 0, 'd/x'), w)).toBe(true);
    expect(hasEdge(m, w, unitAt(m, 2, 'd/x'))).toBe(true);
    expect(related(m, w, unitAt(m, 0, 'keep'))).toBe(false);
  });

  it('a whiteout of a directory binds everything under it', async () => {
    const m = await model([
      [dir('d'), file('d/x', '1'), file('d/y/z', '2')],
      [whiteout('d')],
      [dir('d'), file('d/n', 'n')],
    ]);
    const w = unitAt(m, 1, 'd');
    expect(hasEdge(m, unitAt(m, 0, 'd/y/z'), w)).toBe(true);
    expect(hasEdge(m, w, unitAt(m, 2, 'd/n'))).toBe(true);
  });

  it('an opaque directory hides lower children and is undone by none of the upper ones', async () => {
    const m = await model([
      [dir('d'), file('d/x', 'x'), file('e/z', 'z')],
      [dir('d'), opaque('d'), file('d/y', 'y')],
      [file('d/w', 'w')],
    ]);
    const o = unitAt(m, 1, 'd', 'opaque');
    expect(unitAt(m, 1, 'd', 'dir')).toBe(o); // the marker and its directory are one unit
    expect(hasEdge(m, unitAt(m, 0, 'd/x'), o)).toBe(true);
    expect(hasEdge(m, o, unitAt(m, 2, 'd/w'))).toBe(true);
    // Its own layer's child may move up but not below it.
    expect(hasEdge(m, o, unitAt(m, 1, 'd/y'), false)).toBe(true);
    expect(related(m, o, unitAt(m, 0, 'e/z'))).toBe(false);
  });

  it('a whiteout under an opaque directory: bound to both sides, and valid in any plan that keeps the edges', async () => {
    const m = await model([
      [dir('d'), file('d/x', 'x1'), file('d/y', 'y1')],
      [opaque('d'), whiteout('d/x'), file('d/q', 'q')],
      [file('d/x', 'x3'), file('d/y', 'y3')],
    ]);
    const o = unitAt(m, 1, 'd', 'opaque');
    const w = unitAt(m, 1, 'd/x', 'whiteout');
    expect(hasEdge(m, o, w, false)).toBe(true);
    expect(hasEdge(m, unitAt(m, 0, 'd/x'), w)).toBe(true);
    expect(hasEdge(m, w, unitAt(m, 2, 'd/x'))).toBe(true);
    expect(hasEdge(m, unitAt(m, 0, 'd/y'), o)).toBe(true);
    // The whiteout alone one layer up: still hides nothing the opaque marker did not.
    const plan: Plan = [m.unitsByLayer[0]!, m.unitsByLayer[1]!.filter((u) => u !== w), [w], m.unitsByLayer[2]!];
    expect(planViolation(m, plan)).toBeUndefined();
    expect(viewOf(m, plan)).toEqual({ valid: true });
    // Below the opaque marker's layer it would break a non-strict edge.
    const below: Plan = [m.unitsByLayer[0]!, [w], m.unitsByLayer[1]!.filter((u) => u !== w), m.unitsByLayer[2]!];
    expect(planViolation(m, below)).toMatch(/at or below/);
  });

  it('a 0:0 character device is a whiteout to the rules too', async () => {
    const m = await model([[dir('d'), file('d/x', 'x')], [charDev('d', 0, 0)]]);
    expect(hasEdge(m, unitAt(m, 0, 'd/x'), unitAt(m, 1, 'd'))).toBe(true);
  });
});

describe('commutativity: replacing', () => {
  it('a file replaced by a directory: the directory and its children stay above the file', async () => {
    const m = await model([
      [file('p', 'file'), file('other', 'o')],
      [dir('p'), file('p/q', 'q')],
    ]);
    const f = unitAt(m, 0, 'p');
    expect(hasEdge(m, f, unitAt(m, 1, 'p', 'dir'))).toBe(true);
    expect(hasEdge(m, f, unitAt(m, 1, 'p/q'))).toBe(true);
    expect(related(m, unitAt(m, 0, 'other'), unitAt(m, 1, 'p/q'))).toBe(false);
    const broken: Plan = [[unitAt(m, 1, 'p/q')], [f, unitAt(m, 0, 'other'), unitAt(m, 1, 'p', 'dir')]];
    expect(planViolation(m, broken)).toBeDefined();
    expect(viewOf(m, broken).valid).toBe(false);
  });

  it('a directory replaced by a symlink hides the subtree below it', async () => {
    const m = await model([[dir('lib'), file('lib/a.so', 'a')], [symlink('lib', 'usr/lib')]]);
    expect(hasEdge(m, unitAt(m, 0, 'lib/a.so'), unitAt(m, 1, 'lib'))).toBe(true);
  });
});

describe('commutativity: hardlinks', () => {
  it('a hardlink group is one unit, and a group split across layers keeps its layer content', async () => {
    const m = await model([
      [dir('bin'), file('bin/t', 'v1'), hardlink('bin/h', 'bin/t'), file('bin/u', 'u')],
      [dir('bin'), file('bin/t', 'v2')],
    ]);
    const g = unitAt(m, 0, 'bin/t');
    expect(unitAt(m, 0, 'bin/h')).toBe(g);
    expect(m.units[g]!.entries.map((e) => e.path)).toEqual(['bin/t', 'bin/h']);
    expect(hasEdge(m, g, unitAt(m, 1, 'bin/t'))).toBe(true);
    // Moving the whole group up a layer (above the replacement) is refused and would change the view.
    const up: Plan = [[unitAt(m, 0, 'bin/u'), unitAt(m, 0, 'bin', 'dir')], m.unitsByLayer[1]!, [g]];
    expect(planViolation(m, up)).toBeDefined();
    expect(viewOf(m, up).valid).toBe(false);
    // Alone in its own layer below, the group still shows v1 with two links through bin/h.
    const alone: Plan = [[g], [unitAt(m, 0, 'bin/u'), unitAt(m, 0, 'bin', 'dir')], m.unitsByLayer[1]!];
    expect(planViolation(m, alone)).toBeUndefined();
    expect(viewOf(m, alone)).toEqual({ valid: true });
  });
});

describe('commutativity: implied directories', () => {
  it('an implied directory overriding a listed one binds the listed one below its layer', async () => {
    const m = await model([[dir('usr', { mtime: 5, mode: 0o700 }), file('usr/a', 'a')], [file('usr/b', 'b')]]);
    // usr in layer 1 is implied (0755, mtime 0) and wins; the listed usr must stay below usr/b.
    expect(hasEdge(m, unitAt(m, 0, 'usr', 'dir'), unitAt(m, 1, 'usr/b'))).toBe(true);
    const swapped: Plan = [[unitAt(m, 1, 'usr/b')], m.unitsByLayer[0]!];
    expect(planViolation(m, swapped)).toBeDefined();
    expect(viewOf(m, swapped).valid).toBe(false);
  });

  it('new layers get the final attributes of the directories they need', async () => {
    const m = await model([
      [dir('usr', { mtime: 1 }), dir('usr/lib', { mtime: 1 }), file('usr/lib/a', 'a'), file('usr/lib/b', 'b')],
      [dir('usr', { mtime: 2 }), dir('usr/lib', { mtime: 2 }), file('usr/lib/c', 'c')],
    ]);
    const b = unitAt(m, 0, 'usr/lib/b');
    const plan: Plan = [m.unitsByLayer[0]!.filter((u) => u !== b), m.unitsByLayer[1]!, [b]];
    expect(planViolation(m, plan)).toBeUndefined();
    const top = emitPlan(m, plan)[2]!.entries;
    expect(top.map((e) => [e.path, e.type, e.mtime])).toEqual([
      ['usr', 'dir', 2],
      ['usr/lib', 'dir', 2],
      ['usr/lib/b', 'file', 1_700_000_000],
    ]);
    expect(viewOf(m, plan)).toEqual({ valid: true });
  });
});
