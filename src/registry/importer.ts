import { join } from 'node:path';
import { CairnError, ErrorCode } from '../model/errors.js';
import { sha256, type Digest } from '../model/digest.js';
import { compressRecipe } from '../model/recipe.js';
import { formatPlatform, layerCompression, parsePlatform, type Platform } from '../model/oci.js';
import type { Entry } from '../model/entry.js';
import { RegistryStore } from './store.js';
import { checkDigest, LayerStream } from './decompress.js';
import { parseLayer, type ContentSink } from './layer-parser.js';
import type { NewImage, NewRecipe } from './metadata.js';
import { parseRepoTag } from '../model/reference.js';
import { openImageSource, splitSourceRef, type ImageSource } from './image-source.js';
import type { ReconstructSettings, StoredReconstruction } from './reconstruct.js';

export interface ImportProgress {
  layer: number;
  layers: number;
  files: number;
  /** Uncompressed layer bytes read so far. */
  bytes: number;
}

export interface ImportResult {
  repository: string;
  tag: string;
  digest: Digest;
  platform: string;
  layers: { recipe: Digest; diffId: Digest; entries: number; newRecipe: boolean }[];
  entries: number;
  files: number;
  newFiles: number;
  newBytes: number;
  tarBytes: number;
  seconds: number;
  /** What online reconstruction did, when it was enabled (see src/registry/reconstruct.ts). */
  reconstruction?: StoredReconstruction;
  /** Bytes of the built view(s) a mount restores (0 when building them failed). */
  viewBytes: number;
}

export { parseRepoTag } from '../model/reference.js';

/** Sends contents to the blob store, skipping those already stored or being written. */
class StoreSink implements ContentSink {
  private readonly inFlight = new Map<Digest, Promise<unknown>>();

  constructor(private readonly registry: RegistryStore) {}

  async store(body: Buffer | AsyncIterable<Buffer>): Promise<{ digest: Digest; created: boolean; chunks?: Buffer }> {
    if (!Buffer.isBuffer(body)) return this.registry.blobs.put(body);
    const digest = sha256(body);
    // The same content twice in one layer (common: copies of a license file) is written once.
    const pending = this.inFlight.get(digest);
    if (pending) {
      await pending;
      return { digest, created: false };
    }
    const write = (async () => {
      if (this.registry.meta.hasFile(digest) && (await this.registry.blobs.has(digest)))
        return { digest, created: false };
      return this.registry.blobs.put(body, { expected: digest });
    })();
    this.inFlight.set(digest, write);
    try {
      return await write;
    } finally {
      this.inFlight.delete(digest);
    }
  }
}

function recipeOf(entries: Entry[], chunks: Map<Digest, Buffer>): NewRecipe {
  const { id, gz, rawBytes } = compressRecipe({ entries });
  const files: NewRecipe['files'] = new Map();
  for (const e of entries) {
    if (e.type !== 'file' || !e.digest) continue;
    const f = files.get(e.digest);
    if (f) f.count += 1;
    else files.set(e.digest, { size: e.size, count: 1, chunks: chunks.get(e.digest) });
  }
  return { id, gz, rawBytes, entries: entries.length, files };
}

/**
 * Imports one image: every layer is streamed, verified against the manifest
 * digest and the config diffID, split into files and a recipe; then the
 * metadata is committed in one transaction. Failure at any point leaves the
 * metadata as it was (contents already written are unreferenced; gc collects them).
 */
export async function importImage(
  store: RegistryStore,
  sourceArg: string | { source: ImageSource; ref?: string },
  target: string,
  opts: {
    platform?: string;
    onProgress?: (p: ImportProgress) => void;
    signal?: AbortSignal;
    /** Reconstruct the image against its repository once it is stored (online reconstruction). */
    reconstruct?: ReconstructSettings;
    /** Record the image in the repository without tagging it (a push by digest); `target`'s tag is ignored. */
    untagged?: boolean;
    /** Told what went wrong in a step the import survives (building the image's view). */
    onWarning?: (message: string) => void;
  } = {},
): Promise<ImportResult> {
  const started = performance.now();
  const { repository, tag } = parseRepoTag(target);
  const platform: Platform = parsePlatform(opts.platform ?? 'linux/amd64');
  // A source the caller already holds (the /v2 API's uploaded blobs) is used as it is.
  const { path, ref } = typeof sourceArg === 'string' ? await splitSourceRef(sourceArg) : { path: '', ...sourceArg };
  const source: ImageSource =
    typeof sourceArg === 'string' ? await openImageSource(path, { tmpDir: join(store.root, 'tmp') }) : sourceArg.source;
  try {
    const image = await source.resolve(ref, platform);
    const diffIds = image.config.rootfs?.diff_ids ?? [];
    const what = `${source.description}${ref ? `:${ref}` : ''}`;
    if (diffIds.length !== image.manifest.layers.length) {
      throw new CairnError(
        ErrorCode.INVALID_INPUT,
        `${what}: manifest has ${image.manifest.layers.length} layers but config has ${diffIds.length} diff_ids`,
      );
    }
    const sink = new StoreSink(store);
    const progress: ImportProgress = { layer: 0, layers: image.manifest.layers.length, files: 0, bytes: 0 };
    const layers: NewImage['layers'] = [];
    let newFiles = 0;
    let newBytes = 0;
    for (const [i, desc] of image.manifest.layers.entries()) {
      opts.signal?.throwIfAborted();
      const lw = `${what}: layer ${i} (${desc.digest})`;
      const compression = layerCompression(desc.mediaType, lw);
      const stream = new LayerStream(source.openBlob(desc), compression, lw);
      progress.layer = i + 1;
      const counted = (async function* () {
        for await (const c of stream.output) {
          progress.bytes += c.byteLength;
          opts.onProgress?.(progress);
          yield c;
        }
      })();
      const parsed = await parseLayer(counted, sink, lw);
      checkDigest(desc.digest, stream.compressed.digest(), `${lw} blob`);
      if (stream.compressed.bytes !== desc.size) {
        throw new CairnError(
          ErrorCode.DIGEST_MISMATCH,
          `${lw}: manifest says ${desc.size} bytes, blob has ${stream.compressed.bytes}`,
        );
      }
      checkDigest(diffIds[i] as Digest, stream.uncompressed.digest(), `${lw} diff_id`);
      progress.files += parsed.entries.filter((e) => e.type === 'file').length;
      newFiles += parsed.newFiles;
      newBytes += parsed.newBytes;
      layers.push({
        recipe: recipeOf(parsed.entries, parsed.chunks),
        diffId: stream.uncompressed.digest(),
        blobDigest: desc.digest,
        blobSize: desc.size,
        mediaType: desc.mediaType,
        tarBytes: stream.uncompressed.bytes,
        skeleton: { digest: sha256(parsed.skeleton), data: parsed.skeleton },
      });
      opts.onProgress?.(progress);
    }
    opts.signal?.throwIfAborted();
    const known = new Set(layers.map((l) => l.recipe.id).filter((id) => store.meta.recipe(id) !== undefined));
    store.meta.commitImage({
      repository,
      tag: opts.untagged ? undefined : tag,
      digest: image.manifestDigest,
      manifest: image.manifestBytes,
      manifestMediaType: image.manifest.mediaType,
      config: image.configBytes,
      configDigest: image.manifest.config.digest,
      platform: formatPlatform(image.platform),
      layers,
    });
    // The one reconstruction hook: loaded only when enabled (it pulls in the union view and the planner).
    const reconstruction = opts.reconstruct
      ? await (
          await import('./reconstruct.js')
        ).reconstructStoredImage(store, {
          repository,
          digest: image.manifestDigest,
          settings: opts.reconstruct,
          tags: [tag],
          ...(opts.signal ? { signal: opts.signal } : {}),
        })
      : undefined;
    // The view a mount restores, built now so the first mount does not wait for it (a cache:
    // a failure here leaves the import whole, and the registry builds the view on demand).
    let viewBytes = 0;
    try {
      const { ViewStore } = await import('./views.js');
      const views = new ViewStore(store, { onWarning: (m) => opts.onWarning?.(`view not kept on disk: ${m}`) });
      for (const d of [image.manifestDigest, reconstruction?.image]) {
        if (d !== undefined) viewBytes += (await views.prebuild(d)).bytes.byteLength;
      }
    } catch (err) {
      opts.onWarning?.(`view of ${repository}:${tag} not built: ${(err as Error).message}`);
    }
    return {
      ...(reconstruction ? { reconstruction } : {}),
      viewBytes,
      repository,
      tag,
      digest: image.manifestDigest,
      platform: formatPlatform(image.platform),
      layers: layers.map((l) => ({
        recipe: l.recipe.id,
        diffId: l.diffId,
        entries: l.recipe.entries,
        newRecipe: !known.has(l.recipe.id),
      })),
      entries: layers.reduce((n, l) => n + l.recipe.entries, 0),
      files: progress.files,
      newFiles,
      newBytes,
      tarBytes: layers.reduce((n, l) => n + l.tarBytes, 0),
      seconds: (performance.now() - started) / 1000,
    };
  } finally {
    await source.close();
  }
}
