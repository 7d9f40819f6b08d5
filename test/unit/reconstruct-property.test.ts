/**
 * Property tests on random layer stacks (the union oracle's seeded
 * generator: every entry type, whiteouts, opaque directories, hardlinks,
 * implied directories): every plan that keeps the ordering edges has the
 * original merged view; every algorithm's plan is accepted by the validity
 * check; and the check rejects plans broken on purpose.
 */
import { describe, expect, it } from 'vitest';
import type { Entry } from '../../src/model/entry.js';
import {
  checkValidity,
  emitPlan,
  LayerCatalog,
  modelImage,
  planViolation,
  reconstructImage,
  reconstructOffline,
  viewRows,
} from '../../src/reconstruct/index.js';
import { randomStack, rng } from '../fixtures/mount.js';
import { OPTS, parseStack, randomValidPlan } from '../fixtures/reconstruct.js';

const SEEDS = Array.from({ length: Number(process.env.RECONSTRUCT_SEEDS ?? 150) }, (_, i) => i + 1);

let parsed: Promise<Entry[][][]> | undefined;

/** The random stacks, parsed once for the file. */
function stacks(): Promise<Entry[][][]> {
  parsed ??= (async () => {
    const out: Entry[][][] = [];
    for (const s of SEEDS) out.push(await parseStack(randomStack(s)));
    return out;
  })();
  return parsed;
}

describe('reconstruction on random stacks', () => {
  it(`every plan keeping the ordering edges has the original merged view (${SEEDS.length} stacks x 8 plans)`, async () => {
    const all = await stacks();
    let plans = 0;
    all.forEach((layers, i) => {
      const rows = viewRows(layers);
      const r = rng(1000 + i);
      for (let k = 0; k < 8; k++) {
        // Half the plans end with a directory layer (and so do without rule 3's edges).
        const m = modelImage(layers, { directoryLayer: k % 2 === 1 });
        const plan = randomValidPlan(m, r);
        expect(planViolation(m, plan)).toBeUndefined();
        const v = checkValidity(
          rows,
          emitPlan(m, plan).map((l) => l.entries),
        );
        if (!v.valid) throw new Error(`seed ${SEEDS[i]} plan ${JSON.stringify(plan)}: ${v.reason}`);
        plans++;
      }
    });
    expect(plans).toBe(SEEDS.length * 8);
  });

  it('SOIRA, OFPL and GOIRA plans are all valid (none rejected)', async () => {
    const all = await stacks();
    const catalog = new LayerCatalog();
    let reused = 0;
    all.forEach((layers, i) => {
      for (const algo of ['soira', 'ofpl', 'lidh'] as const) {
        const p = reconstructImage(layers, algo, catalog, OPTS);
        if (!p.valid) throw new Error(`seed ${SEEDS[i]} ${algo}: rejected: ${p.rejected}`);
        if (algo === 'soira') {
          reused += p.layers.filter((l) => l.reusedId !== undefined).length;
          p.layers.forEach((l, j) => catalog.add(`${i}/${j}`, l.entries));
        }
      }
    });
    const g = reconstructOffline(all, undefined, OPTS);
    g.plans.forEach((p, i) => {
      if (!p.valid) throw new Error(`seed ${SEEDS[i]} goira: rejected: ${p.rejected}`);
    });
    expect(reused).toBeGreaterThanOrEqual(0);
  });

  it('the validity check rejects plans broken on purpose', async () => {
    const all = await stacks();
    let checked = 0;
    all.forEach((layers, i) => {
      const m = modelImage(layers);
      const rows = viewRows(layers);
      // A visible non-directory: drop its unit, or change its mode.
      const visible = new Set(rows.filter((r) => !r.desc.startsWith('dir')).map((r) => r.path));
      const victim = m.units.find(
        (u) =>
          u.entries.length === 1 &&
          u.entries[0]!.type === 'file' &&
          visible.has(u.entries[0]!.path) &&
          isTopmost(layers, u.layer, u.entries[0]!.path),
      );
      if (!victim) return;
      const emitted = emitPlan(
        m,
        m.unitsByLayer.map((l) => l.filter((u) => u !== victim.id)).filter((l) => l.length > 0),
      ).map((l) => l.entries);
      const dropped = checkValidity(rows, emitted);
      expect(dropped.valid, `seed ${SEEDS[i]}`).toBe(false);
      const changed = layers.map((l) =>
        l.map((e) => (victim.entries.includes(e) ? { ...e, mode: e.mode ^ 0o100 } : e)),
      );
      expect(checkValidity(rows, changed).valid, `seed ${SEEDS[i]}`).toBe(false);
      // Reversing the layers breaks an edge whenever the image has one between layers.
      const reversed = [...m.unitsByLayer].reverse().filter((l) => l.length > 0);
      if (planViolation(m, reversed) === undefined) {
        expect(
          checkValidity(
            rows,
            emitPlan(m, reversed).map((l) => l.entries),
          ).valid,
        ).toBe(true);
      }
      checked++;
    });
    expect(checked).toBeGreaterThan(SEEDS.length / 2);
  });
});

/** No layer above `layer` has an entry at `path` or above it. */
function isTopmost(layers: Entry[][], layer: number, path: string): boolean {
  for (let k = layer + 1; k < layers.length; k++) {
    for (const e of layers[k] as Entry[]) if (e.path === path || path.startsWith(`${e.path}/`)) return false;
  }
  return true;
}
