/**
 * Chunk keys of the cache tiers (chunk arithmetic itself is in fetch/chunk-source.ts).
 *
 * Key: `<64 hex of the content digest>.<chunk index>`, e.g. `ab12…ef.0`. The same
 * string names the chunk in memory, in the disk index, and on disk (file name).
 */
import { CHUNK_BYTES } from '../model/chunks.js';
import { hexOf, type Digest } from '../model/digest.js';
import type { BlobRef } from '../fetch/blob-source.js';
import { chunkSpan } from '../fetch/chunk-source.js';

/** Length of chunk `index` of a content of `size` bytes. */
export function chunkLength(size: number, index: number): number {
  const span = chunkSpan(size, index);
  return span.end - span.start;
}

/** True when the content is verified whole by its own digest (one chunk, index 0). */
export function isWholeContent(ref: BlobRef): boolean {
  return ref.size <= CHUNK_BYTES;
}

/** `<hex>.<index>`: the chunk's key in memory, in the disk index and as its file name. */
export function chunkKey(digest: Digest, index: number): string {
  return `${hexOf(digest)}.${index}`;
}

const KEY_RE = /^([0-9a-f]{64})\.(0|[1-9][0-9]{0,9})$/;

/** Parses a chunk key (or file name); undefined when it is not one. */
export function parseChunkKey(key: string): { digest: Digest; index: number } | undefined {
  const m = KEY_RE.exec(key);
  if (!m) return undefined;
  return { digest: `sha256:${m[1]!}`, index: Number(m[2]!) };
}
