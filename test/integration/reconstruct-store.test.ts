/**
 * Reconstruction in a real store (SQLite file, blob store): the new image's
 * layers rebuild to tars that hash to its config's diff_ids, reused layers
 * are the stored ones, the original stays addressable, the tag moves, a dry
 * run writes nothing, and bad input fails with a clear error and changes
 * nothing.
 */
import { createHash } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { Digest } from '../../src/model/digest.js';
import { isCairnError } from '../../src/model/errors.js';
import { decodeRecipe } from '../../src/model/recipe.js';
import { rebuildLayerTar } from '../../src/registry/layer-rebuild.js';
import {
  costFrom,
  loadReconstructConfig,
  reconstructStoredImage,
  RECONSTRUCT_CONFIG_FILE,
} from '../../src/registry/reconstruct.js';
import { RegistryStore } from '../../src/registry/store.js';
import { dir, file, layer, whiteout } from '../fixtures/layers.js';
import { importFixtureImage, pseudoRandom } from '../fixtures/registry.js';
import { testTempDir } from '../fixtures/tmp.js';

const big = pseudoRandom(700_000, 'big');
const base = [dir('opt'), file('opt/big', big), file('opt/a', 'a'), file('opt/b', 'b')];

async function twoImages(root: string): Promise<{ store: RegistryStore; second: Digest }> {
  const store = await RegistryStore.open(root);
  const [, two] = await importFixtureImage(
    store,
    { image: { layers: [layer(base), layer([file('app1', 'one')])] }, target: 'r/app:1' },
    {
      image: { layers: [layer([...base, file('opt/c', 'c')]), layer([whiteout('opt/a'), file('app2', 'two')])] },
      target: 'r/app:2',
    },
  );
  return { store, second: two!.result.digest };
}

async function sha256Of(chunks: AsyncIterable<Buffer>): Promise<Digest> {
  const h = createHash('sha256');
  for await (const c of chunks) h.update(c);
  return `sha256:${h.digest('hex')}`;
}

describe('reconstruction in the store', () => {
  it('writes an image whose layers rebuild to their diff_ids, reusing the stored base, and moves the tag', async () => {
    const { store, second } = await twoImages(await testTempDir());
    try {
      const before = store.meta.totals();
      const settings = { algorithm: 'soira' as const, ...(await costFrom({})) };
      const r = await reconstructStoredImage(store, { repository: 'r/app', digest: second, settings });
      expect(r.valid).toBe(true);
      expect(r.reusedLayers).toBe(1);
      expect(r.tags).toEqual(['2']);
      const img = store.meta.image(r.image as Digest)!;
      expect(store.meta.resolve('r/app', '2')).toBe(r.image);
      expect(store.meta.resolve('r/app', second)).toBe(second);
      expect(store.meta.originalOf(r.image as Digest)).toBe(second);
      const config = JSON.parse(img.config.toString()) as { rootfs: { diff_ids: string[] }; history?: unknown };
      expect(config.rootfs.diff_ids).toEqual(img.layers.map((l) => l.diffId));
      expect(config.history).toBeUndefined();
      for (const l of img.layers) {
        const recipe = decodeRecipe(store.meta.recipe(l.recipe)!, { gzipped: true, expected: l.recipe });
        const tar = rebuildLayerTar(store.meta.skeleton(l.skeleton)!, recipe, store.blobs);
        expect(await sha256Of(tar)).toBe(l.diffId);
      }
      // The reused base is the stored layer of image 1 (same recipe, same blob).
      const one = store.meta.imageByReference('r/app', '1')!;
      expect(img.layers[0]!.recipe).toBe(one.layers[0]!.recipe);
      expect(img.layers[0]!.blobDigest).toBe(one.layers[0]!.blobDigest);
      // No content was written: every file of the new layers was stored already.
      expect(store.meta.totals().storedBytes).toBe(before.storedBytes);
      expect(store.meta.totals().images).toBe(before.images + 1);
    } finally {
      store.close();
    }
  });

  it('a dry run writes nothing; unknown images and bad settings fail clearly and change nothing', async () => {
    const root = await testTempDir();
    const { store, second } = await twoImages(root);
    try {
      const before = store.meta.totals();
      const settings = { algorithm: 'soira' as const, ...(await costFrom({})) };
      const r = await reconstructStoredImage(store, { repository: 'r/app', digest: second, settings, dryRun: true });
      expect(r.valid).toBe(true);
      expect(r.image).toBeUndefined();
      expect(r.newBytesAfter).toBeLessThan(r.newBytesBefore);
      expect(store.meta.totals()).toEqual(before);
      await expect(
        reconstructStoredImage(store, { repository: 'r/app', digest: `sha256:${'0'.repeat(64)}`, settings }),
      ).rejects.toThrow(/image sha256:0+: not in the store/);
      const modelFile = join(root, 'model.json');
      await writeFile(modelFile, JSON.stringify({ kind: 'cairn.cost-model', version: 1, a: 'x', b: 0 }));
      await expect(costFrom({ costModel: modelFile })).rejects.toThrow(/model\.json: field "a"/);
      await expect(costFrom({ alpha: -1 })).rejects.toThrow(/alpha must be a finite number >= 0/);
      await writeFile(join(root, RECONSTRUCT_CONFIG_FILE), JSON.stringify({ enabled: true, alhpa: 2 }));
      const err = await loadReconstructConfig(root).catch((e: unknown) => e);
      expect(isCairnError(err)).toBe(true);
      expect((err as Error).message).toMatch(/reconstruct\.json: unknown key "alhpa"/);
      await writeFile(modelFile, JSON.stringify({ kind: 'cairn.cost-model', version: 1, a: 0.00002, b: -0.001 }));
      await writeFile(
        join(root, RECONSTRUCT_CONFIG_FILE),
        JSON.stringify({ enabled: true, beta: 2, costModel: modelFile }),
      );
      expect(await loadReconstructConfig(root)).toMatchObject({
        enabled: true,
        algorithm: 'soira',
        cost: { alpha: 1, beta: 2, a: 0.00002, b: 0 },
        clampedB: true,
        costSource: modelFile,
      });
      expect(store.meta.totals()).toEqual(before);
    } finally {
      store.close();
    }
  });
});
