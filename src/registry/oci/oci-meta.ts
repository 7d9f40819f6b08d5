import type Database from 'better-sqlite3';
import { toCairnError, ErrorCode } from '../../model/errors.js';
import type { Digest } from '../../model/digest.js';

/*
 * The /v2 API's own tables, in the registry's database. Images themselves live
 * in the importer's tables; these record manifests as clients pushed them and
 * as cairn serves them, tags of the /v2 API, and compressed blobs due for removal.
 */
const SCHEMA = `
-- Every manifest a repository answers to, by the digest of these exact bytes.
-- served: the digest a tag on this manifest resolves to (itself, or its rewrite).
CREATE TABLE IF NOT EXISTS oci_manifests (
  repository TEXT NOT NULL,
  digest TEXT NOT NULL,
  media_type TEXT NOT NULL,
  data BLOB NOT NULL,
  served TEXT NOT NULL,
  image TEXT,
  created_ms INTEGER NOT NULL,
  PRIMARY KEY (repository, digest)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS oci_tags (
  repository TEXT NOT NULL,
  tag TEXT NOT NULL,
  digest TEXT NOT NULL,
  updated_ms INTEGER NOT NULL,
  PRIMARY KEY (repository, tag)
) WITHOUT ROWID;
-- Compressed layer blobs whose contents are in the file store: removed after due_ms.
CREATE TABLE IF NOT EXISTS oci_blob_drops (
  digest TEXT PRIMARY KEY,
  due_ms INTEGER NOT NULL
) WITHOUT ROWID;
`;

export interface ManifestRow {
  repository: string;
  digest: Digest;
  mediaType: string;
  data: Buffer;
  served: Digest;
  image: Digest | null;
}

export class OciMeta {
  constructor(private readonly db: Database.Database) {
    try {
      db.exec(SCHEMA);
    } catch (err) {
      throw toCairnError(err, ErrorCode.STORAGE, 'creating the /v2 tables');
    }
  }

  manifest(repository: string, digest: string): ManifestRow | undefined {
    return this.db
      .prepare(
        `SELECT repository, digest, media_type AS mediaType, data, served, image FROM oci_manifests
          WHERE repository = ? AND digest = ?`,
      )
      .get(repository, digest) as ManifestRow | undefined;
  }

  /** Records manifests and (optionally) a tag in one transaction. */
  putManifests(rows: ManifestRow[], tag: { repository: string; tag: string; digest: Digest } | undefined): void {
    const now = Date.now();
    const tx = this.db.transaction(() => {
      for (const m of rows) {
        this.db.prepare('INSERT OR IGNORE INTO repositories (name, created_ms) VALUES (?, ?)').run(m.repository, now);
        this.db
          .prepare(
            `INSERT INTO oci_manifests (repository, digest, media_type, data, served, image, created_ms)
             VALUES (?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (repository, digest) DO UPDATE SET served = excluded.served, image = excluded.image`,
          )
          .run(m.repository, m.digest, m.mediaType, m.data, m.served, m.image, now);
      }
      if (tag) {
        this.db
          .prepare(
            `INSERT INTO oci_tags (repository, tag, digest, updated_ms) VALUES (?, ?, ?, ?)
             ON CONFLICT (repository, tag) DO UPDATE SET digest = excluded.digest, updated_ms = excluded.updated_ms`,
          )
          .run(tag.repository, tag.tag, tag.digest, now);
      }
    });
    try {
      tx.immediate();
    } catch (err) {
      throw toCairnError(err, ErrorCode.STORAGE, 'recording manifest');
    }
  }

  tag(repository: string, tag: string): { digest: Digest; updatedMs: number } | undefined {
    return this.db
      .prepare('SELECT digest, updated_ms AS updatedMs FROM oci_tags WHERE repository = ? AND tag = ?')
      .get(repository, tag) as { digest: Digest; updatedMs: number } | undefined;
  }

  /** Tags of a repository from both APIs (imports tag in `tags`, pushes in `oci_tags`), sorted. */
  tagNames(repository: string): string[] {
    const rows = this.db
      .prepare(
        `SELECT tag FROM oci_tags WHERE repository = ? UNION SELECT tag FROM tags WHERE repository = ? ORDER BY tag`,
      )
      .all(repository, repository) as { tag: string }[];
    return rows.map((r) => r.tag);
  }

  /** Removes a tag from both APIs; true when there was one. */
  deleteTag(repository: string, tag: string): boolean {
    return this.db
      .transaction(() => {
        const a = this.db.prepare('DELETE FROM oci_tags WHERE repository = ? AND tag = ?').run(repository, tag);
        const b = this.db.prepare('DELETE FROM tags WHERE repository = ? AND tag = ?').run(repository, tag);
        return a.changes + b.changes > 0;
      })
      .immediate();
  }

  /**
   * Removes a manifest (and its rewrite or original) from a repository, with the
   * tags that resolve to it. An image no repository holds any more is left for
   * `cairn registry gc` (MetadataStore.pruneUnheldImages) to remove.
   */
  deleteManifest(repository: string, digest: Digest, image: Digest | null): void {
    this.db
      .transaction(() => {
        // The pushed form and the served form name each other through `served`: whichever digest the
        // client deletes, both go, with every tag on either.
        const linked = this.db
          .prepare(
            `SELECT digest, served FROM oci_manifests WHERE repository = ? AND (digest = ? OR served = ?
               OR served = (SELECT served FROM oci_manifests WHERE repository = ? AND digest = ?))`,
          )
          .all(repository, digest, digest, repository, digest) as { digest: string; served: string }[];
        const all = new Set([digest, ...linked.flatMap((r) => [r.digest, r.served])]);
        for (const d of all) {
          this.db.prepare('DELETE FROM oci_manifests WHERE repository = ? AND digest = ?').run(repository, d);
          this.db.prepare('DELETE FROM oci_tags WHERE repository = ? AND digest = ?').run(repository, d);
        }
        if (image) {
          this.db.prepare('DELETE FROM tags WHERE repository = ? AND image = ?').run(repository, image);
          this.db.prepare('DELETE FROM repository_images WHERE repository = ? AND image = ?').run(repository, image);
        }
      })
      .immediate();
  }

  scheduleBlobDrops(digests: Digest[], dueMs: number): void {
    const stmt = this.db.prepare(
      `INSERT INTO oci_blob_drops (digest, due_ms) VALUES (?, ?)
       ON CONFLICT (digest) DO UPDATE SET due_ms = max(due_ms, excluded.due_ms)`,
    );
    this.db.transaction(() => digests.forEach((d) => stmt.run(d, dueMs))).immediate();
  }

  /** Blobs due for removal now; removed from the list as they are returned. */
  takeDueBlobDrops(nowMs: number): Digest[] {
    return this.db
      .transaction(() => {
        const rows = this.db.prepare('SELECT digest FROM oci_blob_drops WHERE due_ms <= ?').all(nowMs) as {
          digest: Digest;
        }[];
        this.db.prepare('DELETE FROM oci_blob_drops WHERE due_ms <= ?').run(nowMs);
        return rows.map((r) => r.digest);
      })
      .immediate();
  }

  /** A stored image config by its digest (configs live in the images table). */
  config(digest: Digest): Buffer | undefined {
    const row = this.db.prepare('SELECT config FROM images WHERE config_digest = ? LIMIT 1').get(digest) as
      { config: Buffer } | undefined;
    return row?.config;
  }

  /** The layer whose uncompressed tar has this digest, to rebuild it. */
  layerByDiffId(diffId: Digest): { recipe: Digest; skeleton: Digest; tarBytes: number } | undefined {
    return this.db
      .prepare('SELECT recipe, skeleton, tar_bytes AS tarBytes FROM image_layers WHERE diff_id = ? LIMIT 1')
      .get(diffId) as { recipe: Digest; skeleton: Digest; tarBytes: number } | undefined;
  }

  /** Images of a repository (for manifests of imported images that /v2 has not served yet). */
  repositoryImages(repository: string): Digest[] {
    return (
      this.db.prepare('SELECT image FROM repository_images WHERE repository = ?').all(repository) as {
        image: Digest;
      }[]
    ).map((r) => r.image);
  }

  /** Whether a blob is still named by a manifest that is stored verbatim with it (so it must stay). */
  /** Whether any stored manifest (pushed or served form, any repository) names `digest`. */
  manifestNames(digest: Digest): boolean {
    return this.db.prepare(`SELECT 1 FROM oci_manifests WHERE instr(data, ?) > 0 LIMIT 1`).get(digest) !== undefined;
  }

  blobNeededVerbatim(digest: Digest): boolean {
    // Manifests that are not images (artifacts, indexes) are served as pushed: their blobs must stay.
    const rows = this.db
      .prepare(`SELECT data FROM oci_manifests WHERE image IS NULL AND instr(data, ?) > 0 LIMIT 1`)
      .all(digest) as { data: Buffer }[];
    return rows.length > 0;
  }
}
