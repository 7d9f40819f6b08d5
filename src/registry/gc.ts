import { readdir, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { RegistryStore } from './store.js';

export interface GcResult {
  scanned: number;
  removedBlobs: number;
  removedBytes: number;
  removedTemp: number;
}

/**
 * Removes contents no recipe references, and abandoned temp files. Only
 * objects older than `graceMs` go, so an import that is writing contents but
 * has not committed yet keeps them.
 */
export async function collectGarbage(
  store: RegistryStore,
  opts: { graceMs: number; dryRun?: boolean },
): Promise<GcResult> {
  const cutoff = Date.now() - opts.graceMs;
  const referenced = store.meta.referencedFiles();
  const result: GcResult = { scanned: 0, removedBlobs: 0, removedBytes: 0, removedTemp: 0 };
  for await (const digest of store.blobs.list()) {
    result.scanned++;
    if (referenced.has(digest)) continue;
    const st = await stat(store.blobs.path(digest)).catch(() => undefined);
    if (!st || st.mtimeMs > cutoff) continue;
    if (!opts.dryRun) await store.blobs.remove(digest);
    result.removedBlobs++;
    result.removedBytes += st.size;
  }
  for (const name of await readdir(store.blobs.tmpDir).catch(() => [] as string[])) {
    const path = join(store.blobs.tmpDir, name);
    const st = await stat(path).catch(() => undefined);
    if (!st || st.mtimeMs > cutoff) continue;
    if (!opts.dryRun) await rm(path, { recursive: true, force: true });
    result.removedTemp++;
  }
  return result;
}
