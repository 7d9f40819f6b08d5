import { CairnError, ErrorCode } from '../model/errors.js';
import type { Recipe } from '../model/recipe.js';
import { SkeletonReader } from '../tar/skeleton.js';
import type { BlobStore } from './blob-store.js';

/**
 * Rebuilds a layer's original tar stream from its skeleton, its recipe and the
 * stored contents. Byte-identical to the imported tar, so it hashes to the
 * layer's diffID.
 */
export async function* rebuildLayerTar(skeletonGz: Buffer, recipe: Recipe, blobs: BlobStore): AsyncGenerator<Buffer> {
  const sk = new SkeletonReader(skeletonGz);
  for (const [i, entry] of recipe.entries.entries()) {
    yield sk.next(`header of entry ${i}`);
    if (entry.type === 'file' && entry.size > 0) {
      if (!entry.digest) throw new CairnError(ErrorCode.INTERNAL, `recipe entry ${i} has no digest`);
      yield* blobs.openRead(entry.digest) as AsyncIterable<Buffer>;
    }
    yield sk.next(`padding of entry ${i}`);
  }
  yield sk.next('trailer');
  if (!sk.done) throw new CairnError(ErrorCode.INVALID_INPUT, 'tar skeleton: has more entries than the recipe');
}
