import { createHash, randomBytes } from 'node:crypto';
import { mkdir, open, readdir, readFile, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { LRUCache } from 'lru-cache';
import { CairnError, ErrorCode } from '../model/errors.js';
import type { Digest } from '../model/digest.js';
import { decodeRecipe } from '../model/recipe.js';
import { UnionView } from '../union/view.js';
import type { RegistryStore } from './store.js';

/** A built view as served: its bytes and their sha256. */
export interface StoredView {
  digest: Digest;
  bytes: Buffer;
}

export interface ViewStoreOptions {
  /** Views kept in memory (bytes); they are also kept on disk under ROOT/views. */
  memoryBytes?: number;
  /** Told when a built view could not be written to disk (it is served from memory all the same). */
  onWarning?: (message: string) => void;
}

/** The name of the view of a list of layers (bottom first), the same wherever it is built. */
export function viewKey(recipes: readonly Digest[]): string {
  return createHash('sha256')
    .update(`cairn-view-v1\n${recipes.join('\n')}`)
    .digest('hex');
}

/**
 * Built union views of stored images (`UnionView.encode` of their recipes),
 * so that a mount restores a view instead of decoding recipes and building it.
 * A view is named by the list of recipes it merges, so images with the same
 * layers share one, and a prefix of an image's layers (what a snapshot of its
 * k-th layer shows) has its own. Built once, on demand or after an import,
 * written to a temp name, fsynced and renamed into ROOT/views; concurrent
 * requests for one view share one build. A view is a cache: removing one only
 * makes the next mount of it build it again.
 */
export class ViewStore {
  readonly dir: string;
  private readonly memory: LRUCache<string, StoredView>;
  private readonly building = new Map<string, Promise<StoredView>>();

  constructor(
    private readonly store: RegistryStore,
    private readonly opts: ViewStoreOptions = {},
  ) {
    const memoryBytes = opts.memoryBytes ?? 256 * 1024 * 1024;
    if (!Number.isSafeInteger(memoryBytes) || memoryBytes < 1) {
      throw new CairnError(ErrorCode.INVALID_OPTION, 'ViewStore: option memoryBytes must be a positive integer');
    }
    this.dir = join(store.root, 'views');
    this.memory = new LRUCache({
      maxSize: memoryBytes,
      sizeCalculation: (v) => Math.max(1, v.bytes.byteLength),
    });
  }

  /** The view of `recipes` (an image's first layers, bottom first), built if it is not yet. */
  async get(recipes: readonly Digest[]): Promise<StoredView> {
    if (recipes.length === 0) throw new CairnError(ErrorCode.INVALID_INPUT, 'view: no layers');
    const key = viewKey(recipes);
    const hit = this.memory.get(key);
    if (hit) return hit;
    let pending = this.building.get(key);
    if (!pending) {
      pending = this.load(key, recipes).finally(() => this.building.delete(key));
      this.building.set(key, pending);
    }
    return pending;
  }

  private async load(key: string, recipes: readonly Digest[]): Promise<StoredView> {
    const path = join(this.dir, `${key}.view`);
    // A view that cannot be read is built again, like one that is missing.
    let bytes: Buffer | undefined = await readFile(path).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== 'ENOENT') this.opts.onWarning?.(`${path}: ${err.message}`);
      return undefined;
    });
    if (!bytes) {
      const built = this.build(recipes);
      // A view is a cache: a full or read-only disk costs the next process a rebuild, not this mount.
      await this.write(path, built).catch((err: unknown) => this.opts.onWarning?.((err as Error).message));
      bytes = built;
    }
    const view: StoredView = { digest: `sha256:${createHash('sha256').update(bytes).digest('hex')}`, bytes };
    this.memory.set(key, view);
    return view;
  }

  private build(recipes: readonly Digest[]): Buffer {
    const layers = recipes.map((id) => {
      const gz = this.store.meta.recipe(id);
      if (!gz) throw new CairnError(ErrorCode.NOT_FOUND, `view: recipe ${id} is unknown`);
      return decodeRecipe(gz, { gzipped: true, expected: id }).entries;
    });
    return UnionView.encode(layers, [...recipes]);
  }

  private async write(path: string, bytes: Buffer): Promise<void> {
    await mkdir(this.dir, { recursive: true });
    const tmp = join(this.dir, `.tmp-${process.pid}-${randomBytes(6).toString('hex')}`);
    try {
      const fh = await open(tmp, 'wx');
      try {
        await fh.writeFile(bytes);
        await fh.sync();
      } finally {
        await fh.close();
      }
      await rename(tmp, path);
    } catch (err) {
      await rm(tmp, { force: true });
      throw new CairnError(ErrorCode.STORAGE, `view ${path}: ${(err as Error).message}`, { cause: err });
    }
  }

  /** Builds the view of every layer of `image` now, so that its first mount does not wait for it. */
  async prebuild(image: Digest): Promise<StoredView> {
    const row = this.store.meta.image(image);
    if (!row) throw new CairnError(ErrorCode.NOT_FOUND, `image ${image} is unknown`);
    return this.get(row.layers.map((l) => l.recipe));
  }

  /**
   * Removes views that no stored image's layers (or prefix of them) merge, and
   * temp files of writes that never finished, older than `cutoffMs` (epoch ms).
   */
  async prune(cutoffMs: number, dryRun: boolean): Promise<{ removed: number; removedBytes: number }> {
    const wanted = new Set<string>();
    for (const img of this.store.meta.allImages()) {
      const recipes = this.store.meta.image(img.digest)?.layers.map((l) => l.recipe) ?? [];
      for (let k = 1; k <= recipes.length; k++) wanted.add(`${viewKey(recipes.slice(0, k))}.view`);
    }
    let removed = 0;
    let removedBytes = 0;
    for (const name of await readdir(this.dir).catch(() => [] as string[])) {
      if (wanted.has(name)) continue;
      const path = join(this.dir, name);
      const st = await stat(path).catch(() => undefined);
      if (!st || st.mtimeMs > cutoffMs) continue;
      if (!dryRun) await rm(path, { force: true });
      this.memory.delete(name.replace(/\.view$/, ''));
      removed++;
      removedBytes += st.size;
    }
    return { removed, removedBytes };
  }
}
