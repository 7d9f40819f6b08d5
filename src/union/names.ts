/**
 * Path components, stored once each. While a view is built, components are
 * interned through a Map; `finish()` then packs every distinct name into one
 * flat string (the pool) in sorted order, so that a name's id is also its
 * rank: sorting children by id sorts them by name, with no string compares.
 * The Map and the per-entry path strings are dropped afterwards; a name then
 * costs its characters plus 10 bytes (offset, length, hash).
 *
 * Order is by UTF-16 code unit (JavaScript's default string order), which is
 * byte order for ASCII names.
 */

/** FNV-1a over UTF-16 code units, as an unsigned 32-bit integer. */
export function hashName(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

/** Combines a parent id and a name hash into a well-spread bucket hash. */
export function mixKey(parent: number, nameHash: number): number {
  let h = Math.imul(parent ^ 0x9e3779b9, 0x85ebca6b) ^ nameHash;
  h ^= h >>> 16;
  h = Math.imul(h, 0x7feb352d);
  h ^= h >>> 15;
  h = Math.imul(h, 0x846ca68b);
  h ^= h >>> 16;
  return h >>> 0;
}

/** The packed, immutable names of a view. Ids are ranks in sorted order. */
export class NamePool {
  constructor(
    /** Every distinct name, concatenated in id order. */
    private readonly pool: string,
    private readonly off: Uint32Array,
    private readonly len: Uint32Array,
    /** `hashName` of each name, checked before comparing characters. */
    readonly hashes: Uint32Array,
  ) {}

  get count(): number {
    return this.off.length;
  }

  /** Total UTF-16 code units held (a one-byte string when every name is Latin-1). */
  get chars(): number {
    return this.pool.length;
  }

  name(id: number): string {
    const o = this.off[id] as number;
    return this.pool.slice(o, o + (this.len[id] as number));
  }

  /** The packed form, for serialization: the pool string and the per-name arrays. */
  parts(): { pool: string; off: Uint32Array; len: Uint32Array; hashes: Uint32Array } {
    return { pool: this.pool, off: this.off, len: this.len, hashes: this.hashes };
  }

  /** Whether name `id` is `s`; `h` must be `hashName(s)`. */
  equals(id: number, s: string, h: number): boolean {
    return this.hashes[id] === h && this.len[id] === s.length && this.pool.startsWith(s, this.off[id]);
  }
}

/** Collects names during construction. */
export class NamePoolBuilder {
  private readonly ids = new Map<string, number>();
  private readonly strs: string[] = [];
  private hashArr = new Uint32Array(1024);

  /** The provisional id of `s`, adding it when new. */
  intern(s: string): number {
    let id = this.ids.get(s);
    if (id === undefined) {
      id = this.strs.length;
      this.ids.set(s, id);
      this.strs.push(s);
      if (id >= this.hashArr.length) {
        const next = new Uint32Array(this.hashArr.length * 2);
        next.set(this.hashArr);
        this.hashArr = next;
      }
      this.hashArr[id] = hashName(s);
    }
    return id;
  }

  /** `hashName` of provisional id `id`. */
  hashOf(id: number): number {
    return this.hashArr[id] as number;
  }

  get size(): number {
    return this.strs.length;
  }

  /**
   * Packs the names. Returns the pool and `remap`, which turns a provisional
   * id into the final one (its rank in sorted order).
   */
  finish(): { pool: NamePool; remap: Uint32Array } {
    const n = this.strs.length;
    const sorted = this.strs.slice().sort();
    const remap = new Uint32Array(n);
    const off = new Uint32Array(n);
    const len = new Uint32Array(n);
    const hashes = new Uint32Array(n);
    let pos = 0;
    for (let rank = 0; rank < n; rank++) {
      const s = sorted[rank] as string;
      const id = this.ids.get(s) as number;
      remap[id] = rank;
      off[rank] = pos;
      len[rank] = s.length;
      hashes[rank] = this.hashArr[id] as number;
      pos += s.length;
    }
    // join() copies into one flat string, so no name keeps an entry's path string alive.
    const pool = new NamePool(sorted.join(''), off, len, hashes);
    return { pool, remap };
  }
}
