/**
 * The snapshotter's metadata in SQLite: one row per snapshot, keyed by its
 * containerd key (or committed name). Directory ids come from an AUTOINCREMENT
 * column, so SQLite never hands out an id twice, even after rows are deleted:
 * a directory left behind by a crash can never be confused with a new snapshot.
 */
import Database from 'better-sqlite3';
import { CairnError, ErrorCode, toCairnError } from '../model/errors.js';
import type { LazySource } from './lazy-mounts.js';

export type SnapshotKind = 'view' | 'active' | 'committed';

export interface SnapshotRecord {
  /** Directory id: unique, never reused. */
  id: number;
  key: string;
  /** Key of the parent snapshot (always committed), or '' for none. */
  parent: string;
  kind: SnapshotKind;
  createdMs: number;
  updatedMs: number;
  labels: Record<string, string>;
  /** Disk usage recorded at commit (committed snapshots only). */
  sizeBytes: number;
  inodes: number;
  /** For a lazy snapshot (committed, its fs a mount of cairn's daemon): what is mounted there. */
  lazy?: LazySource;
}

interface Row {
  id: number;
  key: string;
  parent: string;
  kind: SnapshotKind;
  created_ms: number;
  updated_ms: number;
  labels: string;
  size_bytes: number;
  inodes: number;
  lazy: string | null;
}

const SCHEMA = `
CREATE TABLE IF NOT EXISTS snapshots (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  key TEXT NOT NULL UNIQUE,
  parent TEXT NOT NULL,
  kind TEXT NOT NULL CHECK (kind IN ('view', 'active', 'committed')),
  created_ms INTEGER NOT NULL,
  updated_ms INTEGER NOT NULL,
  labels TEXT NOT NULL,
  size_bytes INTEGER NOT NULL DEFAULT 0,
  inodes INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS snapshots_parent ON snapshots(parent);
`;

/** Added with the lazy path: a database made before it gets the column (NULL: not lazy). */
const LAZY_COLUMN = 'ALTER TABLE snapshots ADD COLUMN lazy TEXT';

function fromRow(r: Row): SnapshotRecord {
  return {
    id: r.id,
    key: r.key,
    parent: r.parent,
    kind: r.kind,
    createdMs: r.created_ms,
    updatedMs: r.updated_ms,
    labels: JSON.parse(r.labels) as Record<string, string>,
    sizeBytes: r.size_bytes,
    inodes: r.inodes,
    ...(r.lazy ? { lazy: JSON.parse(r.lazy) as LazySource } : {}),
  };
}

export class SnapshotMetadata {
  private readonly db: Database.Database;
  private closed = false;

  constructor(file: string) {
    try {
      this.db = new Database(file);
      this.db.pragma('busy_timeout = 10000');
      this.db.pragma('journal_mode = WAL');
      // containerd believes what we answer: an acknowledged change must survive a crash.
      this.db.pragma('synchronous = FULL');
      this.db.exec(SCHEMA);
      const columns = this.db.prepare('PRAGMA table_info(snapshots)').all() as { name: string }[];
      if (!columns.some((c) => c.name === 'lazy')) this.db.exec(LAZY_COLUMN);
    } catch (err) {
      throw toCairnError(err, ErrorCode.STORAGE, `snapshot metadata ${file}`);
    }
  }

  /** Runs fn in one write transaction: its checks and changes are atomic. */
  transaction<T>(fn: () => T): T {
    return this.db.transaction(fn).immediate();
  }

  find(key: string): SnapshotRecord | undefined {
    const row = this.db.prepare('SELECT * FROM snapshots WHERE key = ?').get(key) as Row | undefined;
    return row ? fromRow(row) : undefined;
  }

  get(key: string): SnapshotRecord {
    const rec = this.find(key);
    if (!rec) throw new CairnError(ErrorCode.NOT_FOUND, `snapshot ${JSON.stringify(key)} does not exist`);
    return rec;
  }

  /** The snapshot and its ancestors, nearest first. */
  chain(key: string): SnapshotRecord[] {
    const out: SnapshotRecord[] = [];
    for (let k = key; k !== '';) {
      const rec = this.get(k);
      out.push(rec);
      k = rec.parent;
    }
    return out;
  }

  insert(rec: Omit<SnapshotRecord, 'id'>): SnapshotRecord {
    const r = this.db
      .prepare(
        `INSERT INTO snapshots (key, parent, kind, created_ms, updated_ms, labels, size_bytes, inodes, lazy)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      )
      .run(
        rec.key,
        rec.parent,
        rec.kind,
        rec.createdMs,
        rec.updatedMs,
        JSON.stringify(rec.labels),
        rec.sizeBytes,
        rec.inodes,
        rec.lazy ? JSON.stringify(rec.lazy) : null,
      );
    return { ...rec, id: Number(r.lastInsertRowid) };
  }

  /** Turns an active snapshot into a committed one under a new key, keeping its id (and so its directory). */
  commit(
    key: string,
    name: string,
    labels: Record<string, string>,
    usage: { sizeBytes: number; inodes: number },
    nowMs: number,
  ): void {
    this.db
      .prepare(
        `UPDATE snapshots SET key = ?, kind = 'committed', labels = ?, size_bytes = ?, inodes = ?,
         created_ms = ?, updated_ms = ? WHERE key = ?`,
      )
      .run(name, JSON.stringify(labels), usage.sizeBytes, usage.inodes, nowMs, nowMs, key);
  }

  setLabels(key: string, labels: Record<string, string>, nowMs: number): void {
    this.db
      .prepare('UPDATE snapshots SET labels = ?, updated_ms = ? WHERE key = ?')
      .run(JSON.stringify(labels), nowMs, key);
  }

  hasChildren(key: string): boolean {
    return this.db.prepare('SELECT 1 FROM snapshots WHERE parent = ? LIMIT 1').get(key) !== undefined;
  }

  delete(key: string): void {
    this.db.prepare('DELETE FROM snapshots WHERE key = ?').run(key);
  }

  all(): SnapshotRecord[] {
    return (this.db.prepare('SELECT * FROM snapshots ORDER BY id').all() as Row[]).map(fromRow);
  }

  ids(): Set<number> {
    return new Set((this.db.prepare('SELECT id FROM snapshots').all() as { id: number }[]).map((r) => r.id));
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.db.close();
  }
}
