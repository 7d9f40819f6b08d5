import { readdir, rm, stat, utimes } from 'node:fs/promises';
import { join } from 'node:path';
import type { RegistryStore } from './store.js';
import { BlobStore } from './blob-store.js';
import { OciMeta } from './oci/oci-meta.js';
import { UploadStore } from './oci/uploads.js';
import { ViewStore } from './views.js';

export interface GcResult {
  scanned: number;
  removedBlobs: number;
  removedBytes: number;
  removedTemp: number;
  /** Blobs uploaded through /v2 that no manifest names (a push abandoned before its manifest). */
  removedUploadedBlobs: number;
  removedUploadedBytes: number;
  /** /v2 uploads left unfinished for longer than the grace period. */
  expiredUploads: number;
  /** Images no repository holds any more (deleted through /v2), removed with what only they used. */
  removedImages: number;
  /** Built views (ROOT/views) of layer lists no stored image has any more. */
  removedViews: number;
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
  const result: GcResult = {
    scanned: 0,
    removedBlobs: 0,
    removedBytes: 0,
    removedTemp: 0,
    removedUploadedBlobs: 0,
    removedUploadedBytes: 0,
    expiredUploads: 0,
    removedImages: 0,
    removedViews: 0,
  };
  if (!opts.dryRun) {
    // The metadata of deleted images goes first. The contents only they used are now unreferenced,
    // but an import running now may have seen them as stored and skipped writing them: their grace
    // period starts now (touched), so they go in a gc run at least graceMs later, like any stray.
    const pruned = store.meta.pruneUnheldImages();
    result.removedImages = pruned.images.length;
    const now = new Date();
    for (const d of pruned.files) await utimes(store.blobs.path(d), now, now).catch(() => undefined);
  }
  const referenced = store.meta.referencedFiles();
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
  await collectUploaded(store, cutoff, opts.dryRun ?? false, result);
  result.removedViews = (await new ViewStore(store).prune(cutoff, opts.dryRun ?? false)).removed;
  return result;
}

/**
 * Blobs held whole by the /v2 API (`ROOT/oci/blobs`): those no stored manifest
 * names go once older than the grace period. A push uploads its blobs before
 * its manifest, so the grace period is what keeps a push under way whole.
 */
async function collectUploaded(store: RegistryStore, cutoff: number, dryRun: boolean, result: GcResult): Promise<void> {
  const held = new BlobStore({ root: join(store.root, 'oci') });
  const meta = new OciMeta(store.meta.db);
  if (!dryRun) {
    const uploads = new UploadStore({
      dir: join(store.root, 'oci', 'uploads'),
      blobs: held,
      maxBlobBytes: 1,
      ttlMs: Math.max(1, Date.now() - cutoff),
    });
    result.expiredUploads = await uploads.expire();
  }
  for await (const digest of held.list()) {
    result.scanned++;
    if (meta.manifestNames(digest)) continue;
    const st = await stat(held.path(digest)).catch(() => undefined);
    if (!st || st.mtimeMs > cutoff) continue;
    if (!dryRun) await held.remove(digest);
    result.removedUploadedBlobs++;
    result.removedUploadedBytes += st.size;
  }
}
