/**
 * Reconstruction as a user runs it: two images imported with `cairn import`
 * (the second with `--reconstruct`, online SOIRA against its repository),
 * `cairn registry ls` showing the tag on the reconstructed image and the
 * original still there, `cairn reconstruct` offline (GOIRA) with --dry-run
 * and for real, and then the original (by digest) and the reconstructed
 * image (by tag) mounted side by side with `cairn mount` and walked: the two
 * trees must be the same, file contents included.
 *
 * Needs root and FUSE for the mount part; skipped (saying why) otherwise.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it, type TestContext } from 'vitest';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { writeOciLayout, type ImageInput } from '../../src/image/layout-writer.js';
import { dir, file, hardlink, layer, opaque, symlink, whiteout } from '../fixtures/layers.js';
import {
  daemonPid,
  inodeGroups,
  Janitor,
  leftoverMounts,
  probeMounts,
  walkTree,
  withoutDev,
} from '../fixtures/mount.js';
import { pseudoRandom } from '../fixtures/registry.js';
import { makeTempDir, type TempDir } from '../fixtures/tmp.js';
import { cairn, cairnJson, ensureBuilt, spawnCairn, stopCli, waitForListening, type CliChild } from './cli-harness.js';

const MARKER = 'cairn-e2e-reconstruct-';
const janitor = new Janitor(MARKER);

const libc = pseudoRandom(600_000, 'libc');
const python = pseudoRandom(400_000, 'python');
const baseEntries = [
  dir('usr'),
  dir('usr/lib'),
  file('usr/lib/libc.so', libc),
  file('usr/lib/libm.so', pseudoRandom(200_000, 'libm')),
  dir('usr/bin'),
  file('usr/bin/sh', pseudoRandom(100_000, 'sh'), { mode: 0o755 }),
  hardlink('usr/bin/dash', 'usr/bin/sh'),
  symlink('bin', 'usr/bin'),
  dir('etc'),
  file('etc/os-release', 'debian 12\n'),
  dir('var'),
  dir('var/cache'),
  file('var/cache/a', 'cache a'),
];
// Image 1: the base as one layer, then an app.
const image1: ImageInput = {
  layers: [layer(baseEntries), layer([dir('app'), file('app/main.py', 'print(1)\n')])],
};
// Image 2: the same base with python added into the base layer (so its base layer is new but similar),
// then a layer that whites out a base file, makes a directory opaque and adds files.
const image2: ImageInput = {
  layers: [
    layer([...baseEntries, file('usr/lib/libpython.so', python)]),
    layer([
      dir('etc'),
      whiteout('etc/os-release'),
      dir('var'),
      dir('var/cache'),
      opaque('var/cache'),
      file('var/cache/b', 'cache b'),
      dir('srv'),
      file('srv/app.py', 'print(2)\n'),
    ]),
  ],
};

interface Reconstruction {
  valid: boolean;
  image?: string;
  reusedLayers: number;
  layersBefore: number;
  layersAfter: number;
  newBytesBefore: number;
  newBytesAfter: number;
}

let base: TempDir | undefined;
let root = '';
let original2 = '';
let reconstructed2 = '';
let goira2 = '';
let mountSkip: string | undefined;
let server: CliChild | undefined;

beforeAll(async () => {
  ensureBuilt();
  base = await makeTempDir(MARKER);
  root = join(base.path, 'registry');
  for (const [name, image] of [
    ['1', image1],
    ['2', image2],
  ] as const) {
    await writeOciLayout(join(base.path, `layout-${name}`), [image]);
  }
  mountSkip = await probeMounts(MARKER);
}, 120_000);

afterEach(() => janitor.clear());

afterAll(async () => {
  await janitor.clear();
  await stopCli(server);
  await base?.cleanup();
  expect(await leftoverMounts(MARKER)).toEqual([]);
});

describe('cairn reconstruct', () => {
  it('online on import (enabled in reconstruct.json): the tag moves to a valid reconstruction that reuses the stored base', async () => {
    const b = base as TempDir;
    await cairnJson(['import', join(b.path, 'layout-1'), 'app/x:1', '--root', root]);
    // Enabled by the store's configuration file (as a push would find it), not by a flag.
    await writeFile(join(root, 'reconstruct.json'), JSON.stringify({ enabled: true, alpha: 1, beta: 1 }));
    const r = await cairnJson<{ digest: string; reconstruction?: Reconstruction }>([
      'import',
      join(b.path, 'layout-2'),
      'app/x:2',
      '--root',
      root,
    ]);
    const rec = r.reconstruction as Reconstruction;
    expect(rec.valid).toBe(true);
    expect(rec.reusedLayers).toBe(1);
    expect(rec.layersAfter).toBeGreaterThanOrEqual(3); // the reused base, the rest of the base, layer 2 (and maybe a directory layer)
    expect(rec.newBytesAfter).toBeLessThan(rec.newBytesBefore);
    expect(rec.newBytesAfter).toBeLessThan(python.length + 1000);
    expect(rec.image).toMatch(/^sha256:/);
    original2 = r.digest;
    reconstructed2 = rec.image as string;
    const ls = await cairnJson<{ digest: string; repository: string; tags: string }[]>([
      'registry',
      'ls',
      '--root',
      root,
    ]);
    expect(ls.find((i) => i.digest === reconstructed2)?.tags).toBe('2');
    expect(ls.find((i) => i.digest === original2)?.tags).toBe('');
  });

  it('offline: --dry-run plans and writes nothing; GOIRA for real regroups the originals, all valid', async () => {
    const before = await cairnJson<{ images: number; layers: number }>(['registry', 'stats', '--root', root]);
    const dry = await cairnJson<{
      valid: boolean;
      before: { taggedLayers: number; taggedLayerBytes: number; storedBytes: number };
      after: { taggedLayers: number; taggedLayerBytes: number; storedBytes: number };
      images: (Reconstruction & { seconds: number })[];
    }>(['reconstruct', '--root', root, '--algo', 'goira', '--dry-run']);
    expect(dry.valid).toBe(true);
    expect(dry.images).toHaveLength(2);
    expect(dry.images.every((i) => i.seconds >= 0 && i.image === undefined)).toBe(true);
    expect(dry.after.taggedLayerBytes).toBeLessThanOrEqual(dry.before.taggedLayerBytes);
    expect(dry.after.storedBytes).toBe(dry.before.storedBytes);
    expect(await cairnJson<{ images: number }>(['registry', 'stats', '--root', root])).toMatchObject({
      images: before.images,
    });
    // For real: each tag moves to a GOIRA reconstruction of its original (not of the SOIRA one).
    const real = await cairnJson<{ valid: boolean; images: (Reconstruction & { original: string; tags: string[] })[] }>(
      ['reconstruct', '--root', root, '--algo', 'goira'],
    );
    expect(real.valid).toBe(true);
    expect(real.images.map((i) => [i.original === original2, i.tags])).toContainEqual([true, ['2']]);
    goira2 = real.images.find((i) => i.original === original2)?.image ?? '';
    expect(goira2).toMatch(/^sha256:/);
    expect(goira2).not.toBe(reconstructed2);
    const bad = await cairn(['reconstruct', '--root', root, '--algo', 'nope']);
    expect(bad.code).toBe(64);
    expect(bad.stderr).toMatch(/--algo: "nope" is not soira\|goira\|ofpl/);
    const badModel = await cairn([
      'reconstruct',
      '--root',
      root,
      '--algo',
      'soira',
      '--cost-model',
      join(root, 'none.json'),
    ]);
    expect(badModel.code).toBe(65);
    expect(badModel.stderr).toMatch(/cost model .*none\.json/);
  });

  it('mounts the original and both reconstructions side by side: the same tree, the same contents', async (ctx: TestContext) => {
    if (mountSkip) ctx.skip(mountSkip);
    expect(reconstructed2).not.toBe('');
    server = spawnCairn(['registry', 'serve', '--root', root, '--listen', '127.0.0.1:0'], { timeoutMs: 600_000 });
    const url = (await waitForListening(server)).url;
    const tmp = await makeTempDir(MARKER);
    janitor.later(() => tmp.cleanup());
    const state = janitor.stateDir(join(tmp.path, 'state'));
    const mnt = async (image: string, name: string): Promise<string> => {
      const dirPath = join(tmp.path, name);
      await mkdir(dirPath);
      const r = await cairn(['mount', url, image, dirPath, '--state-dir', state, '--json'], { timeoutMs: 60_000 });
      expect(r.code, r.stderr).toBe(0);
      await janitor.pid(await daemonPid(state));
      return dirPath;
    };
    const orig = await mnt(`app/x@${original2}`, 'orig');
    const soira = await mnt(`app/x@${reconstructed2}`, 'soira');
    const goira = await mnt('app/x:2', 'goira');
    const a = withoutDev(await walkTree(orig));
    const strip = (t: typeof a.tree) =>
      Object.fromEntries(
        Object.entries(t).map(([p, r]) => [
          p,
          { ...r, inode: undefined, nlink: r.type === 'dir' ? undefined : r.nlink },
        ]),
      );
    for (const m of [soira, goira]) {
      const b = withoutDev(await walkTree(m));
      expect(Object.keys(b.tree).sort()).toEqual(Object.keys(a.tree).sort());
      expect(strip(b.tree)).toEqual(strip(a.tree));
      expect(inodeGroups(b.tree)).toEqual(inodeGroups(a.tree));
      // The content of every file was read through both mounts and hashed.
      expect(b.tree['usr/lib/libpython.so']?.sha256).toBe(a.tree['usr/lib/libpython.so']?.sha256);
    }
    expect(a.tree['usr/lib/libpython.so']?.sha256).toMatch(/^[0-9a-f]{64}$|^sha256:/);
    expect(a.tree['etc/os-release']).toBeUndefined();
    expect(Object.keys(a.tree).filter((p) => p.startsWith('var/cache/'))).toEqual(['var/cache/b']);
  });
});
