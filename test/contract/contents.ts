/**
 * Contents for BlobSource contract runs: deterministic bytes of the sizes that
 * matter to chunked reads (empty, tiny, one chunk exactly, one byte over,
 * several chunks with a short last one, several whole chunks).
 */
import { createCipheriv, createHash } from 'node:crypto';
import { CHUNK_BYTES } from '../../src/model/chunks.js';
import { sha256, type Digest } from '../../src/model/digest.js';

/** `size` bytes determined by `seed` (an AES-CTR keystream keyed by the seed's sha256: fast, incompressible). */
export function seededBytes(size: number, seed: string): Buffer {
  const key = createHash('sha256').update(seed).digest();
  const cipher = createCipheriv('aes-256-ctr', key, Buffer.alloc(16));
  return Buffer.concat([cipher.update(Buffer.alloc(size)), cipher.final()]);
}

export function contentsMap(buffers: Iterable<Buffer>): Map<Digest, Buffer> {
  const map = new Map<Digest, Buffer>();
  for (const b of buffers) map.set(sha256(b), b);
  return map;
}

/** The sizes every contract run covers. */
export const CONTRACT_SIZES = [
  0,
  1,
  1000,
  64 * 1024 + 3,
  CHUNK_BYTES,
  CHUNK_BYTES + 1,
  2 * CHUNK_BYTES + CHUNK_BYTES / 2 + 17,
  3 * CHUNK_BYTES,
] as const;

/** One content of each CONTRACT_SIZES size, by digest. */
export function contractContents(seed = 'cairn-contract'): Map<Digest, Buffer> {
  return contentsMap(CONTRACT_SIZES.map((size) => seededBytes(size, `${seed}/${size}`)));
}

/** Deterministic pseudo-random integers in [0, n) (mulberry32). */
export function seededRandom(seed: number): (n: number) => number {
  let s = seed >>> 0;
  return (n) => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return Math.floor((((t ^ (t >>> 14)) >>> 0) / 4294967296) * n);
  };
}
