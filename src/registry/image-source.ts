import { createReadStream } from 'node:fs';
import { mkdir, mkdtemp, open, readFile, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { CairnError, ErrorCode, toCairnError } from '../model/errors.js';
import { hexOf, isDigest, sha256, type Digest } from '../model/digest.js';
import {
  formatPlatform,
  MediaType,
  parseConfig,
  parseJson,
  parseManifest,
  platformMatches,
  REF_NAME_ANNOTATION,
  type Descriptor,
  type ImageConfig,
  type ImageManifest,
  type Platform,
} from '../model/oci.js';
import { readTar } from '../tar/reader.js';
import { normalizeEntryPath } from './layer-parser.js';
import { LayerStream, sniffCompression } from './decompress.js';

/** One image picked out of a source: its manifest and config (both verified), ready to read layers. */
export interface ResolvedImage {
  manifestDigest: Digest;
  manifestBytes: Buffer;
  manifest: ImageManifest;
  configBytes: Buffer;
  config: ImageConfig;
  platform: Platform;
}

/**
 * Where images are read from for import. Contract: every byte handed out
 * comes with the digest it must hash to; callers verify layer streams.
 */
export interface ImageSource {
  readonly description: string;
  /** The refs the source names (annotations or RepoTags). */
  refs(): string[];
  resolve(ref: string | undefined, platform: Platform): Promise<ResolvedImage>;
  /** The bytes of a blob (layer), unverified: the caller hashes them. */
  openBlob(descriptor: Descriptor): AsyncIterable<Buffer>;
  close(): Promise<void>;
}

const MAX_JSON_BYTES = 16 * 1024 * 1024;

async function readSmall(path: string, what: string): Promise<Buffer> {
  let size: number;
  try {
    size = (await stat(path)).size;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT')
      throw new CairnError(ErrorCode.NOT_FOUND, `${what}: ${path} does not exist`);
    throw toCairnError(err, ErrorCode.INVALID_INPUT, what);
  }
  if (size > MAX_JSON_BYTES)
    throw new CairnError(
      ErrorCode.INVALID_INPUT,
      `${what}: ${size} bytes is larger than the ${MAX_JSON_BYTES}-byte limit`,
    );
  return readFile(path);
}

function verified(data: Buffer, d: Descriptor, what: string): Buffer {
  const actual = sha256(data);
  if (actual !== d.digest) {
    throw new CairnError(ErrorCode.DIGEST_MISMATCH, `${what}: expected ${d.digest} but content hashes to ${actual}`);
  }
  if (data.byteLength !== d.size) {
    throw new CairnError(
      ErrorCode.DIGEST_MISMATCH,
      `${what}: descriptor says ${d.size} bytes, content has ${data.byteLength}`,
    );
  }
  return data;
}

function configPlatform(config: ImageConfig, fallback: Platform): Platform {
  if (!config.os || !config.architecture) return fallback;
  const p: Platform = { os: config.os, architecture: config.architecture };
  if (config.variant) p.variant = config.variant;
  return p;
}

/** An OCI image layout directory (also what an OCI archive unpacks to). */
export class OciLayoutSource implements ImageSource {
  readonly description: string;
  private index: Descriptor[] = [];

  constructor(
    private readonly dir: string,
    private readonly cleanup?: () => Promise<void>,
  ) {
    this.description = `OCI layout ${dir}`;
  }

  async load(): Promise<this> {
    const layout = parseJson(
      await readSmall(join(this.dir, 'oci-layout'), `${this.description}: oci-layout`),
      `${this.description}: oci-layout`,
    ) as {
      imageLayoutVersion?: unknown;
    };
    if (typeof layout.imageLayoutVersion !== 'string') {
      throw new CairnError(ErrorCode.INVALID_INPUT, `${this.description}: oci-layout has no imageLayoutVersion`);
    }
    const data = await readSmall(join(this.dir, 'index.json'), `${this.description}: index.json`);
    const parsed = parseManifest(data, `${this.description}: index.json`, MediaType.OCI_INDEX);
    if (parsed.kind !== 'index')
      throw new CairnError(ErrorCode.INVALID_INPUT, `${this.description}: index.json is not an image index`);
    this.index = parsed.index.manifests;
    return this;
  }

  refs(): string[] {
    return this.index
      .map((d) => d.annotations?.[REF_NAME_ANNOTATION])
      .filter((r): r is string => typeof r === 'string');
  }

  private blobPath(digest: Digest): string {
    if (!isDigest(digest))
      throw new CairnError(ErrorCode.INVALID_INPUT, `${this.description}: bad digest ${String(digest)}`);
    return join(this.dir, 'blobs', 'sha256', hexOf(digest));
  }

  private async readJsonBlob(d: Descriptor, what: string): Promise<Buffer> {
    return verified(await readSmall(this.blobPath(d.digest), what), d, what);
  }

  async resolve(ref: string | undefined, platform: Platform): Promise<ResolvedImage> {
    let candidates = this.index;
    if (ref !== undefined) {
      candidates = this.index.filter((d) => d.annotations?.[REF_NAME_ANNOTATION] === ref);
      if (candidates.length === 0) {
        throw new CairnError(
          ErrorCode.NOT_FOUND,
          `${this.description}: no image named ${JSON.stringify(ref)} (refs: ${this.refs().join(', ') || 'none'})`,
        );
      }
    }
    // Several platform manifests may share a ref at the top level of index.json.
    if (candidates.length > 1) {
      const byPlatform = candidates.filter((d) => d.platform && platformMatches(platform, d.platform));
      if (byPlatform.length === 1) candidates = byPlatform;
      else if (byPlatform.length === 0 && candidates.every((d) => d.platform)) {
        const have = candidates.map((d) => formatPlatform(d.platform as Platform)).join(', ');
        throw new CairnError(
          ErrorCode.NOT_FOUND,
          `${this.description}: no image for platform ${formatPlatform(platform)} (has: ${have})`,
        );
      } else {
        throw new CairnError(
          ErrorCode.INVALID_INPUT,
          `${this.description}: holds ${candidates.length} images; name one as SOURCE:REF (refs: ${this.refs().join(', ') || 'none'})`,
        );
      }
    }
    const top = candidates[0];
    if (!top) throw new CairnError(ErrorCode.NOT_FOUND, `${this.description}: index.json lists no images`);
    return this.resolveDescriptor(top, platform, 0);
  }

  private async resolveDescriptor(d: Descriptor, platform: Platform, depth: number): Promise<ResolvedImage> {
    const what = `${this.description}: manifest ${d.digest}`;
    if (depth > 4) throw new CairnError(ErrorCode.INVALID_INPUT, `${what}: indexes nested too deep`);
    const bytes = await this.readJsonBlob(d, what);
    const parsed = parseManifest(bytes, what, d.mediaType);
    if (parsed.kind === 'index') {
      const match = parsed.index.manifests.filter((m) => m.platform && platformMatches(platform, m.platform));
      const pick = match[0];
      if (!pick) {
        const have = parsed.index.manifests.map((m) => (m.platform ? formatPlatform(m.platform) : '?')).join(', ');
        throw new CairnError(
          ErrorCode.NOT_FOUND,
          `${what}: no image for platform ${formatPlatform(platform)} (has: ${have})`,
        );
      }
      return this.resolveDescriptor(pick, platform, depth + 1);
    }
    const manifest = parsed.manifest;
    const configBytes = await this.readJsonBlob(manifest.config, `${what} config`);
    const config = parseConfig(configBytes, `${what} config`);
    return {
      manifestDigest: d.digest,
      manifestBytes: bytes,
      manifest,
      configBytes,
      config,
      platform: configPlatform(config, platform),
    };
  }

  async *openBlob(d: Descriptor): AsyncIterable<Buffer> {
    const path = this.blobPath(d.digest);
    try {
      await stat(path);
    } catch {
      throw new CairnError(ErrorCode.NOT_FOUND, `${this.description}: blob ${d.digest} is missing`);
    }
    yield* createReadStream(path, { highWaterMark: 1024 * 1024 }) as AsyncIterable<Buffer>;
  }

  async close(): Promise<void> {
    await this.cleanup?.();
  }
}

/** A `docker save` tarball, once unpacked: manifest.json, config files, layer tars. */
export class DockerArchiveSource implements ImageSource {
  readonly description: string;
  private items: { Config: string; RepoTags: string[]; Layers: string[] }[] = [];
  private layerFiles = new Map<Digest, string>();

  constructor(
    private readonly dir: string,
    private readonly links: Map<string, string>,
    private readonly cleanup: () => Promise<void>,
    archive: string,
  ) {
    this.description = `docker archive ${archive}`;
  }

  async load(): Promise<this> {
    const what = `${this.description}: manifest.json`;
    const doc = parseJson(await readSmall(join(this.dir, 'manifest.json'), what), what);
    if (!Array.isArray(doc)) throw new CairnError(ErrorCode.INVALID_INPUT, `${what}: not a JSON array`);
    this.items = doc.map((item, i) => {
      const it = item as Record<string, unknown>;
      if (
        typeof it.Config !== 'string' ||
        !Array.isArray(it.Layers) ||
        !it.Layers.every((l) => typeof l === 'string')
      ) {
        throw new CairnError(ErrorCode.INVALID_INPUT, `${what}[${i}]: needs Config (string) and Layers (strings)`);
      }
      const tags = Array.isArray(it.RepoTags) ? it.RepoTags.filter((t): t is string => typeof t === 'string') : [];
      return { Config: it.Config, RepoTags: tags, Layers: it.Layers as string[] };
    });
    return this;
  }

  refs(): string[] {
    return this.items.flatMap((i) => i.RepoTags);
  }

  /** Resolves a member name through the archive's own symlinks, never leaving the unpack directory. */
  private member(name: string): string {
    let path = normalizeEntryPath(name, `${this.description}: member ${JSON.stringify(name)}`);
    for (let hops = 0; this.links.has(path); hops++) {
      if (hops > 40) throw new CairnError(ErrorCode.INVALID_INPUT, `${this.description}: symlink loop at ${name}`);
      path = this.links.get(path) as string;
    }
    return join(this.dir, path);
  }

  async resolve(ref: string | undefined, platform: Platform): Promise<ResolvedImage> {
    let item = this.items[0];
    if (ref !== undefined)
      item = this.items.find((i) => i.RepoTags.includes(ref) || i.RepoTags.includes(`docker.io/library/${ref}`));
    else if (this.items.length > 1) {
      throw new CairnError(
        ErrorCode.INVALID_INPUT,
        `${this.description}: holds ${this.items.length} images; name one as SOURCE:REF (refs: ${this.refs().join(', ')})`,
      );
    }
    if (!item)
      throw new CairnError(
        ErrorCode.NOT_FOUND,
        `${this.description}: no image named ${JSON.stringify(ref)} (refs: ${this.refs().join(', ') || 'none'})`,
      );
    const configBytes = await readSmall(this.member(item.Config), `${this.description}: config ${item.Config}`);
    const config = parseConfig(configBytes, `${this.description}: config ${item.Config}`);
    if (config.rootfs?.diff_ids.length !== item.Layers.length) {
      throw new CairnError(
        ErrorCode.INVALID_INPUT,
        `${this.description}: config lists ${config.rootfs?.diff_ids.length} diff_ids but manifest.json ${item.Layers.length} layers`,
      );
    }
    // docker save keeps no manifest: describe the layers as they are in the archive and build one.
    const layers: Descriptor[] = [];
    for (const name of item.Layers) {
      const path = this.member(name);
      const fh = await open(path, 'r').catch(() => {
        throw new CairnError(ErrorCode.NOT_FOUND, `${this.description}: layer ${name} is missing`);
      });
      const head = Buffer.alloc(4);
      await fh.read(head, 0, 4, 0);
      await fh.close();
      const compression = sniffCompression(head);
      const stream = new LayerStream(createReadStream(path, { highWaterMark: 1024 * 1024 }), 'none', name);
      for await (const c of stream.output) void c;
      const digest = stream.compressed.digest();
      this.layerFiles.set(digest, path);
      layers.push({
        mediaType:
          compression === 'gzip'
            ? MediaType.DOCKER_LAYER_GZIP
            : compression === 'zstd'
              ? MediaType.OCI_LAYER_ZSTD
              : MediaType.DOCKER_LAYER,
        digest,
        size: stream.compressed.bytes,
      });
    }
    const configDigest = sha256(configBytes);
    const manifest: ImageManifest = {
      schemaVersion: 2,
      mediaType: MediaType.DOCKER_MANIFEST,
      config: { mediaType: MediaType.DOCKER_CONFIG, digest: configDigest, size: configBytes.byteLength },
      layers,
    };
    const manifestBytes = Buffer.from(JSON.stringify(manifest));
    return {
      manifestDigest: sha256(manifestBytes),
      manifestBytes,
      manifest,
      configBytes,
      config,
      platform: configPlatform(config, platform),
    };
  }

  async *openBlob(d: Descriptor): AsyncIterable<Buffer> {
    const path = this.layerFiles.get(d.digest);
    if (!path) throw new CairnError(ErrorCode.NOT_FOUND, `${this.description}: no layer ${d.digest}`);
    yield* createReadStream(path, { highWaterMark: 1024 * 1024 }) as AsyncIterable<Buffer>;
  }

  async close(): Promise<void> {
    await this.cleanup();
  }
}

/**
 * Unpacks an archive (optionally gzipped) into a private temp directory.
 * Only directories and regular files are written; symlinks are recorded and
 * resolved lexically inside the archive; no path may leave the directory.
 */
async function unpackArchive(
  archive: string,
  tmpParent: string,
): Promise<{ dir: string; links: Map<string, string>; cleanup: () => Promise<void> }> {
  await mkdir(tmpParent, { recursive: true });
  const dir = await mkdtemp(join(tmpParent, 'unpack-'));
  const cleanup = (): Promise<void> => rm(dir, { recursive: true, force: true });
  const links = new Map<string, string>();
  const what = `archive ${archive}`;
  try {
    const fh = await open(archive, 'r');
    const head = Buffer.alloc(4);
    await fh.read(head, 0, 4, 0);
    await fh.close();
    const stream = new LayerStream(
      createReadStream(archive, { highWaterMark: 1024 * 1024 }),
      sniffCompression(head),
      what,
    );
    for await (const entry of readTar(stream.output)) {
      const name = normalizeEntryPath(entry.header.name, `${what}: member ${JSON.stringify(entry.header.name)}`);
      const target = join(dir, name);
      if (entry.header.type === 'dir') await mkdir(target, { recursive: true });
      else if (entry.header.type === 'file') {
        await mkdir(join(target, '..'), { recursive: true });
        const out = await open(target, 'w');
        for await (const c of entry.body) await out.write(c);
        await out.close();
      } else if (entry.header.type === 'symlink' || entry.header.type === 'hardlink') {
        const base = entry.header.type === 'symlink' ? name.split('/').slice(0, -1).join('/') : '';
        const resolved = normalizeEntryPath(
          (base ? `${base}/` : '') + entry.header.linkname,
          `${what}: link ${JSON.stringify(entry.header.name)} -> ${JSON.stringify(entry.header.linkname)}`,
        );
        links.set(name, resolved);
      }
    }
  } catch (err) {
    await cleanup();
    throw toCairnError(err, ErrorCode.INVALID_INPUT, what);
  }
  return { dir, links, cleanup };
}

/** Splits `SOURCE[:REF]` where SOURCE is a path that exists. */
export async function splitSourceRef(arg: string): Promise<{ path: string; ref?: string }> {
  const exists = (p: string): Promise<boolean> =>
    stat(p).then(
      () => true,
      () => false,
    );
  if (await exists(arg)) return { path: arg };
  // The ref itself may contain ':' (repo:tag), so try every split point from the left.
  for (let i = arg.indexOf(':'); i > 0; i = arg.indexOf(':', i + 1)) {
    const path = arg.slice(0, i);
    if (await exists(path)) return { path, ref: arg.slice(i + 1) };
  }
  throw new CairnError(ErrorCode.NOT_FOUND, `source ${JSON.stringify(arg)}: no such file or directory`);
}

/** Opens an OCI layout directory, OCI archive or docker-save tarball. */
export async function openImageSource(path: string, opts: { tmpDir: string }): Promise<ImageSource> {
  const st = await stat(path).catch(() => {
    throw new CairnError(ErrorCode.NOT_FOUND, `source ${path}: no such file or directory`);
  });
  if (st.isDirectory()) return new OciLayoutSource(path).load();
  const { dir, links, cleanup } = await unpackArchive(path, opts.tmpDir);
  try {
    const has = (p: string): Promise<boolean> =>
      stat(join(dir, p)).then(
        () => true,
        () => false,
      );
    if ((await has('oci-layout')) && (await has('index.json'))) {
      const src = new OciLayoutSource(dir, cleanup);
      (src as { description: string }).description = `OCI archive ${path}`;
      return await src.load();
    }
    if (await has('manifest.json')) return await new DockerArchiveSource(dir, links, cleanup, path).load();
    throw new CairnError(
      ErrorCode.INVALID_INPUT,
      `source ${path}: neither an OCI archive (oci-layout, index.json) nor a docker archive (manifest.json)`,
    );
  } catch (err) {
    await cleanup();
    throw err;
  }
}
