/**
 * SOIRA, similarity-aware online image reconstruction (after Li et al.,
 * WWW'22), as cairn does it:
 *
 * Start from the layers as pushed. Repeat up to `maxIterations` passes: for
 * each layer of the plan that the catalog (the repository's layers) does not
 * already have, take the catalog layers whose Jaccard index with it (over
 * whole entries: path, type, attributes, content) is at least
 * `minSimilarity`, best first (at most `candidates`). For a candidate E:
 * - keep the units of the layer whose entries E all has; move the others out
 *   into a *remainder* layer placed right above the layer (or, when the
 *   ordering edges forbid that, right below);
 * - pull in, from the image's other layers that are not themselves reused,
 *   units whose entries E all has, for each entry E has that is still missing;
 * - the result must emit exactly E's entry set (directories it needs are
 *   written with their final attributes, so a candidate whose directories
 *   carry other attributes than the image shows cannot match), and the new
 *   plan must keep every ordering edge;
 * - accept the first candidate that lowers α·C_o + β·C_s.
 * A pass that accepts nothing ends the search.
 *
 * Where the paper's pseudo-code is open, this implementation decides: the
 * unit of similarity is the entry, not the file content (two layers with the
 * same files under other modes are different layers to a registry); moves
 * are all-or-nothing per candidate (the layer becomes E exactly or stays);
 * reused layers are never broken up to feed another; and the remainder of a
 * layer is one new layer, which later passes may match in turn.
 */
import type { Entry } from '../model/entry.js';
import { entryKey } from '../model/recipe.js';
import type { LayerCatalog } from './catalog.js';
import { weightedCost, type CostParams } from './cost.js';
import {
  edgeViolation,
  emitPlanLayer,
  identityPlan,
  unitSetKey,
  type EmittedLayer,
  type ImageModel,
  type Plan,
} from './plan.js';
import type { Unit } from './units.js';

export interface SoiraOptions {
  cost: CostParams;
  /** Least Jaccard index for a catalog layer to be tried (0..1). */
  minSimilarity: number;
  /** Most passes over the plan. */
  maxIterations: number;
  /** Most catalog layers tried per plan layer and pass. */
  candidates: number;
}

export const DEFAULT_SOIRA = { minSimilarity: 0.5, maxIterations: 10, candidates: 4 } as const;

class Emitter {
  private readonly cache = new Map<string, { em: EmittedLayer; reused: boolean }>();

  constructor(
    private readonly m: ImageModel,
    private readonly catalog: LayerCatalog,
  ) {}

  forget(layer: readonly number[]): void {
    this.cache.delete(unitSetKey(layer));
  }

  get(layer: readonly number[]): { em: EmittedLayer; reused: boolean } {
    const key = unitSetKey(layer);
    let hit = this.cache.get(key);
    if (!hit) {
      const em = emitPlanLayer(this.m, layer);
      hit = { em, reused: this.catalog.find(em.entries, em.setHash) !== undefined };
      this.cache.set(key, hit);
    }
    return hit;
  }

  cost(plan: Plan, p: CostParams): number {
    const fresh = new Set<string>();
    let bytes = 0;
    for (const l of plan) {
      const { em, reused } = this.get(l);
      if (reused || fresh.has(em.setHash)) continue;
      fresh.add(em.setHash);
      bytes += em.bytes;
    }
    return weightedCost(plan.length, bytes, p);
  }
}

function positionsOf(n: number, plan: Plan): Int32Array {
  const pos = new Int32Array(n).fill(-1);
  plan.forEach((l, i) => {
    for (const u of l) pos[u] = i;
  });
  return pos;
}

export function soira(m: ImageModel, catalog: LayerCatalog, o: SoiraOptions): Plan {
  let plan = identityPlan(m);
  if (catalog.size === 0) return plan;
  const emitter = new Emitter(m, catalog);
  const unitsByKey = new Map<string, number[]>();
  for (const u of m.units) {
    for (const k of u.keys) {
      const l = unitsByKey.get(k);
      if (l) l.push(u.id);
      else unitsByKey.set(k, [u.id]);
    }
  }
  let best = emitter.cost(plan, o.cost);
  for (let iter = 0; iter < o.maxIterations; iter++) {
    let improved = false;
    for (let li = 0; li < plan.length; li++) {
      const here = emitter.get(plan[li] as number[]);
      if (here.reused) continue;
      const keys = new Set(here.em.entries.filter((e) => e.type !== 'dir').map(entryKey));
      const pos = positionsOf(m.units.length, plan);
      const reusedLayer = plan.map((l) => emitter.get(l).reused);
      for (const cand of catalog.similar(keys, o.minSimilarity, o.candidates)) {
        const E = cand.layer;
        // Under a directory layer, a plain directory entry of E at a path that is a directory in the
        // image may be borrowed from E (the directory layer overrides it), and one of the image's own
        // directory entries there may be left to the remainder.
        const free = (e: Entry): boolean => m.directoryLayer && e.type === 'dir' && m.finalDirs.has(e.path);
        const inE = (u: number): boolean => {
          const unit = m.units[u] as Unit;
          return unit.keys.every((k, i) => E.keys.has(k) && !free(unit.entries[i] as Entry));
        };
        const keep = (plan[li] as number[]).filter(inE);
        const out = (plan[li] as number[]).filter((u) => !inE(u));
        const covered = new Set<string>();
        for (const u of keep) for (const k of (m.units[u] as Unit).keys) covered.add(k);
        const pulled: number[] = [];
        const pulledSet = new Set<number>();
        const borrowedDirs: Entry[] = [];
        for (const e of E.entries) if (free(e)) borrowedDirs.push(e);
        for (const e of borrowedDirs) covered.add(entryKey(e));
        for (const k of E.keys) {
          if (covered.has(k)) continue;
          for (const u of unitsByKey.get(k) ?? []) {
            const p = pos[u] as number;
            if (p === li || pulledSet.has(u) || reusedLayer[p] || !inE(u)) continue;
            pulled.push(u);
            pulledSet.add(u);
            for (const kk of (m.units[u] as Unit).keys) covered.add(kk);
            break;
          }
        }
        const merged = [...keep, ...pulled];
        if (merged.length === 0) continue;
        if (borrowedDirs.length > 0) {
          const key = unitSetKey(merged);
          const have = new Set<string>();
          for (const u of merged) for (const k of (m.units[u] as Unit).keys) have.add(k);
          for (const e of borrowedDirs) have.add(entryKey(e));
          // Exactly E: every entry of E covered, nothing else.
          if (have.size !== E.keys.size || [...have].some((k) => !E.keys.has(k))) continue;
          m.borrowed.set(key, E.entries);
          emitter.forget(merged);
        }
        if (!emitter.get(merged).reused) continue;
        for (const side of ['above', 'below'] as const) {
          const next: Plan = [];
          plan.forEach((l, i) => {
            if (i === li) {
              if (side === 'below' && out.length > 0) next.push(out);
              next.push(merged);
              if (side === 'above' && out.length > 0) next.push(out);
              return;
            }
            const rest = l.filter((u) => !pulledSet.has(u));
            if (rest.length > 0) next.push(rest);
          });
          if (edgeViolation(m, positionsOf(m.units.length, next)) !== undefined) continue;
          const c = emitter.cost(next, o.cost);
          if (c < best - 1e-12) {
            plan = next;
            best = c;
            improved = true;
          }
          break;
        }
        if (improved) break;
      }
    }
    if (!improved) break;
  }
  return plan;
}
