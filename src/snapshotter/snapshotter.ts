/**
 * Snapshot semantics as containerd expects them of a snapshotter, with the
 * directory layout of containerd's overlayfs snapshotter:
 *   ROOT/metadata.db              snapshot metadata (SnapshotMetadata)
 *   ROOT/snapshots/ID/fs          the snapshot's files (an overlay upperdir when it has parents)
 *   ROOT/snapshots/ID/work        overlayfs workdir
 * Rules: keys are unique; a parent must exist and be committed; only active
 * snapshots commit; a snapshot with children cannot be removed; only labels
 * change after creation. Directories of removed snapshots that a crash left
 * behind are reclaimed by Cleanup.
 */
import { mkdirSync, rmSync } from 'node:fs';
import { readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { CairnError, ErrorCode } from '../model/errors.js';
import { compileFilters } from './filters.js';
import { SnapshotMetadata, type SnapshotKind, type SnapshotRecord } from './metadata.js';
import { diskUsage, type DiskUsage } from './usage.js';
import type { LazySource } from './lazy-mounts.js';
import { detach, mountedType } from '../daemon/stale.js';

/** A mount for containerd to perform, as in containerd.types.Mount. */
export interface SnapshotMount {
  type: string;
  source: string;
  options: string[];
}

export interface SnapshotInfo {
  name: string;
  parent: string;
  kind: SnapshotKind;
  createdMs: number;
  updatedMs: number;
  labels: Record<string, string>;
}

/** containerd's limit on one label: key and value together. */
export const MAX_LABEL_BYTES = 4096;

export interface SnapshotterOptions {
  /** Directory holding metadata.db and snapshots/. */
  rootDir: string;
  /** Clock, for tests. */
  nowMs?: () => number;
  /**
   * Takes down the lazy mount at a lazy snapshot's fs (before its directory is
   * removed). Without it, lazy snapshots are detached with umount.
   */
  unmountLazy?: (mountpoint: string) => Promise<void>;
}

function infoOf(rec: SnapshotRecord): SnapshotInfo {
  const { key, parent, kind, createdMs, updatedMs, labels } = rec;
  return { name: key, parent, kind, createdMs, updatedMs, labels };
}

function checkKey(key: string, what: string): void {
  if (typeof key !== 'string' || key === '')
    throw new CairnError(ErrorCode.INVALID_INPUT, `${what}: must not be empty`);
}

function checkLabels(labels: Record<string, string>): void {
  for (const [k, v] of Object.entries(labels)) {
    if (Buffer.byteLength(k) + Buffer.byteLength(v) > MAX_LABEL_BYTES) {
      throw new CairnError(
        ErrorCode.INVALID_INPUT,
        `label ${JSON.stringify(k.slice(0, 64))}: key and value exceed ${MAX_LABEL_BYTES} bytes`,
      );
    }
  }
}

export class Snapshotter {
  readonly rootDir: string;
  private readonly snapshotsDir: string;
  private readonly meta: SnapshotMetadata;
  private readonly now: () => number;
  private readonly unmountLazy: (mountpoint: string) => Promise<void>;

  constructor(opts: SnapshotterOptions) {
    if (!opts || typeof opts.rootDir !== 'string' || opts.rootDir === '') {
      throw new CairnError(ErrorCode.INVALID_OPTION, 'Snapshotter: rootDir must be a non-empty path');
    }
    this.rootDir = opts.rootDir;
    this.snapshotsDir = join(opts.rootDir, 'snapshots');
    this.now = opts.nowMs ?? Date.now;
    this.unmountLazy = opts.unmountLazy ?? detach;
    mkdirSync(this.snapshotsDir, { recursive: true, mode: 0o700 });
    this.meta = new SnapshotMetadata(join(opts.rootDir, 'metadata.db'));
  }

  /** The directory of snapshot `id`. */
  dirOf(id: number): string {
    return join(this.snapshotsDir, String(id));
  }

  prepare(key: string, parent: string, labels: Record<string, string>): SnapshotMount[] {
    return this.create('active', key, parent, labels);
  }

  view(key: string, parent: string, labels: Record<string, string>): SnapshotMount[] {
    return this.create('view', key, parent, labels);
  }

  /**
   * Records the committed snapshot `name` (a remote-snapshot target) whose files
   * are a lazy mount of `source`, to be mounted at fsDirOf() by the caller. The
   * result says whether it was created or was already there (same parent: a
   * second Prepare for the same target).
   */
  createLazy(
    name: string,
    parent: string,
    labels: Record<string, string>,
    source: LazySource,
  ): { created: boolean; id: number } {
    checkKey(name, 'snapshot name');
    checkLabels(labels);
    return this.meta.transaction(() => {
      const old = this.meta.find(name);
      if (old) {
        if (old.kind === 'committed' && old.parent === parent) return { created: false, id: old.id };
        throw new CairnError(ErrorCode.ALREADY_EXISTS, `snapshot ${JSON.stringify(name)} already exists`);
      }
      if (parent !== '' && this.meta.get(parent).kind !== 'committed') {
        throw new CairnError(ErrorCode.INVALID_INPUT, `parent ${JSON.stringify(parent)} is not a committed snapshot`);
      }
      const t = this.now();
      const rec = this.meta.insert({
        key: name,
        parent,
        kind: 'committed',
        createdMs: t,
        updatedMs: t,
        labels,
        sizeBytes: 0,
        inodes: 0,
        lazy: source,
      });
      const dir = this.dirOf(rec.id);
      rmSync(dir, { recursive: true, force: true });
      mkdirSync(join(dir, 'fs'), { recursive: true, mode: 0o755 });
      return { created: true, id: rec.id };
    });
  }

  /** Forgets a lazy snapshot whose mount failed right after createLazy (no child can have it yet). */
  async dropLazy(name: string): Promise<void> {
    const rec = this.meta.find(name);
    if (rec?.lazy && !this.meta.hasChildren(name)) await this.remove(name);
  }

  /** The directory holding a snapshot's files (a lazy snapshot's mountpoint). */
  fsDirOf(id: number): string {
    return join(this.dirOf(id), 'fs');
  }

  /** The lazy snapshots, for re-establishing their mounts at start. */
  lazySnapshots(): { name: string; id: number; source: LazySource }[] {
    return this.meta.all().flatMap((r) => (r.lazy ? [{ name: r.key, id: r.id, source: r.lazy }] : []));
  }

  private create(
    kind: 'active' | 'view',
    key: string,
    parent: string,
    labels: Record<string, string>,
  ): SnapshotMount[] {
    checkKey(key, 'snapshot key');
    checkLabels(labels);
    return this.meta.transaction(() => {
      if (this.meta.find(key))
        throw new CairnError(ErrorCode.ALREADY_EXISTS, `snapshot ${JSON.stringify(key)} already exists`);
      if (parent !== '') {
        const p = this.meta.get(parent);
        if (p.kind !== 'committed') {
          throw new CairnError(ErrorCode.INVALID_INPUT, `parent ${JSON.stringify(parent)} is not a committed snapshot`);
        }
      }
      const t = this.now();
      const rec = this.meta.insert({
        key,
        parent,
        kind,
        createdMs: t,
        updatedMs: t,
        labels,
        sizeBytes: 0,
        inodes: 0,
      });
      // Inside the transaction: when mkdir fails, the row is not kept. A directory
      // already there belongs to no row (ids are fresh), so it is debris: replace it.
      const dir = this.dirOf(rec.id);
      rmSync(dir, { recursive: true, force: true });
      mkdirSync(join(dir, 'fs'), { recursive: true, mode: 0o755 });
      if (kind === 'active') mkdirSync(join(dir, 'work'), { mode: 0o711 });
      return this.mountsOf(rec);
    });
  }

  mounts(key: string): SnapshotMount[] {
    const rec = this.meta.get(key);
    if (rec.kind === 'committed') {
      throw new CairnError(
        ErrorCode.FAILED_PRECONDITION,
        `snapshot ${JSON.stringify(key)} is committed, not active or a view`,
      );
    }
    return this.mountsOf(rec);
  }

  /**
   * The lower directories of a snapshot with parent `parent`, top first. A lazy
   * snapshot's mount holds the merged image up to its layer, so the chain stops there.
   */
  private lowersOf(parent: string): string[] {
    if (parent === '') return [];
    const lowers: string[] = [];
    for (const p of this.meta.chain(parent)) {
      lowers.push(this.fsDirOf(p.id));
      if (p.lazy) break;
    }
    return lowers;
  }

  /** containerd overlayfs snapshotter's mounts: bind without parents (or a view of one), overlay otherwise. */
  private mountsOf(rec: SnapshotRecord): SnapshotMount[] {
    const lowers = this.lowersOf(rec.parent);
    const fs = join(this.dirOf(rec.id), 'fs');
    if (lowers.length === 0) {
      return [{ type: 'bind', source: fs, options: [rec.kind === 'active' ? 'rw' : 'ro', 'rbind'] }];
    }
    if (rec.kind === 'view') {
      if (lowers.length === 1) return [{ type: 'bind', source: lowers[0]!, options: ['ro', 'rbind'] }];
      return [{ type: 'overlay', source: 'overlay', options: [`lowerdir=${lowers.join(':')}`] }];
    }
    return [
      {
        type: 'overlay',
        source: 'overlay',
        options: [
          'index=off',
          `workdir=${join(this.dirOf(rec.id), 'work')}`,
          `upperdir=${fs}`,
          `lowerdir=${lowers.join(':')}`,
        ],
      },
    ];
  }

  async commit(name: string, key: string, labels: Record<string, string>): Promise<void> {
    checkKey(name, 'snapshot name');
    checkKey(key, 'snapshot key');
    checkLabels(labels);
    const activeOf = (): SnapshotRecord => {
      const rec = this.meta.get(key);
      if (rec.kind !== 'active') {
        throw new CairnError(
          ErrorCode.FAILED_PRECONDITION,
          `snapshot ${JSON.stringify(key)} is ${rec.kind}, not active`,
        );
      }
      if (this.meta.find(name))
        throw new CairnError(ErrorCode.ALREADY_EXISTS, `snapshot ${JSON.stringify(name)} already exists`);
      return rec;
    };
    const before = activeOf();
    // Usage is measured before the transaction (it walks the tree); the snapshot is
    // checked again inside it, in case a concurrent call changed it meanwhile.
    const usage = await diskUsage(join(this.dirOf(before.id), 'fs'));
    this.meta.transaction(() => {
      const rec = activeOf();
      if (rec.id !== before.id)
        throw new CairnError(ErrorCode.FAILED_PRECONDITION, `snapshot ${JSON.stringify(key)} changed during commit`);
      this.meta.commit(key, name, labels, usage, this.now());
    });
  }

  async remove(key: string): Promise<void> {
    checkKey(key, 'snapshot key');
    const rec = this.meta.transaction(() => {
      const r = this.meta.get(key);
      if (this.meta.hasChildren(key)) {
        throw new CairnError(
          ErrorCode.FAILED_PRECONDITION,
          `snapshot ${JSON.stringify(key)} has children: cannot remove it`,
        );
      }
      this.meta.delete(key);
      return r;
    });
    // The metadata is gone, so the directory is debris now; if removing it fails, Cleanup retries.
    await this.removeDir(rec.id, rec.lazy !== undefined);
  }

  /** Removes a snapshot directory, taking down a lazy mount in it first (never rm -r through a mount). */
  private async removeDir(id: number, lazy: boolean): Promise<boolean> {
    const fs = this.fsDirOf(id);
    try {
      if (lazy || (await mountedType(fs)) !== undefined) await this.unmountLazy(fs);
      if ((await mountedType(fs)) !== undefined) return false;
      await rm(this.dirOf(id), { recursive: true, force: true });
      return true;
    } catch {
      return false;
    }
  }

  stat(key: string): SnapshotInfo {
    return infoOf(this.meta.get(key));
  }

  /**
   * Updates labels, the only mutable field. Paths: none (replace all mutable
   * fields), "labels" (replace all labels), "labels.KEY" (set KEY from info, or
   * delete it when info has none).
   */
  update(info: { name: string; labels: Record<string, string> }, fieldPaths: readonly string[]): SnapshotInfo {
    checkKey(info.name, 'snapshot name');
    checkLabels(info.labels);
    return this.meta.transaction(() => {
      const rec = this.meta.get(info.name);
      let labels: Record<string, string>;
      if (fieldPaths.length === 0) labels = { ...info.labels };
      else {
        labels = { ...rec.labels };
        for (const path of fieldPaths) {
          if (path === 'labels') labels = { ...info.labels };
          else if (path.startsWith('labels.') && path.length > 'labels.'.length) {
            const k = path.slice('labels.'.length);
            const v = info.labels[k];
            if (v === undefined) delete labels[k];
            else labels[k] = v;
          } else {
            throw new CairnError(
              ErrorCode.INVALID_INPUT,
              `cannot update field ${JSON.stringify(path)} of a snapshot (only labels)`,
            );
          }
        }
      }
      const t = this.now();
      this.meta.setLabels(info.name, labels, t);
      return { ...infoOf(rec), labels, updatedMs: t };
    });
  }

  list(filters: readonly string[]): SnapshotInfo[] {
    const match = compileFilters(filters);
    return this.meta.all().filter(match).map(infoOf);
  }

  /** Committed: what was measured at commit. Active: measured now. View: nothing of its own. */
  async usage(key: string): Promise<DiskUsage> {
    const rec = this.meta.get(key);
    if (rec.kind === 'active') return diskUsage(join(this.dirOf(rec.id), 'fs'));
    return { sizeBytes: rec.sizeBytes, inodes: rec.inodes };
  }

  /** Removes snapshot directories that no metadata refers to; returns their names. */
  async cleanup(): Promise<string[]> {
    const ids = this.meta.ids();
    const removed: string[] = [];
    for (const name of await readdir(this.snapshotsDir)) {
      const id = /^\d+$/.test(name) ? Number(name) : NaN;
      if (Number.isSafeInteger(id) && ids.has(id)) continue;
      // Re-read inside the loop: a Prepare may have created this id since ids() was taken.
      if (Number.isSafeInteger(id) && this.meta.ids().has(id)) continue;
      if (Number.isSafeInteger(id)) {
        if (await this.removeDir(id, false)) removed.push(name);
        continue;
      }
      await rm(join(this.snapshotsDir, name), { recursive: true, force: true });
      removed.push(name);
    }
    return removed;
  }

  close(): void {
    this.meta.close();
  }
}
