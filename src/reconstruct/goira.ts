/**
 * GOIRA, the greedy offline baseline (after Li et al.): all images at once.
 *
 * 1. Group by signature. A unit's identity across images is its entries plus
 *    its occurrence number in its image (the same directory entry in two
 *    layers of one image is two units). Units shared by exactly the same set
 *    of images, at the same *rank* in each (the longest chain of ordering
 *    edges below them in that image, strict edges counting 1), form one
 *    group: the fewest layers that store every unit once. Equal ranks mean
 *    no strict edge inside a group, so each image can order its groups by
 *    rank.
 * 2. Merge greedily. Two groups adjacent in an image, with no strict edge
 *    between their units there, may become one layer for the images where
 *    that holds: each such image loses a layer, and the merged layer is
 *    stored as well as any part still used alone. The merge that lowers
 *    α·ΣC_o + β·C_s most is applied, and again, until none lowers it or
 *    `maxMerges` is reached.
 *
 * An image whose grouped plan would break an ordering edge anyway (ties of
 * rank joined by non-strict edges in opposite directions) keeps its layers
 * as pushed; the result says which.
 */
import { operationCost, BYTES_PER_COST_UNIT, type CostParams } from './cost.js';
import { identityPlan, positions, edgeViolation, type ImageModel, type Plan } from './plan.js';
import type { Unit } from './units.js';

export interface GoiraOptions {
  cost: CostParams;
  maxMerges: number;
}

export const DEFAULT_GOIRA = { maxMerges: 100_000 } as const;

/** Longest-chain rank of each unit (strict edges count 1, non-strict 0). */
export function unitRanks(m: ImageModel): Int32Array {
  const rank = new Int32Array(m.units.length);
  const edges = [...m.edges].sort(
    (x, y) => (m.units[x.from] as Unit).layer - (m.units[y.from] as Unit).layer || x.from - y.from,
  );
  for (let pass = 0; pass <= m.units.length; pass++) {
    let changed = false;
    for (const e of edges) {
      const want = (rank[e.from] as number) + (e.strict ? 1 : 0);
      if ((rank[e.to] as number) < want) {
        rank[e.to] = want;
        changed = true;
      }
    }
    if (!changed) break;
  }
  return rank;
}

interface Group {
  bytes: number;
  /** Images using the group as a layer. */
  users: Set<number>;
  /** Unit ids per image. */
  units: Map<number, number[]>;
}

export interface GoiraResult {
  plans: Plan[];
  /** Images that kept their layers (their grouped plan broke an edge). */
  fallback: number[];
  merges: number;
}

export function goira(models: readonly ImageModel[], o: GoiraOptions): GoiraResult {
  const groups: Group[] = [];
  const groupOfKey = new Map<string, number>();
  // Identity of each unit across images, and the images holding it with their ranks.
  const unitIdentity: string[][] = [];
  const holders = new Map<string, { image: number; rank: number; unit: number }[]>();
  models.forEach((m, i) => {
    const ranks = unitRanks(m);
    const occurrences = new Map<string, number>();
    unitIdentity.push(
      m.units.map((u) => {
        const base = u.keys.join('\u0001');
        const n = occurrences.get(base) ?? 0;
        occurrences.set(base, n + 1);
        const id = `${n}\u0002${base}`;
        const h = holders.get(id);
        const row = { image: i, rank: ranks[u.id] as number, unit: u.id };
        if (h) h.push(row);
        else holders.set(id, [row]);
        return id;
      }),
    );
  });
  const imageGroups: number[][] = models.map(() => []);
  for (const [, rows] of holders) {
    const sig = rows.map((r) => `${r.image}@${r.rank}`).join(',');
    let g = groupOfKey.get(sig);
    if (g === undefined) {
      g = groups.length;
      groupOfKey.set(sig, g);
      groups.push({ bytes: 0, users: new Set(rows.map((r) => r.image)), units: new Map() });
      for (const r of rows) (imageGroups[r.image] as number[]).push(g);
    }
    const group = groups[g] as Group;
    const first = rows[0] as { image: number; unit: number };
    group.bytes += (models[first.image] as ImageModel).units[first.unit]?.bytes ?? 0;
    for (const r of rows) {
      const l = group.units.get(r.image);
      if (l) l.push(r.unit);
      else group.units.set(r.image, [r.unit]);
    }
  }
  // Order each image's groups by rank (every unit of a group has the same rank in the image).
  const fallback: number[] = [];
  const order: number[][] = models.map((m, i) => {
    const ranks = unitRanks(m);
    const gs = imageGroups[i] as number[];
    const rankOf = (g: number): number => ranks[((groups[g] as Group).units.get(i) as number[])[0] as number] as number;
    const minUnit = (g: number): number => Math.min(...((groups[g] as Group).units.get(i) as number[]));
    return [...gs].sort((x, y) => rankOf(x) - rankOf(y) || minUnit(x) - minUnit(y));
  });
  const planOf = (i: number): Plan => (order[i] as number[]).map((g) => (groups[g] as Group).units.get(i) as number[]);
  models.forEach((m, i) => {
    if (edgeViolation(m, positions(m, planOf(i))) !== undefined) {
      fallback.push(i);
      for (const g of order[i] as number[]) (groups[g] as Group).users.delete(i);
      order[i] = [];
    }
  });
  // Which group each unit is in, per image (to refuse merges that would put a strict edge inside a layer).
  const groupOfUnit = models.map((m) => new Int32Array(m.units.length).fill(-1));
  order.forEach((gs, i) => {
    for (const g of gs)
      for (const u of (groups[g] as Group).units.get(i) as number[]) (groupOfUnit[i] as Int32Array)[u] = g;
  });
  const mergeCache = new Map<string, boolean>();
  const mergeable = (i: number, g: number, h: number): boolean => {
    const key = `${i}:${g},${h}`;
    let ok = mergeCache.get(key);
    if (ok === undefined) {
      const of = groupOfUnit[i] as Int32Array;
      ok = !(models[i] as ImageModel).edges.some((e) => {
        if (!e.strict) return false;
        const a = of[e.from];
        const b = of[e.to];
        return (a === g && b === h) || (a === h && b === g);
      });
      mergeCache.set(key, ok);
    }
    return ok;
  };
  let merges = 0;
  const p = o.cost;
  while (merges < o.maxMerges) {
    const candidates = new Map<string, { g: number; h: number; images: number[] }>();
    order.forEach((gs, i) => {
      for (let k = 0; k + 1 < gs.length; k++) {
        const g = gs[k] as number;
        const h = gs[k + 1] as number;
        if (!mergeable(i, g, h)) continue;
        const key = `${g},${h}`;
        const c = candidates.get(key);
        if (c) c.images.push(i);
        else candidates.set(key, { g, h, images: [i] });
      }
    });
    let best: { g: number; h: number; images: number[]; delta: number } | undefined;
    for (const c of candidates.values()) {
      const gg = groups[c.g] as Group;
      const hh = groups[c.h] as Group;
      let dOp = 0;
      for (const i of c.images) {
        const n = (order[i] as number[]).length;
        dOp += operationCost(n - 1, p) - operationCost(n, p);
      }
      let dBytes = gg.bytes + hh.bytes;
      if (gg.users.size === c.images.length) dBytes -= gg.bytes;
      if (hh.users.size === c.images.length) dBytes -= hh.bytes;
      const delta = p.alpha * dOp + (p.beta * dBytes) / BYTES_PER_COST_UNIT;
      if (delta < -1e-12 && (!best || delta < best.delta)) best = { ...c, delta };
    }
    if (!best) break;
    const g = groups[best.g] as Group;
    const h = groups[best.h] as Group;
    const merged: Group = { bytes: g.bytes + h.bytes, users: new Set(), units: new Map() };
    const id = groups.length;
    groups.push(merged);
    for (const i of best.images) {
      const gs = order[i] as number[];
      gs.splice(gs.indexOf(best.g), 2, id);
      const us = [...(g.units.get(i) as number[]), ...(h.units.get(i) as number[])];
      merged.users.add(i);
      merged.units.set(i, us);
      for (const u of us) (groupOfUnit[i] as Int32Array)[u] = id;
      g.users.delete(i);
      h.users.delete(i);
    }
    merges++;
  }
  const plans = models.map((m, i) => (fallback.includes(i) ? identityPlan(m) : planOf(i)));
  return { plans, fallback, merges };
}
