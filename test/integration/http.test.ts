import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHash, randomBytes } from 'node:crypto';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { writeOciLayout, type ImageInput, type WrittenImage } from '../../src/image/layout-writer.js';
import { importImage, type ImportResult } from '../../src/registry/importer.js';
import { RegistryStore } from '../../src/registry/store.js';
import { decodeRecipe, RECIPE_MEDIA_TYPE } from '../../src/model/recipe.js';
import { sha256, type Digest } from '../../src/model/digest.js';
import { CHUNK_BYTES } from '../../src/model/chunks.js';
import { MediaType } from '../../src/model/oci.js';
import { dir, file, layer, layerTar, symlink, type FixtureEntry } from '../fixtures/layers.js';
import { makeTempDir, testTempDir, type TempDir } from '../fixtures/tmp.js';
import {
  fetchRaw,
  importFixtureImage,
  openRequest,
  parsePrometheusText,
  pseudoRandom,
  startRegistry,
  type HttpResponse,
  type ImportedFixture,
  type RunningRegistry,
} from '../fixtures/registry.js';

const GREETING = 'hello from the cairn registry, long enough to take byte ranges of\n';
/** Larger than the server's one-read limit (256 KiB): sent as a stream. */
const MEDIUM = pseudoRandom(300_000, 'medium');
const BIG_SIZE = 64 * 1024 * 1024;

const appLayers: FixtureEntry[][] = [
  [dir('etc'), file('etc/greeting', GREETING), symlink('etc/link', 'greeting'), file('etc/empty', '')],
  [dir('data'), file('data/medium.bin', MEDIUM), file('data/greeting-copy', GREETING)],
];

const appImage: ImageInput = {
  ref: 'app:1',
  layers: [layer(appLayers[0]!, 'gzip'), layer(appLayers[1]!, 'none')],
  config: { Cmd: ['/bin/true'], Env: ['GREETING=hello'], Labels: { 'org.example.test': 'http' } },
};

function errorCode(r: HttpResponse): string {
  return r.json<{ error: { code: string } }>().error.code;
}

let tmp: TempDir;
let reg: RunningRegistry;
let app: ImportedFixture;
let big: ImportedFixture;
let bigContent: Buffer;
let mediumDigest: Digest;

beforeAll(async () => {
  tmp = await makeTempDir('cairn-http-');
  const store = await RegistryStore.open(join(tmp.path, 'registry'));
  bigContent = randomBytes(BIG_SIZE);
  [app, big] = (await importFixtureImage(
    store,
    { image: appImage, target: 'lib/app:1' },
    {
      image: { ref: 'big:1', layers: [layer([dir('blob'), file('blob/64m.bin', bigContent)], 'none')] },
      target: 'lib/big:1',
    },
  )) as [ImportedFixture, ImportedFixture];
  mediumDigest = sha256(MEDIUM);
  reg = await startRegistry(store, { closeAfterTest: false });
});

afterAll(async () => {
  await reg?.close();
  reg?.store.close();
  await tmp?.cleanup();
});

describe('registry HTTP API: repositories, tags, images', () => {
  it('lists repositories and their tags; 404 for an unknown repository', async () => {
    const repos = await fetchRaw(reg.url, '/api/v1/repositories');
    expect(repos.status).toBe(200);
    expect(repos.headers['content-type']).toBe('application/json');
    expect(repos.json()).toEqual({ repositories: ['lib/app', 'lib/big'] });

    const tags = await fetchRaw(reg.url, '/api/v1/repositories/lib/app/tags');
    expect(tags.status).toBe(200);
    const body = tags.json<{ repository: string; tags: { tag: string; image: string; updatedMs: number }[] }>();
    expect(body.repository).toBe('lib/app');
    expect(body.tags).toEqual([{ tag: '1', image: app.written.manifestDigest, updatedMs: expect.any(Number) }]);

    const unknown = await fetchRaw(reg.url, '/api/v1/repositories/lib/nope/tags');
    expect(unknown.status).toBe(404);
    expect(errorCode(unknown)).toBe('CAIRN_ERR_NOT_FOUND');
    // A name that is not a valid repository name is a bad request, not an unknown one.
    const bad = await fetchRaw(reg.url, '/api/v1/repositories/lib/../app/tags');
    expect(bad.status).toBe(400);
    expect(errorCode(bad)).toBe('CAIRN_ERR_INVALID_INPUT');
  });

  it('serves an image by tag (no-cache) and by digest (immutable) with layers, recipes, config and platform', async () => {
    const w: WrittenImage = app.written;
    const r: ImportResult = app.result;
    const expectedImage = {
      digest: w.manifestDigest,
      mediaType: MediaType.OCI_MANIFEST,
      platform: 'linux/amd64',
      configDigest: w.configDigest,
      config: JSON.parse(w.configBytes.toString('utf8')) as unknown,
      createdMs: expect.any(Number),
      layers: w.layers.map((l, i) => ({
        recipe: r.layers[i]!.recipe,
        diffId: l.diffId,
        digest: l.digest,
        size: l.size,
        mediaType: l.mediaType,
        tarBytes: layerTar(appLayers[i]!).length,
        entries: appLayers[i]!.length,
        files: appLayers[i]!.filter((e) => e.header.type === 'file').length,
        fileBytes: appLayers[i]!.reduce((n, e) => n + (e.content?.length ?? 0), 0),
      })),
    };
    expect(expectedImage.layers.map((l) => l.recipe)).toEqual(r.layers.map((l) => l.recipe));

    const byTag = await fetchRaw(reg.url, '/api/v1/repositories/lib/app/images/1');
    expect(byTag.status).toBe(200);
    expect(byTag.json()).toEqual({ ...expectedImage, repository: 'lib/app', reference: '1' });
    expect(byTag.headers['cache-control']).toBe('no-cache');
    expect(byTag.headers.etag).toBe(`"${w.manifestDigest}"`);
    const cfg = byTag.json<{ config: { config: { Cmd: string[] } } }>().config;
    expect(cfg.config.Cmd).toEqual(['/bin/true']);

    const immutable = /immutable/;
    const byDigest = await fetchRaw(reg.url, `/api/v1/repositories/lib/app/images/${w.manifestDigest}`);
    expect(byDigest.status).toBe(200);
    expect(byDigest.json()).toEqual({ ...expectedImage, repository: 'lib/app', reference: w.manifestDigest });
    expect(byDigest.headers['cache-control']).toMatch(immutable);
    expect(byDigest.headers['cache-control']).toMatch(/max-age=\d{6,}/);

    const global = await fetchRaw(reg.url, `/api/v1/images/${w.manifestDigest}`);
    expect(global.status).toBe(200);
    expect(global.json()).toEqual(expectedImage);
    expect(global.headers['cache-control']).toMatch(immutable);

    const head = await fetchRaw(reg.url, '/api/v1/repositories/lib/app/images/1', { method: 'HEAD' });
    expect(head.status).toBe(200);
    expect(head.body.length).toBe(0);
    expect(Number(head.headers['content-length'])).toBe(byTag.body.length);
  });

  it('answers 404 for unknown tags and digests (also a digest of another repository) and 400 for bad references', async () => {
    const cases: [string, number][] = [
      ['/api/v1/repositories/lib/app/images/2', 404],
      [`/api/v1/repositories/lib/app/images/sha256:${'0'.repeat(64)}`, 404],
      [`/api/v1/repositories/lib/app/images/${big.written.manifestDigest}`, 404],
      [`/api/v1/images/sha256:${'0'.repeat(64)}`, 404],
      ['/api/v1/repositories/lib/nope/images/1', 404],
      ['/api/v1/repositories/lib/app/images/bad%20tag', 400],
      ['/api/v1/repositories/lib/app/images/sha256:xyz', 400],
      ['/api/v1/repositories/lib/app/images/%ZZ', 400],
      ['/api/v1/images/sha256:xyz', 400],
      ['/api/v1/images/..%2f..%2fregistry.db', 400],
    ];
    for (const [path, status] of cases) {
      const res = await fetchRaw(reg.url, path);
      expect(res.status, path).toBe(status);
      expect(errorCode(res), path).toBe(status === 404 ? 'CAIRN_ERR_NOT_FOUND' : 'CAIRN_ERR_INVALID_INPUT');
    }
  });
});

describe('registry HTTP API: recipes', () => {
  it('serves a recipe gzip-encoded when accepted and plain otherwise, with ETag and 304, hashing to its id', async () => {
    for (const [i, l] of app.result.layers.entries()) {
      const path = `/api/v1/recipes/${l.recipe}`;
      const gz = await fetchRaw(reg.url, path, { headers: { 'accept-encoding': 'gzip, deflate' } });
      expect(gz.status).toBe(200);
      expect(gz.headers['content-encoding']).toBe('gzip');
      expect(gz.headers['content-type']).toBe(RECIPE_MEDIA_TYPE);
      expect(gz.headers.vary).toMatch(/accept-encoding/i);
      expect(gz.headers.etag).toBe(`"${l.recipe}"`);
      expect(gz.headers['cache-control']).toMatch(/immutable/);
      expect(Number(gz.headers['content-length'])).toBe(gz.body.length);
      const text = gunzipSync(gz.body);
      expect(sha256(text)).toBe(l.recipe);

      const plain = await fetchRaw(reg.url, path);
      expect(plain.status).toBe(200);
      expect(plain.headers['content-encoding']).toBeUndefined();
      expect(plain.body.equals(text)).toBe(true);
      expect(sha256(plain.body)).toBe(l.recipe);
      const identity = await fetchRaw(reg.url, path, { headers: { 'accept-encoding': 'identity' } });
      expect(identity.headers['content-encoding']).toBeUndefined();
      expect(identity.body.equals(text)).toBe(true);

      const recipe = decodeRecipe(gz.body, { gzipped: true, expected: l.recipe });
      expect(recipe.entries.map((e) => e.path)).toEqual(appLayers[i]!.map((e) => e.header.name.replace(/\/$/, '')));

      const notModified = await fetchRaw(reg.url, path, {
        headers: { 'if-none-match': `"${l.recipe}"`, 'accept-encoding': 'gzip' },
      });
      expect(notModified.status).toBe(304);
      expect(notModified.body.length).toBe(0);
      expect(notModified.headers.etag).toBe(`"${l.recipe}"`);
      const stale = await fetchRaw(reg.url, path, { headers: { 'if-none-match': `"sha256:${'0'.repeat(64)}"` } });
      expect(stale.status).toBe(200);
    }
    const unknown = await fetchRaw(reg.url, `/api/v1/recipes/sha256:${'1'.repeat(64)}`);
    expect(unknown.status).toBe(404);
    const bad = await fetchRaw(reg.url, '/api/v1/recipes/..%2f..%2fregistry.db');
    expect(bad.status).toBe(400);
  });

  it('does not gzip a recipe for a client that refuses gzip (Accept-Encoding: gzip;q=0)', async () => {
    const id = app.result.layers[0]!.recipe;
    for (const accept of ['gzip;q=0', 'identity, gzip;q=0', 'gzip; q=0.000']) {
      const res = await fetchRaw(reg.url, `/api/v1/recipes/${id}`, { headers: { 'accept-encoding': accept } });
      expect(res.status, accept).toBe(200);
      expect(res.headers['content-encoding'], accept).toBeUndefined();
      expect(sha256(res.body), accept).toBe(id);
    }
  });

  it('lists in the recipes the digests the file endpoint serves', async () => {
    const recipe = decodeRecipe((await fetchRaw(reg.url, `/api/v1/recipes/${app.result.layers[1]!.recipe}`)).body, {
      gzipped: false,
    });
    const medium = recipe.entries.find((e) => e.path === 'data/medium.bin');
    expect(medium).toMatchObject({ type: 'file', size: MEDIUM.length, digest: mediumDigest });
    const res = await fetchRaw(reg.url, `/api/v1/files/${medium!.digest!}`);
    expect(res.status).toBe(200);
    expect(res.body.equals(MEDIUM)).toBe(true);
  });
});

describe('registry HTTP API: file contents', () => {
  const contents: [string, () => Buffer][] = [
    ['a small file (one read)', () => Buffer.from(GREETING)],
    ['a 300 KB file (streamed)', () => MEDIUM],
  ];
  for (const [what, content] of contents) {
    it(`serves ${what} whole, by HEAD, by range, with ETag and 304`, async () => {
      const data = content();
      const size = data.length;
      const digest = sha256(data);
      const path = `/api/v1/files/${digest}`;

      const whole = await fetchRaw(reg.url, path);
      expect(whole.status).toBe(200);
      expect(whole.body.equals(data)).toBe(true);
      expect(whole.headers['content-length']).toBe(String(size));
      expect(whole.headers['content-type']).toBe('application/octet-stream');
      expect(whole.headers['accept-ranges']).toBe('bytes');
      expect(whole.headers.etag).toBe(`"${digest}"`);
      expect(whole.headers['cache-control']).toMatch(/immutable/);

      const head = await fetchRaw(reg.url, path, { method: 'HEAD' });
      expect(head.status).toBe(200);
      expect(head.headers['content-length']).toBe(String(size));
      expect(head.body.length).toBe(0);

      // Again: a small file now comes from memory on the server's hot path, with the same answer.
      const again = await fetchRaw(reg.url, path);
      expect(again.status).toBe(200);
      expect(again.body.equals(data)).toBe(true);
      for (const h of ['content-length', 'content-type', 'accept-ranges', 'etag', 'cache-control'])
        expect(again.headers[h], h).toBe(whole.headers[h]);

      const ranges: [string, number, number][] = [
        ['bytes=0-9', 0, 9],
        ['bytes=10-', 10, size - 1],
        ['bytes=-5', size - 5, size - 1],
        ['bytes=0-0', 0, 0],
        [`bytes=${size - 1}-`, size - 1, size - 1],
        [`bytes=5-${size + 1000}`, 5, size - 1], // an end past the file is clamped
        [`bytes=-${size + 1000}`, 0, size - 1], // a suffix longer than the file is the whole file
      ];
      for (const [range, start, end] of ranges) {
        const res = await fetchRaw(reg.url, path, { headers: { range } });
        expect(res.status, range).toBe(206);
        expect(res.headers['content-range'], range).toBe(`bytes ${start}-${end}/${size}`);
        expect(res.headers['content-length'], range).toBe(String(end - start + 1));
        expect(res.body.equals(data.subarray(start, end + 1)), range).toBe(true);
      }
      // HEAD with a range: the partial headers, no body.
      const headRange = await fetchRaw(reg.url, path, { method: 'HEAD', headers: { range: 'bytes=0-9' } });
      expect(headRange.status).toBe(206);
      expect(headRange.headers['content-length']).toBe('10');
      expect(headRange.body.length).toBe(0);

      // Syntax the server does not understand, and multi-range requests, get the whole file.
      for (const range of ['bytes=0-1,4-5', 'lines=0-9', 'bytes=9-3', 'bytes=x-y']) {
        const res = await fetchRaw(reg.url, path, { headers: { range } });
        expect(res.status, range).toBe(200);
        expect(res.body.equals(data), range).toBe(true);
      }

      for (const range of [`bytes=${size}-`, `bytes=${size + 10}-${size + 20}`, 'bytes=-0']) {
        const res = await fetchRaw(reg.url, path, { headers: { range } });
        expect(res.status, range).toBe(416);
        expect(res.headers['content-range'], range).toBe(`bytes */${size}`);
        expect(res.body.length, range).toBe(0);
      }

      const notModified = await fetchRaw(reg.url, path, { headers: { 'if-none-match': `"${digest}"` } });
      expect(notModified.status).toBe(304);
      expect(notModified.body.length).toBe(0);
      expect(notModified.headers.etag).toBe(`"${digest}"`);
    });
  }

  it('answers 304 to If-None-Match with a list of ETags, a weak ETag, or * (RFC 9110 13.1.2)', async () => {
    const digest = sha256(GREETING);
    const other = `"sha256:${'0'.repeat(64)}"`;
    for (const inm of [`${other}, "${digest}"`, `W/"${digest}"`, '*']) {
      for (const path of [`/api/v1/files/${digest}`, `/api/v1/recipes/${app.result.layers[0]!.recipe}`]) {
        const etag = path.includes('/files/') ? `"${digest}"` : `"${app.result.layers[0]!.recipe}"`;
        const value = inm.replace(`"${digest}"`, etag);
        const res = await fetchRaw(reg.url, path, { headers: { 'if-none-match': value } });
        expect(res.status, `If-None-Match: ${value}`).toBe(304);
        expect(res.body.length).toBe(0);
      }
    }
    // A list without the current ETag is not a match.
    const miss = await fetchRaw(reg.url, `/api/v1/files/${digest}`, {
      headers: { 'if-none-match': `${other}, W/${other}` },
    });
    expect(miss.status).toBe(200);
  });

  /** Starts a download of the 64 MiB file and hangs up after the first chunk. */
  async function hangUp(url: string): Promise<void> {
    const res = await openRequest(url, `/api/v1/files/${sha256(bigContent)}`);
    await new Promise<void>((resolve) => res.once('data', () => resolve()));
    res.destroy();
  }

  it('survives clients that hang up mid-download: no leaked file handles, still serving', async () => {
    const own = await startRegistry(reg.store, { logLevel: 'silent' });
    const fds = async (): Promise<number> => (await readdir('/proc/self/fd')).length;
    // Warm up (lazy module loads may open files), then count.
    await fetchRaw(own.url, `/api/v1/files/${sha256(GREETING)}`);
    const before = await fds();
    for (let i = 0; i < 5; i++) await hangUp(own.url);
    // The server notices the hang-ups asynchronously.
    let after = await fds();
    for (let i = 0; i < 50 && after > before; i++) {
      await new Promise((r) => setTimeout(r, 20));
      after = await fds();
    }
    expect(after, 'open file descriptors after 5 aborted downloads').toBeLessThanOrEqual(before);
    const ok = await fetchRaw(own.url, `/api/v1/files/${sha256(bigContent)}`, { headers: { range: 'bytes=0-99' } });
    expect(ok.status).toBe(206);
    expect(ok.body.equals(bigContent.subarray(0, 100))).toBe(true);
  });

  it('does not log a client hanging up mid-download as a server error', async () => {
    const lines: string[] = [];
    const own = await startRegistry(reg.store, { logLevel: 'warn', logWrite: (l) => lines.push(l) });
    await hangUp(own.url);
    // Let the server see the hang-up, then make sure it has finished with it.
    await new Promise((r) => setTimeout(r, 200));
    expect((await fetchRaw(own.url, '/healthz')).status).toBe(200);
    expect(lines.filter((l) => /"level":"error"/.test(l))).toEqual([]);
  });

  it('serves the empty file with length 0 and refuses any range of it', async () => {
    const path = `/api/v1/files/${sha256('')}`;
    const whole = await fetchRaw(reg.url, path);
    expect(whole.status).toBe(200);
    expect(whole.headers['content-length']).toBe('0');
    expect(whole.body.length).toBe(0);
    const range = await fetchRaw(reg.url, path, { headers: { range: 'bytes=0-' } });
    expect(range.status).toBe(416);
    expect(range.headers['content-range']).toBe('bytes */0');
  });

  it('answers 404 for an unknown digest and 400 for malformed digests and path tricks, never serving other files', async () => {
    const hex = createHash('sha256').update('x').digest('hex');
    const unknown = await fetchRaw(reg.url, `/api/v1/files/sha256:${'a'.repeat(64)}`);
    expect(unknown.status).toBe(404);
    expect(errorCode(unknown)).toBe('CAIRN_ERR_NOT_FOUND');
    const unknownHead = await fetchRaw(reg.url, `/api/v1/files/sha256:${'a'.repeat(64)}`, { method: 'HEAD' });
    expect(unknownHead.status).toBe(404);

    const malformed = [
      '/api/v1/files/sha256:xyz',
      '/api/v1/files/sha256:',
      `/api/v1/files/md5:${'d41d8cd98f00b204e9800998ecf8427e'}`,
      `/api/v1/files/sha512:${hex}${hex}`,
      `/api/v1/files/${hex}`,
      `/api/v1/files/sha256:${hex.toUpperCase()}`,
      `/api/v1/files/sha256:${hex.slice(1)}`,
      `/api/v1/files/sha256:${hex}0`,
      `/api/v1/files/sha256:${hex}%00`,
      `/api/v1/files/sha256:${hex}%2f..`,
      '/api/v1/files/..%2f..%2fregistry.db',
      '/api/v1/files/..%2F..%2Fregistry.db',
      '/api/v1/files/%2e%2e%2f%2e%2e%2fregistry.db',
      '/api/v1/files/sha256:..%2f..%2f..%2fregistry.db',
      `/api/v1/files/sha256:..%2f..%2f${hex.slice(6)}`,
      '/api/v1/files/%2fetc%2fpasswd',
      '/api/v1/files/%E0%A4%A',
      '/api/v1/files/..',
    ];
    for (const path of malformed) {
      const res = await fetchRaw(reg.url, path);
      expect(res.status, path).toBe(400);
      expect(errorCode(res), path).toBe('CAIRN_ERR_INVALID_INPUT');
    }
    // With literal slashes the URL is no longer a file URL at all: no route, 404.
    const unrouted = [
      '/api/v1/files/sha256:../../registry.db',
      '/api/v1/files/../../registry.db',
      `/api/v1/files/sha256:${hex}/../../../registry.db`,
      '/api/v1/files//etc/passwd',
    ];
    for (const path of unrouted) {
      const res = await fetchRaw(reg.url, path);
      expect(res.status, path).toBe(404);
      expect(res.text(), path).not.toContain('SQLite format');
      expect(res.headers['content-type'], path).toBe('application/json');
    }
  });

  it('answers 405 with Allow for methods other than GET and HEAD', async () => {
    const digest = sha256(GREETING);
    for (const method of ['POST', 'DELETE', 'PUT', 'PATCH']) {
      for (const path of [`/api/v1/files/${digest}`, '/api/v1/repositories', '/api/v1/repositories/lib/app/images/1']) {
        const res = await fetchRaw(reg.url, path, { method, body: method === 'DELETE' ? undefined : '{}' });
        expect(res.status, `${method} ${path}`).toBe(405);
        expect(res.headers.allow, `${method} ${path}`).toBe('GET, HEAD');
      }
    }
    // Nothing was deleted.
    expect((await fetchRaw(reg.url, `/api/v1/files/${digest}`)).status).toBe(200);
  });

  it('lists the chunk digests of a large file (each matching its CHUNK_BYTES piece), one digest for a small file', async () => {
    const digest = sha256(bigContent);
    const r = await fetchRaw(reg.url, `/api/v1/files/${digest}/chunks`);
    expect(r.status).toBe(200);
    const body = r.json<{ size: number; chunkBytes: number; chunks: string[] }>();
    expect(body.size).toBe(BIG_SIZE);
    expect(body.chunkBytes).toBe(CHUNK_BYTES);
    expect(body.chunks).toHaveLength(Math.ceil(BIG_SIZE / body.chunkBytes));
    body.chunks.forEach((d, i) =>
      expect(d).toBe(sha256(bigContent.subarray(i * body.chunkBytes, (i + 1) * body.chunkBytes))),
    );
    const greeting = sha256(GREETING);
    const small = await fetchRaw(reg.url, `/api/v1/files/${greeting}/chunks`);
    expect(small.json<{ chunks: string[] }>().chunks).toEqual([greeting]);
    // Over one chunk: MEDIUM (300 000 bytes) is two.
    const medium = await fetchRaw(reg.url, `/api/v1/files/${mediumDigest}/chunks`);
    expect(medium.json<{ chunks: string[] }>().chunks).toEqual([
      sha256(MEDIUM.subarray(0, CHUNK_BYTES)),
      sha256(MEDIUM.subarray(CHUNK_BYTES)),
    ]);
    expect((await fetchRaw(reg.url, `/api/v1/files/sha256:${'0'.repeat(64)}/chunks`)).status).toBe(404);
    expect((await fetchRaw(reg.url, '/api/v1/files/sha256:zz/chunks')).status).toBe(400);
  });

  it('streams a 64 MiB file in many chunks without buffering it, to a reader that stalls', async () => {
    const digest = sha256(bigContent);
    const before = process.memoryUsage();
    const res = await openRequest(reg.url, `/api/v1/files/${digest}`);
    expect(res.statusCode).toBe(200);
    expect(res.headers['content-length']).toBe(String(BIG_SIZE));
    const hash = createHash('sha256');
    let chunks = 0;
    let bytes = 0;
    // Take one chunk, then stop reading for a while: a streaming server stops at the socket buffers.
    const first = await new Promise<Buffer>((resolve) =>
      res.once('data', (c: Buffer) => {
        res.pause();
        resolve(c);
      }),
    );
    hash.update(first);
    chunks++;
    bytes += first.length;
    await new Promise((r) => setTimeout(r, 500));
    const stalled = process.memoryUsage();
    const grown = stalled.heapUsed + stalled.arrayBuffers - (before.heapUsed + before.arrayBuffers);
    expect(grown, `memory grew by ${grown} bytes with the reader stalled`).toBeLessThan(24 * 1024 * 1024);
    for await (const c of res as AsyncIterable<Buffer>) {
      hash.update(c);
      chunks++;
      bytes += c.length;
    }
    expect(bytes).toBe(BIG_SIZE);
    expect(chunks).toBeGreaterThan(16);
    expect(`sha256:${hash.digest('hex')}`).toBe(digest);

    const mid = 32 * 1024 * 1024 + 3;
    const range = await fetchRaw(reg.url, `/api/v1/files/${digest}`, { headers: { range: `bytes=${mid}-${mid + 9}` } });
    expect(range.status).toBe(206);
    expect(range.body.equals(bigContent.subarray(mid, mid + 10))).toBe(true);
    const tail = await fetchRaw(reg.url, `/api/v1/files/${digest}`, { headers: { range: 'bytes=-1048577' } });
    expect(tail.status).toBe(206);
    expect(tail.body.equals(bigContent.subarray(BIG_SIZE - 1048577))).toBe(true);
  });
});

describe('registry HTTP API: health and metrics', () => {
  it('answers /healthz and /api/v1/health', async () => {
    for (const path of ['/healthz', '/api/v1/health']) {
      const res = await fetchRaw(reg.url, path);
      expect(res.status, path).toBe(200);
      expect(res.json(), path).toEqual({ status: 'ok' });
    }
    const unknown = await fetchRaw(reg.url, '/nope');
    expect(unknown.status).toBe(404);
  });

  it('exposes Prometheus text that parses and counts the requests made', async () => {
    // A server of its own, so the counts are exactly the requests below.
    const fresh = await startRegistry(reg.store);
    const small = sha256(GREETING);
    const requests: [string, string, Record<string, string>, string, string][] = [
      // method, path, headers, route label, status
      ['GET', '/healthz', {}, 'health', '200'],
      ['GET', '/healthz', {}, 'health', '200'],
      ['GET', '/healthz', {}, 'health', '200'],
      ['GET', '/api/v1/repositories', {}, 'repositories', '200'],
      ['GET', '/api/v1/repositories/nope/tags', {}, 'tags', '404'],
      ['POST', '/api/v1/repositories', {}, 'repositories', '405'],
      ['GET', '/no/such/route', {}, 'unknown', '404'],
      ['GET', '/api/v1/files/sha256:xyz', {}, 'file', '400'],
      ['GET', `/api/v1/files/${small}`, {}, 'file', '200'],
      ['GET', `/api/v1/files/${small}`, { range: 'bytes=0-9' }, 'file', '206'],
    ];
    for (const [method, path, headers] of requests) await fetchRaw(fresh.url, path, { method, headers });

    const expected = new Map<string, number>();
    for (const [method, , , route, status] of requests) {
      const key = `${route} ${method} ${status}`;
      expected.set(key, (expected.get(key) ?? 0) + 1);
    }
    // 'finish' (where requests are counted) may trail the client's read by a tick: retry briefly.
    let exposition = parsePrometheusText('');
    let counted = new Map<string, number>();
    let res: HttpResponse | undefined;
    for (let attempt = 0; attempt < 20; attempt++) {
      res = await fetchRaw(fresh.url, '/metrics');
      exposition = parsePrometheusText(res.text());
      counted = new Map(
        exposition.samples
          .filter((s) => s.name === 'cairn_registry_http_requests_total' && s.labels.route !== 'metrics')
          .map((s) => [`${s.labels.route} ${s.labels.method} ${s.labels.status}`, s.value]),
      );
      if ([...counted.values()].reduce((a, b) => a + b, 0) >= requests.length) break;
      await new Promise((r) => setTimeout(r, 25));
    }
    expect(res?.status).toBe(200);
    expect(res?.headers['content-type']).toMatch(/^text\/plain; version=0\.0\.4/);
    expect(counted).toEqual(expected);

    expect(exposition.types.get('cairn_registry_http_requests_total')).toBe('counter');
    expect(exposition.types.get('cairn_registry_http_request_duration_seconds')).toBe('histogram');
    expect(exposition.types.get('cairn_registry_file_bytes_sent_total')).toBe('counter');
    expect(exposition.help.get('cairn_registry_http_requests_total')).toBeTruthy();
    // Both file responses with a body: the whole greeting and 10 bytes of it.
    const sent = exposition.samples.find((s) => s.name === 'cairn_registry_file_bytes_sent_total');
    expect(sent?.value).toBe(Buffer.byteLength(GREETING) + 10);
    // The histogram saw every request: its +Inf buckets add up to the request count.
    const infBuckets = exposition.samples.filter(
      (s) =>
        s.name === 'cairn_registry_http_request_duration_seconds_bucket' &&
        s.labels.le === '+Inf' &&
        s.labels.route !== 'metrics',
    );
    expect(infBuckets.reduce((n, s) => n + s.value, 0)).toBe(requests.length);
    // Process metrics are there too, under the registry's prefix.
    expect(exposition.samples.some((s) => s.name.startsWith('cairn_registry_process_'))).toBe(true);
    expect(exposition.samples.every((s) => s.name.startsWith('cairn_registry_'))).toBe(true);
  });

  it('the exposition parser rejects what is not exposition format', () => {
    const good = '# HELP a_total x\n# TYPE a_total counter\na_total{r="x\\"y",s="1"} 3\na_total 4 1700000000\n';
    expect(parsePrometheusText(good).samples).toEqual([
      { name: 'a_total', labels: { r: 'x"y', s: '1' }, value: 3 },
      { name: 'a_total', labels: {}, value: 4 },
    ]);
    const odd = parsePrometheusText('# TYPE g gauge\ng{a="1"} Nan\ng{a="2"} +Inf\ng{a="3"} -inf\ng{a="4"} 1e-3\n');
    expect(odd.samples.map((x) => x.value)).toEqual([NaN, Infinity, -Infinity, 0.001]);
    for (const bad of [
      '# TYPE a counter\na{r=x} 1\n',
      '# TYPE a counter\na 1 2 3\n',
      '# TYPE a counter\na one\n',
      'b 1\n',
      '# TYPE a counter\na{r="1"}1\n',
      '# TYPE a weird\n',
    ]) {
      expect(() => parsePrometheusText(bad), bad).toThrow(/metrics line/);
    }
  });
});

describe('registry HTTP API under a concurrent import', () => {
  it('serves a tag that an import re-points as exactly one image or the other, never a mix', async () => {
    const root = join(await testTempDir(), 'registry');
    const base = [dir('usr'), dir('usr/lib'), file('usr/lib/libbase.so', pseudoRandom(200_000, 'base'))];
    const many = (tag: string, n: number): FixtureEntry[] => [
      dir(tag),
      ...Array.from({ length: n }, (_, i) => file(`${tag}/f${i}`, pseudoRandom(2_000 + i, `${tag}${i}`))),
    ];
    const imageA: ImageInput = { ref: 'a', layers: [layer(base), layer(many('a', 50))] };
    const imageB: ImageInput = {
      ref: 'b',
      layers: [layer(base), layer(many('b1', 40), 'none'), layer(many('b2', 30), 'gzip')],
    };
    const src = await testTempDir();
    const layoutA = join(src, 'a');
    const layoutB = join(src, 'b');
    const wA = (await writeOciLayout(layoutA, [imageA])).images[0]!;
    const wB = (await writeOciLayout(layoutB, [imageB])).images[0]!;
    const expected = new Map([
      [wA.manifestDigest, wA.layers.map((l) => l.diffId)],
      [wB.manifestDigest, wB.layers.map((l) => l.diffId)],
    ]);

    // The writer has a store (and SQLite connection) of its own, as a separate `cairn import` would.
    const writer = await RegistryStore.open(root);
    try {
      await importImage(writer, layoutB, 'app:b');
      await importImage(writer, layoutA, 'app:latest');
      const server = await startRegistry(root);

      const seen = new Map<string, number>();
      let done = false;
      let requests = 0;
      const check = async (): Promise<void> => {
        const res = await fetchRaw(server.url, '/api/v1/repositories/app/images/latest');
        expect(res.status).toBe(200);
        const img = res.json<{ digest: Digest; layers: { diffId: Digest; recipe: Digest }[] }>();
        expect(expected.has(img.digest), `unexpected image ${img.digest}`).toBe(true);
        expect(img.layers.map((l) => l.diffId)).toEqual(expected.get(img.digest));
        seen.set(img.digest, (seen.get(img.digest) ?? 0) + 1);
      };
      const client = async (): Promise<void> => {
        while (!done || requests < 200) {
          requests++;
          await check();
        }
      };
      const imports = (async () => {
        try {
          for (let i = 0; i < 5; i++) await importImage(writer, i % 2 === 0 ? layoutB : layoutA, 'app:latest');
        } finally {
          done = true;
        }
      })();
      await Promise.all([imports, ...Array.from({ length: 8 }, () => client())]);
      // The last import pointed the tag at B.
      await check();
      expect(requests).toBeGreaterThanOrEqual(200);
      expect(seen.get(wA.manifestDigest) ?? 0).toBeGreaterThan(0);
      expect(seen.get(wB.manifestDigest) ?? 0).toBeGreaterThan(0);
      const tags = (await fetchRaw(server.url, '/api/v1/repositories/app/tags')).json<{
        tags: { tag: string; image: string }[];
      }>();
      expect(tags.tags.map((t) => [t.tag, t.image])).toEqual([
        ['b', wB.manifestDigest],
        ['latest', wB.manifestDigest],
      ]);
    } finally {
      writer.close();
    }
  });
});
