/**
 * Kernel overlayfs as the oracle for a whole cairn mount.
 *
 * Each fixture stack (every entry type, every whiteout and opaque case, and
 * seeded random stacks) is imported into a real registry store (importImage),
 * served by a RegistryHttpServer on 127.0.0.1:0, and mounted by a MountManager
 * in this process in both lookup modes (flat and stacked): metadata from the
 * registry's API, contents fetched over HTTP on first read. The same layers
 * are extracted to directories and mounted with kernel overlayfs, as
 * test/integration/union-oracle.test.ts does. A python3 child walks all three
 * trees (this process serves the FUSE mounts and never touches them itself)
 * and they are compared: paths, types, modes, owners, sizes, mtimes, nlink,
 * content hashes, link targets, device numbers, xattrs, readdir listings,
 * hardlink groups, statfs inode counts. The two modes must agree on
 * everything, inode numbers included.
 *
 * The one documented difference (the union oracle's): overlayfs lists
 * whiteouts by name in readdir of a directory from a single layer; cairn does
 * not. Needs root, FUSE and overlayfs; skipped (saying why) otherwise.
 */
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it, type TestContext } from 'vitest';
import { buildContentStack } from '../../src/daemon/content-stack.js';
import { MountManager, type ContentStack } from '../../src/daemon/mounts.js';
import { sha256 } from '../../src/model/digest.js';
import { UnionView, type LookupMode } from '../../src/union/view.js';
import { createLogger } from '../../src/util/log.js';
import { layer, type FixtureEntry } from '../fixtures/layers.js';
import {
  compareTrees,
  detachAll,
  detachMount,
  extractLayers,
  leftoverMounts,
  mountOverlay,
  ORACLE_STACKS,
  parseFixture,
  probeMounts,
  randomStack,
  showStack,
  walkTree,
  withoutDev,
  type Walk,
} from '../fixtures/mount.js';
import { importFixtureImage, startRegistry, type RunningRegistry } from '../fixtures/registry.js';
import { makeTempDir, type TempDir } from '../fixtures/tmp.js';

const MARKER = 'cairn-mount-oracle-';
const log = createLogger({ level: 'silent', component: 'test' });

let skipReason: string | undefined;
let base: TempDir | undefined;
let registry: RunningRegistry | undefined;
let content: ContentStack | undefined;
let manager: MountManager | undefined;
const temps = new Set<TempDir>();

beforeAll(async () => {
  skipReason = await probeMounts(MARKER);
  if (skipReason) return;
  base = await makeTempDir(MARKER);
  registry = await startRegistry(join(base.path, 'registry'), { closeAfterTest: false });
  content = await buildContentStack({ memoryBytes: 64 * 1024 * 1024, readDeadlineMs: 10_000 }, log);
  manager = new MountManager(content, { stateDir: join(base.path, 'state'), readDeadlineMs: 10_000, log });
});

afterEach(async () => {
  // Whatever a failed test left mounted: the manager's mounts, then anything else under our temp dirs.
  for (const m of manager?.list() ?? []) await manager?.unmount(m.mountpoint).catch(() => undefined);
  await detachAll(MARKER);
  for (const t of [...temps]) {
    await t.cleanup();
    temps.delete(t);
  }
});

afterAll(async () => {
  try {
    await manager?.closeAll();
    await content?.close();
    await registry?.close();
    await detachAll(MARKER);
    await base?.cleanup();
  } finally {
    expect(await leftoverMounts(MARKER)).toEqual([]);
  }
});

interface OracleResult {
  kernel: Walk;
  mount: Walk;
}

let images = 0;

/** Runs the whole comparison for one stack of layers, bottom first. */
async function oracle(ctx: TestContext, stack: FixtureEntry[][]): Promise<OracleResult> {
  if (skipReason) ctx.skip(skipReason);
  const reg = registry as RunningRegistry;
  const mm = manager as MountManager;
  const layers = await Promise.all(stack.map(parseFixture));
  const tmp = await makeTempDir(MARKER);
  temps.add(tmp);

  // The kernel's view of the layers extracted to disk.
  const dirs = layers.map((_, i) => join(tmp.path, `L${i}`));
  const kmnt = join(tmp.path, 'kernel');
  await extractLayers(dirs, layers);
  await mountOverlay([...dirs].reverse(), kmnt);
  let kernel: Walk;
  try {
    kernel = await walkTree(kmnt);
  } finally {
    await detachMount(kmnt, 'overlay');
  }

  // cairn's: the same layers through the registry, mounted lazily in both lookup modes.
  const repository = `oracle/image${++images}`;
  await importFixtureImage(reg.store, {
    image: { layers: stack.map((l) => layer(l, 'gzip')) },
    target: `${repository}:latest`,
  });
  const mounted: string[] = [];
  const walks: Walk[] = [];
  try {
    for (const lookup of ['flat', 'stacked'] as LookupMode[]) {
      const mnt = join(tmp.path, lookup);
      await mkdir(mnt);
      const info = await mm.mount({ registry: reg.url, repository, reference: 'latest', mountpoint: mnt, lookup });
      mounted.push(mnt);
      // The view is the registry's built one, restored: what the oracle checks is that path.
      expect(info.metadata).toBe('view');
    }
    walks.push(...(await Promise.all(mounted.map((m) => walkTree(m)))));
  } finally {
    for (const m of mounted) await mm.unmount(m);
  }
  const [flat, stacked] = walks as [Walk, Walk];

  const entries = layers.map((l) => l.entries);
  const v = UnionView.build(entries, { lookup: 'flat' });
  const layerOfDir = (p: string): number | undefined => {
    const r = v.resolvePath(p);
    return r ? v.getattr(r.ino)?.layer : undefined;
  };
  expect(compareTrees(kernel, flat, entries, layerOfDir), 'flat lookup mount vs kernel overlayfs').toEqual([]);
  expect(compareTrees(kernel, stacked, entries, layerOfDir), 'stacked lookup mount vs kernel overlayfs').toEqual([]);
  // Both modes agree on everything, inode numbers included.
  expect(withoutDev(stacked)).toEqual(withoutDev(flat));
  return { kernel, mount: flat };
}

const stack = (name: string): FixtureEntry[][] => {
  const s = ORACLE_STACKS.find((x) => x.name.startsWith(name));
  if (!s) throw new Error(`no fixture stack ${name}`);
  return s.layers;
};

/** Stacks with checks of their own below; every other stack is compared as it is. */
const SPECIAL = ['an opaque directory in the top layer', 'an opaque marker on the root', 'hardlinks,', 'multi-chunk'];

describe('cairn mount (registry, MountManager, FUSE) against kernel overlayfs', () => {
  const plain = ORACLE_STACKS.filter((s) => !SPECIAL.some((p) => s.name.startsWith(p)));
  it('every fixture stack is compared', () => {
    expect(plain.length + SPECIAL.length).toBe(ORACLE_STACKS.length);
  });

  it.for(plain.map((s) => [s.name] as const))('%s', async ([name], ctx) => {
    await oracle(ctx, stack(name));
  });

  it('an opaque directory in the top layer with a whiteout in it: the kernel lists the whiteout, cairn does not', async (ctx) => {
    const { kernel, mount } = await oracle(ctx, stack('an opaque directory in the top layer'));
    expect(kernel.tree['d']?.listing).toEqual(['a', 'c']);
    expect(kernel.tree['d']?.phantoms).toEqual(['a']);
    expect(mount.tree['d']).toMatchObject({ listing: ['c'], nlink: 2 });
    expect(mount.tree['m']).toMatchObject({ listing: ['b', 'c'], nlink: 1 });
  });

  it('an opaque marker on the root is ignored; root attributes come from the top layer', async (ctx) => {
    const { mount } = await oracle(ctx, stack('an opaque marker on the root'));
    expect(mount.tree['']?.listing).toEqual(['low', 'mid', 'top']);
    expect(mount.tree['']).toMatchObject({ mode: 0o750, uid: 1, gid: 2, nlink: 1 });
  });

  it('hardlinks: one inode, the lower link count, the last link header, every xattr', async (ctx) => {
    const { mount } = await oracle(ctx, stack('hardlinks,'));
    const t = mount.tree;
    expect(t['b']).toMatchObject({ nlink: 4, mode: 0o700, uid: 7, sha256: sha256('shared') });
    expect(Object.keys(t['b']?.xattrs ?? {}).sort()).toEqual(['user.x', 'user.y']);
    expect(t['a']).toMatchObject({ nlink: 1, sha256: sha256('replaced') });
    expect(t['b']?.inode).toBe(t['dir/c']?.inode);
    expect(t['x/y']?.inode).toBe(t['w']?.inode);
    expect(t['p2']).toMatchObject({ type: 'fifo', nlink: 2 });
  });

  it('multi-chunk contents (fetched and verified by chunk), hardlinked and replaced', async (ctx) => {
    const { mount } = await oracle(ctx, stack('multi-chunk'));
    expect(mount.tree['data/big']?.size).toBe(2_621_440 + 17);
    expect(mount.tree['data/big']?.inode).toBe(mount.tree['data/big-link']?.inode);
    expect(mount.tree['data/replaced']?.size).toBe(2 * 1_048_576);
  });
});

describe('cairn mount against kernel overlayfs: random stacks', () => {
  // CAIRN_MOUNT_ORACLE_SEEDS=100 to search harder.
  const count = Number(process.env.CAIRN_MOUNT_ORACLE_SEEDS ?? 8);
  const seeds = Array.from({ length: count }, (_, i) => i + 1);
  it.for(seeds)('seed %i', async (seed, ctx) => {
    const layers = randomStack(seed);
    try {
      await oracle(ctx, layers);
    } catch (err) {
      if (ctx.task.result?.state === 'skip') throw err;
      throw new Error(`seed ${seed}, layers bottom first: ${showStack(layers)}\n${(err as Error).message}`, {
        cause: err,
      });
    }
  });
});
