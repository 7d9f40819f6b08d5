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
  const text = opts.gzipped ? gunzipSync(data).toString('utf8') : data.toString('utf8');
  if (opts.expected !== undefined) {
    const actual = sha256(text);
    if (actual !== opts.expected) {
      throw new CairnError(ErrorCode.DIGEST_MISMATCH, `recipe ${opts.expected}: content hashes to ${actual}`);
    }
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    throw new CairnError(ErrorCode.INVALID_INPUT, `recipe: not JSON (${(err as Error).message})`);
  }
  const obj = parsed as { v?: unknown; entries?: unknown };
  if (obj.v !== 1 || !Array.isArray(obj.entries)) {
    throw new CairnError(ErrorCode.INVALID_INPUT, 'recipe: expected {"v":1,"entries":[...]}');
  }
  obj.entries.forEach((e, i) => validateEntry(e, i));
  return { entries: obj.entries as Entry[] };
}

function validateEntry(value: unknown, index: number): void {
  const e = value as Partial<Entry> | null;
  const bad = (what: string): never => {
    throw new CairnError(ErrorCode.INVALID_INPUT, `recipe entry ${index}: ${what}`);
  };
  if (!e || typeof e !== 'object') bad('not an object');
  if (typeof e!.path !== 'string') bad('path is not a string');
  if (!ENTRY_TYPES.includes(e!.type as Entry['type'])) bad(`unknown type ${String(e!.type)}`);
  for (const k of ['mode', 'uid', 'gid', 'mtime', 'size'] as const) {
    if (typeof e![k] !== 'number') bad(`${k} is not a number`);
  }
  if (e!.type === 'file' && !isDigest(e!.digest)) bad('regular file without a sha256 digest');
}
