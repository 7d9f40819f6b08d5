/**
 * Reconstruction in the store: an image's recipes in, a reconstructed image
 * out. The new image is new recipes (content-addressed, so layers the store
 * has are the stored ones) plus an image row with its own OCI manifest and
 * config; its contents are all stored already. The original stays
 * addressable by digest; its tags move to the reconstructed image.
 */
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { sha256, type Digest } from '../model/digest.js';
import type { Entry } from '../model/entry.js';
import { CairnError, ErrorCode } from '../model/errors.js';
import { MediaType } from '../model/oci.js';
import { compressRecipe, decodeRecipe, recipeId } from '../model/recipe.js';
import {
  againstCatalog,
  checkCostParams,
  DEFAULT_COST,
  LayerCatalog,
  parseCostModel,
  reconstructImage,
  reconstructOffline,
  type Algorithm,
  type CostParams,
  type ImagePlan,
} from '../reconstruct/index.js';
import { SkeletonWriter } from '../tar/skeleton.js';
import { encodeTarEntry, TAR_END, tarPadding, type TarWriteHeader } from '../tar/writer.js';
import type { ImageRow, NewImage, NewRecipe } from './metadata.js';
import type { RegistryStore } from './store.js';

export interface ReconstructSettings {
  algorithm: Exclude<Algorithm, 'lidh'>;
  cost: CostParams;
  /** Where a and b came from: "paper" or the cost-model file. */
  costSource: string;
  /** Set when the cost-model file had a negative intercept, clamped at 0. */
  clampedB?: boolean;
}

export interface ReconstructConfig extends ReconstructSettings {
  /** Reconstruct every imported image (online). */
  enabled: boolean;
}

/** The optional per-store configuration file: `<root>/reconstruct.json`. */
export const RECONSTRUCT_CONFIG_FILE = 'reconstruct.json';

/** Resolves a, b from a cost-model file when given, the paper's values otherwise. */
export async function costFrom(
  opts: { alpha?: number; beta?: number; costModel?: string },
  what = 'reconstruct',
): Promise<Pick<ReconstructSettings, 'cost' | 'costSource' | 'clampedB'>> {
  const out: Pick<ReconstructSettings, 'cost' | 'costSource' | 'clampedB'> = {
    cost: { ...DEFAULT_COST, alpha: opts.alpha ?? DEFAULT_COST.alpha, beta: opts.beta ?? DEFAULT_COST.beta },
    costSource: 'paper',
  };
  if (opts.costModel !== undefined) {
    let text: string;
    try {
      text = await readFile(opts.costModel, 'utf8');
    } catch (err) {
      throw new CairnError(ErrorCode.INVALID_INPUT, `cost model ${opts.costModel}: ${(err as Error).message}`);
    }
    const m = parseCostModel(text, opts.costModel);
    out.cost.a = m.a;
    out.cost.b = m.b;
    out.costSource = opts.costModel;
    if (m.clampedB) out.clampedB = true;
  }
  checkCostParams(out.cost, what);
  return out;
}

/**
 * Reads `<root>/reconstruct.json` (`{"enabled", "algorithm", "alpha", "beta", "costModel"}`, all
 * optional; absent file: disabled). Unknown keys are refused, naming the file.
 */
export async function loadReconstructConfig(root: string): Promise<ReconstructConfig> {
  const file = join(root, RECONSTRUCT_CONFIG_FILE);
  let raw: Record<string, unknown> = {};
  try {
    raw = JSON.parse(await readFile(file, 'utf8')) as Record<string, unknown>;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') raw = {};
    else throw new CairnError(ErrorCode.INVALID_OPTION, `${file}: ${(err as Error).message}`);
  }
  if (!raw || typeof raw !== 'object' || Array.isArray(raw)) {
    throw new CairnError(ErrorCode.INVALID_OPTION, `${file}: expected a JSON object`);
  }
  const known = ['enabled', 'algorithm', 'alpha', 'beta', 'costModel'];
  for (const k of Object.keys(raw)) {
    if (!known.includes(k)) {
      throw new CairnError(
        ErrorCode.INVALID_OPTION,
        `${file}: unknown key ${JSON.stringify(k)} (known: ${known.join(', ')})`,
      );
    }
  }
  const algorithm = raw.algorithm ?? 'soira';
  if (algorithm !== 'soira' && algorithm !== 'ofpl') {
    throw new CairnError(
      ErrorCode.INVALID_OPTION,
      `${file}: algorithm ${JSON.stringify(algorithm)} is not soira|ofpl (online)`,
    );
  }
  const num = (k: 'alpha' | 'beta'): number | undefined => {
    const v = raw[k];
    if (v === undefined) return undefined;
    if (typeof v !== 'number') throw new CairnError(ErrorCode.INVALID_OPTION, `${file}: ${k} is not a number`);
    return v;
  };
  if (raw.costModel !== undefined && typeof raw.costModel !== 'string') {
    throw new CairnError(ErrorCode.INVALID_OPTION, `${file}: costModel is not a file name`);
  }
  const cost = await costFrom(
    { alpha: num('alpha'), beta: num('beta'), costModel: raw.costModel as string | undefined },
    file,
  );
  return { enabled: raw.enabled === true, algorithm, ...cost };
}

export interface StoredReconstruction {
  repository: string;
  original: Digest;
  /** The reconstructed image (undefined on a dry run or when the plan keeps the layers as they are). */
  image?: Digest;
  algorithm: Algorithm;
  valid: boolean;
  rejected?: string;
  layersBefore: number;
  layersAfter: number;
  /** Layers of the plan the repository already had. */
  reusedLayers: number;
  /** Regular-file bytes of the layers new to the repository, before (as pushed) and after. */
  newBytesBefore: number;
  newBytesAfter: number;
  costBefore: number;
  costAfter: number;
  /** Planning and checking time (not writing). */
  seconds: number;
  /** Tags moved to the reconstructed image. */
  tags: string[];
  /** The plan's layers: recipe id, regular-file bytes, and whether the repository had it. */
  layers: { recipe: Digest; bytes: number; reused: boolean }[];
}

async function imageLayers(store: RegistryStore, img: ImageRow): Promise<Entry[][]> {
  return img.layers.map((l) => {
    const gz = store.meta.recipe(l.recipe);
    if (!gz) throw new CairnError(ErrorCode.NOT_FOUND, `recipe ${l.recipe} of image ${img.digest} is missing`);
    return decodeRecipe(gz, { gzipped: true, expected: l.recipe }).entries;
  });
}

function catalogOf(store: RegistryStore, repository: string, image: Digest): LayerCatalog {
  const c = new LayerCatalog();
  for (const id of store.meta.repositoryRecipes(repository, image)) {
    const gz = store.meta.recipe(id);
    if (gz) c.add(id, decodeRecipe(gz, { gzipped: true, expected: id }).entries);
  }
  return c;
}

/** The tar header that writes `e` back (markers as `.wh.` files, as the importer reads them). */
function tarHeaderOf(e: Entry): TarWriteHeader {
  const slash = e.path.lastIndexOf('/');
  const dir = slash < 0 ? '' : `${e.path.slice(0, slash)}/`;
  const base = e.path.slice(slash + 1);
  const h: TarWriteHeader = {
    name: e.path === '' ? '.' : e.path,
    type: 'file',
    mode: e.mode,
    uid: e.uid,
    gid: e.gid,
    mtime: e.mtime,
  };
  if (e.uname) h.uname = e.uname;
  if (e.gname) h.gname = e.gname;
  if (e.xattrs) h.xattrs = Object.fromEntries(Object.entries(e.xattrs).map(([k, v]) => [k, Buffer.from(v, 'base64')]));
  switch (e.type) {
    case 'whiteout':
      return { ...h, name: `${dir}.wh.${base}`, mode: 0o644, size: 0 };
    case 'opaque':
      return { ...h, name: `${e.path}/.wh..wh..opq`, mode: 0o644, size: 0 };
    case 'file':
      return { ...h, size: e.size };
    case 'hardlink':
    case 'symlink':
      return { ...h, type: e.type, linkname: e.linkTarget ?? '' };
    case 'char':
    case 'block':
      return { ...h, type: e.type, devMajor: e.devMajor ?? 0, devMinor: e.devMinor ?? 0 };
    default:
      return { ...h, type: e.type };
  }
}

/** Writes a new layer's tar through a hash (contents from the blob store), keeping its skeleton. */
async function layerOf(
  store: RegistryStore,
  entries: Entry[],
  signal?: AbortSignal,
): Promise<NewImage['layers'][number]> {
  const hash = createHash('sha256');
  const skeleton = new SkeletonWriter();
  let bytes = 0;
  const emit = (b: Buffer): void => {
    hash.update(b);
    bytes += b.byteLength;
  };
  const files: NewRecipe['files'] = new Map();
  for (const e of entries) {
    signal?.throwIfAborted();
    const header = encodeTarEntry(tarHeaderOf(e));
    skeleton.add(header);
    emit(header);
    if (e.type === 'file' && e.digest) {
      const f = files.get(e.digest);
      if (f) f.count += 1;
      else {
        const stored = store.meta.file(e.digest);
        files.set(e.digest, { size: e.size, count: 1, chunks: stored?.chunks, chunkBytes: stored?.chunkBytes });
      }
      if (e.size > 0) for await (const c of store.blobs.openRead(e.digest)) emit(c as Buffer);
    }
    const pad = tarPadding(e.type === 'file' ? e.size : 0);
    skeleton.add(pad);
    emit(pad);
  }
  skeleton.add(TAR_END);
  emit(TAR_END);
  const diffId: Digest = `sha256:${hash.digest('hex')}`;
  const { id, gz, rawBytes } = compressRecipe({ entries });
  const data = skeleton.finish();
  return {
    recipe: { id, gz, rawBytes, entries: entries.length, files },
    diffId,
    blobDigest: diffId,
    blobSize: bytes,
    mediaType: MediaType.OCI_LAYER,
    tarBytes: bytes,
    skeleton: { digest: sha256(data), data },
  };
}

/** A stored layer, reused as it is (same recipe, tar digests and skeleton). */
function storedLayer(store: RegistryStore, entries: Entry[]): NewImage['layers'][number] | undefined {
  const id = recipeId({ entries });
  const row = store.meta.layerOfRecipe(id);
  const gz = store.meta.recipe(id);
  const sk = row ? store.meta.skeleton(row.skeleton) : undefined;
  if (!row || !gz || !sk) return undefined;
  const files: NewRecipe['files'] = new Map();
  for (const e of entries) {
    if (e.type !== 'file' || !e.digest) continue;
    const f = files.get(e.digest);
    if (f) f.count += 1;
    else files.set(e.digest, { size: e.size, count: 1, chunks: undefined });
  }
  return {
    recipe: { id, gz, rawBytes: 0, entries: entries.length, files },
    diffId: row.diffId,
    blobDigest: row.blobDigest,
    blobSize: row.blobSize,
    mediaType: row.mediaType,
    tarBytes: row.tarBytes,
    skeleton: { digest: row.skeleton, data: sk },
  };
}

/** Writes a plan as a new image and moves `tags` to it. */
async function writePlan(
  store: RegistryStore,
  original: ImageRow,
  repository: string,
  tags: string[],
  plan: ImagePlan,
  algorithm: Algorithm,
  signal?: AbortSignal,
): Promise<Digest> {
  const layers: NewImage['layers'] = [];
  for (const l of plan.layers) layers.push(storedLayer(store, l.entries) ?? (await layerOf(store, l.entries, signal)));
  const config = JSON.parse(original.config.toString('utf8')) as Record<string, unknown>;
  config.rootfs = { type: 'layers', diff_ids: layers.map((l) => l.diffId) };
  // The history describes the original layers; it would not match the new ones.
  delete config.history;
  const configBytes = Buffer.from(JSON.stringify(config));
  const configDigest = sha256(configBytes);
  const manifest = {
    schemaVersion: 2,
    mediaType: MediaType.OCI_MANIFEST,
    config: { mediaType: MediaType.OCI_CONFIG, digest: configDigest, size: configBytes.byteLength },
    layers: layers.map((l) => ({ mediaType: l.mediaType, digest: l.blobDigest, size: l.blobSize })),
    annotations: { 'dev.cairn.reconstructed-from': original.digest, 'dev.cairn.reconstruction': algorithm },
  };
  const manifestBytes = Buffer.from(JSON.stringify(manifest));
  const digest = sha256(manifestBytes);
  const [first, ...rest] = tags;
  const base: NewImage = {
    repository,
    tag: first ?? '',
    digest,
    manifest: manifestBytes,
    manifestMediaType: MediaType.OCI_MANIFEST,
    config: configBytes,
    configDigest,
    platform: original.platform,
    layers,
    reconstructedFrom: { original: original.digest, algorithm },
  };
  store.meta.commitImage(base);
  for (const tag of rest) store.meta.commitImage({ ...base, tag });
  return digest;
}

function summary(
  repository: string,
  original: ImageRow,
  algorithm: Algorithm,
  before: ImagePlan,
  after: ImagePlan,
  tags: string[],
): StoredReconstruction {
  const out: StoredReconstruction = {
    repository,
    original: original.digest,
    algorithm,
    valid: after.valid,
    layersBefore: before.layerCount,
    layersAfter: after.layerCount,
    reusedLayers: after.layers.filter((l) => l.reusedId !== undefined).length,
    newBytesBefore: before.newBytes,
    newBytesAfter: after.newBytes,
    costBefore: before.cost,
    costAfter: after.cost,
    seconds: after.seconds,
    tags,
    layers: after.layers.map((l) => ({
      recipe: recipeId({ entries: l.entries }),
      bytes: l.bytes,
      reused: l.reusedId !== undefined,
    })),
  };
  if (after.rejected !== undefined) out.rejected = after.rejected;
  return out;
}

function unchanged(plan: ImagePlan): boolean {
  return plan.layers.every((l, i) => l.original === i) && plan.layers.length > 0;
}

export interface ReconstructRequest {
  repository: string;
  /** Image digest in the repository. */
  digest: Digest;
  settings: ReconstructSettings;
  dryRun?: boolean;
  /** Tags to move (default: every tag of the repository pointing to the image). */
  tags?: string[];
  signal?: AbortSignal;
}

/** Reconstructs one stored image against its repository (SOIRA, OFPL). */
export async function reconstructStoredImage(
  store: RegistryStore,
  req: ReconstructRequest,
): Promise<StoredReconstruction> {
  const img = store.meta.image(req.digest);
  if (!img) throw new CairnError(ErrorCode.NOT_FOUND, `image ${req.digest}: not in the store`);
  if (req.settings.algorithm === 'goira') {
    throw new CairnError(
      ErrorCode.INVALID_OPTION,
      'goira reconstructs many images at once: use reconstructStoredImages',
    );
  }
  const layers = await imageLayers(store, img);
  const catalog = catalogOf(store, req.repository, img.digest);
  const opts = { cost: req.settings.cost };
  const before = reconstructImage(layers, 'lidh', catalog, opts);
  const after = reconstructImage(layers, req.settings.algorithm, catalog, opts);
  const tags =
    req.tags ??
    store.meta
      .tags(req.repository)
      .filter((t) => t.image === img.digest)
      .map((t) => t.tag);
  const out = summary(req.repository, img, req.settings.algorithm, before, after, []);
  if (req.dryRun || !after.valid || unchanged(after) || tags.length === 0) return out;
  out.image = await writePlan(store, img, req.repository, tags, after, req.settings.algorithm, req.signal);
  out.tags = tags;
  return out;
}

/** Reconstructs many stored images together (GOIRA), each against its repository for the figures. */
export async function reconstructStoredImages(
  store: RegistryStore,
  images: { repository: string; digest: Digest; tags?: string[] }[],
  settings: ReconstructSettings,
  opts: { dryRun?: boolean; signal?: AbortSignal } = {},
): Promise<StoredReconstruction[]> {
  const rows = images.map(({ digest }) => {
    const img = store.meta.image(digest);
    if (!img) throw new CairnError(ErrorCode.NOT_FOUND, `image ${digest}: not in the store`);
    return img;
  });
  const stacks = await Promise.all(rows.map((r) => imageLayers(store, r)));
  const offline = reconstructOffline(stacks, undefined, { cost: settings.cost });
  const out: StoredReconstruction[] = [];
  for (const [i, img] of rows.entries()) {
    const { repository, tags: given } = images[i] as { repository: string; tags?: string[] };
    const catalog = catalogOf(store, repository, img.digest);
    const before = reconstructImage(stacks[i] as Entry[][], 'lidh', catalog, { cost: settings.cost });
    // The offline plan, materialized against the repository to count what it reuses.
    const plan = againstCatalog(offline.plans[i] as ImagePlan, catalog, settings.cost);
    const after: ImagePlan = { ...plan, seconds: offline.seconds / rows.length };
    const tags =
      given ??
      store.meta
        .tags(repository)
        .filter((t) => t.image === img.digest)
        .map((t) => t.tag);
    const s = summary(repository, img, 'goira', before, after, []);
    if (!opts.dryRun && after.valid && !unchanged(after) && tags.length > 0) {
      s.image = await writePlan(store, img, repository, tags, after, 'goira', opts.signal);
      s.tags = tags;
    }
    out.push(s);
  }
  return out;
}
