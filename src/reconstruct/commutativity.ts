/**
 * Which units of an image may change their relative order, derived from the
 * layers themselves (Li et al. assumed no pair commutes; cairn works it out).
 *
 * Two units of different original layers, `u` below `v`, must keep `u`
 * strictly below `v` (an *ordering edge*) when:
 *
 * 1. **Same path.** They have an entry at the same path: the upper one hides
 *    or overrides the lower one (a file replaced by a file, a directory whose
 *    attributes a later directory entry overrides, a whiteout of a file).
 * 2. **Hiding and re-creating.** One has an entry at path `p` that is not a
 *    plain directory (a whiteout, an opaque marker, a file, symlink, device
 *    or hardlink) and the other has an entry strictly under `p`: a whiteout
 *    or opaque marker hides what is below it and is undone by what is above
 *    it; a non-directory hides a lower subtree, and a directory re-created
 *    over a lower non-directory (a file replaced by a directory) must stay
 *    above it.
 * 3. **Directory attributes overridden.** A directory `d` visible in the
 *    image takes its attributes from the topmost layer `k` that has it
 *    (listed or implied by an entry under it). In every lower layer `j`
 *    whose `d` has other attributes, the unit that gives `d` those
 *    attributes (its directory entry, or, when `d` is implied, every unit
 *    under `d`) must stay below layer `k`'s provider of `d` (its directory
 *    entry, or every unit of `k` under `d`): otherwise the stale attributes
 *    would come out on top. (The root is a directory like the others; the
 *    top layer is its provider.)
 *
 * Within one original layer, only markers bind: a unit under `p` must not go
 * below the whiteout or opaque marker of its own layer at `p` (a non-strict
 * edge: same layer or above), or the marker would hide it. Hardlink groups
 * and same-path entries of a layer are already glued into one unit.
 *
 * Every other pair commutes. The rules are conservative (rule 3 with an
 * implied directory binds every unit under it); the validity check
 * (validity.ts) compares merged views and is the final word.
 */
import type { Entry } from '../model/entry.js';
import { UnionView } from '../union/index.js';
import { dirAttrKey, layerDirs, type Unit } from './units.js';

export interface OrderEdge {
  /** Unit that must stay below. */
  from: number;
  /** Unit that must stay above. */
  to: number;
  /** true: strictly lower layer; false: same layer or lower. */
  strict: boolean;
}

function hides(e: Entry): boolean {
  return e.type !== 'dir';
}

function isMarker(e: Entry): boolean {
  return e.type === 'whiteout' || e.type === 'opaque' || (e.type === 'char' && !e.devMajor && !e.devMinor);
}

/** Paths sorted, with the unit each occurrence belongs to: the descendants of `p` are one contiguous run. */
class PathIndex {
  readonly paths: string[] = [];
  readonly units: number[] = [];
  readonly entries: Entry[] = [];

  constructor(units: readonly Unit[]) {
    const rows: { path: string; unit: number; e: Entry }[] = [];
    for (const u of units) for (const e of u.entries) rows.push({ path: e.path, unit: u.id, e });
    rows.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : a.unit - b.unit));
    for (const r of rows) {
      this.paths.push(r.path);
      this.units.push(r.unit);
      this.entries.push(r.e);
    }
  }

  private lowerBound(s: string): number {
    let lo = 0;
    let hi = this.paths.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if ((this.paths[mid] as string) < s) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /** Row indexes whose path is exactly `p`. */
  at(p: string): number[] {
    const out: number[] = [];
    for (let i = this.lowerBound(p); i < this.paths.length && this.paths[i] === p; i++) out.push(i);
    return out;
  }

  /** Row indexes whose path is strictly under `p` (everything but the root itself when `p` is the root). */
  under(p: string): [number, number] {
    if (p === '') {
      const start = this.lowerBound('\u0000');
      return [start, this.paths.length];
    }
    const prefix = `${p}/`;
    const start = this.lowerBound(prefix);
    let end = start;
    // '/' + 1 = '0': every path with the prefix sorts before prefix-with-'0'.
    end = this.lowerBound(`${p}0`);
    return [start, Math.max(start, end)];
  }
}

/** The directories visible in the merged view, each with the entry giving its attributes (undefined: implied). */
export function finalDirectories(layers: Entry[][]): {
  finalDirs: Map<string, Entry | undefined>;
  providers: Map<string, number>;
  dirsByLayer: Map<string, Entry | undefined>[];
} {
  const dirsByLayer = layers.map(layerDirs);
  const view = UnionView.build(layers, { lookup: 'flat' });
  const finalDirs = new Map<string, Entry | undefined>();
  const providers = new Map<string, number>();
  for (let k = layers.length - 1; k >= 0; k--) {
    for (const [d, e] of dirsByLayer[k] as Map<string, Entry | undefined>) {
      if (providers.has(d)) continue;
      const r = view.resolvePath(d);
      if (!r || view.getattr(r.ino)?.type !== 'dir') continue;
      providers.set(d, k);
      finalDirs.set(d, e);
    }
  }
  if (layers.length === 0) providers.set('', 0);
  return { finalDirs, providers, dirsByLayer };
}

/** The ordering edges of an image's units (see the module comment). Deduplicated. */
export function orderingEdges(
  units: readonly Unit[],
  unitsByLayer: readonly number[][],
  dirs: ReturnType<typeof finalDirectories>,
  opts: { directoryLayer?: boolean } = {},
): OrderEdge[] {
  const idx = new PathIndex(units);
  const seen = new Set<number>();
  const edges: OrderEdge[] = [];
  const n = units.length;
  const add = (a: number, b: number, strict: boolean): void => {
    if (a === b) return;
    const key = a * n + b;
    if (seen.has(key)) return;
    seen.add(key);
    edges.push({ from: a, to: b, strict });
  };
  const ordered = (a: number, b: number): void => {
    const la = (units[a] as Unit).layer;
    const lb = (units[b] as Unit).layer;
    if (la < lb) add(a, b, true);
    else if (lb < la) add(b, a, true);
  };
  // Rules 1 and 2.
  for (let i = 0; i < idx.paths.length; i++) {
    const p = idx.paths[i] as string;
    const u = idx.units[i] as number;
    const e = idx.entries[i] as Entry;
    for (const j of idx.at(p)) if (j > i) ordered(u, idx.units[j] as number);
    if (!hides(e)) continue;
    const [s, t] = idx.under(p);
    const marker = isMarker(e);
    for (let j = s; j < t; j++) {
      const v = idx.units[j] as number;
      if ((units[v] as Unit).layer === (units[u] as Unit).layer) {
        if (marker) add(u, v, false);
      } else ordered(u, v);
    }
  }
  // Rule 3 (not needed under a directory layer: it gives every visible directory its attributes).
  if (opts.directoryLayer) return edges;
  const { finalDirs, providers, dirsByLayer } = dirs;
  const unitsUnder = (layer: number, d: string): number[] => {
    const out = new Set<number>();
    const [s, t] = idx.under(d);
    for (let j = s; j < t; j++) {
      const v = idx.units[j] as number;
      if ((units[v] as Unit).layer === layer) out.add(v);
    }
    for (const j of idx.at(d)) {
      const v = idx.units[j] as number;
      if ((units[v] as Unit).layer === layer && (idx.entries[j] as Entry).type === 'opaque') out.add(v);
    }
    return [...out];
  };
  const dirUnit = (layer: number, d: string): number | undefined => {
    for (const j of idx.at(d)) {
      const v = idx.units[j] as number;
      if ((units[v] as Unit).layer === layer && (idx.entries[j] as Entry).type === 'dir') return v;
    }
    return undefined;
  };
  for (const [d, k] of providers) {
    const want = dirAttrKey(finalDirs.get(d));
    let targets: number[] | undefined;
    for (let j = 0; j < k; j++) {
      const layerDir = (dirsByLayer[j] as Map<string, Entry | undefined>).get(d);
      if (!(dirsByLayer[j] as Map<string, Entry | undefined>).has(d) || dirAttrKey(layerDir) === want) continue;
      const explicitHere = layerDir !== undefined;
      const explicitTop = finalDirs.get(d) !== undefined;
      // Both listed: rule 1 (same path) already orders them.
      if (explicitHere && explicitTop) continue;
      const source = explicitHere ? [dirUnit(j, d) as number] : unitsUnder(j, d);
      if (!targets) {
        const top = explicitTop ? dirUnit(k, d) : undefined;
        targets = top !== undefined ? [top] : unitsUnder(k, d);
        if (d === '' && targets.length === 0) targets = [...(unitsByLayer[k] ?? [])];
      }
      for (const a of source) for (const b of targets) add(a, b, true);
    }
  }
  return edges;
}
