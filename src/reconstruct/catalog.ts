/**
 * The layers a reconstruction may reuse (for SOIRA, those of the image's
 * repository), indexed by entry set and by entry for Jaccard similarity.
 */
import type { Entry } from '../model/entry.js';
import { entryKey } from '../model/recipe.js';
import { keysSetHash, sameEntrySet } from './set-hash.js';

export interface CatalogLayer {
  /** The caller's id (a recipe id in the store). */
  id: string;
  entries: Entry[];
  keys: Set<string>;
  /** Keys of the entries other than directories: what similarity is measured on. */
  contentKeys: Set<string>;
  bytes: number;
}

export interface Similar {
  layer: CatalogLayer;
  jaccard: number;
}

export class LayerCatalog {
  private readonly layers: CatalogLayer[] = [];
  private readonly bySet = new Map<string, CatalogLayer[]>();
  private readonly byKey = new Map<string, number[]>();

  get size(): number {
    return this.layers.length;
  }

  /** Adds a layer unless one with the same entry set is already there; returns the one kept. */
  add(id: string, entries: Entry[]): CatalogLayer {
    const keyList = entries.map(entryKey);
    const h = keysSetHash(keyList);
    const same = this.bySet.get(h)?.find((l) => sameEntrySet(l.entries, entries));
    if (same) return same;
    const layer: CatalogLayer = {
      id,
      entries,
      keys: new Set(keyList),
      contentKeys: new Set(keyList.filter((_, i) => entries[i]?.type !== 'dir')),
      bytes: entries.reduce((n, e) => n + (e.type === 'file' ? e.size : 0), 0),
    };
    const i = this.layers.length;
    this.layers.push(layer);
    const list = this.bySet.get(h);
    if (list) list.push(layer);
    else this.bySet.set(h, [layer]);
    for (const k of layer.contentKeys) {
      const p = this.byKey.get(k);
      if (p) p.push(i);
      else this.byKey.set(k, [i]);
    }
    return layer;
  }

  /** The stored layer with exactly these entries (any order). */
  find(entries: readonly Entry[], setHash: string): CatalogLayer | undefined {
    return this.bySet.get(setHash)?.find((l) => sameEntrySet(l.entries, entries));
  }

  /**
   * Layers whose Jaccard index with `keys` (entries other than directories: a layer's
   * directory entries differ with every build's mtimes) is at least `min`, best first,
   * at most `limit`.
   */
  similar(keys: ReadonlySet<string>, min: number, limit: number): Similar[] {
    const common = new Map<number, number>();
    for (const k of keys) {
      for (const i of this.byKey.get(k) ?? []) common.set(i, (common.get(i) ?? 0) + 1);
    }
    const out: Similar[] = [];
    for (const [i, c] of common) {
      const layer = this.layers[i] as CatalogLayer;
      const jaccard = c / (keys.size + layer.contentKeys.size - c);
      if (jaccard >= min) out.push({ layer, jaccard });
    }
    out.sort((x, y) => y.jaccard - x.jaccard || (x.layer.id < y.layer.id ? -1 : 1));
    return out.slice(0, limit);
  }
}
