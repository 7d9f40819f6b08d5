/**
 * Reconstruction of one image (online: SOIRA, or the baselines LIDH and
 * OFPL) and of many (offline: GOIRA), each plan checked for validity
 * before it is returned; a rejected plan falls back to the layers as pushed.
 */
import type { Entry } from '../model/entry.js';
import type { LayerCatalog } from './catalog.js';
import { weightedCost, type CostParams } from './cost.js';
import { goira, DEFAULT_GOIRA } from './goira.js';
import {
  emitPlan,
  identityPlan,
  modelImage,
  planViolation,
  topologicalUnits,
  type EmittedLayer,
  type ImageModel,
  type Plan,
} from './plan.js';
import { entrySetHash } from './set-hash.js';
import { DEFAULT_SOIRA, soira } from './soira.js';
import { checkValidity, viewRows } from './validity.js';

export type Algorithm = 'lidh' | 'soira' | 'goira' | 'ofpl';

export const ALGORITHMS: readonly Algorithm[] = ['lidh', 'soira', 'goira', 'ofpl'];

export interface ReconstructOptions {
  cost: CostParams;
  minSimilarity?: number;
  maxIterations?: number;
  candidates?: number;
  maxMerges?: number;
  /**
   * End plans with a directory layer (see ImageModel.directoryLayer). Default: GOIRA and
   * OFPL yes; SOIRA tries with one and keeps the layers as pushed when that is not cheaper.
   */
  directoryLayer?: boolean;
  /** Skip the validity check (benchmarks of plans that cannot be mounted, such as OFPL past 500 layers). */
  skipValidity?: boolean;
}

export interface PlannedLayer {
  entries: Entry[];
  /** Content bytes of its regular files. */
  bytes: number;
  /** The catalog layer it is identical to (its entries are then the catalog's, in the catalog's order). */
  reusedId?: string;
  /** The original layer it is, unchanged. */
  original?: number;
}

export interface ImagePlan {
  layers: PlannedLayer[];
  valid: boolean;
  /** Why the plan was rejected (the result is then the layers as pushed). */
  rejected?: string;
  /** Layer count and new bytes (against the catalog) of the plan, and its weighted cost. */
  layerCount: number;
  newBytes: number;
  cost: number;
  seconds: number;
}

/** One unit per layer, in an order that keeps every edge. */
function ofplPlan(m: ImageModel): Plan {
  return topologicalUnits(m).map((u) => [u]);
}

function materialize(emitted: EmittedLayer[], catalog: LayerCatalog | undefined, p: CostParams) {
  const fresh = new Set<string>();
  let newBytes = 0;
  const layers = emitted.map((em): PlannedLayer => {
    const hit = catalog?.find(em.entries, em.setHash);
    const out: PlannedLayer = { entries: hit ? hit.entries : em.entries, bytes: em.bytes };
    if (hit) out.reusedId = hit.id;
    if (em.original !== undefined) out.original = em.original;
    if (!hit && !fresh.has(em.setHash)) {
      fresh.add(em.setHash);
      newBytes += em.bytes;
    }
    return out;
  });
  return { layers, newBytes, cost: weightedCost(layers.length, newBytes, p) };
}

/** The same plan's figures against another catalog (what it reuses there, what is new to it). */
export function againstCatalog(plan: ImagePlan, catalog: LayerCatalog | undefined, p: CostParams): ImagePlan {
  const r = materialize(
    plan.layers.map((l) => {
      const em: EmittedLayer = { entries: l.entries, setHash: entrySetHash(l.entries), bytes: l.bytes };
      if (l.original !== undefined) em.original = l.original;
      return em;
    }),
    catalog,
    p,
  );
  return { ...plan, layers: r.layers, newBytes: r.newBytes, cost: r.cost };
}

/** The layers as pushed, unchanged (what a rejected plan falls back to). */
function asPushed(m: ImageModel): EmittedLayer[] {
  return m.layers.map((entries, original) => ({
    entries,
    setHash: entrySetHash(entries),
    bytes: entries.reduce((n, e) => n + (e.type === 'file' ? e.size : 0), 0),
    original,
  }));
}

/** Checks and materializes a plan; an invalid one gives the layers as pushed, flagged. */
export function finishPlan(
  m: ImageModel,
  plan: Plan,
  catalog: LayerCatalog | undefined,
  o: ReconstructOptions,
  started: number,
): ImagePlan {
  let rejected = planViolation(m, plan);
  let emitted = rejected === undefined ? emitPlan(m, plan) : undefined;
  if (emitted && !o.skipValidity) {
    const v = checkValidity(
      viewRows(m.layers),
      emitted.map((e) => e.entries),
    );
    if (!v.valid) rejected = v.reason;
  }
  if (rejected !== undefined || !emitted) emitted = asPushed(m);
  const r = materialize(emitted, catalog, o.cost);
  const out: ImagePlan = {
    layers: r.layers,
    valid: rejected === undefined,
    layerCount: r.layers.length,
    newBytes: r.newBytes,
    cost: r.cost,
    seconds: (performance.now() - started) / 1000,
  };
  if (rejected !== undefined) out.rejected = rejected;
  return out;
}

/** One image against a catalog of reusable layers (LIDH, SOIRA, OFPL). */
export function reconstructImage(
  layers: Entry[][],
  algo: Exclude<Algorithm, 'goira'>,
  catalog: LayerCatalog | undefined,
  o: ReconstructOptions,
): ImagePlan {
  const started = performance.now();
  if (algo === 'soira' && catalog && o.directoryLayer === undefined) {
    // SOIRA plans twice: as is, and with a directory layer (so that catalog layers whose
    // directories carry other mtimes can be matched); the cheaper valid plan wins, and the
    // layers as pushed when neither beats them.
    let best = finishPlan(
      modelImage(layers),
      identityPlan(modelImage(layers)),
      catalog,
      { ...o, skipValidity: true },
      started,
    );
    for (const directoryLayer of [false, true]) {
      const m = modelImage(layers, { directoryLayer });
      const plan = runSoira(m, catalog, o);
      if (m.borrowed.size === 0 && JSON.stringify(plan) === JSON.stringify(identityPlan(m))) continue;
      const p = finishPlan(m, plan, catalog, o, started);
      if (p.valid && p.cost < best.cost) best = p;
    }
    return { ...best, seconds: (performance.now() - started) / 1000 };
  }
  const m = modelImage(layers, { directoryLayer: o.directoryLayer ?? algo === 'ofpl' });
  let plan: Plan;
  if (algo === 'soira' && catalog) plan = runSoira(m, catalog, o);
  else if (algo === 'ofpl') plan = ofplPlan(m);
  else plan = identityPlan(m);
  return finishPlan(m, plan, catalog, o, started);
}

function runSoira(m: ImageModel, catalog: LayerCatalog, o: ReconstructOptions): Plan {
  return soira(m, catalog, {
    cost: o.cost,
    minSimilarity: o.minSimilarity ?? DEFAULT_SOIRA.minSimilarity,
    maxIterations: o.maxIterations ?? DEFAULT_SOIRA.maxIterations,
    candidates: o.candidates ?? DEFAULT_SOIRA.candidates,
  });
}

/** Many images at once (GOIRA); `catalog` only marks layers already stored. */
export function reconstructOffline(
  images: Entry[][][],
  catalog: LayerCatalog | undefined,
  o: ReconstructOptions,
): { plans: ImagePlan[]; fallback: number[]; merges: number; seconds: number } {
  const started = performance.now();
  const models = images.map((l) => modelImage(l, { directoryLayer: o.directoryLayer ?? true }));
  const r = goira(models, { cost: o.cost, maxMerges: o.maxMerges ?? DEFAULT_GOIRA.maxMerges });
  const plans = models.map((m, i) => finishPlan(m, r.plans[i] as Plan, catalog, o, performance.now()));
  return { plans, fallback: r.fallback, merges: r.merges, seconds: (performance.now() - started) / 1000 };
}
