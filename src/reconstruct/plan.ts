/**
 * An image as units with ordering edges, and a plan: the units regrouped into
 * layers, bottom first. Emitting a plan gives the new layers' entries.
 */
import type { Entry } from '../model/entry.js';
import { finalDirectories, orderingEdges, type OrderEdge } from './commutativity.js';
import { entrySetHash } from './set-hash.js';
import { emitLayer, splitUnits, withoutOverlayXattrs, type Unit } from './units.js';

export interface ImageModel {
  /** The original layers, bottom first. */
  layers: Entry[][];
  units: Unit[];
  unitsByLayer: number[][];
  /** Visible directories and the entry giving their attributes (undefined: implied defaults). */
  finalDirs: Map<string, Entry | undefined>;
  edges: OrderEdge[];
  /**
   * Plans of this model end with a *directory layer*: every visible directory
   * with its final attributes, so that the other new layers need not carry
   * them (they leave directories implied) and are the same layers in every
   * image that has the same files, whatever its directories' mtimes.
   */
  directoryLayer: boolean;
  /**
   * Layers a reconstruction made identical to a catalog layer by *borrowing* its
   * directory entries (allowed under a directory layer only, and only at paths
   * that are directories in the image: the directory layer overrides them).
   * Keyed by `unitSetKey`; the value is the catalog layer's entries.
   */
  borrowed: Map<string, Entry[]>;
}

/** The key of a set of unit ids (order-independent). */
export function unitSetKey(layer: readonly number[]): string {
  return [...layer].sort((a, b) => a - b).join(',');
}

/** Unit ids per layer, bottom first. */
export type Plan = number[][];

export function modelImage(layers: Entry[][], opts: { directoryLayer?: boolean } = {}): ImageModel {
  const { units, unitsByLayer } = splitUnits(layers);
  const dirs = finalDirectories(layers);
  const directoryLayer = opts.directoryLayer ?? false;
  return {
    layers,
    units,
    unitsByLayer,
    finalDirs: dirs.finalDirs,
    edges: orderingEdges(units, unitsByLayer, dirs, { directoryLayer }),
    directoryLayer,
    borrowed: new Map(),
  };
}

const NO_DIRS: ReadonlyMap<string, Entry | undefined> = new Map();

/** The directory layer of a model: every visible directory, final attributes, overlay's own xattrs left out. */
export function directoryLayerEntries(m: ImageModel): Entry[] {
  const out: Entry[] = [];
  for (const [path, e] of m.finalDirs) {
    out.push(e ? withoutOverlayXattrs(e) : { path, type: 'dir', mode: 0o755, uid: 0, gid: 0, mtime: 0, size: 0 });
  }
  return out.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
}

/** The plan that keeps the layers as they are. */
export function identityPlan(m: ImageModel): Plan {
  return m.unitsByLayer.map((l) => [...l]).filter((l) => l.length > 0);
}

/**
 * The units in an order that keeps every ordering edge: original layer by
 * layer (strict edges only go up), and within a layer a topological order
 * of its non-strict (marker) edges, ties by unit id.
 */
export function topologicalUnits(m: ImageModel): number[] {
  const indeg = new Int32Array(m.units.length);
  const next = new Map<number, number[]>();
  for (const e of m.edges) {
    if (e.strict) continue;
    indeg[e.to] = (indeg[e.to] as number) + 1;
    const l = next.get(e.from);
    if (l) l.push(e.to);
    else next.set(e.from, [e.to]);
  }
  const out: number[] = [];
  for (const layer of m.unitsByLayer) {
    const ready = layer.filter((u) => indeg[u] === 0).sort((a, b) => b - a);
    while (ready.length > 0) {
      const u = ready.pop() as number;
      out.push(u);
      for (const v of next.get(u) ?? []) {
        indeg[v] = (indeg[v] as number) - 1;
        if (indeg[v] === 0) {
          ready.push(v);
          ready.sort((a, b) => b - a);
        }
      }
    }
  }
  return out;
}

/** The layer index of each unit in a plan (-1: missing); throws nothing. */
export function positions(m: ImageModel, plan: Plan): Int32Array {
  const pos = new Int32Array(m.units.length).fill(-1);
  plan.forEach((layer, i) => {
    for (const u of layer) pos[u] = i;
  });
  return pos;
}

/**
 * Why a plan breaks the image's constraints (C1: every unit exactly once;
 * C2: every ordering edge kept), or undefined when it keeps them.
 */
export function planViolation(m: ImageModel, plan: Plan): string | undefined {
  const seen = new Int32Array(m.units.length);
  for (const layer of plan) {
    if (layer.length === 0) return 'an empty layer';
    for (const u of layer) {
      if (u < 0 || u >= m.units.length) return `unknown unit ${u}`;
      seen[u] = (seen[u] as number) + 1;
    }
  }
  for (let u = 0; u < seen.length; u++) {
    if (seen[u] !== 1) return `unit ${u} (${m.units[u]?.entries[0]?.path ?? '?'}) appears ${seen[u]} times`;
  }
  const pos = positions(m, plan);
  return edgeViolation(m, pos);
}

export function edgeViolation(m: ImageModel, pos: Int32Array): string | undefined {
  for (const e of m.edges) {
    const a = pos[e.from] as number;
    const b = pos[e.to] as number;
    if (e.strict ? a < b : a <= b) continue;
    const pa = m.units[e.from]?.entries[0]?.path ?? '?';
    const pb = m.units[e.to]?.entries[0]?.path ?? '?';
    return `/${pa} must stay ${e.strict ? 'below' : 'at or below'} /${pb}`;
  }
  return undefined;
}

export interface EmittedLayer {
  entries: Entry[];
  /** Order-independent hash of the entry set (see set-hash.ts). */
  setHash: string;
  /** Content bytes of the layer's regular files. */
  bytes: number;
  /** The original layer this one is, unchanged (its entries in their original order). */
  original?: number;
}

function sameUnits(a: readonly number[], b: readonly number[]): boolean {
  if (a.length !== b.length) return false;
  const s = new Set(a);
  return b.every((u) => s.has(u));
}

/** Emits one planned layer: an unchanged original layer verbatim, anything else through `emitLayer`. */
export function emitPlanLayer(m: ImageModel, layer: readonly number[]): EmittedLayer {
  const first = m.units[layer[0] as number] as Unit;
  const origUnits = m.unitsByLayer[first.layer] as number[];
  const original = sameUnits(layer, origUnits) ? first.layer : undefined;
  const borrowed = m.borrowed.size > 0 ? m.borrowed.get(unitSetKey(layer)) : undefined;
  const entries =
    original !== undefined
      ? (m.layers[original] as Entry[])
      : borrowed !== undefined
        ? borrowed
        : emitLayer(
            layer.map((u) => m.units[u] as Unit),
            m.directoryLayer ? NO_DIRS : m.finalDirs,
          );
  const bytes = entries.reduce((n, e) => n + (e.type === 'file' ? e.size : 0), 0);
  const out: EmittedLayer = { entries, setHash: entrySetHash(entries), bytes };
  if (original !== undefined) out.original = original;
  return out;
}

/** The plan's layers, and the directory layer on top when the model has one. */
export function emitPlan(m: ImageModel, plan: Plan): EmittedLayer[] {
  const out = plan.map((l) => emitPlanLayer(m, l));
  if (m.directoryLayer) {
    const entries = directoryLayerEntries(m);
    out.push({ entries, setHash: entrySetHash(entries), bytes: 0 });
  }
  return out;
}
