/**
 * A read profile: the contents mounts of an image read soon after mounting,
 * in first-read order. Daemons share what their mounts read with the registry,
 * which keeps one profile per image, so that a node that never ran the image
 * can prefetch what its programs will read (as eStargz's prioritized files,
 * but learned from real runs instead of fixed at build time).
 */
import { CairnError, ErrorCode } from './errors.js';
import { isDigest, type Digest } from './digest.js';

export interface ProfileEntry {
  digest: Digest;
  size: number;
  /**
   * The PROFILE_BLOCK_BYTES blocks of the content that were read, ascending;
   * absent when the whole content was (and always for a content of one block).
   */
  blocks?: number[];
}

/** Unit of the parts of a large content a profile names (independent of how the registry chunks it). */
export const PROFILE_BLOCK_BYTES = 256 * 1024;

/** Blocks of a content of `size` bytes. */
export const blocksOf = (size: number): number => Math.ceil(size / PROFILE_BLOCK_BYTES);

/** Media type of a profile on the wire: `{"files": [[digest, size] or [digest, size, [block, ...]], ...]}`. */
export const READ_PROFILE_MEDIA_TYPE = 'application/vnd.cairn.read-profile.v1+json';

/** Most contents one profile holds (the registry keeps no more; a daemon sends no more). */
export const MAX_PROFILE_FILES = 20_000;

/** Largest profile body a registry accepts (~80 bytes per entry). */
export const MAX_PROFILE_BODY_BYTES = 4 * 1024 * 1024;

/** The entries as wire (and storage) rows: `[digest, size]`, or `[digest, size, blocks]`. */
export function profileRows(entries: readonly ProfileEntry[]): (string | number | number[])[][] {
  return entries.map((e) => (e.blocks ? [e.digest, e.size, e.blocks] : [e.digest, e.size]));
}

export function encodeProfile(entries: readonly ProfileEntry[]): string {
  return JSON.stringify({ files: profileRows(entries) });
}

/** What `a` and `b` (the same content) read together: the union of their blocks, or the whole content. */
export function mergeEntry(a: ProfileEntry, b: ProfileEntry): ProfileEntry {
  if (!a.blocks || !b.blocks) return { digest: a.digest, size: a.size };
  const blocks = [...new Set([...a.blocks, ...b.blocks])].sort((x, y) => x - y);
  return blocks.length >= blocksOf(a.size) ? { digest: a.digest, size: a.size } : { ...a, blocks };
}

/**
 * `first`, then what `second` adds, in order, each content once: a content in
 * both keeps its first place with the blocks of both; new contents stop at `max`.
 */
export function mergeProfiles(
  first: readonly ProfileEntry[],
  second: readonly ProfileEntry[],
  max = Infinity,
): ProfileEntry[] {
  const at = new Map<string, number>();
  const out: ProfileEntry[] = [];
  for (const e of [...first, ...second]) {
    const i = at.get(e.digest);
    if (i !== undefined) out[i] = mergeEntry(out[i] as ProfileEntry, e);
    else if (out.length < max) {
      at.set(e.digest, out.length);
      out.push(e);
    }
  }
  return out;
}

/**
 * Parses a profile body, naming `what` and the first bad entry on failure
 * (INVALID_INPUT); more than MAX_PROFILE_FILES entries is TOO_LARGE. Entries
 * repeating an earlier digest are dropped.
 */
export function decodeProfile(body: string | Buffer, what: string): ProfileEntry[] {
  let parsed: unknown;
  try {
    parsed = JSON.parse(body.toString());
  } catch {
    throw new CairnError(ErrorCode.INVALID_INPUT, `${what}: not JSON`);
  }
  const files = (parsed as { files?: unknown } | null)?.files;
  if (!Array.isArray(files)) throw new CairnError(ErrorCode.INVALID_INPUT, `${what}: no "files" list`);
  if (files.length > MAX_PROFILE_FILES) {
    throw new CairnError(ErrorCode.TOO_LARGE, `${what}: ${files.length} files, at most ${MAX_PROFILE_FILES}`);
  }
  const out: ProfileEntry[] = [];
  const seen = new Set<string>();
  files.forEach((f: unknown, i) => {
    const [digest, size, blocks] = Array.isArray(f) ? (f as unknown[]) : [];
    if (!Array.isArray(f) || f.length < 2 || f.length > 3 || typeof digest !== 'string' || !isDigest(digest)) {
      throw new CairnError(ErrorCode.INVALID_INPUT, `${what}: entry ${i} is not [sha256 digest, size, blocks?]`);
    }
    if (typeof size !== 'number' || !Number.isSafeInteger(size) || size < 0) {
      throw new CairnError(
        ErrorCode.INVALID_INPUT,
        `${what}: entry ${i} (${digest}): size is not a non-negative integer`,
      );
    }
    let entry: ProfileEntry = { digest, size };
    if (blocks !== undefined) {
      const count = blocksOf(size);
      const ok =
        Array.isArray(blocks) &&
        blocks.length > 0 &&
        blocks.every(
          (b: unknown, k) =>
            typeof b === 'number' &&
            Number.isSafeInteger(b) &&
            b >= 0 &&
            b < count &&
            (k === 0 || b > (blocks[k - 1] as number)),
        );
      if (!ok) {
        throw new CairnError(
          ErrorCode.INVALID_INPUT,
          `${what}: entry ${i} (${digest}): blocks must be ascending block numbers below ${count}`,
        );
      }
      if (blocks.length < count) entry = { digest, size, blocks: blocks as number[] };
    }
    if (seen.has(digest)) return;
    seen.add(digest);
    out.push(entry);
  });
  return out;
}
