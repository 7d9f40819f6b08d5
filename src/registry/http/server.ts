import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { open, type FileHandle } from 'node:fs/promises';
import { LRUCache } from 'lru-cache';
import { gunzipSync } from 'node:zlib';
import { CairnError, ErrorCode } from '../../model/errors.js';
import { parseDigest, type Digest } from '../../model/digest.js';
import { RECIPE_MEDIA_TYPE } from '../../model/recipe.js';
import { unpackChunks } from '../../model/chunks.js';
import type { RegistryStore } from '../store.js';
import type { ImageRow } from '../metadata.js';
import { checkRepositoryName, checkTag } from '../metadata.js';
import type { Logger } from '../../util/log.js';
import { errorBody, httpStatusOf } from './status.js';
import { parseRange } from './range.js';
import { RegistryMetrics } from './metrics.js';
import { acceptsEncoding, ifNoneMatchHits } from './conditional.js';
import { isOciPath, OciApi } from '../oci/api.js';
import { ViewStore } from '../views.js';
import { VIEW_MEDIA_TYPE } from '../../union/serialize.js';
import { DEFAULT_OCI_OPTIONS, type OciOptions } from '../oci/options.js';
import {
  decodeProfile,
  encodeProfile,
  MAX_PROFILE_BODY_BYTES,
  MAX_PROFILE_FILES,
  READ_PROFILE_MEDIA_TYPE,
} from '../../model/read-profile.js';

/** The native API's version prefix. */
export const API_PREFIX = '/api/v1';

const IMMUTABLE = 'public, max-age=31536000, immutable';
/** Files up to this size are sent from one read; larger ones are streamed. */
const SMALL_FILE_BYTES = 256 * 1024;
const FILES_PREFIX = '/api/v1/files/';
/** Read size of a streamed file; two buffers of it per response. */
const STREAM_CHUNK_BYTES = 1024 * 1024;

/**
 * Sends `length` bytes of `fh` from `start`: two buffers used in turn, the next
 * read under way while the previous chunk is written, and a buffer reused only
 * once its write has reached the socket. A read stream would allocate a buffer
 * per chunk; this costs about a third less CPU per byte (bench/results/http/proto-large).
 */
/** Resolves once `chunk` has reached the socket; rejects when the response closes first (a client gone). */
function written(res: ServerResponse, chunk: Buffer): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    // A write pending on a socket that goes away may never call back: 'close' says it instead.
    const gone = (): void =>
      reject(Object.assign(new Error('the client closed the connection'), { code: 'ERR_STREAM_PREMATURE_CLOSE' }));
    res.once('close', gone);
    res.write(chunk, (err) => {
      res.off('close', gone);
      if (err) reject(err);
      else resolve();
    });
  });
}

async function streamRange(fh: FileHandle, res: ServerResponse, start: number, length: number): Promise<void> {
  const bufs = [Buffer.allocUnsafe(STREAM_CHUNK_BYTES), Buffer.allocUnsafe(STREAM_CHUNK_BYTES)];
  const end = start + length;
  let pos = start;
  let i = 0;
  let pending = fh.read(bufs[0] as Buffer, 0, Math.min(STREAM_CHUNK_BYTES, end - pos), pos);
  try {
    while (pos < end) {
      const { bytesRead } = await pending;
      if (bytesRead <= 0) throw new CairnError(ErrorCode.STORAGE, `short read at byte ${pos} of a stored file`);
      const chunk = (bufs[i] as Buffer).subarray(0, bytesRead);
      pos += bytesRead;
      i ^= 1;
      if (pos < end) pending = fh.read(bufs[i] as Buffer, 0, Math.min(STREAM_CHUNK_BYTES, end - pos), pos);
      await written(res, chunk);
    }
  } catch (err) {
    // A client gone mid-write leaves the next read in flight: its outcome no longer matters.
    pending.catch(() => undefined);
    throw err;
  }
  res.end();
}

type Handler = (req: IncomingMessage, res: ServerResponse, params: string[]) => Promise<void> | void;
interface Route {
  name: string;
  pattern: RegExp;
  handler: Handler;
  /** Methods besides GET and HEAD this route takes. */
  writes?: string[];
}

function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const data = Buffer.from(JSON.stringify(body));
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': data.byteLength, ...headers });
  res.end(res.req.method === 'HEAD' ? undefined : data);
}

function imageJson(img: ImageRow, extra: Record<string, unknown> = {}): unknown {
  return {
    digest: img.digest,
    ...extra,
    mediaType: img.manifestMediaType,
    platform: img.platform,
    configDigest: img.configDigest,
    config: JSON.parse(img.config.toString('utf8')) as unknown,
    createdMs: img.createdMs,
    layers: img.layers.map((l) => ({
      recipe: l.recipe,
      diffId: l.diffId,
      digest: l.blobDigest,
      size: l.blobSize,
      mediaType: l.mediaType,
      tarBytes: l.tarBytes,
      entries: l.entries,
      files: l.files,
      fileBytes: l.fileBytes,
    })),
  };
}

/** A request's body, refused (TOO_LARGE) past `maxBytes` without reading on. */
async function readRequestBody(req: IncomingMessage, maxBytes: number, what: string): Promise<Buffer> {
  const declared = Number(req.headers['content-length'] ?? NaN);
  if (declared > maxBytes) throw new CairnError(ErrorCode.TOO_LARGE, `${what}: ${declared} bytes, at most ${maxBytes}`);
  const parts: Buffer[] = [];
  let total = 0;
  for await (const piece of req as AsyncIterable<Buffer>) {
    total += piece.byteLength;
    if (total > maxBytes) throw new CairnError(ErrorCode.TOO_LARGE, `${what}: over ${maxBytes} bytes`);
    parts.push(piece);
  }
  return Buffer.concat(parts, total);
}

function decodeParam(raw: string, what: string): string {
  try {
    return decodeURIComponent(raw);
  } catch {
    throw new CairnError(ErrorCode.INVALID_INPUT, `${what}: malformed percent-encoding`);
  }
}

export interface RegistryHttpServerOptions {
  /** The metrics this server records into (a fresh set by default). */
  metrics?: RegistryMetrics;
  /**
   * Where /metrics gets its text; by default this server's own registry. A
   * cluster worker answers with the primary's sum over every worker.
   */
  metricsText?: () => Promise<{ text: string; contentType: string }>;
  /** The /v2 API's auth, limits and layer blob policy (DEFAULT_OCI_OPTIONS when absent). */
  oci?: OciOptions;
  /**
   * Whether daemons may add to images' read profiles (POST .../profile; default
   * true). Profiles already kept are served either way.
   */
  acceptReadProfiles?: boolean;
}

/**
 * The registry's HTTP server: the native JSON API, file contents by digest,
 * health and metrics. Every URL parameter is validated before it is used; file
 * paths come only from validated digests.
 */
export class RegistryHttpServer {
  readonly server: Server;
  readonly metrics: RegistryMetrics;
  private readonly routes: Route[];
  private closed = false;
  /** The OCI distribution API on /v2, on the same listener. */
  readonly oci: OciApi;
  /** Built union views served to mounts (kept on disk, shared by workers). */
  readonly views: ViewStore;
  /**
   * Small contents kept in memory: contents are immutable, so nothing is ever
   * invalidated, and a 4 KiB request then costs no trip through libuv's thread
   * pool (open, stat, read, close cost ~40 µs each on a 2-core VM).
   */
  private readonly smallFiles = new LRUCache<string, Buffer>({
    maxSize: 64 * 1024 * 1024,
    sizeCalculation: (b) => Math.max(1, b.byteLength),
  });

  constructor(
    private readonly store: RegistryStore,
    private readonly log: Logger,
    private readonly opts: RegistryHttpServerOptions = {},
  ) {
    this.metrics = opts.metrics ?? new RegistryMetrics();
    this.views = new ViewStore(store, { onWarning: (message) => log.warn('view not kept on disk', { message }) });
    this.oci = new OciApi(store, opts.oci ?? DEFAULT_OCI_OPTIONS, log);
    const repo = '([a-z0-9][a-z0-9._/-]*)';
    this.routes = [
      {
        name: 'health',
        pattern: /^\/(?:healthz|api\/v1\/health)$/,
        handler: (_q, s) => sendJson(s, 200, { status: 'ok' }),
      },
      { name: 'metrics', pattern: /^\/metrics$/, handler: (_q, s) => this.sendMetrics(s) },
      {
        name: 'repositories',
        pattern: /^\/api\/v1\/repositories$/,
        handler: (_q, s) => sendJson(s, 200, { repositories: this.store.meta.repositories() }),
      },
      {
        name: 'tags',
        pattern: new RegExp(`^/api/v1/repositories/${repo}/tags$`),
        handler: (_q, s, p) => this.tags(s, p),
      },
      {
        name: 'image',
        pattern: new RegExp(`^/api/v1/repositories/${repo}/images/([^/]+)$`),
        handler: (_q, s, p) => this.imageByRef(s, p),
      },
      {
        name: 'image-digest',
        pattern: /^\/api\/v1\/images\/([^/]+)$/,
        handler: (_q, s, p) => this.imageByDigest(s, p),
      },
      {
        name: 'view',
        pattern: /^\/api\/v1\/images\/([^/]+)\/view$/,
        handler: (q, s, p) => this.view(q, s, p),
      },
      {
        name: 'profile',
        pattern: /^\/api\/v1\/images\/([^/]+)\/profile$/,
        handler: (q, s, p) => this.profile(q, s, p),
        writes: ['POST'],
      },
      { name: 'recipe', pattern: /^\/api\/v1\/recipes\/([^/]+)$/, handler: (q, s, p) => this.recipe(q, s, p) },
      {
        name: 'file-chunks',
        pattern: /^\/api\/v1\/files\/([^/]+)\/chunks$/,
        handler: (_q, s, p) => this.fileChunks(s, p),
      },
      { name: 'file', pattern: /^\/api\/v1\/files\/([^/]+)$/, handler: (q, s, p) => this.file(q, s, p) },
    ];
    this.server = createServer({ keepAliveTimeout: 30_000 }, (req, res) => {
      const started = performance.now();
      const url = req.url ?? '/';
      const q = url.indexOf('?');
      const path = q < 0 ? url : url.slice(0, q);
      if (!this.serveCachedFile(req, res, path, started)) void this.handle(req, res, path, started);
    });
  }

  async listen(host: string, port: number): Promise<{ host: string; port: number }> {
    await this.oci.init();
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(port, host, () => {
        this.server.off('error', reject);
        const addr = this.server.address();
        if (addr && typeof addr === 'object') resolve({ host: addr.address, port: addr.port });
        else reject(new CairnError(ErrorCode.INTERNAL, 'server has no address'));
      });
    });
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.oci.close();
    await new Promise<void>((resolve) => {
      this.server.close(() => resolve());
      this.server.closeIdleConnections();
    });
  }

  /**
   * The hot path: a whole small file already in memory, no conditional or range
   * header. Answered synchronously, with no route search and no listener; the
   * request's time is taken when the body is handed to the socket. Only
   * validated digests are ever cache keys, so a path that is not one misses.
   */
  private serveCachedFile(req: IncomingMessage, res: ServerResponse, path: string, started: number): boolean {
    if (!path.startsWith(FILES_PREFIX) || (req.method !== 'GET' && req.method !== 'HEAD')) return false;
    if (req.headers.range !== undefined || req.headers['if-none-match'] !== undefined) return false;
    const digest = path.slice(FILES_PREFIX.length);
    const cached = this.smallFiles.get(digest);
    if (!cached) return false;
    res.writeHead(200, {
      'content-type': 'application/octet-stream',
      'cache-control': IMMUTABLE,
      etag: `"${digest}"`,
      'accept-ranges': 'bytes',
      'content-length': cached.byteLength,
    });
    if (req.method === 'HEAD') res.end();
    else {
      res.end(cached);
      this.metrics.bytesSent.inc(cached.byteLength);
    }
    this.metrics.recordFileOk(req.method, (performance.now() - started) / 1000);
    return true;
  }

  private async handle(req: IncomingMessage, res: ServerResponse, path: string, started: number): Promise<void> {
    let route: Route | undefined;
    let params: string[] = [];
    for (const r of this.routes) {
      const m = r.pattern.exec(path);
      if (m) {
        route = r;
        params = m.slice(1);
        break;
      }
    }
    const oci = route === undefined && isOciPath(path);
    const name = oci ? 'v2' : (route?.name ?? 'unknown');
    // 'close' fires for finished and for aborted responses alike, so aborts are counted too.
    res.once('close', () => {
      const seconds = (performance.now() - started) / 1000;
      this.metrics.record(name, req.method ?? '', res.statusCode, seconds);
      if (this.log.enabled('debug')) {
        this.log.debug('request', {
          method: req.method,
          path,
          status: res.statusCode,
          ms: Math.round(seconds * 1e4) / 10,
        });
      }
    });
    if (oci) {
      // The /v2 API answers its own errors, in the specification's format.
      await this.oci.handle(req, res, path);
      return;
    }
    try {
      if (!route) throw new CairnError(ErrorCode.NOT_FOUND, `no route for ${path.slice(0, 200)}`);
      if (req.method !== 'GET' && req.method !== 'HEAD' && !route.writes?.includes(req.method ?? '')) {
        sendJson(
          res,
          405,
          { error: { code: 'CAIRN_ERR_METHOD', message: `${req.method} is not allowed here` } },
          { allow: ['GET', 'HEAD', ...(route.writes ?? [])].join(', ') },
        );
        return;
      }
      await route.handler(req, res, params);
    } catch (err) {
      // A request whose body was read to its end is destroyed too, its socket is not: no abort.
      if (
        (req.destroyed && req.socket.destroyed) ||
        (err as NodeJS.ErrnoException).code === 'ERR_STREAM_PREMATURE_CLOSE'
      ) {
        // The client went away mid-response: nothing failed on our side.
        this.log.debug('client aborted', { path });
        res.destroy();
        return;
      }
      const status = httpStatusOf(err);
      if (status >= 500)
        this.log.error('request failed', { path, error: err instanceof Error ? err.message : String(err) });
      if (res.headersSent) res.destroy();
      else sendJson(res, status, errorBody(err));
    }
  }

  private async sendMetrics(res: ServerResponse): Promise<void> {
    const { text, contentType } = this.opts.metricsText
      ? await this.opts.metricsText()
      : { text: await this.metrics.registry.metrics(), contentType: this.metrics.registry.contentType };
    res.writeHead(200, { 'content-type': contentType });
    res.end(text);
  }

  private repoParam(raw: string): string {
    return checkRepositoryName(decodeParam(raw, 'repository'), 'repository');
  }

  private tags(res: ServerResponse, [rawRepo = '']: string[]): void {
    const repository = this.repoParam(rawRepo);
    if (!this.store.meta.hasRepository(repository))
      throw new CairnError(ErrorCode.NOT_FOUND, `repository ${repository} is unknown`);
    sendJson(res, 200, { repository, tags: this.store.meta.tags(repository) });
  }

  private imageByRef(res: ServerResponse, [rawRepo = '', rawRef = '']: string[]): void {
    const repository = this.repoParam(rawRepo);
    const ref = decodeParam(rawRef, 'reference');
    if (ref.startsWith('sha256:')) parseDigest(ref, 'reference');
    else checkTag(ref, 'reference');
    const img = this.store.meta.imageByReference(repository, ref);
    if (!img) throw new CairnError(ErrorCode.NOT_FOUND, `image ${repository}:${ref} is unknown`);
    // A tag can move; a digest cannot.
    const cache = ref.startsWith('sha256:') ? IMMUTABLE : 'no-cache';
    sendJson(res, 200, imageJson(img, { repository, reference: ref }), {
      'cache-control': cache,
      etag: `"${img.digest}"`,
    });
  }

  private imageByDigest(res: ServerResponse, [raw = '']: string[]): void {
    const digest = parseDigest(decodeParam(raw, 'image digest'), 'image digest');
    const img = this.store.meta.image(digest);
    if (!img) throw new CairnError(ErrorCode.NOT_FOUND, `image ${digest} is unknown`);
    sendJson(res, 200, imageJson(img), { 'cache-control': IMMUTABLE, etag: `"${img.digest}"` });
  }

  /** The built union view of an image's layers (`?layers=N`: its first N), for mounts to restore. */
  private async view(req: IncomingMessage, res: ServerResponse, [raw = '']: string[]): Promise<void> {
    const digest = parseDigest(decodeParam(raw, 'image digest'), 'image digest');
    const img = this.store.meta.image(digest);
    if (!img) throw new CairnError(ErrorCode.NOT_FOUND, `image ${digest} is unknown`);
    const q = (req.url ?? '').indexOf('?');
    const wanted = new URLSearchParams(q < 0 ? '' : (req.url ?? '').slice(q + 1)).get('layers');
    let layers = img.layers.length;
    if (wanted !== null) {
      layers = /^[0-9]{1,4}$/.test(wanted) ? Number(wanted) : 0;
      if (layers < 1 || layers > img.layers.length) {
        throw new CairnError(
          ErrorCode.INVALID_INPUT,
          `view of image ${digest}: layers=${wanted.slice(0, 20)} is not within 1..${img.layers.length}`,
        );
      }
    }
    const v = await this.views.get(img.layers.slice(0, layers).map((l) => l.recipe));
    const headers: Record<string, string | number> = {
      'content-type': VIEW_MEDIA_TYPE,
      'cache-control': IMMUTABLE,
      etag: `"${v.digest}"`,
      'cairn-view-digest': v.digest,
    };
    if (ifNoneMatchHits(req.headers['if-none-match'], `"${v.digest}"`)) {
      res.writeHead(304, headers);
      res.end();
      return;
    }
    headers['content-length'] = v.bytes.byteLength;
    res.writeHead(200, headers);
    res.end(req.method === 'HEAD' ? undefined : v.bytes);
  }

  /**
   * An image's read profile: GET it (an empty list when none was shared), or
   * POST what a mount read to merge it in (contents of the image only, sizes as
   * stored; a bad entry changes nothing).
   */
  private async profile(req: IncomingMessage, res: ServerResponse, [raw = '']: string[]): Promise<void> {
    const digest = parseDigest(decodeParam(raw, 'image digest'), 'image digest');
    if (!this.store.meta.image(digest)) throw new CairnError(ErrorCode.NOT_FOUND, `image ${digest} is unknown`);
    if (req.method === 'POST') {
      if (this.opts.acceptReadProfiles === false) {
        throw new CairnError(
          ErrorCode.FORBIDDEN,
          `read profiles: this registry does not take them (--no-read-profiles)`,
        );
      }
      const what = `read profile of ${digest}`;
      const entries = decodeProfile(await readRequestBody(req, MAX_PROFILE_BODY_BYTES, what), what);
      const r = this.store.meta.mergeReadProfile(digest, entries, MAX_PROFILE_FILES);
      sendJson(res, 200, r);
      return;
    }
    const body = encodeProfile(this.store.meta.readProfile(digest));
    res.writeHead(200, {
      'content-type': READ_PROFILE_MEDIA_TYPE,
      'cache-control': 'no-cache',
      'content-length': Buffer.byteLength(body),
    });
    res.end(req.method === 'HEAD' ? undefined : body);
  }

  private recipe(req: IncomingMessage, res: ServerResponse, [raw = '']: string[]): void {
    const id = parseDigest(decodeParam(raw, 'recipe id'), 'recipe id');
    const gz = this.store.meta.recipe(id);
    if (!gz) throw new CairnError(ErrorCode.NOT_FOUND, `recipe ${id} is unknown`);
    const headers: Record<string, string | number> = {
      'content-type': RECIPE_MEDIA_TYPE,
      'cache-control': IMMUTABLE,
      etag: `"${id}"`,
      vary: 'accept-encoding',
    };
    if (ifNoneMatchHits(req.headers['if-none-match'], `"${id}"`)) {
      res.writeHead(304, headers);
      res.end();
      return;
    }
    const gzipOk = acceptsEncoding(req.headers['accept-encoding'], 'gzip');
    const body = gzipOk ? gz : gunzipSync(gz);
    if (gzipOk) headers['content-encoding'] = 'gzip';
    headers['content-length'] = body.byteLength;
    res.writeHead(200, headers);
    res.end(req.method === 'HEAD' ? undefined : body);
  }

  private fileChunks(res: ServerResponse, [raw = '']: string[]): void {
    const digest = parseDigest(decodeParam(raw, 'file digest'), 'file digest');
    const f = this.store.meta.file(digest);
    if (!f) throw new CairnError(ErrorCode.NOT_FOUND, `file ${digest} is unknown`);
    sendJson(
      res,
      200,
      { digest, size: f.size, chunkBytes: f.chunkBytes, chunks: f.chunks ? unpackChunks(f.chunks) : [digest] },
      // A whole content's list may later be recorded in pieces (a newer import): the etag says which.
      { 'cache-control': IMMUTABLE, etag: `"${digest}/chunks/${f.chunkBytes}"` },
    );
  }

  private async file(req: IncomingMessage, res: ServerResponse, [raw = '']: string[]): Promise<void> {
    const digest: Digest = parseDigest(decodeParam(raw, 'file digest'), 'file digest');
    const cached = this.smallFiles.get(digest);
    if (cached) {
      await this.sendContent(req, res, digest, cached.byteLength, (start, length) => {
        res.end(cached.subarray(start, start + length));
      });
      return;
    }
    let fh;
    try {
      fh = await open(this.store.blobs.path(digest), 'r');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT')
        throw new CairnError(ErrorCode.NOT_FOUND, `file ${digest} is unknown`);
      throw err;
    }
    try {
      const size = (await fh.stat()).size;
      if (size <= SMALL_FILE_BYTES) {
        // Read whole once and keep: later requests (any range) are served from memory.
        const buf = Buffer.allocUnsafe(size);
        const { bytesRead } = await fh.read(buf, 0, size, 0);
        if (bytesRead !== size) throw new CairnError(ErrorCode.STORAGE, `file ${digest}: short read`);
        this.smallFiles.set(digest, buf);
        await this.sendContent(
          req,
          res,
          digest,
          size,
          (start, length) => void res.end(buf.subarray(start, start + length)),
        );
        return;
      }
      const handle = fh;
      await this.sendContent(req, res, digest, size, (start, length) => streamRange(handle, res, start, length));
    } finally {
      await fh.close();
    }
  }

  /** Headers, conditional and range handling for a content of `size` bytes; `send` writes the body. */
  private async sendContent(
    req: IncomingMessage,
    res: ServerResponse,
    digest: Digest,
    size: number,
    send: (start: number, length: number) => void | Promise<void>,
  ): Promise<void> {
    const etag = `"${digest}"`;
    const headers: Record<string, string | number> = {
      'content-type': 'application/octet-stream',
      'cache-control': IMMUTABLE,
      etag,
      'accept-ranges': 'bytes',
    };
    if (ifNoneMatchHits(req.headers['if-none-match'], etag)) {
      res.writeHead(304, headers);
      res.end();
      return;
    }
    const range = parseRange(req.headers.range, size);
    if (range.kind === 'unsatisfiable') {
      res.writeHead(416, { ...headers, 'content-range': `bytes */${size}`, 'content-length': 0 });
      res.end();
      return;
    }
    const start = range.kind === 'partial' ? range.start : 0;
    const end = range.kind === 'partial' ? range.end : size - 1;
    const length = size === 0 ? 0 : end - start + 1;
    if (range.kind === 'partial') headers['content-range'] = `bytes ${start}-${end}/${size}`;
    headers['content-length'] = length;
    res.writeHead(range.kind === 'partial' ? 206 : 200, headers);
    if (req.method === 'HEAD' || length === 0) {
      res.end();
      return;
    }
    await send(start, length);
    this.metrics.bytesSent.inc(length);
  }
}
