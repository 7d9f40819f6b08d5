/**
 * The atoms a reconstruction moves between layers, and how a group of them
 * becomes a layer again.
 *
 * A *unit* is one entry of an original layer, glued to the entries it cannot
 * be separated from without changing what the layer means:
 * - entries of the same layer at the same path (a whiteout or an opaque
 *   marker next to the directory it re-creates: apart, "whited out and
 *   re-created in one layer" would become "whited out, then re-created",
 *   or the other way round);
 * - a hardlink and its target, transitively: a hardlink group stays in one
 *   layer (a tar hardlink can only point to an earlier entry of its layer,
 *   and the group's link count is counted in that layer).
 *
 * Directories a layer needs but does not list (the ancestors of its entries)
 * are not units: when a new layer is emitted, each such directory is written
 * with the attributes the image's merged view gives it (its *final*
 * attributes), or left implied when those are the implied-directory defaults.
 * So a file moved to another layer never drags a stale directory mtime with it.
 */
import type { Entry } from '../model/entry.js';
import { ancestorsOf } from '../model/entry.js';
import { entryKey } from '../model/recipe.js';
import { IMPLICIT_DIR_MODE, IMPLICIT_DIR_MTIME } from '../union/index.js';

export interface Unit {
  /** Index into `ImageModel.units`; units are numbered bottom layer first, in layer order. */
  id: number;
  /** The original layer (0 = bottom). */
  layer: number;
  entries: Entry[];
  /** `entryKey` of each entry, in the same order. */
  keys: string[];
  /** Content bytes the unit adds to a layer (regular files; hardlinks carry none). */
  bytes: number;
}

/** Attributes of a directory as the merged view shows them: what must match between layers. */
export function dirAttrKey(e: Entry | undefined): string {
  if (!e) return JSON.stringify([IMPLICIT_DIR_MODE, 0, 0, IMPLICIT_DIR_MTIME, {}]);
  const x = e.xattrs ?? {};
  const sorted = Object.fromEntries(
    Object.keys(x)
      .sort()
      .map((k) => [k, x[k]]),
  );
  return JSON.stringify([e.mode & 0o7777, e.uid, e.gid, e.mtime, sorted]);
}

export const IMPLIED_DIR_KEY = dirAttrKey(undefined);

/** The paths an entry requires to be directories in its layer. */
export function requiredDirs(e: Entry): string[] {
  if (e.path === '') return [];
  const out = ['', ...ancestorsOf(e.path)];
  if (e.type === 'opaque') out.push(e.path);
  return out;
}

/** Splits each layer into units (see the module comment). */
export function splitUnits(layers: Entry[][]): { units: Unit[]; unitsByLayer: number[][] } {
  const units: Unit[] = [];
  const unitsByLayer: number[][] = [];
  layers.forEach((entries, layer) => {
    // Union-find over the layer's entry indexes.
    const up = entries.map((_, i) => i);
    const find = (i: number): number => {
      while (up[i] !== i) {
        up[i] = up[up[i] as number] as number;
        i = up[i] as number;
      }
      return i;
    };
    const join = (a: number, b: number): void => {
      const ra = find(a);
      const rb = find(b);
      if (ra !== rb) up[Math.max(ra, rb)] = Math.min(ra, rb);
    };
    const byPath = new Map<string, number>();
    entries.forEach((e, i) => {
      const first = byPath.get(e.path);
      if (first === undefined) byPath.set(e.path, i);
      else join(first, i);
    });
    entries.forEach((e, i) => {
      if (e.type !== 'hardlink' || e.linkTarget === undefined) return;
      const target = byPath.get(e.linkTarget);
      if (target !== undefined) join(target, i);
    });
    const groups = new Map<number, number[]>();
    entries.forEach((_, i) => {
      const r = find(i);
      const g = groups.get(r);
      if (g) g.push(i);
      else groups.set(r, [i]);
    });
    const ids: number[] = [];
    for (const members of [...groups.values()].sort((a, b) => (a[0] as number) - (b[0] as number))) {
      const es = members.map((i) => entries[i] as Entry);
      const unit: Unit = {
        id: units.length,
        layer,
        entries: es,
        keys: es.map(entryKey),
        bytes: es.reduce((n, e) => n + (e.type === 'file' ? e.size : 0), 0),
      };
      units.push(unit);
      ids.push(unit.id);
    }
    unitsByLayer.push(ids);
  });
  return { units, unitsByLayer };
}

/**
 * For each layer, the directories it has (explicitly or implied) with the
 * entry that gives their attributes (undefined: implied, default attributes).
 */
export function layerDirs(entries: Entry[]): Map<string, Entry | undefined> {
  const dirs = new Map<string, Entry | undefined>();
  dirs.set('', undefined);
  for (const e of entries) {
    if (e.type === 'dir') dirs.set(e.path, e);
  }
  for (const e of entries) {
    for (const d of requiredDirs(e)) if (!dirs.has(d)) dirs.set(d, undefined);
  }
  return dirs;
}

/**
 * A directory entry copied into another layer must not carry overlay's opaque
 * xattr: there it would hide what lies below (the view never shows it).
 */
export function withoutOverlayXattrs(e: Entry): Entry {
  if (!e.xattrs || !Object.keys(e.xattrs).some((k) => k.startsWith('trusted.overlay.'))) return e;
  const xattrs = Object.fromEntries(Object.entries(e.xattrs).filter(([k]) => !k.startsWith('trusted.overlay.')));
  const out: Entry = { ...e, xattrs };
  if (Object.keys(xattrs).length === 0) delete out.xattrs;
  return out;
}

const TYPE_RANK: Record<Entry['type'], number> = {
  whiteout: 0,
  opaque: 1,
  dir: 2,
  file: 3,
  symlink: 3,
  char: 3,
  block: 3,
  fifo: 3,
  hardlink: 4,
};

/**
 * The entries of a new layer made of `units`: their entries plus the
 * directories they require and do not list, with the final attributes
 * (`finalDirs`: path -> the entry giving a visible directory its attributes,
 * undefined when they are the implied defaults; paths absent from it are not
 * visible directories and stay implied). Sorted by path so that parents come
 * first, hardlinks last (after their targets); the order is a function of
 * the entry set alone, so equal sets give equal recipes.
 */
export function emitLayer(units: readonly Unit[], finalDirs: ReadonlyMap<string, Entry | undefined>): Entry[] {
  // A hardlink group's attributes are those of its last name: hardlinks keep their order in their unit.
  const out: { e: Entry; key: string; group: string; index: number }[] = [];
  const present = new Set<string>();
  for (const u of units) {
    const group = u.entries[0]?.path ?? '';
    u.entries.forEach((e, i) => {
      out.push({ e, key: u.keys[i] as string, group, index: i });
      if (e.type === 'dir') present.add(e.path);
    });
  }
  const added = new Set<string>();
  for (const u of units) {
    for (const e of u.entries) {
      for (const d of requiredDirs(e)) {
        if (present.has(d) || added.has(d)) continue;
        added.add(d);
        const given = finalDirs.get(d);
        if (given === undefined) continue;
        const f = withoutOverlayXattrs(given);
        out.push({ e: f, key: entryKey(f), group: d, index: 0 });
      }
    }
  }
  out.sort((x, y) => {
    const hx = x.e.type === 'hardlink' ? 1 : 0;
    const hy = y.e.type === 'hardlink' ? 1 : 0;
    if (hx !== hy) return hx - hy;
    if (hx === 1) return x.group < y.group ? -1 : x.group > y.group ? 1 : x.index - y.index;
    if (x.e.path !== y.e.path) return x.e.path < y.e.path ? -1 : 1;
    const r = TYPE_RANK[x.e.type] - TYPE_RANK[y.e.type];
    if (r !== 0) return r;
    return x.key < y.key ? -1 : x.key > y.key ? 1 : 0;
  });
  return out.map((o) => o.e);
}
