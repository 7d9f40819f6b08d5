import Database from 'better-sqlite3';
import { join } from 'node:path';
import { CairnError, ErrorCode, toCairnError } from '../model/errors.js';
import type { Digest } from '../model/digest.js';
import { CHUNK_BYTES, LEGACY_CHUNK_BYTES } from '../model/chunks.js';
import { mergeProfiles, profileRows, type ProfileEntry } from '../model/read-profile.js';

const SCHEMA_VERSION = 1;

const SCHEMA = `
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS repositories (
  name TEXT PRIMARY KEY,
  created_ms INTEGER NOT NULL
) WITHOUT ROWID;
-- An image as imported: manifest and config verbatim.
CREATE TABLE IF NOT EXISTS images (
  digest TEXT PRIMARY KEY,
  manifest BLOB NOT NULL,
  manifest_media_type TEXT NOT NULL,
  config BLOB NOT NULL,
  config_digest TEXT NOT NULL,
  platform TEXT NOT NULL,
  created_ms INTEGER NOT NULL
) WITHOUT ROWID;
-- Recipes: content-addressed layers (gzip of canonical JSON), shared by every image that has the same entries.
CREATE TABLE IF NOT EXISTS recipes (
  id TEXT PRIMARY KEY,
  data BLOB NOT NULL,
  raw_bytes INTEGER NOT NULL,
  entries INTEGER NOT NULL,
  files INTEGER NOT NULL,
  file_bytes INTEGER NOT NULL,
  refcount INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
-- Distinct contents each recipe references (count = regular files with that content in it).
CREATE TABLE IF NOT EXISTS recipe_files (
  recipe TEXT NOT NULL REFERENCES recipes(id) ON DELETE CASCADE,
  digest TEXT NOT NULL REFERENCES files(digest),
  count INTEGER NOT NULL,
  PRIMARY KEY (recipe, digest)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS recipe_files_by_digest ON recipe_files(digest);
-- Stored contents; refcount = number of recipes that reference the content.
-- chunks: packed sha256 of each chunk_bytes piece, for contents over one piece (lazy readers verify by
-- chunk); chunk_bytes is NULL with chunks NULL, and for rows written before it was recorded (1 MiB pieces).
CREATE TABLE IF NOT EXISTS files (
  digest TEXT PRIMARY KEY,
  size INTEGER NOT NULL,
  refcount INTEGER NOT NULL DEFAULT 0,
  chunks BLOB,
  chunk_bytes INTEGER
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS skeletons (
  digest TEXT PRIMARY KEY,
  data BLOB NOT NULL
) WITHOUT ROWID;
-- The layers of an image, bottom (0) to top, with the digests they had as tars.
CREATE TABLE IF NOT EXISTS image_layers (
  image TEXT NOT NULL REFERENCES images(digest) ON DELETE CASCADE,
  position INTEGER NOT NULL,
  recipe TEXT NOT NULL REFERENCES recipes(id),
  diff_id TEXT NOT NULL,
  blob_digest TEXT NOT NULL,
  blob_size INTEGER NOT NULL,
  media_type TEXT NOT NULL,
  tar_bytes INTEGER NOT NULL,
  skeleton TEXT NOT NULL REFERENCES skeletons(digest),
  PRIMARY KEY (image, position)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS image_layers_by_diff_id ON image_layers(diff_id);
CREATE TABLE IF NOT EXISTS repository_images (
  repository TEXT NOT NULL REFERENCES repositories(name) ON DELETE CASCADE,
  image TEXT NOT NULL REFERENCES images(digest),
  PRIMARY KEY (repository, image)
) WITHOUT ROWID;
-- Images made by reconstruction (src/reconstruct): which image each one regroups, and how.
CREATE TABLE IF NOT EXISTS reconstructions (
  image TEXT PRIMARY KEY REFERENCES images(digest),
  original TEXT NOT NULL REFERENCES images(digest),
  algorithm TEXT NOT NULL,
  created_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS reconstructions_by_original ON reconstructions(original);
CREATE TABLE IF NOT EXISTS tags (
  repository TEXT NOT NULL REFERENCES repositories(name) ON DELETE CASCADE,
  tag TEXT NOT NULL,
  image TEXT NOT NULL REFERENCES images(digest),
  updated_ms INTEGER NOT NULL,
  PRIMARY KEY (repository, tag)
) WITHOUT ROWID;
-- Read profiles: the contents mounts of an image read soon after mounting, in first-read order
-- (JSON [[digest, size], ...]), shared by daemons so that a node that never ran the image can prefetch.
CREATE TABLE IF NOT EXISTS read_profiles (
  image TEXT PRIMARY KEY REFERENCES images(digest) ON DELETE CASCADE,
  files TEXT NOT NULL,
  updated_ms INTEGER NOT NULL
) WITHOUT ROWID;
`;

export interface LayerRow {
  position: number;
  recipe: Digest;
  diffId: Digest;
  blobDigest: Digest;
  blobSize: number;
  mediaType: string;
  tarBytes: number;
  skeleton: Digest;
  entries: number;
  files: number;
  fileBytes: number;
}

export interface ImageRow {
  digest: Digest;
  manifest: Buffer;
  manifestMediaType: string;
  config: Buffer;
  configDigest: Digest;
  platform: string;
  createdMs: number;
  layers: LayerRow[];
}

export interface NewRecipe {
  id: Digest;
  gz: Buffer;
  rawBytes: number;
  entries: number;
  /** `chunkBytes`: the piece size of `chunks` (CHUNK_BYTES when absent). */
  files: Map<Digest, { size: number; count: number; chunks: Buffer | undefined; chunkBytes?: number }>;
}

export interface NewImage {
  repository: string;
  /** Undefined: the image joins the repository untagged. */
  tag: string | undefined;
  digest: Digest;
  manifest: Buffer;
  manifestMediaType: string;
  config: Buffer;
  configDigest: Digest;
  platform: string;
  layers: {
    recipe: NewRecipe;
    diffId: Digest;
    blobDigest: Digest;
    blobSize: number;
    mediaType: string;
    tarBytes: number;
    skeleton: { digest: Digest; data: Buffer };
  }[];
  /** Set for an image made by reconstruction: the image it regroups and the algorithm. */
  reconstructedFrom?: { original: Digest; algorithm: string };
}

export interface StoreTotals {
  images: number;
  repositories: number;
  tags: number;
  layers: number;
  entries: number;
  files: number;
  uniqueFiles: number;
  fileBytes: number;
  storedBytes: number;
  recipeBytes: number;
  skeletonBytes: number;
}

export { checkRepositoryName, checkTag } from '../model/reference.js';

/**
 * The registry's metadata in SQLite (WAL). Writers commit an import in one
 * transaction; readers in other processes see the state before or after it.
 */
export class MetadataStore {
  readonly db: Database.Database;
  private closed = false;
  private hasChunkBytes: boolean | undefined;

  constructor(opts: { root: string; readonly?: boolean }) {
    const file = join(opts.root, 'registry.db');
    try {
      this.db = new Database(file, { readonly: opts.readonly ?? false, fileMustExist: opts.readonly ?? false });
      this.db.pragma('busy_timeout = 10000');
      if (!opts.readonly) {
        this.db.pragma('journal_mode = WAL');
        this.db.pragma('synchronous = FULL');
        this.db.pragma('foreign_keys = ON');
        this.db.exec(SCHEMA);
        this.addChunkBytesColumn();
        const v = this.db.prepare(`SELECT value FROM meta WHERE key = 'schema'`).get() as { value: string } | undefined;
        if (!v) this.db.prepare(`INSERT INTO meta (key, value) VALUES ('schema', ?)`).run(String(SCHEMA_VERSION));
        else if (Number(v.value) !== SCHEMA_VERSION) {
          throw new CairnError(
            ErrorCode.STORAGE,
            `${file}: schema version ${v.value}, this cairn reads ${SCHEMA_VERSION}`,
          );
        }
      }
    } catch (err) {
      throw toCairnError(err, ErrorCode.STORAGE, `opening ${file}`);
    }
  }

  /**
   * A store written before chunk sizes were recorded has no files.chunk_bytes:
   * added (NULL, which means 1 MiB pieces), so its rows are served as they were.
   */
  private addChunkBytesColumn(): void {
    const add = this.db.transaction(() => {
      const cols = this.db.prepare(`SELECT name FROM pragma_table_info('files')`).all() as { name: string }[];
      if (!cols.some((c) => c.name === 'chunk_bytes')) this.db.exec('ALTER TABLE files ADD COLUMN chunk_bytes INTEGER');
    });
    // Immediate: two processes opening an old store at once must not both add it.
    add.immediate();
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.db.close();
  }

  /** Contents already known to the store (to skip writing them again). */
  hasFile(digest: Digest): boolean {
    return this.db.prepare('SELECT 1 FROM files WHERE digest = ?').get(digest) !== undefined;
  }

  /** Records an imported image and tags it, all in one transaction. */
  commitImage(img: NewImage): void {
    const now = Date.now();
    const db = this.db;
    const tx = db.transaction(() => {
      db.prepare('INSERT OR IGNORE INTO repositories (name, created_ms) VALUES (?, ?)').run(img.repository, now);
      const exists = db.prepare('SELECT 1 FROM images WHERE digest = ?').get(img.digest) !== undefined;
      if (!exists) {
        db.prepare(
          `INSERT INTO images (digest, manifest, manifest_media_type, config, config_digest, platform, created_ms)
           VALUES (?, ?, ?, ?, ?, ?, ?)`,
        ).run(img.digest, img.manifest, img.manifestMediaType, img.config, img.configDigest, img.platform, now);
        img.layers.forEach((layer, position) => {
          this.addRecipe(layer.recipe);
          db.prepare('INSERT OR IGNORE INTO skeletons (digest, data) VALUES (?, ?)').run(
            layer.skeleton.digest,
            layer.skeleton.data,
          );
          db.prepare(
            `INSERT INTO image_layers (image, position, recipe, diff_id, blob_digest, blob_size, media_type, tar_bytes, skeleton)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
          ).run(
            img.digest,
            position,
            layer.recipe.id,
            layer.diffId,
            layer.blobDigest,
            layer.blobSize,
            layer.mediaType,
            layer.tarBytes,
            layer.skeleton.digest,
          );
          db.prepare('UPDATE recipes SET refcount = refcount + 1 WHERE id = ?').run(layer.recipe.id);
        });
      }
      if (img.reconstructedFrom) {
        db.prepare(
          'INSERT OR IGNORE INTO reconstructions (image, original, algorithm, created_ms) VALUES (?, ?, ?, ?)',
        ).run(img.digest, img.reconstructedFrom.original, img.reconstructedFrom.algorithm, now);
      }
      db.prepare('INSERT OR IGNORE INTO repository_images (repository, image) VALUES (?, ?)').run(
        img.repository,
        img.digest,
      );
      if (img.tag !== undefined) {
        db.prepare(
          `INSERT INTO tags (repository, tag, image, updated_ms) VALUES (?, ?, ?, ?)
           ON CONFLICT (repository, tag) DO UPDATE SET image = excluded.image, updated_ms = excluded.updated_ms
           WHERE tags.image != excluded.image`,
        ).run(img.repository, img.tag, img.digest, now);
      }
    });
    try {
      tx.immediate();
    } catch (err) {
      throw toCairnError(err, ErrorCode.STORAGE, `recording image ${img.digest}`);
    }
  }

  private addRecipe(r: NewRecipe): void {
    const db = this.db;
    let files = 0;
    let fileBytes = 0;
    for (const f of r.files.values()) {
      files += f.count;
      fileBytes += f.size * f.count;
    }
    const inserted = db
      .prepare(
        `INSERT OR IGNORE INTO recipes (id, data, raw_bytes, entries, files, file_bytes, refcount) VALUES (?, ?, ?, ?, ?, ?, 0)`,
      )
      .run(r.id, r.gz, r.rawBytes, r.entries, files, fileBytes);
    if (inserted.changes === 0) return;
    const addFile = db.prepare(
      // A row keeps its chunk list, and the size of its pieces with it (SET reads the old row).
      `INSERT INTO files (digest, size, refcount, chunks, chunk_bytes) VALUES (?, ?, 1, ?, ?)
       ON CONFLICT (digest) DO UPDATE SET refcount = refcount + 1,
         chunk_bytes = CASE WHEN files.chunks IS NULL THEN excluded.chunk_bytes ELSE files.chunk_bytes END,
         chunks = coalesce(files.chunks, excluded.chunks)`,
    );
    const link = db.prepare('INSERT INTO recipe_files (recipe, digest, count) VALUES (?, ?, ?)');
    for (const [digest, f] of r.files) {
      addFile.run(digest, f.size, f.chunks ?? null, f.chunks ? (f.chunkBytes ?? CHUNK_BYTES) : null);
      link.run(r.id, digest, f.count);
    }
  }

  repositories(): string[] {
    return (this.db.prepare('SELECT name FROM repositories ORDER BY name').all() as { name: string }[]).map(
      (r) => r.name,
    );
  }

  tags(repository: string): { tag: string; image: Digest; updatedMs: number }[] {
    return this.db
      .prepare('SELECT tag, image, updated_ms AS updatedMs FROM tags WHERE repository = ? ORDER BY tag')
      .all(repository) as { tag: string; image: Digest; updatedMs: number }[];
  }

  hasRepository(repository: string): boolean {
    return this.db.prepare('SELECT 1 FROM repositories WHERE name = ?').get(repository) !== undefined;
  }

  /** Resolves `tag` or a digest within a repository (a digest must belong to it). */
  resolve(repository: string, reference: string): Digest | undefined {
    if (reference.startsWith('sha256:')) {
      const row = this.db
        .prepare('SELECT image FROM repository_images WHERE repository = ? AND image = ?')
        .get(repository, reference) as { image: Digest } | undefined;
      return row?.image;
    }
    const row = this.db
      .prepare('SELECT image FROM tags WHERE repository = ? AND tag = ?')
      .get(repository, reference) as { image: Digest } | undefined;
    return row?.image;
  }

  /** An image with its layers, read in one transaction so it is never a mix of two imports. */
  image(digest: Digest): ImageRow | undefined {
    const read = this.db.transaction((): ImageRow | undefined => {
      const row = this.db
        .prepare(
          `SELECT digest, manifest, manifest_media_type AS manifestMediaType, config, config_digest AS configDigest,
                  platform, created_ms AS createdMs FROM images WHERE digest = ?`,
        )
        .get(digest) as Omit<ImageRow, 'layers'> | undefined;
      if (!row) return undefined;
      const layers = this.db
        .prepare(
          `SELECT l.position, l.recipe, l.diff_id AS diffId, l.blob_digest AS blobDigest, l.blob_size AS blobSize,
                  l.media_type AS mediaType, l.tar_bytes AS tarBytes, l.skeleton,
                  r.entries, r.files, r.file_bytes AS fileBytes
             FROM image_layers l JOIN recipes r ON r.id = l.recipe WHERE l.image = ? ORDER BY l.position`,
        )
        .all(digest) as LayerRow[];
      return { ...row, layers };
    });
    return read.deferred();
  }

  /** Resolves and reads together, in one read transaction. */
  imageByReference(repository: string, reference: string): ImageRow | undefined {
    return this.db
      .transaction(() => {
        const d = this.resolve(repository, reference);
        return d === undefined ? undefined : this.image(d);
      })
      .deferred();
  }

  recipe(id: Digest): Buffer | undefined {
    const row = this.db.prepare('SELECT data FROM recipes WHERE id = ?').get(id) as { data: Buffer } | undefined;
    return row?.data;
  }

  skeleton(digest: Digest): Buffer | undefined {
    const row = this.db.prepare('SELECT data FROM skeletons WHERE digest = ?').get(digest) as
      { data: Buffer } | undefined;
    return row?.data;
  }

  /**
   * A stored content's size, packed chunk digests (undefined chunks: at most
   * one chunk) and the size of the pieces they cover (LEGACY_CHUNK_BYTES for
   * rows written before it was recorded, and for whole contents of those).
   */
  file(digest: Digest): { size: number; chunks: Buffer | undefined; chunkBytes: number } | undefined {
    // A store opened read-only may predate the column (a writer adds it, maybe later: not cached while absent).
    if (this.hasChunkBytes !== true)
      this.hasChunkBytes = (
        this.db.prepare(`SELECT name FROM pragma_table_info('files')`).all() as { name: string }[]
      ).some((c) => c.name === 'chunk_bytes');
    const row = this.db
      .prepare(
        `SELECT size, chunks, ${this.hasChunkBytes ? 'chunk_bytes' : 'NULL AS chunk_bytes'} FROM files WHERE digest = ?`,
      )
      .get(digest) as { size: number; chunks: Buffer | null; chunk_bytes: number | null } | undefined;
    if (!row) return undefined;
    return { size: row.size, chunks: row.chunks ?? undefined, chunkBytes: row.chunk_bytes ?? LEGACY_CHUNK_BYTES };
  }

  /** The read profile of image `digest` (empty when none was shared, or the store predates profiles). */
  readProfile(digest: Digest): ProfileEntry[] {
    let row: { files: string } | undefined;
    try {
      row = this.db.prepare('SELECT files FROM read_profiles WHERE image = ?').get(digest) as
        { files: string } | undefined;
    } catch (err) {
      // A store opened read-only that no writer has opened since profiles exist has no table yet.
      if (/no such table/.test((err as Error).message)) return [];
      throw toCairnError(err, ErrorCode.STORAGE, `reading the read profile of ${digest}`);
    }
    if (!row) return [];
    return (JSON.parse(row.files) as [Digest, number, number[]?][]).map(([d, size, blocks]) =>
      blocks ? { digest: d, size, blocks } : { digest: d, size },
    );
  }

  /**
   * Merges `entries` into image `digest`'s read profile: contents already in it
   * keep their place, new ones are appended in the order given, up to `max`.
   * Every entry must be a regular file's content of one of the image's layers,
   * with its stored size; one that is not fails the whole merge (INVALID_INPUT
   * naming it) and changes nothing. Returns the profile's size and what was added.
   */
  mergeReadProfile(digest: Digest, entries: ProfileEntry[], max: number): { files: number; added: number } {
    const tx = this.db.transaction(() => {
      if (!this.db.prepare('SELECT 1 FROM images WHERE digest = ?').get(digest)) {
        throw new CairnError(ErrorCode.NOT_FOUND, `image ${digest}: not in this registry`);
      }
      const inImage = this.db.prepare(
        `SELECT f.size FROM image_layers l JOIN recipe_files r ON r.recipe = l.recipe JOIN files f ON f.digest = r.digest
          WHERE l.image = ? AND r.digest = ? LIMIT 1`,
      );
      entries.forEach((e, i) => {
        const row = inImage.get(digest, e.digest) as { size: number } | undefined;
        if (!row) {
          throw new CairnError(
            ErrorCode.INVALID_INPUT,
            `read profile of ${digest}: entry ${i} (${e.digest}) is not a file of the image`,
          );
        }
        if (row.size !== e.size) {
          throw new CairnError(
            ErrorCode.INVALID_INPUT,
            `read profile of ${digest}: entry ${i} (${e.digest}) has size ${e.size}, the content has ${row.size}`,
          );
        }
      });
      const current = this.readProfile(digest);
      const merged = mergeProfiles(current, entries, max);
      const text = JSON.stringify(profileRows(merged));
      // Unchanged (nothing new, no new block of a content already there): nothing to write.
      if (text !== JSON.stringify(profileRows(current))) {
        this.db
          .prepare(
            `INSERT INTO read_profiles (image, files, updated_ms) VALUES (?, ?, ?)
               ON CONFLICT (image) DO UPDATE SET files = excluded.files, updated_ms = excluded.updated_ms`,
          )
          .run(digest, text, Date.now());
      }
      return { files: merged.length, added: merged.length - current.length };
    });
    try {
      return tx.immediate();
    } catch (err) {
      if (err instanceof CairnError) throw err;
      throw toCairnError(err, ErrorCode.STORAGE, `saving the read profile of ${digest}`);
    }
  }

  allImages(): { digest: Digest; repository: string; tags: string }[] {
    return this.db
      .prepare(
        `SELECT ri.image AS digest, ri.repository, COALESCE(group_concat(t.tag, ','), '') AS tags
           FROM repository_images ri LEFT JOIN tags t ON t.repository = ri.repository AND t.image = ri.image
          GROUP BY ri.repository, ri.image ORDER BY ri.repository, ri.image`,
      )
      .all() as { digest: Digest; repository: string; tags: string }[];
  }

  totals(): StoreTotals {
    return this.db
      .transaction((): StoreTotals => {
        const one = <T>(sql: string): T => this.db.prepare(sql).get() as T;
        const r = one<{
          layers: number;
          entries: number | null;
          files: number | null;
          fileBytes: number | null;
          recipeBytes: number | null;
        }>(
          'SELECT count(*) AS layers, sum(entries) AS entries, sum(files) AS files, sum(file_bytes) AS fileBytes, sum(length(data)) AS recipeBytes FROM recipes',
        );
        const f = one<{ n: number; bytes: number | null }>('SELECT count(*) AS n, sum(size) AS bytes FROM files');
        return {
          images: one<{ n: number }>('SELECT count(*) AS n FROM images').n,
          repositories: one<{ n: number }>('SELECT count(*) AS n FROM repositories').n,
          tags: one<{ n: number }>('SELECT count(*) AS n FROM tags').n,
          layers: r.layers,
          entries: r.entries ?? 0,
          files: r.files ?? 0,
          uniqueFiles: f.n,
          fileBytes: r.fileBytes ?? 0,
          storedBytes: f.bytes ?? 0,
          recipeBytes: r.recipeBytes ?? 0,
          skeletonBytes: one<{ n: number | null }>('SELECT sum(length(data)) AS n FROM skeletons').n ?? 0,
        };
      })
      .deferred();
  }

  /** A stored layer made from recipe `id` (any image's), to reuse its tar digests and skeleton. */
  layerOfRecipe(id: Digest): Omit<LayerRow, 'position' | 'entries' | 'files' | 'fileBytes'> | undefined {
    return this.db
      .prepare(
        `SELECT recipe, diff_id AS diffId, blob_digest AS blobDigest, blob_size AS blobSize, media_type AS mediaType,
                tar_bytes AS tarBytes, skeleton FROM image_layers WHERE recipe = ? LIMIT 1`,
      )
      .get(id) as Omit<LayerRow, 'position' | 'entries' | 'files' | 'fileBytes'> | undefined;
  }

  /**
   * The recipes of a repository's images other than `image` and the images
   * reconstructed from it: the layers a reconstruction of `image` may reuse.
   */
  repositoryRecipes(repository: string, image: Digest): Digest[] {
    return (
      this.db
        .prepare(
          `SELECT DISTINCT l.recipe FROM repository_images ri JOIN image_layers l ON l.image = ri.image
            WHERE ri.repository = ? AND ri.image != ?
              AND ri.image NOT IN (SELECT image FROM reconstructions WHERE original = ?)
            ORDER BY l.recipe`,
        )
        .all(repository, image, image) as { recipe: Digest }[]
    ).map((r) => r.recipe);
  }

  /** The image reconstructed from `original` with `algorithm`, if any. */
  reconstructionOf(original: Digest, algorithm: string): Digest | undefined {
    const row = this.db
      .prepare(
        'SELECT image FROM reconstructions WHERE original = ? AND algorithm = ? ORDER BY created_ms DESC LIMIT 1',
      )
      .get(original, algorithm) as { image: Digest } | undefined;
    return row?.image;
  }

  /**
   * Layer-level figures of what the tags point to: unique layers (recipes)
   * of the tagged images and their regular-file bytes, as a registry storing
   * whole layers would store them.
   */
  taggedLayerTotals(): { layers: number; layerBytes: number } {
    const row = this.db
      .prepare(
        `SELECT count(*) AS layers, coalesce(sum(file_bytes), 0) AS layerBytes FROM recipes
          WHERE id IN (SELECT l.recipe FROM tags t JOIN image_layers l ON l.image = t.image)`,
      )
      .get() as { layers: number; layerBytes: number };
    return row;
  }

  /** The image `image` was reconstructed from, when it was made by reconstruction. */
  originalOf(image: Digest): Digest | undefined {
    const row = this.db.prepare('SELECT original FROM reconstructions WHERE image = ?').get(image) as
      { original: Digest } | undefined;
    return row?.original;
  }

  /** Every content digest the metadata references. */
  /**
   * Removes images no repository holds any more (a /v2 manifest DELETE unlinks
   * an image from its repository; this is where its metadata goes), with the
   * recipes only they used and the content rows only those recipes used, in one
   * transaction. The contents themselves are then unreferenced: gc removes them.
   * Returns the images removed and the contents no longer referenced.
   */
  pruneUnheldImages(): { images: Digest[]; files: Digest[] } {
    const db = this.db;
    const tx = db.transaction((): { images: Digest[]; files: Digest[] } => {
      const orphans = (
        db
          .prepare(
            `SELECT digest FROM images i
              WHERE NOT EXISTS (SELECT 1 FROM repository_images r WHERE r.image = i.digest)
                AND NOT EXISTS (SELECT 1 FROM tags t WHERE t.image = i.digest)`,
          )
          .all() as { digest: Digest }[]
      ).map((r) => r.digest);
      const layersOf = db.prepare('SELECT recipe FROM image_layers WHERE image = ?');
      const unref = db.prepare('UPDATE recipes SET refcount = refcount - 1 WHERE id = ?');
      for (const image of orphans) {
        for (const { recipe } of layersOf.all(image) as { recipe: string }[]) unref.run(recipe);
        db.prepare('DELETE FROM reconstructions WHERE image = ? OR original = ?').run(image, image);
        db.prepare('DELETE FROM images WHERE digest = ?').run(image); // image_layers cascade
      }
      const dead = db.prepare('SELECT id FROM recipes WHERE refcount <= 0').all() as { id: string }[];
      const unrefFile = db.prepare(
        'UPDATE files SET refcount = refcount - 1 WHERE digest IN (SELECT digest FROM recipe_files WHERE recipe = ?)',
      );
      for (const { id } of dead) {
        unrefFile.run(id);
        db.prepare('DELETE FROM recipes WHERE id = ?').run(id); // recipe_files cascade
      }
      const files = (db.prepare('SELECT digest FROM files WHERE refcount <= 0').all() as { digest: Digest }[]).map(
        (r) => r.digest,
      );
      db.prepare('DELETE FROM files WHERE refcount <= 0').run();
      db.prepare(
        'DELETE FROM skeletons WHERE NOT EXISTS (SELECT 1 FROM image_layers l WHERE l.skeleton = skeletons.digest)',
      ).run();
      return { images: orphans, files };
    });
    try {
      return tx.immediate();
    } catch (err) {
      throw toCairnError(err, ErrorCode.STORAGE, 'removing images no repository holds');
    }
  }

  referencedFiles(): Set<string> {
    const out = new Set<string>();
    for (const row of this.db.prepare('SELECT digest FROM files').iterate() as IterableIterator<{ digest: string }>)
      out.add(row.digest);
    return out;
  }
}
