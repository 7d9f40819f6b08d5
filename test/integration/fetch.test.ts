import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest';
import { join } from 'node:path';
import { HttpBlobSource, type FetchEvent, type HttpBlobSourceOptions } from '../../src/fetch/http-source.js';
import type { BlobRef } from '../../src/fetch/blob-source.js';
import { CHUNK_BYTES, chunkDigestsOf, unpackChunks } from '../../src/model/chunks.js';
import { sha256 } from '../../src/model/digest.js';
import { CairnError, ErrorCode } from '../../src/model/errors.js';
import { RegistryStore } from '../../src/registry/store.js';
import { RegistryHttpServer } from '../../src/registry/http/server.js';
import { createLogger } from '../../src/util/log.js';
import { dir, file, layer } from '../fixtures/layers.js';
import { importFixtureImage, pseudoRandom, startRegistry, type RunningRegistry } from '../fixtures/registry.js';
import { makeTempDir, type TempDir } from '../fixtures/tmp.js';
import { startProxy, type TestProxy } from '../fixtures/proxy.js';

const SMALL = pseudoRandom(5000, 'fetch-small');
const EXACT = pseudoRandom(CHUNK_BYTES, 'fetch-exact');
/** Five full chunks and a partial sixth. */
const BIG = pseudoRandom(5 * CHUNK_BYTES + 12_345, 'fetch-big');

const refOf = (content: Buffer): BlobRef => ({ digest: sha256(content), size: content.length });
const small = refOf(SMALL);
const exact = refOf(EXACT);
const big = refOf(BIG);
const empty = refOf(Buffer.alloc(0));
const unknownSmall: BlobRef = { digest: sha256('not in the registry'), size: 100 };
const unknownBig: BlobRef = { digest: sha256('not in the registry either'), size: 3 * CHUNK_BYTES };

const FILES = /\/api\/v1\/files\/sha256:[0-9a-f]{64}$/;
const LISTS = /\/chunks$/;

let tmp: TempDir;
let store: RegistryStore;
let reg: RunningRegistry;

beforeAll(async () => {
  tmp = await makeTempDir('cairn-fetch-');
  store = await RegistryStore.open(join(tmp.path, 'registry'));
  await importFixtureImage(store, {
    image: {
      ref: 'files:1',
      layers: [
        layer(
          [
            dir('f'),
            file('f/small', SMALL),
            file('f/exact', EXACT),
            file('f/big', BIG),
            file('f/empty', Buffer.alloc(0)),
          ],
          'none',
        ),
      ],
    },
    target: 'lib/files:1',
  });
  reg = await startRegistry(store, { closeAfterTest: false });
});

afterAll(async () => {
  await reg?.close();
  store?.close();
  await tmp?.cleanup();
});

interface Harness {
  src: HttpBlobSource;
  events: FetchEvent[];
  kinds(kind: FetchEvent['kind']): FetchEvent[];
}

/** A source over `url`, closed when the test finishes, recording its events. */
function source(url: string, opts: Omit<HttpBlobSourceOptions, 'url' | 'onEvent'> = {}): Harness {
  const events: FetchEvent[] = [];
  const src = new HttpBlobSource({ url, ...opts, onEvent: (e) => events.push(e) });
  onTestFinished(() => src.close());
  return { src, events, kinds: (kind) => events.filter((e) => e.kind === kind) };
}

async function proxied(
  opts: Omit<HttpBlobSourceOptions, 'url' | 'onEvent'> = {},
  proxyOpts: { trickleMs?: number; delayMs?: number } = {},
): Promise<Harness & { proxy: TestProxy }> {
  const proxy = await startProxy(reg.url, proxyOpts);
  return { ...source(proxy.url, opts), proxy };
}

/** Awaits a rejection and returns it with the time it took and when it came. */
async function rejection(p: Promise<unknown>): Promise<{ err: CairnError; ms: number; at: number }> {
  const started = performance.now();
  try {
    await p;
  } catch (err) {
    expect(err).toBeInstanceOf(CairnError);
    const at = performance.now();
    return { err: err as CairnError, ms: at - started, at };
  }
  throw new Error('expected a rejection');
}

/** Aborts `ac` after `ms`; resolves with the time it did. */
function abortLater(ac: AbortController, ms: number): Promise<number> {
  return new Promise((resolve) =>
    setTimeout(() => {
      const at = performance.now();
      ac.abort();
      resolve(at);
    }, ms),
  );
}

function rangeOf(chunk: number, size: number): string {
  return `bytes=${chunk * CHUNK_BYTES}-${Math.min(size, (chunk + 1) * CHUNK_BYTES) - 1}`;
}

describe('HttpBlobSource: reads', () => {
  it('reads a small content whole and in slices, one whole-content GET per read', async () => {
    const { src, proxy, kinds } = await proxied();
    expect((await src.read(small, 0, small.size)).equals(SMALL)).toBe(true);
    expect((await src.read(small, 100, 50)).equals(SMALL.subarray(100, 150))).toBe(true);
    // Asking for more than there is gives the rest.
    expect((await src.read(small, 4990, 1000)).equals(SMALL.subarray(4990))).toBe(true);
    expect(proxy.requests.map((r) => [r.path, r.range])).toEqual(
      Array.from({ length: 3 }, () => [`/api/v1/files/${small.digest}`, undefined]),
    );
    expect(kinds('fetch').map((e) => [e.chunk, e.bytes, e.attempt])).toEqual([
      [0, 5000, 1],
      [0, 5000, 1],
      [0, 5000, 1],
    ]);
    expect(kinds('retry')).toEqual([]);
    expect(src.inFlight).toBe(0);
  });

  it('returns an empty buffer at or after the end without a request; an empty content verifies', async () => {
    const { src, proxy } = await proxied();
    expect((await src.read(small, small.size, 10)).length).toBe(0);
    expect((await src.read(small, small.size + 1000, 10)).length).toBe(0);
    expect((await src.read(big, big.size, 1)).length).toBe(0);
    expect((await src.read(empty, 0, 10)).length).toBe(0);
    expect(proxy.requests).toEqual([]);
    // The chunk primitive does fetch (and verify) the empty content.
    expect((await src.readChunk(empty, 0)).length).toBe(0);
    expect(proxy.count(FILES)).toBe(1);
  });

  it('fetches a content of exactly CHUNK_BYTES whole, as one chunk', async () => {
    const { src, proxy } = await proxied();
    const got = await src.read(exact, CHUNK_BYTES - 10, 100);
    expect(got.equals(EXACT.subarray(CHUNK_BYTES - 10))).toBe(true);
    expect(proxy.requests.map((r) => r.range)).toEqual([undefined]);
  });

  it('serves the first bytes of a 5 MiB content after fetching one chunk', async () => {
    const { src, proxy, kinds } = await proxied();
    const got = await src.read(big, 0, 10);
    expect(got.equals(BIG.subarray(0, 10))).toBe(true);
    expect(proxy.requests.map((r) => [r.path, r.range])).toEqual([
      [`/api/v1/files/${big.digest}/chunks`, undefined],
      [`/api/v1/files/${big.digest}`, rangeOf(0, big.size)],
    ]);
    expect(kinds('fetch').map((e) => [e.chunk, e.bytes])).toEqual([
      ['list', expect.any(Number)],
      [0, CHUNK_BYTES],
    ]);
  });

  it('reads across chunk boundaries with chunk-aligned ranges, the chunk list fetched once', async () => {
    const { src, proxy } = await proxied();
    expect((await src.read(big, CHUNK_BYTES - 5, 10)).equals(BIG.subarray(CHUNK_BYTES - 5, CHUNK_BYTES + 5))).toBe(
      true,
    );
    expect(proxy.requests.filter((r) => r.range).map((r) => r.range)).toEqual(
      expect.arrayContaining([rangeOf(0, big.size), rangeOf(1, big.size)]),
    );
    // The partial last chunk.
    expect((await src.read(big, big.size - 10, 100)).equals(BIG.subarray(big.size - 10))).toBe(true);
    expect(proxy.requests.at(-1)?.range).toBe(rangeOf(5, big.size));
    // Everything at once: six chunks in parallel.
    expect((await src.read(big, 0, big.size)).equals(BIG)).toBe(true);
    expect(proxy.count(LISTS)).toBe(1);
    expect(proxy.count(FILES)).toBe(2 + 1 + 6);
  });

  it('shares one request between concurrent reads of one chunk', async () => {
    const { src, proxy } = await proxied({}, { delayMs: 100 });
    proxy.addRule({ mode: 'delay' });
    const reads = Array.from({ length: 20 }, (_, i) => src.read(big, 2 * CHUNK_BYTES + i * 1000, 500));
    const smalls = Array.from({ length: 10 }, (_, i) => src.read(small, i * 100, 100));
    const got = await Promise.all(reads);
    got.forEach((b, i) =>
      expect(b.equals(BIG.subarray(2 * CHUNK_BYTES + i * 1000, 2 * CHUNK_BYTES + i * 1000 + 500))).toBe(true),
    );
    (await Promise.all(smalls)).forEach((b, i) => expect(b.equals(SMALL.subarray(i * 100, i * 100 + 100))).toBe(true));
    expect(proxy.count(LISTS)).toBe(1);
    expect(proxy.requests.filter((r) => r.range === rangeOf(2, big.size)).length).toBe(1);
    expect(proxy.requests.filter((r) => r.path.endsWith(small.digest)).length).toBe(1);
    expect(src.inFlight).toBe(0);
  });

  it('lets one reader abort without aborting the fetch shared with another', async () => {
    const { src, proxy } = await proxied({}, { delayMs: 300 });
    await src.read(big, 0, 1); // the chunk list, remembered
    proxy.addRule({ mode: 'delay' });
    const ac = new AbortController();
    const a = src.read(big, 3 * CHUNK_BYTES, 10, { signal: ac.signal });
    const b = src.read(big, 3 * CHUNK_BYTES + 10, 10);
    const rejected = rejection(a);
    const abortedAt = await abortLater(ac, 50);
    const { err, at } = await rejected;
    expect(err.code).toBe(ErrorCode.ABORTED);
    expect(at - abortedAt).toBeLessThan(50);
    expect((await b).equals(BIG.subarray(3 * CHUNK_BYTES + 10, 3 * CHUNK_BYTES + 20))).toBe(true);
    expect(proxy.requests.filter((r) => r.range === rangeOf(3, big.size)).length).toBe(1);
  });

  it('answers NOT_FOUND for an unknown digest at once, without retries', async () => {
    const { src, proxy, kinds } = await proxied({ retries: 3 });
    for (const ref of [unknownSmall, unknownBig]) {
      const { err, ms } = await rejection(src.read(ref, 0, 10));
      expect(err.code).toBe(ErrorCode.NOT_FOUND);
      expect(err.message).toContain(ref.digest);
      expect(err.message).toContain(proxy.url);
      expect(ms).toBeLessThan(500);
    }
    expect(proxy.requests.map((r) => r.path)).toEqual([
      `/api/v1/files/${unknownSmall.digest}`,
      `/api/v1/files/${unknownBig.digest}/chunks`,
    ]);
    expect(kinds('retry')).toEqual([]);
    expect(kinds('error').map((e) => e.code)).toEqual([ErrorCode.NOT_FOUND, ErrorCode.NOT_FOUND]);
  });

  it('ignores an onEvent callback that throws', async () => {
    const src = new HttpBlobSource({
      url: reg.url,
      onEvent: () => {
        throw new Error('metrics broke');
      },
    });
    onTestFinished(() => src.close());
    expect((await src.read(big, 0, 10)).equals(BIG.subarray(0, 10))).toBe(true);
  });

  it('gives chunk digests (the registry list, or the content digest) and refuses a ref of the wrong size', async () => {
    const { src } = await proxied();
    const expected = unpackChunks(chunkDigestsOf(BIG)!);
    expect(await Promise.all(expected.map((_, i) => src.chunkDigest(big, i)))).toEqual(expected);
    expect(await src.chunkDigest(small, 0)).toBe(small.digest);
    const { err } = await rejection(src.read({ digest: big.digest, size: big.size + 1 }, 0, 10));
    expect(err.code).toBe(ErrorCode.INVALID_INPUT);
    expect(err.message).toContain(`has ${big.size} bytes`);
  });
});

/** Sockets and timers alive now (what would keep the process from exiting). */
function liveHandles(): string[] {
  return process
    .getActiveResourcesInfo()
    .filter((r) => r === 'TCPSocketWrap' || r === 'Timeout')
    .sort();
}

describe('HttpBlobSource: failures (through a misbehaving proxy)', () => {
  it('fails with TIMEOUT within the deadline when the server never answers, leaving nothing pending', async () => {
    const before = liveHandles();
    const { src, proxy, kinds } = await proxied({ deadlineMs: 800 });
    await proxy.setMode('hang');
    for (const ref of [small, big]) {
      const { err, ms } = await rejection(src.read(ref, 0, 10));
      expect(err.code).toBe(ErrorCode.TIMEOUT);
      expect(err.message).toContain(ref.digest);
      expect(ms).toBeGreaterThan(700);
      expect(ms).toBeLessThan(800 + 250);
      expect(src.inFlight).toBe(0);
    }
    // Attempts time out at half the deadline by default, and are retried.
    expect(kinds('retry').length).toBeGreaterThanOrEqual(2);
    expect(proxy.requests.length).toBeGreaterThanOrEqual(4);
    await src.close();
    await proxy.close();
    await new Promise((r) => setTimeout(r, 20));
    // Nothing of this test is left (earlier tests' sockets may still be closing).
    const after = liveHandles();
    for (const kind of ['TCPSocketWrap', 'Timeout']) {
      expect(after.filter((r) => r === kind).length).toBeLessThanOrEqual(before.filter((r) => r === kind).length);
    }
  });

  it('meets the deadline and aborts promptly even for reads queued behind a hung connection', async () => {
    // One connection: undici queues the second request and, while it is queued,
    // ignores its AbortSignal; the source must not wait for undici.
    const { src, proxy } = await proxied({ deadlineMs: 800, attemptTimeoutMs: 800, connections: 1 });
    await proxy.setMode('hang');
    const first = rejection(src.read(small, 0, 10));
    const ac = new AbortController();
    const aborted = rejection(src.read(exact, 0, 10, { signal: ac.signal }));
    const queued = rejection(src.read(big, 0, 10));
    const abortedAt = await abortLater(ac, 100);
    const a = await aborted;
    expect(a.err.code).toBe(ErrorCode.ABORTED);
    expect(a.at - abortedAt).toBeLessThan(50);
    for (const r of [await first, await queued]) {
      expect(r.err.code).toBe(ErrorCode.TIMEOUT);
      expect(r.ms).toBeLessThan(800 + 250);
    }
    expect(src.inFlight).toBe(0);
  });

  it('fails with TIMEOUT within the deadline when the body trickles, never returning its bytes', async () => {
    const { src, proxy } = await proxied({ deadlineMs: 800, attemptTimeoutMs: 800 }, { trickleMs: 50 });
    await src.read(big, 0, 1); // the chunk list
    await proxy.setMode('trickle');
    for (const [ref, offset] of [
      [small, 0],
      [big, CHUNK_BYTES],
    ] as const) {
      const { err, ms } = await rejection(src.read(ref, offset, 10));
      expect(err.code).toBe(ErrorCode.TIMEOUT);
      expect(ms).toBeLessThan(800 + 250);
    }
    expect(src.inFlight).toBe(0);
  });

  it('retries an attempt that times out, on a fresh connection', async () => {
    const { src, proxy, kinds } = await proxied({ deadlineMs: 2000, attemptTimeoutMs: 200 });
    proxy.addRule({ mode: 'hang', times: 1 });
    expect((await src.read(small, 0, small.size)).equals(SMALL)).toBe(true);
    expect(kinds('retry').map((e) => e.reason)).toEqual([expect.stringMatching(/within 200 ms/)]);
    expect(proxy.requests.map((r) => r.mode)).toEqual(['hang', 'pass']);
    // The hung connection was dropped, not reused.
    expect(proxy.connections).toBe(2);
  });

  it('rejects a corrupted body with DIGEST_MISMATCH after one more try, never returning it', async () => {
    const { src, proxy, kinds } = await proxied({ retries: 3 });
    await proxy.setMode('corrupt');
    const { err } = await rejection(src.read(small, 0, small.size));
    expect(err.code).toBe(ErrorCode.DIGEST_MISMATCH);
    expect(err.message).toContain(small.digest);
    expect(proxy.requests.length).toBe(2);
    expect(kinds('verify-failed').length).toBe(2);
    expect(kinds('error').map((e) => e.code)).toEqual([ErrorCode.DIGEST_MISMATCH]);
    // Nothing bad was kept: with an honest server the same read succeeds.
    await proxy.setMode('pass');
    expect((await src.read(small, 0, small.size)).equals(SMALL)).toBe(true);
  });

  it('rejects corrupted chunks of a large content, and recovers from one corrupted answer', async () => {
    const { src, proxy, kinds } = await proxied();
    proxy.addRule({ mode: 'corrupt', path: FILES });
    const { err } = await rejection(src.read(big, CHUNK_BYTES, 10));
    expect(err.code).toBe(ErrorCode.DIGEST_MISMATCH);
    expect(err.message).toContain(`${big.digest} chunk 1`);
    // A mismatch drops the chunk list too: it might have been the corrupted part.
    expect(proxy.count(LISTS)).toBe(2);

    await proxy.reset();
    proxy.addRule({ mode: 'corrupt', path: FILES, times: 1 });
    const got = await src.read(big, 4 * CHUNK_BYTES - 3, 6);
    expect(got.equals(BIG.subarray(4 * CHUNK_BYTES - 3, 4 * CHUNK_BYTES + 3))).toBe(true);
    expect(kinds('verify-failed').length).toBe(3);
  });

  it('recovers when the chunk list itself was corrupted', async () => {
    const { src, proxy, kinds } = await proxied();
    // Flip one byte of a chunk digest in the list (the middle of the JSON is inside the digests).
    proxy.addRule({ mode: 'corrupt', path: LISTS, times: 1 });
    const got = await src.read(big, 0, big.size);
    expect(got.equals(BIG)).toBe(true);
    expect(kinds('verify-failed').length).toBeGreaterThanOrEqual(1);
    expect(proxy.count(LISTS)).toBe(2);
  });

  it('fails with UNAVAILABLE after the retries when connections are refused, naming URL and digest', async () => {
    const { src, proxy, kinds } = await proxied({ retries: 3, backoffMs: 20, deadlineMs: 3000 });
    await proxy.setMode('refuse');
    const { err, ms } = await rejection(src.read(small, 0, 10));
    expect(err.code).toBe(ErrorCode.UNAVAILABLE);
    expect(err.message).toContain(proxy.url);
    expect(err.message).toContain(small.digest);
    expect(err.message).toContain('4 attempts');
    expect(err.message).toMatch(/ECONNREFUSED/);
    expect(ms).toBeLessThan(1000);
    expect(kinds('retry').map((e) => e.attempt)).toEqual([1, 2, 3]);
    expect(kinds('error').map((e) => [e.code, e.attempt])).toEqual([[ErrorCode.UNAVAILABLE, 4]]);
  });

  it('retries reset connections, then gives up with UNAVAILABLE', async () => {
    const { src, proxy, kinds } = await proxied({ retries: 2, backoffMs: 10 });
    await proxy.setMode('reset');
    const { err } = await rejection(src.read(big, 0, 10));
    expect(err.code).toBe(ErrorCode.UNAVAILABLE);
    expect(err.message).toContain(`${big.digest} chunk list`);
    expect(proxy.requests.length).toBe(3);
    expect(kinds('retry').length).toBe(2);
  });

  it('retries a 500 and succeeds; gives up with UNAVAILABLE when every answer is 500', async () => {
    const { src, proxy, kinds } = await proxied({ backoffMs: 10 });
    proxy.addRule({ mode: '500', times: 1 });
    expect((await src.read(small, 0, small.size)).equals(SMALL)).toBe(true);
    expect(kinds('retry').map((e) => e.reason)).toEqual(['HTTP 500: proxy says 500']);
    expect(proxy.requests.map((r) => r.mode)).toEqual(['500', 'pass']);

    await proxy.setMode('500');
    const { err } = await rejection(src.read(small, 0, 10));
    expect(err.code).toBe(ErrorCode.UNAVAILABLE);
    expect(err.message).toContain('HTTP 500');
    expect(proxy.requests.length).toBe(2 + 4);
  });

  it('never sleeps past the deadline between retries', async () => {
    const { src, proxy } = await proxied({ retries: 100, backoffMs: 200, deadlineMs: 700 });
    await proxy.setMode('refuse');
    const { err, ms } = await rejection(src.read(small, 0, 10));
    expect(err.code).toBe(ErrorCode.UNAVAILABLE);
    expect(ms).toBeLessThan(700);
  });

  it('rejects with ABORTED promptly when the caller aborts, cancelling the fetch nobody waits for', async () => {
    const { src, proxy, kinds } = await proxied({ deadlineMs: 5000 });
    await proxy.setMode('hang');
    const ac = new AbortController();
    const p = src.read(small, 0, 10, { signal: ac.signal });
    const rejected = rejection(p);
    const abortedAt = await abortLater(ac, 100);
    const { err, at } = await rejected;
    expect(err.code).toBe(ErrorCode.ABORTED);
    expect(at - abortedAt).toBeLessThan(50);
    expect(src.inFlight).toBe(0);
    // Cancelled, not failed: no error event.
    expect(kinds('error')).toEqual([]);
  });

  it('rejects reads in flight with UNAVAILABLE on close(), and later reads too', async () => {
    const { src, proxy } = await proxied({ deadlineMs: 5000 });
    await proxy.setMode('hang');
    const p = src.read(big, 0, 10);
    await new Promise((r) => setTimeout(r, 50));
    const started = performance.now();
    const rejected = rejection(p);
    await src.close();
    const { err } = await rejected;
    expect(err.code).toBe(ErrorCode.UNAVAILABLE);
    expect(performance.now() - started).toBeLessThan(250);
    await expect(src.read(small, 0, 1)).rejects.toMatchObject({ code: ErrorCode.UNAVAILABLE });
    await src.close();
  });

  it('reconnects after the registry stops and comes back on the same port', async () => {
    const log = createLogger({ level: 'silent', component: 'test' });
    let server = new RegistryHttpServer(store, log);
    const { port } = await server.listen('127.0.0.1', 0);
    onTestFinished(async () => {
      server.server.closeAllConnections();
      await server.close();
    });
    const { src, kinds } = source(`http://127.0.0.1:${port}`, { retries: 2, backoffMs: 10, deadlineMs: 2000 });
    expect((await src.read(big, 0, 10)).equals(BIG.subarray(0, 10))).toBe(true);
    expect((await src.read(small, 0, 10)).equals(SMALL.subarray(0, 10))).toBe(true);

    // Stopped: the pool's keep-alive connection is gone, new ones are refused.
    server.server.closeAllConnections();
    await server.close();
    const { err } = await rejection(src.read(big, CHUNK_BYTES, 10));
    expect(err.code).toBe(ErrorCode.UNAVAILABLE);

    server = new RegistryHttpServer(store, log);
    await server.listen('127.0.0.1', port);
    expect((await src.read(big, CHUNK_BYTES, 10)).equals(BIG.subarray(CHUNK_BYTES, CHUNK_BYTES + 10))).toBe(true);
    expect((await src.read(small, 10, 10)).equals(SMALL.subarray(10, 20))).toBe(true);
    expect(kinds('error').length).toBe(1);
  });

  it('succeeds when the registry comes back while a read is retrying', async () => {
    const log = createLogger({ level: 'silent', component: 'test' });
    let server = new RegistryHttpServer(store, log);
    const { port } = await server.listen('127.0.0.1', 0);
    onTestFinished(async () => {
      server.server.closeAllConnections();
      await server.close();
    });
    const { src, kinds } = source(`http://127.0.0.1:${port}`, { retries: 20, backoffMs: 20, deadlineMs: 3000 });
    expect((await src.read(small, 0, 10)).length).toBe(10);
    server.server.closeAllConnections();
    await server.close();
    const p = src.read(small, 0, small.size);
    await new Promise((r) => setTimeout(r, 150));
    server = new RegistryHttpServer(store, log);
    await server.listen('127.0.0.1', port);
    expect((await p).equals(SMALL)).toBe(true);
    expect(kinds('retry').length).toBeGreaterThanOrEqual(1);
  });
});
