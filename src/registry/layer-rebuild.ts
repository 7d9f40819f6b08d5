import { CairnError, ErrorCode } from '../model/errors.js';
import type { Recipe } from '../model/recipe.js';
import { SkeletonReader } from '../tar/skeleton.js';
import type { BlobStore } from './blob-store.js';
import { readFile } from 'node:fs/promises';

const READ_AHEAD_ENTRIES = 32;
const READ_AHEAD_MAX_BYTES = 256 * 1024;

/**
 * Rebuilds a layer's original tar stream from its skeleton, its recipe and the
 * stored contents. Byte-identical to the imported tar, so it hashes to the
 * layer's diffID.
 */
export async function* rebuildLayerTar(skeletonGz: Buffer, recipe: Recipe, blobs: BlobStore): AsyncGenerator<Buffer> {
  const sk = new SkeletonReader(skeletonGz);
  const entries = recipe.entries;
  // Small contents are read a few entries ahead, in parallel: a layer is mostly small files, and
  // one at a time each costs several thread-pool round trips.
  const ahead = new Map<number, Promise<Buffer>>();
  let scheduled = 0;
  const schedule = (upTo: number): void => {
    for (; scheduled < entries.length && scheduled <= upTo; scheduled++) {
      const e = entries[scheduled] as Recipe['entries'][number];
      if (e.type === 'file' && e.size > 0 && e.size <= READ_AHEAD_MAX_BYTES && e.digest) {
        const p = readFile(blobs.path(e.digest));
        p.catch(() => undefined); // observed when its entry is reached; not unhandled if the rebuild stops first
        ahead.set(scheduled, p);
      }
    }
  };
  for (const [i, entry] of entries.entries()) {
    schedule(i + READ_AHEAD_ENTRIES);
    yield sk.next(`header of entry ${i}`);
    if (entry.type === 'file' && entry.size > 0) {
      if (!entry.digest) throw new CairnError(ErrorCode.INTERNAL, `recipe entry ${i} has no digest`);
      const early = ahead.get(i);
      if (early) {
        ahead.delete(i);
        const data = await early;
        if (data.byteLength !== entry.size)
          throw new CairnError(
            ErrorCode.STORAGE,
            `content ${entry.digest} has ${data.byteLength} bytes, recipe says ${entry.size}`,
          );
        yield data;
      } else {
        yield* blobs.openRead(entry.digest) as AsyncIterable<Buffer>;
      }
    }
    yield sk.next(`padding of entry ${i}`);
  }
  yield sk.next('trailer');
  if (!sk.done) throw new CairnError(ErrorCode.INVALID_INPUT, 'tar skeleton: has more entries than the recipe');
}
