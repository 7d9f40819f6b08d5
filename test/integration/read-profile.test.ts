import { describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { createHash } from 'node:crypto';
import type { Digest } from '../../src/model/digest.js';
import { MAX_PROFILE_FILES } from '../../src/model/read-profile.js';
import { RegistryStore } from '../../src/registry/store.js';
import { mountInProcess, prefetchDone } from '../fixtures/daemon.js';
import { dir, file, layer } from '../fixtures/layers.js';
import { importFixtureImage, pseudoRandom, startRegistry, type RunningRegistry } from '../fixtures/registry.js';
import { testTempDir } from '../fixtures/tmp.js';

const run = promisify(execFile);

const A = pseudoRandom(300_000, 'profile-a');
const B = pseudoRandom(5_000, 'profile-b');
const C = pseudoRandom(70_000, 'profile-c');
const OTHER = pseudoRandom(1_000, 'profile-other');
const sha256Hex = (b: Buffer): string => createHash('sha256').update(b).digest('hex');
const d = (b: Buffer): string => `sha256:${sha256Hex(b)}`;

/** A registry holding lib/p:1 (data/a, data/b in one layer, data/c above) and lib/q:1 (another content). */
async function setUp(opts: { acceptReadProfiles?: boolean } = {}) {
  const tmp = await testTempDir('cairn-profile-');
  const store = await RegistryStore.open(join(tmp, 'registry'));
  const [p] = await importFixtureImage(
    store,
    {
      image: {
        ref: 'p:1',
        layers: [layer([dir('data'), file('data/a', A), file('data/b', B)]), layer([file('data/c', C)])],
      },
      target: 'lib/p:1',
    },
    { image: { ref: 'q:1', layers: [layer([file('other', OTHER)])] }, target: 'lib/q:1' },
  );
  const reg = await startRegistry(store, opts);
  return { tmp, store, reg, image: (p as { result: { digest: Digest } }).result.digest };
}

const profileUrl = (reg: RunningRegistry, image: string): string => `${reg.url}/api/v1/images/${image}/profile`;
const post = (url: string, body: unknown, raw = false): Promise<Response> =>
  fetch(url, { method: 'POST', body: raw ? (body as string) : JSON.stringify(body) });
const getProfile = async (reg: RunningRegistry, image: string): Promise<unknown> =>
  ((await (await fetch(profileUrl(reg, image))).json()) as { files: unknown }).files;

describe('read profiles in the registry', () => {
  it('merges what daemons send, in first-read order, each content once', async () => {
    const { reg, image } = await setUp();
    expect(await getProfile(reg, image)).toEqual([]);
    let r = await post(profileUrl(reg, image), {
      files: [
        [d(C), C.length],
        [d(A), A.length],
      ],
    });
    expect(r.status).toBe(200);
    expect(await r.json()).toEqual({ files: 2, added: 2 });
    // A second daemon read B first, then C: C keeps its place, B is appended.
    r = await post(profileUrl(reg, image), {
      files: [
        [d(B), B.length],
        [d(C), C.length],
        [d(B), B.length],
      ],
    });
    expect(await r.json()).toEqual({ files: 3, added: 1 });
    expect(await getProfile(reg, image)).toEqual([
      [d(C), C.length],
      [d(A), A.length],
      [d(B), B.length],
    ]);
    // A content read whole stays whole when another daemon read only a part of it.
    await post(profileUrl(reg, image), { files: [[d(A), A.length, [1]]] });
    expect(((await getProfile(reg, image)) as unknown[])[1]).toEqual([d(A), A.length]);
    const head = await fetch(profileUrl(reg, image), { method: 'HEAD' });
    expect(head.status).toBe(200);
    expect(head.headers.get('content-type')).toBe('application/vnd.cairn.read-profile.v1+json');
  });

  it('keeps the blocks read of a large content, merged over daemons', async () => {
    const { reg, image } = await setUp();
    // Parts of a large content: A has two 256 KiB blocks; one daemon read block 1, another block 0.
    await post(profileUrl(reg, image), { files: [[d(A), A.length, [1]]] });
    expect(((await getProfile(reg, image)) as unknown[])[0]).toEqual([d(A), A.length, [1]]);
    await post(profileUrl(reg, image), { files: [[d(A), A.length, [0]]] });
    expect(((await getProfile(reg, image)) as unknown[])[0]).toEqual([d(A), A.length]);
    const outOfRange = await post(profileUrl(reg, image), { files: [[d(A), A.length, [2]]] });
    expect(outOfRange.status).toBe(400);
  });

  it('refuses bad profiles with a status and a message naming the problem, and keeps what it had', async () => {
    const { reg, image, store } = await setUp();
    await post(profileUrl(reg, image), { files: [[d(A), A.length]] });
    const cases: [unknown, number, RegExp, boolean?][] = [
      // A content of another image of the same registry is not a file of this one.
      [
        {
          files: [
            [d(B), B.length],
            [d(OTHER), OTHER.length],
          ],
        },
        400,
        /entry 1 \(sha256:[0-9a-f]+\) is not a file of the image/,
      ],
      [{ files: [[d(B), B.length + 1]] }, 400, /entry 0 .* has size 5001, the content has 5000/],
      [{ files: [['sha256:xyz', 1]] }, 400, /entry 0 is not \[sha256 digest, size, blocks\?\]/],
      [{ files: [[d(B), -1]] }, 400, /entry 0 .*size is not a non-negative integer/],
      [{ files: 'all' }, 400, /no "files" list/],
      ['{"files": [', 400, /not JSON/, true],
      [{ files: Array.from({ length: MAX_PROFILE_FILES + 1 }, () => [d(B), B.length]) }, 413, /at most 20000/],
    ];
    for (const [body, status, message, raw] of cases) {
      const r = await post(profileUrl(reg, image), body, raw);
      const j = (await r.json()) as { error: { code: string; message: string } };
      expect({ status: r.status, message: j.error.message }).toMatchObject({
        status,
        message: expect.stringMatching(message),
      });
    }
    // Over the body limit: refused from its declared length, before it is read.
    const big = await post(profileUrl(reg, image), 'x'.repeat(5 * 1024 * 1024), true);
    expect(big.status).toBe(413);
    const unknown = await post(profileUrl(reg, `sha256:${'0'.repeat(64)}`), { files: [] });
    expect(unknown.status).toBe(404);
    const put = await fetch(profileUrl(reg, image), { method: 'PUT', body: '{}' });
    expect(put.status).toBe(405);
    expect(put.headers.get('allow')).toBe('GET, HEAD, POST');
    // Nothing of the refused bodies got in.
    expect(await getProfile(reg, image)).toEqual([[d(A), A.length]]);
    expect(store.meta.readProfile(image)).toEqual([{ digest: d(A), size: A.length }]);
  });

  it('goes with its image: removing the image removes its profile', async () => {
    const { reg, image, store } = await setUp();
    await post(profileUrl(reg, image), { files: [[d(A), A.length]] });
    store.meta.db.prepare('DELETE FROM tags WHERE image = ?').run(image);
    store.meta.db.prepare('DELETE FROM repository_images WHERE image = ?').run(image);
    expect(store.meta.pruneUnheldImages().images).toEqual([image]);
    expect(store.meta.db.prepare('SELECT count(*) AS n FROM read_profiles').get()).toEqual({ n: 0 });
  });

  it('a registry started with --no-read-profiles refuses them (403) and still serves what it kept', async () => {
    const first = await setUp();
    await post(profileUrl(first.reg, first.image), { files: [[d(A), A.length]] });
    await first.reg.close();
    const reg = await startRegistry(first.store, { acceptReadProfiles: false });
    const r = await post(profileUrl(reg, first.image), { files: [[d(B), B.length]] });
    expect(r.status).toBe(403);
    expect(await getProfile(reg, first.image)).toEqual([[d(A), A.length]]);
  });
});

describe('sharing reads between daemons', () => {
  const daemon = (
    reg: RunningRegistry,
    stateDir: string,
    mnt: string,
    req: { prefetch?: boolean; shareReads?: boolean },
  ) => mountInProcess(reg.url, 'lib/p:1', stateDir, mnt, req);

  it('a node that never mounted the image prefetches what another node read, and reads it without fetching', async () => {
    const { tmp, reg, image } = await setUp();
    const mnt = join(tmp, 'mnt');
    await mkdir(mnt);
    // Node 1 reads data/c then data/b; its unmount shares them.
    const one = await daemon(reg, join(tmp, 'node1'), mnt, {});
    try {
      await run('cat', [join(mnt, 'data/c')]);
      await run('cat', [join(mnt, 'data/b')]);
      await run('head', ['-c', '4096', join(mnt, 'data/a')]);
    } finally {
      await one.close();
    }
    // data/a (two blocks) was read in its first block only.
    expect(await getProfile(reg, image)).toEqual([
      [d(C), C.length],
      [d(B), B.length],
      [d(A), A.length, [0]],
    ]);
    // Node 2: fresh state dir and caches, --prefetch: both come from the registry's profile.
    const two = await daemon(reg, join(tmp, 'node2'), mnt, { prefetch: true });
    try {
      const s = await prefetchDone(two.stats, 3);
      expect(s.prefetch).toMatchObject({ planned: 3, fromRegistry: 3, done: 3 });
      const fetched = s.bytesFetched;
      // B and C whole, and A's first block, not its second.
      expect(fetched).toBeGreaterThanOrEqual(B.length + C.length + 262_144);
      expect(fetched).toBeLessThan(B.length + C.length + A.length);
      const out = await run('sh', [
        '-c',
        `(cat ${join(mnt, 'data/c')} ${join(mnt, 'data/b')}; head -c 4096 ${join(mnt, 'data/a')}) | sha256sum`,
      ]);
      expect(out.stdout.split(' ')[0]).toBe(sha256Hex(Buffer.concat([C, B, A.subarray(0, 4096)])));
      expect(two.stats().bytesFetched).toBe(fetched);
    } finally {
      await two.close();
    }
  });

  it('a mount that stays shares what it read in its window when the window closes, and nothing read after it', async () => {
    const { tmp, reg, image } = await setUp();
    const mnt = join(tmp, 'mnt');
    await mkdir(mnt);
    const node = await mountInProcess(reg.url, 'lib/p:1', join(tmp, 'node'), mnt, {}, { profileWindowMs: 1500 });
    try {
      await run('cat', [join(mnt, 'data/b')]);
      let shared: unknown = [];
      for (let i = 0; i < 100 && (shared as unknown[]).length === 0; i++) {
        await new Promise((r) => setTimeout(r, 50));
        shared = await getProfile(reg, image);
      }
      // Shared while still mounted; data/c, read after the window, never is (not even at unmount).
      expect(shared).toEqual([[d(B), B.length]]);
      await run('cat', [join(mnt, 'data/c')]);
    } finally {
      await node.close();
    }
    expect(await getProfile(reg, image)).toEqual([[d(B), B.length]]);
  });

  it('--no-share-reads keeps a mount out of the profile; a registry that refuses profiles costs nothing but the prefetch', async () => {
    const { tmp, reg, image, store } = await setUp();
    const mnt = join(tmp, 'mnt');
    await mkdir(mnt);
    const quiet = await daemon(reg, join(tmp, 'quiet'), mnt, { shareReads: false });
    try {
      await run('cat', [join(mnt, 'data/a')]);
    } finally {
      await quiet.close();
    }
    expect(await getProfile(reg, image)).toEqual([]);
    await reg.close();
    const refusing = await startRegistry(store, { acceptReadProfiles: false, logLevel: 'silent' });
    const node = await daemon(refusing, join(tmp, 'node'), mnt, { prefetch: true });
    try {
      expect((await run('cat', [join(mnt, 'data/b')], { encoding: 'buffer' })).stdout.equals(B)).toBe(true);
      await new Promise((r) => setTimeout(r, 100));
      // The local record of the state dir is empty and the registry's profile too: nothing planned.
      expect(node.stats().prefetch).toMatchObject({ planned: 0, fromRegistry: 0 });
    } finally {
      await node.close(); // its share is refused (403): logged, and the unmount goes on
    }
    expect(store.meta.readProfile(image)).toEqual([]);
  });
});
