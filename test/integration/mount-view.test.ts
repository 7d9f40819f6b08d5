/**
 * The registry's built views: what `/api/v1/images/<digest>/view` serves, and
 * that `cairn mount` restores its union view from it (no recipe parsed), shows
 * exactly the tree the recipes give, and falls back to the recipes when the
 * view is refused (wrong bytes) or missing (a registry that serves none).
 *
 * The registry runs in this process over a real store, behind the misbehaving
 * proxy of test/fixtures/proxy.ts; mounts are made by the CLI, and every look
 * at a mount is made by a child process. Needs root and FUSE for the mount
 * tests; the HTTP tests run anywhere.
 */
import { createHash } from 'node:crypto';
import { readdir, rename, rm, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { beforeAll, describe, expect, it, type TestContext } from 'vitest';
import type { Digest } from '../../src/model/digest.js';
import { collectGarbage } from '../../src/registry/gc.js';
import { viewKey } from '../../src/registry/views.js';
import { UnionView } from '../../src/union/view.js';
import { cairn, cairnJson, ensureBuilt } from '../e2e/cli-harness.js';
import { dir, file, hardlink, layer, opaque, symlink, whiteout } from '../fixtures/layers.js';
import {
  cleanUpAfterTests,
  daemonPid,
  Janitor,
  probeMounts,
  testMountDir,
  walkTree,
  withoutDev,
} from '../fixtures/mount.js';
import { startProxy } from '../fixtures/proxy.js';
import { fetchRaw, importFixtureImage, startRegistry, type RunningRegistry } from '../fixtures/registry.js';
import { makeTempDir, type TempDir } from '../fixtures/tmp.js';

const MARKER = 'cairn-mount-view-';
const IMAGE = 'view/app:1';

let skipReason: string | undefined;
let registry: RunningRegistry;
let registryDir: TempDir;
let imageDigest: Digest;
let recipes: Digest[];
const janitor = new Janitor(MARKER);

beforeAll(async () => {
  skipReason = await probeMounts(MARKER);
  ensureBuilt();
  registryDir = await makeTempDir(MARKER);
  registry = await startRegistry(join(registryDir.path, 'registry'), { closeAfterTest: false });
  const [imported] = await importFixtureImage(registry.store, {
    image: {
      layers: [
        layer([
          dir('etc'),
          file('etc/passwd', 'root:x:0:0\n'),
          file('etc/hosts', '127.0.0.1 localhost\n'),
          symlink('etc/motd', 'passwd'),
          dir('usr/lib'),
          file('usr/lib/libc.so', 'libc'),
          hardlink('usr/lib/libc.so.6', 'usr/lib/libc.so'),
          dir('var/cache'),
          file('var/cache/old', 'old'),
        ]),
        layer([whiteout('etc/hosts'), opaque('var/cache'), file('var/cache/new', 'new'), file('etc/passwd', 'root2')]),
        layer([file('app/main.py', 'print("hi")\n')]),
      ],
    },
    target: IMAGE,
  });
  if (!imported) throw new Error('fixture image not imported');
  imageDigest = imported.result.digest;
  recipes = imported.result.layers.map((l) => l.recipe);
}, 180_000);

cleanUpAfterTests(janitor, async () => {
  await registry?.close();
  await registryDir?.cleanup();
});

const viewPath = (layers: number): string => `/api/v1/images/${imageDigest}/view?layers=${layers}`;

describe('the registry serves built views', () => {
  it('import builds the view of the whole image; a prefix gets its own on first request', async () => {
    const views = join(registry.store.root, 'views');
    expect(await readdir(views)).toEqual([`${viewKey(recipes)}.view`]);
    const whole = await fetchRaw(registry.url, `/api/v1/images/${imageDigest}/view`);
    expect(whole.status).toBe(200);
    expect(whole.headers['content-type']).toBe('application/vnd.cairn.view.v1');
    const digest = `sha256:${createHash('sha256').update(whole.body).digest('hex')}`;
    expect(whole.headers['cairn-view-digest']).toBe(digest);
    expect(whole.headers.etag).toBe(`"${digest}"`);
    expect(UnionView.decode(whole.body, { lookup: 'flat' }).recipes).toEqual(recipes);

    const prefix = await fetchRaw(registry.url, viewPath(2));
    expect(prefix.status).toBe(200);
    const restored = UnionView.decode(prefix.body, { lookup: 'stacked' });
    expect(restored.recipes).toEqual(recipes.slice(0, 2));
    expect(restored.view.resolvePath('app')).toBeUndefined();
    expect(restored.view.resolvePath('var/cache/new')?.depth).toBe(1);
    expect((await readdir(views)).sort()).toEqual(
      [`${viewKey(recipes)}.view`, `${viewKey(recipes.slice(0, 2))}.view`].sort(),
    );

    const again = await fetchRaw(registry.url, viewPath(3), { headers: { 'if-none-match': `"${digest}"` } });
    expect(again.status).toBe(304);
    const head = await fetchRaw(registry.url, viewPath(3), { method: 'HEAD' });
    expect(head.status).toBe(200);
    expect(Number(head.headers['content-length'])).toBe(whole.body.length);
  });

  it('answers a bad layer count with 400 and an unknown image with 404, naming them', async () => {
    for (const bad of ['0', '4', 'x', '-1', '99999']) {
      const r = await fetchRaw(registry.url, `/api/v1/images/${imageDigest}/view?layers=${bad}`);
      expect(r.status, bad).toBe(400);
      expect(r.body.toString()).toMatch(/layers=.* is not within 1\.\.3/);
    }
    const unknown = `sha256:${'0'.repeat(64)}`;
    const r = await fetchRaw(registry.url, `/api/v1/images/${unknown}/view`);
    expect(r.status).toBe(404);
    expect(r.body.toString()).toContain(unknown);
  });

  it('rebuilds a view removed from disk, and gc removes only views no image uses', async () => {
    const views = join(registry.store.root, 'views');
    const stray = join(views, `${viewKey([`sha256:${'1'.repeat(64)}`])}.view`);
    await writeFile(stray, 'a view of layers nobody has');
    const old = new Date(Date.now() - 3_600_000);
    await utimes(stray, old, old);
    const r = await collectGarbage(registry.store, { graceMs: 60_000 });
    expect(r.removedViews).toBe(1);
    expect(await readdir(views)).not.toContain(stray.slice(views.length + 1));
    expect(await readdir(views)).toContain(`${viewKey(recipes)}.view`);

    // A view is a cache: removed, it is built again on the next request, equal to the first.
    const before = await fetchRaw(registry.url, viewPath(1));
    await rm(join(views, `${viewKey(recipes.slice(0, 1))}.view`));
    // The server keeps views in memory too: a fresh server over the same store must rebuild.
    const second = await startRegistry(registry.store);
    const rebuilt = await fetchRaw(second.url, viewPath(1));
    expect(rebuilt.status).toBe(200);
    expect(rebuilt.body.equals(before.body)).toBe(true);
    expect(await readdir(views)).toContain(`${viewKey(recipes.slice(0, 1))}.view`);
  });

  it('serves a view it cannot keep on disk (a full or read-only disk), and says so in its log', async () => {
    const views = join(registry.store.root, 'views');
    await rename(views, `${views}.aside`);
    // A file where the directory should be: every write of a view fails.
    await writeFile(views, 'not a directory');
    const lines: string[] = [];
    try {
      const fresh = await startRegistry(registry.store, { logLevel: 'warn', logWrite: (l) => lines.push(l) });
      const r = await fetchRaw(fresh.url, viewPath(2));
      expect(r.status).toBe(200);
      expect(UnionView.decode(r.body, { lookup: 'flat' }).recipes).toEqual(recipes.slice(0, 2));
      expect(lines.join('\n')).toMatch(/view not kept on disk/);
    } finally {
      await rm(views, { force: true });
      await rename(`${views}.aside`, views);
    }
  });
});

describe('cairn mount restores the registry view', () => {
  async function mountAt(ctx: TestContext, url: string): Promise<{ mnt: string; info: { metadata: string } }> {
    if (skipReason) ctx.skip(skipReason);
    const t = await testMountDir(janitor);
    const mnt = await t.mkdir('mnt');
    const info = await cairnJson<{ metadata: string }>(['mount', url, IMAGE, mnt, '--state-dir', t.state]);
    await janitor.pid(await daemonPid(t.state));
    return { mnt, info };
  }

  it('from the view, from the recipes when the view is corrupted or refused: the same tree each time', async (ctx) => {
    const fromView = await mountAt(ctx, registry.url);
    expect(fromView.info.metadata).toBe('view');
    const expected = withoutDev(await walkTree(fromView.mnt));
    expect(Object.keys(expected.tree)).toContain('var/cache/new');
    expect(Object.keys(expected.tree)).not.toContain('etc/hosts');
    expect(Object.keys(expected.tree)).not.toContain('var/cache/old');

    // One byte of the view flipped on the way: its digest check fails, the recipes take over.
    const corrupting = await startProxy(registry.url);
    corrupting.addRule({ mode: 'corrupt', path: /\/view(\?|$)/ });
    const fromRecipes = await mountAt(ctx, corrupting.url);
    expect(fromRecipes.info.metadata).toBe('recipes');
    expect(corrupting.count(/\/view(\?|$)/)).toBe(1);
    expect(corrupting.count(/\/recipes\//)).toBe(3);
    expect(withoutDev(await walkTree(fromRecipes.mnt))).toEqual(expected);

    // A registry that fails to serve a view (500) does not fail the mount either.
    const failing = await startProxy(registry.url);
    failing.addRule({ mode: '500', path: /\/view(\?|$)/ });
    const fallback = await mountAt(ctx, failing.url);
    expect(fallback.info.metadata).toBe('recipes');
    expect(withoutDev(await walkTree(fallback.mnt))).toEqual(expected);

    for (const m of [fromView.mnt, fromRecipes.mnt, fallback.mnt]) {
      const r = await cairn(['unmount', m, '--state-dir', join(m, '..', 'state')]);
      expect(r.code, r.stderr).toBe(0);
    }
  });
});
