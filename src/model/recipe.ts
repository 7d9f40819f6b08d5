import { gunzipSync, gzipSync } from 'node:zlib';
import { CairnError, ErrorCode } from './errors.js';
import { isDigest, sha256, type Digest } from './digest.js';
import { ENTRY_TYPES, type Entry } from './entry.js';

/** A layer as cairn stores it: its entries in order. Identified by the sha256 of its canonical encoding. */
export interface Recipe {
  entries: Entry[];
}

export const RECIPE_MEDIA_TYPE = 'application/vnd.cairn.recipe.v1+json';

/** Rebuilds an entry with keys in a fixed order and defaults left out, so equal entries encode equally. */
function canonicalEntry(e: Entry): Entry {
  const out: Entry = { path: e.path, type: e.type, mode: e.mode, uid: e.uid, gid: e.gid, mtime: e.mtime, size: e.size };
  if (e.uname) out.uname = e.uname;
  if (e.gname) out.gname = e.gname;
  if (e.digest !== undefined) out.digest = e.digest;
  if (e.linkTarget !== undefined) out.linkTarget = e.linkTarget;
  if (e.devMajor !== undefined) out.devMajor = e.devMajor;
  if (e.devMinor !== undefined) out.devMinor = e.devMinor;
  if (e.xattrs && Object.keys(e.xattrs).length > 0) {
    const sorted: Record<string, string> = {};
    for (const k of Object.keys(e.xattrs).sort()) sorted[k] = e.xattrs[k] as string;
    out.xattrs = sorted;
  }
  return out;
}

/** The canonical JSON text of one entry: equal entries, and only those, have equal keys. */
export function entryKey(e: Entry): string {
  return JSON.stringify(canonicalEntry(e));
}

/** The canonical JSON text of a recipe; its sha256 is the recipe id. */
export function encodeRecipe(recipe: Recipe): string {
  return JSON.stringify({ v: 1, entries: recipe.entries.map(canonicalEntry) });
}

export function recipeId(recipe: Recipe): Digest {
  return sha256(encodeRecipe(recipe));
}

/** Compact wire and storage form: gzip of the canonical JSON. */
export function compressRecipe(recipe: Recipe): { id: Digest; gz: Buffer; rawBytes: number } {
  const text = encodeRecipe(recipe);
  return { id: sha256(text), gz: gzipSync(text, { level: 6 }), rawBytes: Buffer.byteLength(text) };
}

/** Decodes and validates a stored or fetched recipe; `expected` is checked when given. */
export function decodeRecipe(data: Buffer, opts: { gzipped: boolean; expected?: Digest }): Recipe {
  const raw = opts.gzipped ? gunzipSync(data) : data;
  if (opts.expected !== undefined) checkRecipeDigest(opts.expected, sha256(raw));
  return parseRecipe(raw);
}

/** Throws DIGEST_MISMATCH unless a recipe's bytes hash to its id. */
export function checkRecipeDigest(expected: Digest, actual: Digest): void {
  if (actual !== expected) {
    throw new CairnError(ErrorCode.DIGEST_MISMATCH, `recipe ${expected}: content hashes to ${actual}`);
  }
}

/**
 * Parses and validates a recipe's JSON bytes (no digest check: callers that
 * hash elsewhere, e.g. off the main thread, must check before using it).
 */
export function parseRecipe(raw: Buffer): Recipe {
  let parsed: unknown;
  try {
    parsed = JSON.parse(raw.toString('utf8'));
  } catch (err) {
    throw new CairnError(ErrorCode.INVALID_INPUT, `recipe: not JSON (${(err as Error).message})`);
  }
  const obj = parsed as { v?: unknown; entries?: unknown };
  if (obj.v !== 1 || !Array.isArray(obj.entries)) {
    throw new CairnError(ErrorCode.INVALID_INPUT, 'recipe: expected {"v":1,"entries":[...]}');
  }
  const entries = obj.entries as unknown[];
  for (let i = 0; i < entries.length; i++) {
    const why = invalidEntry(entries[i]);
    if (why !== undefined) throw new CairnError(ErrorCode.INVALID_INPUT, `recipe entry ${i}: ${why}`);
  }
  return { entries: entries as Entry[] };
}

const TYPES = new Set<string>(ENTRY_TYPES);
const NUMBER_KEYS = ['mode', 'uid', 'gid', 'mtime', 'size'] as const;

/** What is wrong with an entry, or undefined (runs once per entry of every mounted layer: no allocation). */
function invalidEntry(value: unknown): string | undefined {
  const e = value as Partial<Entry> | null;
  if (!e || typeof e !== 'object') return 'not an object';
  if (typeof e.path !== 'string') return 'path is not a string';
  if (typeof e.type !== 'string' || !TYPES.has(e.type)) return `unknown type ${String(e.type)}`;
  for (const k of NUMBER_KEYS) if (typeof e[k] !== 'number') return `${k} is not a number`;
  if (e.type === 'file' && !isDigest(e.digest)) return 'regular file without a sha256 digest';
  return undefined;
}
