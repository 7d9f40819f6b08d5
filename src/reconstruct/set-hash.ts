/**
 * Order-independent identity of a layer's entry set: two layers with the same
 * entries in a different order are the same layer to a reconstruction (it can
 * then reuse the stored recipe, entries in the stored order).
 *
 * The hash is a count plus two sums, mod 2^32, of per-entry 32-bit FNV-1a
 * hashes with different offsets: cheap to compute, and a match is always
 * confirmed by comparing the entry keys (`sameEntrySet`).
 */
import type { Entry } from '../model/entry.js';
import { entryKey } from '../model/recipe.js';

function fnv(s: string, seed: number): number {
  let h = seed >>> 0;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h;
}

export function keysSetHash(keys: readonly string[]): string {
  let a = 0;
  let b = 0;
  for (const k of keys) {
    a = (a + fnv(k, 0x811c9dc5)) >>> 0;
    b = (b + fnv(k, 0x01234567)) >>> 0;
  }
  return `${keys.length}:${a.toString(16)}:${b.toString(16)}`;
}

export function entrySetHash(entries: readonly Entry[]): string {
  return keysSetHash(entries.map(entryKey));
}

/** Exact comparison of two entry multisets. */
export function sameEntrySet(a: readonly Entry[], b: readonly Entry[]): boolean {
  if (a.length !== b.length) return false;
  const ka = a.map(entryKey).sort();
  const kb = b.map(entryKey).sort();
  return ka.every((k, i) => k === kb[i]);
}
