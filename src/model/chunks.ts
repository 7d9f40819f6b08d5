import { createHash, type Hash } from 'node:crypto';
import type { Digest } from './digest.js';

/**
 * Large files are verified chunk by chunk: the registry records the sha256 of
 * every CHUNK_BYTES-sized piece, so a lazy reader can check the first megabyte
 * of a 1 GiB file without fetching the rest. Files up to one chunk are verified
 * whole, by their content digest.
 */
export const CHUNK_BYTES = 1024 * 1024;

/** Hashes a stream of bytes in CHUNK_BYTES pieces, whatever the sizes of the pieces fed to it. */
export class ChunkHasher {
  private hash: Hash = createHash('sha256');
  private filled = 0;
  private readonly digests: Buffer[] = [];

  update(data: Uint8Array): void {
    let off = 0;
    while (off < data.byteLength) {
      const take = Math.min(CHUNK_BYTES - this.filled, data.byteLength - off);
      this.hash.update(data.subarray(off, off + take));
      this.filled += take;
      off += take;
      if (this.filled === CHUNK_BYTES) {
        this.digests.push(this.hash.digest());
        this.hash = createHash('sha256');
        this.filled = 0;
      }
    }
  }

  /** Concatenated 32-byte chunk digests, or undefined for content of at most one chunk. */
  finish(totalBytes: number): Buffer | undefined {
    if (this.filled > 0) this.digests.push(this.hash.digest());
    return totalBytes > CHUNK_BYTES ? Buffer.concat(this.digests) : undefined;
  }
}

export function chunkDigestsOf(data: Uint8Array): Buffer | undefined {
  const h = new ChunkHasher();
  h.update(data);
  return h.finish(data.byteLength);
}

/** Splits a packed chunk list into digests. */
export function unpackChunks(packed: Buffer): Digest[] {
  const out: Digest[] = [];
  for (let i = 0; i + 32 <= packed.length; i += 32) out.push(`sha256:${packed.toString('hex', i, i + 32)}`);
  return out;
}
