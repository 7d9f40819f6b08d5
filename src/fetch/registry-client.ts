import { gunzip } from 'node:zlib';
import { promisify } from 'node:util';
import { webcrypto } from 'node:crypto';
import { CairnError, ErrorCode } from '../model/errors.js';
import { parseDigest, type Digest } from '../model/digest.js';
import { checkRecipeDigest, parseRecipe, type Recipe } from '../model/recipe.js';
import { HttpPool, readBody } from './http-pool.js';
import {
  decodeProfile,
  encodeProfile,
  MAX_PROFILE_FILES,
  READ_PROFILE_MEDIA_TYPE,
  type ProfileEntry,
} from '../model/read-profile.js';

const gunzipAsync = promisify(gunzip);

/** An image as the registry's native API describes it (the fields a mount needs). */
export interface RemoteImage {
  digest: Digest;
  repository?: string;
  reference?: string;
  platform: string;
  layers: { recipe: Digest; diffId: Digest; digest?: Digest; entries: number; fileBytes: number }[];
}

export interface RegistryClientOptions {
  /** Base URL of the registry, e.g. http://127.0.0.1:5000 */
  url: string;
  /** Deadline of one metadata request. */
  deadlineMs?: number;
}

/**
 * Reads image metadata (images, recipes) from cairn's registry. Recipes are
 * verified against their ids before they are returned.
 */
export class RegistryClient {
  private readonly pool: HttpPool;
  private readonly deadlineMs: number;
  private closed = false;

  constructor(readonly opts: RegistryClientOptions) {
    let origin: URL;
    try {
      origin = new URL(opts.url);
    } catch {
      throw new CairnError(ErrorCode.INVALID_OPTION, `registry URL: ${JSON.stringify(opts.url)} is not a URL`);
    }
    if (origin.protocol !== 'http:' && origin.protocol !== 'https:') {
      throw new CairnError(ErrorCode.INVALID_OPTION, `registry URL: ${opts.url} must be http or https`);
    }
    this.deadlineMs = opts.deadlineMs ?? 10_000;
    if (!Number.isSafeInteger(this.deadlineMs) || this.deadlineMs <= 0) {
      throw new CairnError(ErrorCode.INVALID_OPTION, 'RegistryClient: option deadlineMs must be a positive integer');
    }
    this.pool = new HttpPool(origin, { connections: 2, idleTimeoutMs: this.deadlineMs + 1000 });
  }

  private async get(
    path: string,
    what: string,
    post?: { body: Buffer; contentType: string; signal?: AbortSignal },
  ): Promise<{ status: number; body: Buffer; encoding?: string; viewDigest?: string }> {
    if (this.closed) throw new CairnError(ErrorCode.UNAVAILABLE, 'registry client is closed');
    const deadline = AbortSignal.timeout(this.deadlineMs);
    try {
      const res = await this.pool.request({
        path,
        headers: post ? { 'content-type': post.contentType } : { 'accept-encoding': 'gzip' },
        signal: post?.signal ? AbortSignal.any([deadline, post.signal]) : deadline,
        ...(post ? { method: 'POST' as const, body: post.body } : {}),
      });
      const body = await readBody(res.body);
      const encoding = res.headers['content-encoding'];
      const viewDigest = res.headers['cairn-view-digest'];
      return {
        status: res.statusCode,
        body,
        ...(typeof encoding === 'string' ? { encoding } : {}),
        ...(typeof viewDigest === 'string' ? { viewDigest } : {}),
      };
    } catch (err) {
      const name = (err as Error).name;
      if (name === 'TimeoutError' || name === 'AbortError') {
        throw new CairnError(
          ErrorCode.TIMEOUT,
          `${what}: ${this.opts.url} did not answer within ${this.deadlineMs} ms`,
        );
      }
      throw new CairnError(ErrorCode.UNAVAILABLE, `${what}: ${this.opts.url}: ${(err as Error).message}`, {
        cause: err,
      });
    }
  }

  private check(r: { status: number; body: Buffer }, what: string): void {
    if (r.status === 200) return;
    let message = `HTTP ${r.status}`;
    try {
      message = (JSON.parse(r.body.toString()) as { error: { message: string } }).error.message;
    } catch {
      // not a cairn error body
    }
    const code =
      r.status === 404 ? ErrorCode.NOT_FOUND : r.status < 500 ? ErrorCode.INVALID_INPUT : ErrorCode.UNAVAILABLE;
    throw new CairnError(code, `${what}: ${message}`);
  }

  /** The image `repository:reference` (a tag or a digest). */
  async image(repository: string, reference: string): Promise<RemoteImage> {
    const what = `image ${repository}:${reference} at ${this.opts.url}`;
    const r = await this.get(
      `/api/v1/repositories/${repository.split('/').map(encodeURIComponent).join('/')}/images/${encodeURIComponent(reference)}`,
      what,
    );
    this.check(r, what);
    const img = JSON.parse(r.body.toString()) as RemoteImage;
    parseDigest(img.digest, `${what} digest`);
    if (!Array.isArray(img.layers)) throw new CairnError(ErrorCode.INVALID_INPUT, `${what}: no layers`);
    img.layers.forEach((l, i) => parseDigest(l.recipe, `${what} layer ${i} recipe`));
    return img;
  }

  /** A recipe, verified against its id. */
  async recipe(id: Digest): Promise<Recipe> {
    const what = `recipe ${id} at ${this.opts.url}`;
    const r = await this.get(`/api/v1/recipes/${id}`, what);
    this.check(r, what);
    // Inflating and hashing run on libuv's thread pool (the layers of a mount in
    // parallel), the hash while the main thread parses; nothing is returned unverified.
    const raw = r.encoding === 'gzip' ? await gunzipAsync(r.body) : r.body;
    const hashing = webcrypto.subtle.digest('SHA-256', raw);
    let recipe: Recipe | undefined;
    let invalid: unknown;
    try {
      recipe = parseRecipe(raw);
    } catch (err) {
      invalid = err;
    }
    // A mismatch says more than a parse error of bytes that are not the recipe.
    checkRecipeDigest(id, `sha256:${Buffer.from(await hashing).toString('hex')}`);
    if (recipe === undefined) throw invalid;
    return recipe;
  }

  /**
   * The registry's built view of image `digest`'s first `layers` layers
   * (`UnionView.decode` restores it), checked against the digest the registry
   * states for it. NOT_FOUND from a registry that serves no views. The view is
   * metadata as the image's description is: the caller checks that it names
   * the recipes of the layers it asked for.
   */
  async view(digest: Digest, layers: number): Promise<Buffer> {
    const what = `view of image ${digest} (${layers} layers) at ${this.opts.url}`;
    const r = await this.get(`/api/v1/images/${digest}/view?layers=${layers}`, what);
    this.check(r, what);
    const stated = r.viewDigest;
    if (stated === undefined) throw new CairnError(ErrorCode.INVALID_INPUT, `${what}: no cairn-view-digest header`);
    const actual = `sha256:${Buffer.from(await webcrypto.subtle.digest('SHA-256', r.body)).toString('hex')}`;
    if (actual !== stated) {
      throw new CairnError(
        ErrorCode.DIGEST_MISMATCH,
        `${what}: content hashes to ${actual}, the registry says ${stated}`,
      );
    }
    return r.body;
  }

  /** Image `digest`'s read profile (empty when none was shared; NOT_FOUND from a registry that keeps none). */
  async readProfile(digest: Digest): Promise<ProfileEntry[]> {
    const what = `read profile of image ${digest} at ${this.opts.url}`;
    const r = await this.get(`/api/v1/images/${digest}/profile`, what);
    this.check(r, what);
    return decodeProfile(r.body, what);
  }

  /** Adds what a mount of image `digest` read to the registry's read profile of it. */
  async shareReadProfile(digest: Digest, entries: readonly ProfileEntry[], signal?: AbortSignal): Promise<void> {
    const what = `sharing the read profile of image ${digest} with ${this.opts.url}`;
    const body = Buffer.from(encodeProfile(entries.slice(0, MAX_PROFILE_FILES)));
    const r = await this.get(`/api/v1/images/${digest}/profile`, what, {
      body,
      contentType: READ_PROFILE_MEDIA_TYPE,
      ...(signal ? { signal } : {}),
    });
    this.check(r, what);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.pool.close();
  }
}
