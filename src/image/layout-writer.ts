import { spawnSync } from 'node:child_process';
import { lstat, mkdir, readdir, rm, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { hexOf, sha256, type Digest } from '../model/digest.js';
import { CairnError, ErrorCode } from '../model/errors.js';
import {
  MediaType,
  REF_NAME_ANNOTATION,
  type Compression,
  type Descriptor,
  type ImageIndex,
  type ImageManifest,
  type Platform,
} from '../model/oci.js';
import { buildTar, type TarWriteEntry } from '../tar/writer.js';

/**
 * Writes images to disk in the three forms cairn imports: an OCI image layout
 * directory, an OCI archive (a tar of such a layout) and a `docker save`
 * tarball. Output is deterministic: the same input gives the same bytes.
 */

export type ImageFormat = 'oci-layout' | 'oci-archive' | 'docker-archive';

export interface LayerInput {
  /** The layer as an uncompressed tar (its sha256 is the diff_id). */
  tar: Buffer;
  compression: Compression;
}

export interface ImageInput {
  /** e.g. `app:1`; written as the ref.name annotation (OCI) or in RepoTags (docker). */
  ref?: string;
  /** Default linux/amd64. */
  platform?: Platform;
  layers: LayerInput[];
  /** Fields of the config's `config` section (Cmd, Env, WorkingDir, Labels...). */
  config?: Record<string, unknown>;
  /** The config's `created` and history times; default 1970-01-01T00:00:00Z. */
  created?: string;
  /** One `created_by` per layer for the config history; default "cairn layout-writer: layer N". */
  history?: string[];
  /** Annotations of the image manifest. */
  annotations?: Record<string, string>;
}

export interface WriteImagesOptions {
  format: ImageFormat;
  /**
   * How images that share a ref (one per platform) are written in OCI forms:
   * `nested` (default): index.json points at one image index blob holding the
   * platform manifests; `flat`: index.json lists the platform manifests
   * directly, each with the ref annotation and its platform.
   */
  multiPlatform?: 'nested' | 'flat';
  /** docker-archive only: `uncompressed` (default, as `docker save`) or `as-given` (the compressed blobs). */
  dockerLayers?: 'uncompressed' | 'as-given';
  /** zstd level for zstd layers (default 19). */
  zstdLevel?: number;
}

export interface WrittenLayer {
  /** Digest of the blob as stored (compressed, for compressed layers). */
  digest: Digest;
  /** sha256 of the uncompressed tar. */
  diffId: Digest;
  size: number;
  mediaType: string;
  compression: Compression;
  /** docker-archive: the member name (`<id>/layer.tar`). */
  path?: string;
}

export interface WrittenImage {
  ref?: string;
  platform: Platform;
  /**
   * OCI forms: the image manifest as stored. docker-archive (which stores no
   * manifest): the Docker schema 2 manifest describing the archive's config
   * and layer files as they are, serialized with JSON.stringify.
   */
  manifest: ImageManifest;
  manifestBytes: Buffer;
  manifestDigest: Digest;
  configBytes: Buffer;
  configDigest: Digest;
  layers: WrittenLayer[];
}

export interface WrittenIndex {
  ref?: string;
  index: ImageIndex;
  bytes: Buffer;
  digest: Digest;
}

export interface WrittenImages {
  path: string;
  format: ImageFormat;
  images: WrittenImage[];
  /** Image index blobs written for multi-platform refs (`nested` only). */
  indexes: WrittenIndex[];
  /** index.json (OCI forms) or manifest.json (docker-archive), as written. */
  topLevel: Buffer;
}

const EPOCH = '1970-01-01T00:00:00Z';
const DEFAULT_PLATFORM: Platform = { os: 'linux', architecture: 'amd64' };

function fail(message: string): never {
  throw new CairnError(ErrorCode.INVALID_OPTION, `image writer: ${message}`);
}

/** JSON as registries write it: compact, keys in insertion order. */
function json(value: unknown): Buffer {
  return Buffer.from(JSON.stringify(value));
}

/** Compresses with the `zstd` CLI (Node 20 has no zstd compressor). */
export function zstdCompress(data: Buffer, level = 19): Buffer {
  const r = spawnSync('zstd', ['-q', '-c', `-${level}`, '--no-progress', '-'], {
    input: data,
    maxBuffer: Math.max(64 * 1024 * 1024, data.length * 2),
  });
  if (r.error) {
    const missing = (r.error as NodeJS.ErrnoException).code === 'ENOENT';
    throw new CairnError(
      ErrorCode.UNAVAILABLE,
      missing ? 'zstd compression needs the zstd command (apt-get install zstd)' : `zstd failed: ${r.error.message}`,
      { cause: r.error },
    );
  }
  if (r.status !== 0)
    throw new CairnError(ErrorCode.UNAVAILABLE, `zstd exited with ${r.status}: ${r.stderr.toString()}`);
  return r.stdout;
}

/** Compresses a layer tar; gzip output is deterministic (no name, mtime 0). */
export function compressLayer(tar: Buffer, compression: Compression, zstdLevel = 19): Buffer {
  if (compression === 'none') return tar;
  if (compression === 'gzip') return gzipSync(tar, { level: 9 });
  return zstdCompress(tar, zstdLevel);
}

function ociLayerMediaType(c: Compression): string {
  return c === 'gzip' ? MediaType.OCI_LAYER_GZIP : c === 'zstd' ? MediaType.OCI_LAYER_ZSTD : MediaType.OCI_LAYER;
}

function dockerLayerMediaType(c: Compression): string {
  return c === 'gzip' ? MediaType.DOCKER_LAYER_GZIP : c === 'zstd' ? MediaType.OCI_LAYER_ZSTD : MediaType.DOCKER_LAYER;
}

function platformOf(image: ImageInput): Platform {
  const p = image.platform ?? DEFAULT_PLATFORM;
  const out: Platform = { architecture: p.architecture, os: p.os };
  if (p.variant) out.variant = p.variant;
  return out;
}

/** The OCI image config for an image, given its diff_ids. */
export function imageConfig(image: ImageInput, diffIds: Digest[]): Buffer {
  const p = platformOf(image);
  const created = image.created ?? EPOCH;
  if (image.history && image.history.length !== image.layers.length) {
    fail(`history has ${image.history.length} items for ${image.layers.length} layers`);
  }
  const config: Record<string, unknown> = { created, architecture: p.architecture, os: p.os };
  if (p.variant) config.variant = p.variant;
  config.config = image.config ?? {};
  config.rootfs = { type: 'layers', diff_ids: diffIds };
  config.history = image.layers.map((_, i) => ({
    created,
    created_by: image.history?.[i] ?? `cairn layout-writer: layer ${i + 1}`,
  }));
  return json(config);
}

interface Blob {
  digest: Digest;
  data: Buffer;
}

interface Prepared {
  input: ImageInput;
  platform: Platform;
  image: WrittenImage;
  blobs: Blob[];
}

/** Computes every blob of an image in OCI form. */
function prepareOci(input: ImageInput, opts: WriteImagesOptions): Prepared {
  const blobs: Blob[] = [];
  const layers: WrittenLayer[] = input.layers.map((l) => {
    const data = compressLayer(l.tar, l.compression, opts.zstdLevel);
    const digest = sha256(data);
    blobs.push({ digest, data });
    return {
      digest,
      diffId: sha256(l.tar),
      size: data.length,
      mediaType: ociLayerMediaType(l.compression),
      compression: l.compression,
    };
  });
  const configBytes = imageConfig(
    input,
    layers.map((l) => l.diffId),
  );
  const configDigest = sha256(configBytes);
  blobs.push({ digest: configDigest, data: configBytes });
  const manifest: ImageManifest = {
    schemaVersion: 2,
    mediaType: MediaType.OCI_MANIFEST,
    config: { mediaType: MediaType.OCI_CONFIG, digest: configDigest, size: configBytes.length },
    layers: layers.map((l) => ({ mediaType: l.mediaType, digest: l.digest, size: l.size })),
  };
  if (input.annotations) manifest.annotations = sortedRecord(input.annotations);
  const manifestBytes = json(manifest);
  const manifestDigest = sha256(manifestBytes);
  blobs.push({ digest: manifestDigest, data: manifestBytes });
  const platform = platformOf(input);
  const image: WrittenImage = { platform, manifest, manifestBytes, manifestDigest, configBytes, configDigest, layers };
  if (input.ref !== undefined) image.ref = input.ref;
  return { input, platform, image, blobs };
}

function sortedRecord(r: Record<string, string>): Record<string, string> {
  return Object.fromEntries(
    Object.keys(r)
      .sort()
      .map((k) => [k, r[k] as string]),
  );
}

function groupByRef(images: ImageInput[]): Map<string | undefined, number[]> {
  const groups = new Map<string | undefined, number[]>();
  images.forEach((img, i) => {
    // Images without a ref each stand alone.
    const key = img.ref;
    if (key === undefined) {
      groups.set(`\0${i}`, [i]);
      return;
    }
    const g = groups.get(key);
    if (g) g.push(i);
    else groups.set(key, [i]);
  });
  return groups;
}

function checkPlatformsDistinct(ref: string, prepared: Prepared[]): void {
  const seen = new Set<string>();
  for (const p of prepared) {
    const key = `${p.platform.os}/${p.platform.architecture}/${p.platform.variant ?? ''}`;
    if (seen.has(key)) fail(`ref ${JSON.stringify(ref)} has two images for platform ${key}`);
    seen.add(key);
  }
}

/** The OCI layout's files, as (relative path, bytes), sorted by path. */
function ociFiles(
  images: ImageInput[],
  opts: WriteImagesOptions,
): { files: Map<string, Buffer>; result: Omit<WrittenImages, 'path' | 'format'> } {
  const prepared = images.map((img) => prepareOci(img, opts));
  const blobs = new Map<Digest, Buffer>();
  for (const p of prepared) for (const b of p.blobs) blobs.set(b.digest, b.data);
  const top: Descriptor[] = [];
  const indexes: WrittenIndex[] = [];
  const style = opts.multiPlatform ?? 'nested';
  const manifestDescriptor = (p: Prepared, withPlatform: boolean, ref?: string): Descriptor => {
    const d: Descriptor = {
      mediaType: MediaType.OCI_MANIFEST,
      digest: p.image.manifestDigest,
      size: p.image.manifestBytes.length,
    };
    if (withPlatform) d.platform = p.platform;
    if (ref !== undefined) d.annotations = { [REF_NAME_ANNOTATION]: ref };
    return d;
  };
  for (const [, members] of groupByRef(images)) {
    const group = members.map((i) => prepared[i] as Prepared);
    const first = group[0] as Prepared;
    const ref = first.input.ref;
    if (group.length === 1) {
      top.push(manifestDescriptor(first, false, ref));
      continue;
    }
    checkPlatformsDistinct(ref as string, group);
    if (style === 'flat') {
      for (const p of group) top.push(manifestDescriptor(p, true, ref));
      continue;
    }
    const index: ImageIndex = {
      schemaVersion: 2,
      mediaType: MediaType.OCI_INDEX,
      manifests: group.map((p) => manifestDescriptor(p, true)),
    };
    const bytes = json(index);
    const digest = sha256(bytes);
    blobs.set(digest, bytes);
    const written: WrittenIndex = { index, bytes, digest };
    if (ref !== undefined) written.ref = ref;
    indexes.push(written);
    top.push({
      mediaType: MediaType.OCI_INDEX,
      digest,
      size: bytes.length,
      ...(ref !== undefined ? { annotations: { [REF_NAME_ANNOTATION]: ref } } : {}),
    });
  }
  const indexJson = json({ schemaVersion: 2, mediaType: MediaType.OCI_INDEX, manifests: top });
  const files = new Map<string, Buffer>();
  files.set('oci-layout', json({ imageLayoutVersion: '1.0.0' }));
  files.set('index.json', indexJson);
  for (const digest of [...blobs.keys()].sort())
    files.set(`blobs/sha256/${hexOf(digest)}`, blobs.get(digest) as Buffer);
  return { files, result: { images: prepared.map((p) => p.image), indexes, topLevel: indexJson } };
}

/** The docker-save tarball's members, as (relative path, bytes). */
function dockerFiles(
  images: ImageInput[],
  opts: WriteImagesOptions,
): { files: Map<string, Buffer>; result: Omit<WrittenImages, 'path' | 'format'> } {
  const files = new Map<string, Buffer>();
  const written: WrittenImage[] = [];
  const manifestJson: { Config: string; RepoTags: string[]; Layers: string[] }[] = [];
  const repositories: Record<string, Record<string, string>> = {};
  const refs = new Set<string>();
  for (const input of images) {
    if (input.ref !== undefined) {
      if (refs.has(input.ref))
        fail(`docker archives hold one image per ref; ${JSON.stringify(input.ref)} appears twice`);
      refs.add(input.ref);
    }
    let parent = '';
    const layers: WrittenLayer[] = input.layers.map((l) => {
      const diffId = sha256(l.tar);
      const compression: Compression = opts.dockerLayers === 'as-given' ? l.compression : 'none';
      const data = compressLayer(l.tar, compression, opts.zstdLevel);
      const digest = sha256(data);
      // Like docker's v1 layer ids: a chain, so a layer's directory depends on the layers below it.
      const id = hexOf(sha256(`${parent}\n${digest}`));
      const layerJson: Record<string, unknown> = { id };
      if (parent) layerJson.parent = parent;
      layerJson.created = input.created ?? EPOCH;
      files.set(`${id}/VERSION`, Buffer.from('1.0'));
      files.set(`${id}/json`, json(layerJson));
      files.set(`${id}/layer.tar`, data);
      parent = id;
      return {
        digest,
        diffId,
        size: data.length,
        mediaType: dockerLayerMediaType(compression),
        compression,
        path: `${id}/layer.tar`,
      };
    });
    const configBytes = imageConfig(
      input,
      layers.map((l) => l.diffId),
    );
    const configDigest = sha256(configBytes);
    files.set(`${hexOf(configDigest)}.json`, configBytes);
    manifestJson.push({
      Config: `${hexOf(configDigest)}.json`,
      RepoTags: input.ref !== undefined ? [input.ref] : [],
      Layers: layers.map((l) => l.path as string),
    });
    if (input.ref !== undefined) {
      const colon = input.ref.lastIndexOf(':');
      const [repo, tag] =
        colon > input.ref.lastIndexOf('/')
          ? [input.ref.slice(0, colon), input.ref.slice(colon + 1)]
          : [input.ref, 'latest'];
      (repositories[repo] ??= {})[tag] = parent;
    }
    const manifest: ImageManifest = {
      schemaVersion: 2,
      mediaType: MediaType.DOCKER_MANIFEST,
      config: { mediaType: MediaType.DOCKER_CONFIG, digest: configDigest, size: configBytes.length },
      layers: layers.map((l) => ({ mediaType: l.mediaType, digest: l.digest, size: l.size })),
    };
    const manifestBytes = json(manifest);
    const image: WrittenImage = {
      platform: platformOf(input),
      manifest,
      manifestBytes,
      manifestDigest: sha256(manifestBytes),
      configBytes,
      configDigest,
      layers,
    };
    if (input.ref !== undefined) image.ref = input.ref;
    written.push(image);
  }
  const top = json(manifestJson);
  files.set('manifest.json', top);
  if (Object.keys(repositories).length > 0) files.set('repositories', json(repositories));
  return { files, result: { images: written, indexes: [], topLevel: top } };
}

/** A deterministic tar of files given by relative path: parent directories included, names sorted, times 0. */
export function tarOfFiles(files: Map<string, Buffer>): Buffer {
  const dirs = new Set<string>();
  for (const path of files.keys()) {
    const parts = path.split('/');
    for (let i = 1; i < parts.length; i++) dirs.add(parts.slice(0, i).join('/'));
  }
  const entries: (TarWriteEntry & { key: string })[] = [
    ...[...dirs].map((d) => ({ key: d, header: { name: `${d}/`, type: 'dir' as const, mode: 0o755 } })),
    ...[...files].map(([path, content]) => ({
      key: path,
      header: { name: path, type: 'file' as const, mode: 0o644 },
      content,
    })),
  ];
  entries.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  return buildTar(entries.map(({ header, content }) => (content ? { header, content } : { header })));
}

/** Removes a previous output at `path`, refusing to delete anything that does not look like one. */
async function clearOutput(path: string, format: ImageFormat): Promise<void> {
  const st = await lstat(path).catch(() => undefined);
  if (!st) return;
  if (format === 'oci-layout') {
    if (!st.isDirectory()) fail(`${path} exists and is not a directory`);
    const names = await readdir(path);
    if (names.length > 0 && !names.includes('oci-layout')) {
      fail(`refusing to replace ${path}: it is not empty and not an OCI image layout`);
    }
    await rm(path, { recursive: true, force: true });
  } else if (st.isDirectory()) {
    fail(`${path} is a directory; an archive is written as a file`);
  }
}

/**
 * Writes images at `path`: a directory for `oci-layout`, a tar file for the
 * archive formats. A previous output at `path` is replaced, but a non-empty
 * directory that is not an OCI layout is refused, never deleted. Images
 * sharing a ref (with distinct platforms) form a multi-platform image (OCI
 * forms only).
 */
export async function writeImages(
  path: string,
  images: ImageInput[],
  opts: WriteImagesOptions,
): Promise<WrittenImages> {
  if (images.length === 0) fail('no images to write');
  const { files, result } = opts.format === 'docker-archive' ? dockerFiles(images, opts) : ociFiles(images, opts);
  await clearOutput(path, opts.format);
  if (opts.format === 'oci-layout') {
    for (const [rel, data] of files) {
      const target = join(path, rel);
      await mkdir(dirname(target), { recursive: true });
      await writeFile(target, data);
    }
  } else {
    await mkdir(dirname(path), { recursive: true });
    await writeFile(path, tarOfFiles(files));
  }
  return { path, format: opts.format, ...result };
}

/** Writes one OCI image layout directory. */
export function writeOciLayout(
  dir: string,
  images: ImageInput[],
  opts: Omit<WriteImagesOptions, 'format'> = {},
): Promise<WrittenImages> {
  return writeImages(dir, images, { ...opts, format: 'oci-layout' });
}

/** Writes one OCI archive (a tar of an OCI image layout). */
export function writeOciArchive(
  file: string,
  images: ImageInput[],
  opts: Omit<WriteImagesOptions, 'format'> = {},
): Promise<WrittenImages> {
  return writeImages(file, images, { ...opts, format: 'oci-archive' });
}

/** Writes one `docker save` tarball. */
export function writeDockerArchive(
  file: string,
  images: ImageInput[],
  opts: Omit<WriteImagesOptions, 'format'> = {},
): Promise<WrittenImages> {
  return writeImages(file, images, { ...opts, format: 'docker-archive' });
}
