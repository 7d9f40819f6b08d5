import { createHash, type Hash } from 'node:crypto';
import type { Digest } from './digest.js';

/**
 * Large files are verified chunk by chunk: the registry records the sha256 of
 * every CHUNK_BYTES-sized piece, so a lazy reader can check the first chunk of
 * a 1 GiB file without fetching the rest. Files up to one chunk are verified
 * whole, by their content digest.
 *
 * 256 KiB, not 1 MiB: a shared library that the dynamic loader maps and touches
 * sparsely was fetched by whole MiBs (bench/results/coldstart). The daemon
 * caches and serves in CHUNK_BYTES units whatever a registry's chunk size (see
 * HttpBlobSource); the registry records the size of each content's chunk list.
 */
export const CHUNK_BYTES = 256 * 1024;

/** The chunk size of chunk lists recorded before the size was recorded with them. */
export const LEGACY_CHUNK_BYTES = 1024 * 1024;

/** Bounds of a chunk size a registry may serve: a power of two in [64 KiB, 1 GiB]. */
export const MIN_CHUNK_BYTES = 64 * 1024;
export const MAX_CHUNK_BYTES = 1024 * 1024 * 1024;

/** True for a chunk size cairn accepts: a power of two in [MIN_CHUNK_BYTES, MAX_CHUNK_BYTES]. */
export function isChunkBytes(n: unknown): n is number {
  return (
    typeof n === 'number' &&
    Number.isSafeInteger(n) &&
    n >= MIN_CHUNK_BYTES &&
    n <= MAX_CHUNK_BYTES &&
    (n & (n - 1)) === 0
  );
}

/** Number of `chunkBytes` pieces of a content of `size` bytes (one for at most one piece, the empty content included). */
export function piecesOf(size: number, chunkBytes: number): number {
  return size <= chunkBytes ? 1 : Math.ceil(size / chunkBytes);
}

/** Hashes a stream of bytes in `chunkBytes` pieces, whatever the sizes of the pieces fed to it. */
export class ChunkHasher {
  private hash: Hash = createHash('sha256');
  private filled = 0;
  private readonly digests: Buffer[] = [];

  constructor(readonly chunkBytes: number = CHUNK_BYTES) {}

  update(data: Uint8Array): void {
    let off = 0;
    while (off < data.byteLength) {
      const take = Math.min(this.chunkBytes - this.filled, data.byteLength - off);
      this.hash.update(data.subarray(off, off + take));
      this.filled += take;
      off += take;
      if (this.filled === this.chunkBytes) {
        this.digests.push(this.hash.digest());
        this.hash = createHash('sha256');
        this.filled = 0;
      }
    }
  }

  /** Concatenated 32-byte chunk digests, or undefined for content of at most one chunk. */
  finish(totalBytes: number): Buffer | undefined {
    if (this.filled > 0) this.digests.push(this.hash.digest());
    return totalBytes > this.chunkBytes ? Buffer.concat(this.digests) : undefined;
  }
}

export function chunkDigestsOf(data: Uint8Array, chunkBytes: number = CHUNK_BYTES): Buffer | undefined {
  const h = new ChunkHasher(chunkBytes);
  h.update(data);
  return h.finish(data.byteLength);
}

/** Splits a packed chunk list into digests. */
export function unpackChunks(packed: Buffer): Digest[] {
  const out: Digest[] = [];
  for (let i = 0; i + 32 <= packed.length; i += 32) out.push(`sha256:${packed.toString('hex', i, i + 32)}`);
  return out;
}
