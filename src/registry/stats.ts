import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { RegistryStore } from './store.js';

export interface RegistryStats {
  images: number;
  repositories: number;
  tags: number;
  /** Unique layers (recipes). */
  layers: number;
  /** Entries over unique layers, markers included. */
  entries: number;
  /** Regular files over unique layers. */
  files: number;
  /** Distinct contents. */
  uniqueFiles: number;
  /** Sum of regular-file sizes over unique layers. */
  fileBytes: number;
  /** Content bytes stored (each distinct content once). */
  storedBytes: number;
  /** File-level dedup saving: 100 * (1 - storedBytes / fileBytes). */
  dedupSavingPercent: number;
  /** Recipes, tar skeletons and the SQLite files. */
  metadataBytes: number;
  recipeBytes: number;
  skeletonBytes: number;
}

async function sizeOf(path: string): Promise<number> {
  return stat(path).then(
    (s) => s.size,
    () => 0,
  );
}

export async function registryStats(store: RegistryStore): Promise<RegistryStats> {
  const t = store.meta.totals();
  const dbFile = join(store.root, 'registry.db');
  const metadataBytes = (await sizeOf(dbFile)) + (await sizeOf(`${dbFile}-wal`));
  const saving = t.fileBytes === 0 ? 0 : 100 * (1 - t.storedBytes / t.fileBytes);
  return {
    images: t.images,
    repositories: t.repositories,
    tags: t.tags,
    layers: t.layers,
    entries: t.entries,
    files: t.files,
    uniqueFiles: t.uniqueFiles,
    fileBytes: t.fileBytes,
    storedBytes: t.storedBytes,
    dedupSavingPercent: Math.round(saving * 100) / 100,
    metadataBytes,
    recipeBytes: t.recipeBytes,
    skeletonBytes: t.skeletonBytes,
  };
}
