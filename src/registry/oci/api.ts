import type { IncomingMessage, ServerResponse } from 'node:http';
import { createReadStream } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { gunzipSync } from 'node:zlib';
import { CairnError, ErrorCode } from '../../model/errors.js';
import { parseDigest, sha256, type Digest } from '../../model/digest.js';
import { checkRepositoryName, checkTag } from '../../model/reference.js';
import {
  layerCompression,
  MediaType,
  parseConfig,
  parseManifest,
  type Descriptor,
  type ImageManifest,
} from '../../model/oci.js';
import type { Recipe } from '../../model/recipe.js';
import type { Logger } from '../../util/log.js';
import { BlobStore } from '../blob-store.js';
import { importImage } from '../importer.js';
import { rebuildLayerTar } from '../layer-rebuild.js';
import type { RegistryStore } from '../store.js';
import { parseRange } from '../http/range.js';
import { Authenticator, TOKEN_PATH, type Access } from './auth.js';
import { about, ociErrorBody, ociErrorOf, type Subject } from './errors.js';
import { GeneratedCache } from './generated-cache.js';
import { OciMeta, type ManifestRow } from './oci-meta.js';
import type { OciOptions } from './options.js';
import { PushedImageSource } from './pushed-source.js';
import { accepts, servedIndex, uncompressedManifest } from './served-manifest.js';
import { DRAIN_BYTES, UploadStore, type Upload } from './uploads.js';
import type { ReconstructSettings } from '../reconstruct.js';

const IMAGE_CONFIG_TYPES: ReadonlySet<string> = new Set([MediaType.OCI_CONFIG, MediaType.DOCKER_CONFIG]);
const MANIFEST_TYPES = [MediaType.OCI_MANIFEST, MediaType.OCI_INDEX, MediaType.DOCKER_MANIFEST, MediaType.DOCKER_LIST];

interface V2Route {
  pattern: RegExp;
  subject: Subject;
  methods: Record<
    string,
    (req: IncomingMessage, res: ServerResponse, p: string[], q: URLSearchParams) => Promise<void>
  >;
}

/** The rows of a pushed manifest and, when it differs, of the manifest served for it. */
function manifestPair(
  repository: string,
  pushed: { digest: Digest; data: Buffer },
  served: { digest: Digest; data: Buffer },
  mediaType: string,
  image: Digest | null,
): ManifestRow[] {
  const row = (m: { digest: Digest; data: Buffer }): ManifestRow => ({
    repository,
    digest: m.digest,
    mediaType,
    data: m.data,
    served: served.digest,
    image,
  });
  return served.digest === pushed.digest ? [row(pushed)] : [row(pushed), row(served)];
}

/** Whether a path belongs to the /v2 API (or its token endpoint). */
export function isOciPath(path: string): boolean {
  return path === '/v2' || path.startsWith('/v2/') || path === TOKEN_PATH;
}

function location(repository: string, kind: string, ref: string): string {
  return `/v2/${repository}/${kind}/${ref}`;
}

/** Reads and drops the rest of a body; false when it is longer than `maxBytes` or slower than `timeoutMs`. */
function drain(req: IncomingMessage, maxBytes: number, timeoutMs: number): Promise<boolean> {
  if (req.readableEnded) return Promise.resolve(true);
  return new Promise((resolve) => {
    let n = 0;
    const done = (ok: boolean): void => {
      clearTimeout(timer);
      req.off('data', onData);
      req.off('end', onEnd);
      req.off('error', onError);
      resolve(ok);
    };
    const onData = (chunk: Buffer): void => {
      n += chunk.byteLength;
      if (n > maxBytes) done(false);
    };
    const onEnd = (): void => done(true);
    const onError = (): void => done(false);
    const timer = setTimeout(() => done(false), timeoutMs);
    req.on('data', onData);
    req.once('end', onEnd);
    req.once('error', onError);
    req.resume();
  });
}

/** The body length a request declares, if it does. */
function declared(req: IncomingMessage): { declaredBytes?: number } {
  const n = Number(req.headers['content-length'] ?? NaN);
  return Number.isSafeInteger(n) && n >= 0 ? { declaredBytes: n } : {};
}

async function readBody(req: IncomingMessage, maxBytes: number, what: string): Promise<Buffer> {
  const declared = Number(req.headers['content-length'] ?? NaN);
  if (declared > maxBytes)
    throw new CairnError(ErrorCode.TOO_LARGE, `${what}: ${declared} bytes is over the ${maxBytes}-byte limit`);
  const parts: Buffer[] = [];
  let n = 0;
  // Not a for-await: leaving one early would destroy the request, and the reply with it.
  await new Promise<void>((resolve, reject) => {
    const onData = (chunk: Buffer): void => {
      n += chunk.byteLength;
      if (n > maxBytes) {
        req.off('data', onData);
        req.pause();
        reject(new CairnError(ErrorCode.TOO_LARGE, `${what}: over the ${maxBytes}-byte limit`));
      } else parts.push(chunk);
    };
    req.on('data', onData);
    req.once('end', resolve);
    req.once('error', reject);
  });
  return Buffer.concat(parts);
}

function paginate(all: string[], q: URLSearchParams, what: string): { items: string[]; next?: string } {
  const nRaw = q.get('n');
  const last = q.get('last');
  let items = last ? all.filter((x) => x > last) : all;
  if (nRaw !== null) {
    const n = Number(nRaw);
    if (!Number.isSafeInteger(n) || n < 0)
      throw new CairnError(ErrorCode.INVALID_INPUT, `${what}: n=${nRaw} is not a count`);
    if (items.length > n) {
      items = items.slice(0, n);
      return { items, next: `n=${n}&last=${encodeURIComponent(items[items.length - 1] ?? '')}` };
    }
  }
  return { items };
}

/**
 * The OCI distribution API on /v2: blob uploads into a private area of the
 * store, manifests ingested into the file-level store as `cairn import` does,
 * layers served whole when held or rebuilt from their recipes, tags and catalog.
 */
export class OciApi {
  private readonly meta: OciMeta;
  /** Blobs held whole (uploaded): configs, compressed layers until dropped, artifacts. */
  readonly held: BlobStore;
  readonly uploads: UploadStore;
  private readonly generated: GeneratedCache;
  private readonly auth: Authenticator;
  private readonly routes: V2Route[];
  private sweepTimer: NodeJS.Timeout | undefined;
  private closed = false;
  /** Ingests under way, by repository@digest, so a repeated PUT waits for the first. */
  private readonly ingests = new Map<string, Promise<unknown>>();

  constructor(
    private readonly store: RegistryStore,
    private readonly opts: OciOptions,
    private readonly log: Logger,
  ) {
    this.meta = new OciMeta(store.meta.db);
    const root = join(store.root, 'oci');
    this.held = new BlobStore({ root });
    this.uploads = new UploadStore({
      dir: join(root, 'uploads'),
      blobs: this.held,
      maxBlobBytes: opts.maxBlobBytes,
      ttlMs: Math.max(1, opts.uploadTtlSeconds * 1000),
    });
    this.generated = new GeneratedCache({ dir: join(root, 'generated'), maxBytes: opts.generatedCacheBytes });
    this.auth = new Authenticator(opts.auth);
    const name = '(.+)';
    this.routes = [
      {
        pattern: /^\/v2\/?$/,
        subject: 'base',
        methods: { GET: (q, s) => this.base(q, s), HEAD: (q, s) => this.base(q, s) },
      },
      {
        pattern: /^\/v2\/_catalog$/,
        subject: 'base',
        methods: { GET: (q, s, _p, u) => this.catalog(q, s, u) },
      },
      {
        pattern: new RegExp(`^/v2/${name}/tags/list$`),
        subject: 'tags',
        methods: { GET: (q, s, p, u) => this.tagsList(q, s, p, u) },
      },
      {
        pattern: new RegExp(`^/v2/${name}/manifests/([^/]+)$`),
        subject: 'manifest',
        methods: {
          GET: (q, s, p) => this.getManifest(q, s, p),
          HEAD: (q, s, p) => this.getManifest(q, s, p),
          PUT: (q, s, p) => this.putManifest(q, s, p),
          DELETE: (q, s, p) => this.deleteManifest(q, s, p),
        },
      },
      {
        pattern: new RegExp(`^/v2/${name}/blobs/uploads/?$`),
        subject: 'upload',
        methods: { POST: (q, s, p, u) => this.startUpload(q, s, p, u) },
      },
      {
        pattern: new RegExp(`^/v2/${name}/blobs/uploads/([^/]+)$`),
        subject: 'upload',
        methods: {
          GET: (q, s, p) => this.uploadStatus(q, s, p),
          PATCH: (q, s, p) => this.patchUpload(q, s, p),
          PUT: (q, s, p, u) => this.putUpload(q, s, p, u),
          DELETE: (q, s, p) => this.deleteUpload(q, s, p),
        },
      },
      {
        pattern: new RegExp(`^/v2/${name}/blobs/([^/]+)$`),
        subject: 'blob',
        methods: {
          GET: (q, s, p) => this.getBlob(q, s, p),
          HEAD: (q, s, p) => this.getBlob(q, s, p),
        },
      },
    ];
  }

  async init(): Promise<void> {
    await this.held.init();
    await this.uploads.init();
    await this.generated.init();
    const everyMs = Math.max(1000, Math.min(60_000, (this.opts.uploadTtlSeconds * 1000) / 4));
    this.sweepTimer = setInterval(
      () => void this.sweep().catch((err: unknown) => this.log.warn('sweep failed', { error: String(err) })),
      everyMs,
    );
    this.sweepTimer.unref();
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.sweepTimer) clearInterval(this.sweepTimer);
  }

  /** Expires abandoned uploads and removes compressed layer blobs whose grace period is over. */
  async sweep(nowMs = Date.now()): Promise<{ expiredUploads: number; droppedBlobs: number }> {
    const expiredUploads = await this.uploads.expire(nowMs);
    let droppedBlobs = 0;
    for (const d of this.meta.takeDueBlobDrops(nowMs)) {
      if (this.meta.blobNeededVerbatim(d)) continue;
      await this.held.remove(d);
      droppedBlobs += 1;
    }
    return { expiredUploads, droppedBlobs };
  }

  async handle(req: IncomingMessage, res: ServerResponse, path: string): Promise<void> {
    const query = new URL(req.url ?? '/', 'http://x').searchParams;
    let subject: Subject = 'base';
    let repository: string | undefined;
    let need: Access = 'pull';
    try {
      if (path === TOKEN_PATH) {
        await this.token(req, res);
        return;
      }
      for (const r of this.routes) {
        const m = r.pattern.exec(path);
        if (!m) continue;
        subject = r.subject;
        const params = m.slice(1);
        const handler = r.methods[req.method ?? ''];
        if (!handler) {
          res.setHeader('allow', Object.keys(r.methods).join(', '));
          throw new CairnError(ErrorCode.UNSUPPORTED, `${req.method} is not allowed on ${path.slice(0, 200)}`);
        }
        if (params.length > 0) {
          repository = about('name', () => checkRepositoryName(params[0] as string, 'repository name'));
        }
        need = req.method === 'GET' || req.method === 'HEAD' ? 'pull' : 'push';
        if (subject === 'base' && path !== '/v2/_catalog') this.auth.checkBase(req);
        else this.auth.check(req, need);
        await handler(req, res, params, query);
        return;
      }
      throw new CairnError(ErrorCode.NOT_FOUND, `no /v2 endpoint at ${path.slice(0, 200)}`);
    } catch (err) {
      if ((req.socket?.destroyed ?? true) && !res.headersSent) {
        res.destroy();
        return;
      }
      const reply = ociErrorOf(err, subject);
      if (reply.status >= 500) this.log.error('/v2 request failed', { path, error: reply.message });
      if (res.headersSent) {
        res.destroy();
        return;
      }
      const headers: Record<string, string | number> = { 'content-type': 'application/json' };
      if (reply.status === 401) {
        const c = this.auth.challenge(req, repository, need);
        if (c) headers['www-authenticate'] = c;
      }
      // A refused body is read to its end first (up to a bound): closing a socket with unread
      // data resets the connection, and the client would never see the reply.
      const hasBody = (req.headers['content-length'] ?? '0') !== '0' || req.headers['transfer-encoding'] !== undefined;
      if (hasBody && !req.complete && !(await drain(req, DRAIN_BYTES, 5000))) headers.connection = 'close';
      const body = Buffer.from(JSON.stringify(ociErrorBody(reply)));
      headers['content-length'] = body.byteLength;
      res.writeHead(reply.status, headers);
      res.end(req.method === 'HEAD' ? undefined : body);
    }
  }

  private reply(res: ServerResponse, status: number, headers: Record<string, string | number>, body?: Buffer): void {
    res.writeHead(status, {
      'docker-distribution-api-version': 'registry/2.0',
      'content-length': body?.byteLength ?? 0,
      ...headers,
    });
    res.end(res.req.method === 'HEAD' ? undefined : body);
  }

  private json(res: ServerResponse, body: unknown, headers: Record<string, string> = {}): void {
    this.reply(res, 200, { 'content-type': 'application/json', ...headers }, Buffer.from(JSON.stringify(body)));
  }

  private async token(req: IncomingMessage, res: ServerResponse): Promise<void> {
    let form: URLSearchParams | undefined;
    if (req.method === 'POST')
      form = new URLSearchParams((await readBody(req, 64 * 1024, 'token request')).toString('utf8'));
    else if (req.method !== 'GET')
      throw new CairnError(ErrorCode.UNSUPPORTED, `${req.method} is not allowed on ${TOKEN_PATH}`);
    this.json(res, this.auth.issueToken(req, form), { 'cache-control': 'no-store' });
  }

  private base(_req: IncomingMessage, res: ServerResponse): Promise<void> {
    this.json(res, {});
    return Promise.resolve();
  }

  private catalog(_req: IncomingMessage, res: ServerResponse, q: URLSearchParams): Promise<void> {
    const { items, next } = paginate(this.store.meta.repositories(), q, 'catalog');
    this.json(res, { repositories: items }, next ? { link: `</v2/_catalog?${next}>; rel="next"` } : {});
    return Promise.resolve();
  }

  private tagsList(
    _req: IncomingMessage,
    res: ServerResponse,
    [rawRepo = '']: string[],
    q: URLSearchParams,
  ): Promise<void> {
    const repository = rawRepo;
    if (!this.store.meta.hasRepository(repository))
      throw new CairnError(ErrorCode.NOT_FOUND, `repository ${repository} is unknown`);
    const { items, next } = paginate(this.meta.tagNames(repository), q, 'tags list');
    this.json(
      res,
      { name: repository, tags: items },
      next ? { link: `</v2/${repository}/tags/list?${next}>; rel="next"` } : {},
    );
    return Promise.resolve();
  }

  // ---- blobs -------------------------------------------------------------

  private async heldPath(digest: Digest): Promise<string | undefined> {
    const path = this.held.path(digest);
    return (await this.held.has(digest)) ? path : undefined;
  }

  private rebuildable(digest: Digest): { recipe: Digest; skeleton: Digest; tarBytes: number } | undefined {
    return this.meta.layerByDiffId(digest);
  }

  private rebuilt(digest: Digest): AsyncIterable<Buffer> | undefined {
    const layer = this.rebuildable(digest);
    if (!layer) return undefined;
    const gz = this.store.meta.recipe(layer.recipe);
    const skeleton = this.store.meta.skeleton(layer.skeleton);
    if (!gz || !skeleton) throw new CairnError(ErrorCode.STORAGE, `layer ${digest}: recipe or skeleton is missing`);
    const recipe = JSON.parse(gunzipSync(gz).toString('utf8')) as Recipe;
    return rebuildLayerTar(skeleton, recipe, this.store.blobs);
  }

  private async getBlob(req: IncomingMessage, res: ServerResponse, [, rawDigest = '']: string[]): Promise<void> {
    const digest = about('digest', () => parseDigest(rawDigest, 'blob digest'));
    const held = await this.heldPath(digest);
    if (held) {
      await this.sendFile(req, res, digest, held);
      return;
    }
    const config = this.meta.config(digest);
    if (config) {
      await this.sendRange(req, res, digest, config.byteLength, (s, e) => void res.end(config.subarray(s, e + 1)));
      return;
    }
    const layer = this.rebuildable(digest);
    if (!layer) throw new CairnError(ErrorCode.NOT_FOUND, `blob ${digest} is unknown`);
    if (req.method === 'HEAD') {
      await this.sendRange(req, res, digest, layer.tarBytes, () => undefined);
      return;
    }
    const path = await this.generated.get(digest, () => this.rebuilt(digest) as AsyncIterable<Buffer>);
    await this.sendFile(req, res, digest, path);
  }

  private async sendFile(req: IncomingMessage, res: ServerResponse, digest: Digest, path: string): Promise<void> {
    const size = (await stat(path)).size;
    await this.sendRange(req, res, digest, size, (start, end) =>
      pipeline(createReadStream(path, { start, end, highWaterMark: 1024 * 1024 }), res),
    );
  }

  private async sendRange(
    req: IncomingMessage,
    res: ServerResponse,
    digest: Digest,
    size: number,
    send: (start: number, end: number) => void | Promise<void>,
  ): Promise<void> {
    const headers: Record<string, string | number> = {
      'content-type': 'application/octet-stream',
      'docker-content-digest': digest,
      etag: `"${digest}"`,
      'accept-ranges': 'bytes',
      'cache-control': 'public, max-age=31536000, immutable',
    };
    const range = parseRange(req.headers.range, size);
    if (range.kind === 'unsatisfiable') {
      this.reply(res, 416, { ...headers, 'content-range': `bytes */${size}` });
      return;
    }
    const start = range.kind === 'partial' ? range.start : 0;
    const end = range.kind === 'partial' ? range.end : size - 1;
    if (range.kind === 'partial') headers['content-range'] = `bytes ${start}-${end}/${size}`;
    headers['content-length'] = size === 0 ? 0 : end - start + 1;
    res.writeHead(range.kind === 'partial' ? 206 : 200, {
      'docker-distribution-api-version': 'registry/2.0',
      ...headers,
    });
    if (req.method === 'HEAD' || size === 0) {
      res.end();
      return;
    }
    await send(start, end);
  }

  // ---- uploads -----------------------------------------------------------

  private uploadHeaders(repository: string, up: Upload): Record<string, string> {
    return {
      location: location(repository, 'blobs/uploads', up.id),
      range: `0-${Math.max(0, up.size - 1)}`,
      'docker-upload-uuid': up.id,
    };
  }

  private async finishUpload(res: ServerResponse, repository: string, up: Upload, digest: Digest): Promise<void> {
    await this.uploads.finish(up, digest);
    this.reply(res, 201, { location: location(repository, 'blobs', digest), 'docker-content-digest': digest });
  }

  private async startUpload(
    req: IncomingMessage,
    res: ServerResponse,
    [rawRepo = '']: string[],
    q: URLSearchParams,
  ): Promise<void> {
    const repository = rawRepo;
    const mount = q.get('mount');
    if (mount !== null) {
      const digest = about('digest', () => parseDigest(mount, 'mount'));
      // Blobs are shared by every repository: a mount succeeds whenever the registry can serve the blob.
      if ((await this.heldPath(digest)) || this.meta.config(digest) || this.rebuildable(digest)) {
        this.reply(res, 201, { location: location(repository, 'blobs', digest), 'docker-content-digest': digest });
        return;
      }
    }
    const digestParam = mount === null ? q.get('digest') : null;
    const digest = digestParam === null ? undefined : about('digest', () => parseDigest(digestParam, 'digest'));
    const up = await this.uploads.create(repository);
    if (digest) {
      try {
        await this.uploads.append(up, req, declared(req));
      } catch (err) {
        await this.uploads.cancel(up);
        throw err;
      }
      await this.finishUpload(res, repository, up, digest);
      return;
    }
    for await (const chunk of req as AsyncIterable<Buffer>) void chunk;
    this.reply(res, 202, { ...this.uploadHeaders(repository, up), 'oci-chunk-min-length': 0 });
  }

  private contentRangeStart(req: IncomingMessage): number | undefined {
    const h = req.headers['content-range'];
    if (h === undefined) return undefined;
    const m = /^(?:bytes[ =])?(\d+)-(\d+)(?:\/\d+|\/\*)?$/.exec(h.trim());
    if (!m) throw new CairnError(ErrorCode.RANGE, `Content-Range ${JSON.stringify(h.slice(0, 100))} is not start-end`);
    const start = Number(m[1]);
    const end = Number(m[2]);
    const length = req.headers['content-length'];
    if (end < start || (length !== undefined && Number(length) !== end - start + 1))
      throw new CairnError(ErrorCode.RANGE, `Content-Range ${h} does not match Content-Length ${String(length)}`);
    return start;
  }

  private async appendChunk(req: IncomingMessage, res: ServerResponse, repository: string, up: Upload): Promise<void> {
    try {
      const start = this.contentRangeStart(req);
      await this.uploads.append(up, req, { ...declared(req), ...(start === undefined ? {} : { start }) });
    } catch (err) {
      // A refused chunk tells the client where to resume.
      for (const [k, v] of Object.entries(this.uploadHeaders(repository, up))) res.setHeader(k, v);
      throw err;
    }
  }

  private async patchUpload(
    req: IncomingMessage,
    res: ServerResponse,
    [rawRepo = '', id = '']: string[],
  ): Promise<void> {
    const up = await this.uploads.get(rawRepo, id);
    await this.appendChunk(req, res, rawRepo, up);
    this.reply(res, 202, this.uploadHeaders(rawRepo, up));
  }

  private async putUpload(
    req: IncomingMessage,
    res: ServerResponse,
    [rawRepo = '', id = '']: string[],
    q: URLSearchParams,
  ): Promise<void> {
    const up = await this.uploads.get(rawRepo, id);
    const digest = about('digest', () => parseDigest(q.get('digest') ?? '', 'digest'));
    await this.appendChunk(req, res, rawRepo, up);
    await this.finishUpload(res, rawRepo, up, digest);
  }

  private async uploadStatus(
    _req: IncomingMessage,
    res: ServerResponse,
    [rawRepo = '', id = '']: string[],
  ): Promise<void> {
    const up = await this.uploads.get(rawRepo, id);
    this.reply(res, 204, this.uploadHeaders(rawRepo, up));
  }

  private async deleteUpload(
    _req: IncomingMessage,
    res: ServerResponse,
    [rawRepo = '', id = '']: string[],
  ): Promise<void> {
    await this.uploads.cancel(await this.uploads.get(rawRepo, id));
    this.reply(res, 204, {});
  }

  // ---- manifests ---------------------------------------------------------

  /** What a repository's reference resolves to: the /v2 tag or the import's tag, whichever is newer. */
  private resolveRow(repository: string, reference: string): ManifestRow | undefined {
    if (reference.startsWith('sha256:')) {
      const row = this.meta.manifest(repository, reference);
      if (row) return row;
      // An imported image /v2 has not served yet: record its manifests, then look again.
      for (const image of this.meta.repositoryImages(repository)) this.servedForImage(repository, image);
      return this.meta.manifest(repository, reference);
    }
    const pushed = this.meta.tag(repository, reference);
    const imported = this.store.meta.db
      .prepare('SELECT image, updated_ms AS updatedMs FROM tags WHERE repository = ? AND tag = ?')
      .get(repository, reference) as { image: Digest; updatedMs: number } | undefined;
    if (pushed && (!imported || pushed.updatedMs >= imported.updatedMs))
      return this.meta.manifest(repository, pushed.digest);
    if (imported) return this.servedForImage(repository, imported.image);
    return undefined;
  }

  /** Records (once) and returns the manifest served for an imported image: its layers as rebuilt tars. */
  private servedForImage(repository: string, imageDigest: Digest): ManifestRow | undefined {
    const known = this.meta.manifest(repository, imageDigest);
    if (known) return this.meta.manifest(repository, known.served);
    const img = this.store.meta.image(imageDigest);
    if (!img) return undefined;
    const served = uncompressedManifest(img.manifest, img.layers);
    const rows = manifestPair(
      repository,
      { digest: img.digest, data: img.manifest },
      served,
      img.manifestMediaType,
      img.digest,
    );
    this.meta.putManifests(rows, undefined);
    return this.meta.manifest(repository, served.digest);
  }

  private refParam(raw: string): { tag?: string; digest?: Digest } {
    if (raw.includes(':')) return { digest: about('digest', () => parseDigest(raw, 'manifest reference')) };
    return { tag: about('manifest', () => checkTag(raw, 'manifest reference')) };
  }

  private getManifest(req: IncomingMessage, res: ServerResponse, [rawRepo = '', rawRef = '']: string[]): Promise<void> {
    const ref = this.refParam(rawRef);
    const row = this.resolveRow(rawRepo, ref.digest ?? (ref.tag as string));
    if (!row) throw new CairnError(ErrorCode.NOT_FOUND, `manifest ${rawRepo}:${rawRef} is unknown`);
    if (!accepts(req.headers.accept, row.mediaType))
      throw new CairnError(
        ErrorCode.NOT_FOUND,
        `manifest ${rawRepo}:${rawRef} is ${row.mediaType}, which the request does not accept`,
      );
    this.reply(
      res,
      200,
      { 'content-type': row.mediaType, 'docker-content-digest': row.digest, etag: `"${row.digest}"` },
      row.data,
    );
    return Promise.resolve();
  }

  private async putManifest(
    req: IncomingMessage,
    res: ServerResponse,
    [rawRepo = '', rawRef = '']: string[],
  ): Promise<void> {
    const repository = rawRepo;
    const ref = this.refParam(rawRef);
    const body = await about('manifest-put', () => readBody(req, this.opts.maxManifestBytes, 'manifest'));
    const digest = sha256(body);
    if (ref.digest && ref.digest !== digest)
      throw new CairnError(
        ErrorCode.DIGEST_MISMATCH,
        `manifest: the reference is ${ref.digest} but the body hashes to ${digest}`,
      );
    const contentType = (req.headers['content-type'] ?? '').split(';')[0]?.trim() || undefined;
    const what = `manifest ${repository}@${digest}`;
    const parsed = about('manifest-put', () => parseManifest(body, what, contentType));
    const mediaType = parsed.kind === 'index' ? parsed.index.mediaType : parsed.manifest.mediaType;
    if (!MANIFEST_TYPES.includes(mediaType as (typeof MANIFEST_TYPES)[number]))
      throw new CairnError(ErrorCode.UNSUPPORTED, `${what}: media type ${mediaType} is not supported`);
    let rows: ManifestRow[];
    let tagged: Digest | undefined;
    await about('manifest-put', async () => {
      if (parsed.kind === 'index') rows = this.indexRows(repository, digest, body, mediaType, parsed.index.manifests);
      else ({ rows, tagged } = await this.manifestRows(repository, digest, body, parsed.manifest, ref.tag));
    });
    // The tag names the served manifest, or that of the reconstruction when the push was reconstructed.
    const servedDigest = tagged ?? ((rows! as ManifestRow[])[0]?.served as Digest);
    this.meta.putManifests(rows!, ref.tag ? { repository, tag: ref.tag, digest: servedDigest } : undefined);
    this.reply(res, 201, { location: location(repository, 'manifests', digest), 'docker-content-digest': digest });
  }

  private indexRows(
    repository: string,
    digest: Digest,
    body: Buffer,
    mediaType: string,
    children: Descriptor[],
  ): ManifestRow[] {
    const served = new Map<string, { digest: Digest; size: number; mediaType: string }>();
    for (const c of children) {
      const row = this.meta.manifest(repository, c.digest) ?? this.resolveRow(repository, c.digest);
      if (!row)
        throw new CairnError(ErrorCode.NOT_FOUND, `index ${digest}: manifest ${c.digest} is not in ${repository}`);
      const s = this.meta.manifest(repository, row.served) ?? row;
      served.set(c.digest, { digest: s.digest, size: s.data.byteLength, mediaType: s.mediaType });
    }
    const out = servedIndex(body, served);
    return manifestPair(repository, { digest, data: body }, out, mediaType, null);
  }

  private async manifestRows(
    repository: string,
    digest: Digest,
    body: Buffer,
    manifest: ImageManifest,
    tag: string | undefined,
  ): Promise<{ rows: ManifestRow[]; tagged?: Digest }> {
    const what = `manifest ${repository}@${digest}`;
    const verbatim = (image: Digest | null): { rows: ManifestRow[] } => ({
      rows: manifestPair(repository, { digest, data: body }, { digest, data: body }, manifest.mediaType, image),
    });
    const blobs = [manifest.config, ...manifest.layers];
    for (const d of blobs) {
      if (!(await this.heldPath(d.digest)) && !this.meta.config(d.digest) && !this.rebuildable(d.digest))
        throw new CairnError(ErrorCode.NOT_FOUND, `${what}: blob ${d.digest} is unknown`);
    }
    if (!IMAGE_CONFIG_TYPES.has(manifest.config.mediaType)) {
      // Not an image (an artifact): kept as pushed, with its blobs.
      return verbatim(null);
    }
    for (const [i, l] of manifest.layers.entries()) layerCompression(l.mediaType, `${what}: layer ${i}`);
    const heldConfig = await this.heldPath(manifest.config.digest);
    const configBytes = heldConfig ? await readFile(heldConfig) : (this.meta.config(manifest.config.digest) as Buffer);
    if (sha256(configBytes) !== manifest.config.digest || configBytes.byteLength !== manifest.config.size)
      throw new CairnError(ErrorCode.DIGEST_MISMATCH, `${what}: config does not match its descriptor`);
    const config = parseConfig(configBytes, `${what} config`);
    const reconstructed = await this.ingest(repository, digest, body, manifest, configBytes, config, tag);
    const tagged = reconstructed ? this.servedForImage(repository, reconstructed)?.digest : undefined;
    const img = this.store.meta.image(digest);
    if (!img) throw new CairnError(ErrorCode.INTERNAL, `${what}: ingested but not recorded`);
    if (this.opts.keepLayerBlobs) return { ...verbatim(digest), ...(tagged ? { tagged } : {}) };
    const served = uncompressedManifest(body, img.layers);
    // Compressed blobs go after a grace period: a concurrent push of another image may still name them.
    const drops = manifest.layers.map((l) => l.digest).filter((d, i) => d !== img.layers[i]?.diffId);
    this.meta.scheduleBlobDrops(drops, Date.now() + this.opts.layerBlobGraceSeconds * 1000);
    if (this.opts.layerBlobGraceSeconds === 0) await this.sweep();
    return {
      rows: manifestPair(repository, { digest, data: body }, served, manifest.mediaType, digest),
      ...(tagged ? { tagged } : {}),
    };
  }

  /**
   * Ingests the image into the file-level store (once per digest; a known image is only recorded).
   * Returns the reconstructed image when online reconstruction moved the tag to one.
   */
  private async ingest(
    repository: string,
    digest: Digest,
    body: Buffer,
    manifest: ImageManifest,
    configBytes: Buffer,
    config: ReturnType<typeof parseConfig>,
    tag: string | undefined,
  ): Promise<Digest | undefined> {
    const key = digest;
    for (let pending = this.ingests.get(key); pending; pending = this.ingests.get(key))
      await pending.catch(() => undefined);
    const existing = this.store.meta.image(digest);
    if (existing) {
      this.store.meta.commitImage({
        repository,
        tag,
        digest,
        manifest: existing.manifest,
        manifestMediaType: existing.manifestMediaType,
        config: existing.config,
        configDigest: existing.configDigest,
        platform: existing.platform,
        layers: [],
      });
      return undefined;
    }
    const source = new PushedImageSource(
      { repository, manifestDigest: digest, manifestBytes: body, manifest, configBytes, config },
      { heldPath: (d) => this.heldPath(d), rebuilt: (d) => this.rebuilt(d) },
    );
    const started = performance.now();
    const run = this.reconstructSettings(tag)
      .then((reconstruct) =>
        importImage(this.store, { source }, `${repository}:${tag ?? 'latest'}`, {
          untagged: tag === undefined,
          ...(reconstruct ? { reconstruct } : {}),
          onWarning: (message) => this.log.warn('push ingest', { repository, digest, message }),
        }),
      )
      .then((r) => {
        const rec = r.reconstruction;
        this.log.info('ingested', {
          repository,
          digest,
          layers: r.layers.length,
          files: r.files,
          newFiles: r.newFiles,
          newBytes: r.newBytes,
          ms: Math.round(performance.now() - started),
          ...(rec
            ? {
                reconstructed: rec.valid ? (rec.image ?? 'layers kept') : `rejected: ${rec.rejected ?? ''}`,
                layersAfter: rec.layersAfter,
                reusedLayers: rec.reusedLayers,
              }
            : {}),
        });
        return rec?.valid ? rec.image : undefined;
      });
    this.ingests.set(key, run);
    try {
      return await run;
    } finally {
      this.ingests.delete(key);
    }
  }

  /**
   * Online reconstruction of a pushed image, as `cairn import` does it: when
   * `<root>/reconstruct.json` enables it and the push names a tag (the tag is
   * what moves to the reconstructed image; a push by digest is only recorded).
   * Read at every push, so enabling it needs no restart.
   */
  private async reconstructSettings(tag: string | undefined): Promise<ReconstructSettings | undefined> {
    if (tag === undefined) return undefined;
    const { loadReconstructConfig } = await import('../reconstruct.js');
    const rc = await loadReconstructConfig(this.store.root);
    return rc.enabled ? rc : undefined;
  }

  private async deleteManifest(
    _req: IncomingMessage,
    res: ServerResponse,
    [rawRepo = '', rawRef = '']: string[],
  ): Promise<void> {
    const ref = this.refParam(rawRef);
    if (ref.tag) {
      if (!this.meta.deleteTag(rawRepo, ref.tag))
        throw new CairnError(ErrorCode.NOT_FOUND, `tag ${rawRepo}:${ref.tag} is unknown`);
    } else {
      const row = this.resolveRow(rawRepo, ref.digest as Digest);
      if (!row) throw new CairnError(ErrorCode.NOT_FOUND, `manifest ${rawRepo}@${ref.digest} is unknown`);
      this.meta.deleteManifest(rawRepo, row.digest, row.image);
    }
    this.reply(res, 202, {});
    await Promise.resolve();
  }
}
