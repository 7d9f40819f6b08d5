/**
 * The snapshotter's lazy path without containerd: RemotePreparer against a real
 * cairn registry (in process, port 0) and the snapshot metadata in SQLite, with a
 * stand-in for the mount daemon that records what it is asked to mount.
 */
import Database from 'better-sqlite3';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, test } from 'vitest';
import type { MountInfo } from '../../src/daemon/mounts.js';
import { chainIds } from '../../src/model/chain-id.js';
import { sha256 } from '../../src/model/digest.js';
import { CairnError, ErrorCode, isCairnError } from '../../src/model/errors.js';
import { RegistryStore } from '../../src/registry/store.js';
import type { LazyMounter, LazySource } from '../../src/snapshotter/lazy-mounts.js';
import { SnapshotMetadata } from '../../src/snapshotter/metadata.js';
import {
  LABEL_CAIRN_IMAGE,
  LABEL_CAIRN_LAYER_INDEX,
  LABEL_CRI_IMAGE_REF,
  LABEL_CRI_LAYER_DIGEST,
  LABEL_TARGET,
  parseImageRef,
  parseRemoteLabels,
} from '../../src/snapshotter/remote-labels.js';
import { RemotePreparer } from '../../src/snapshotter/remote-prepare.js';
import { Snapshotter } from '../../src/snapshotter/snapshotter.js';
import { createLogger } from '../../src/util/log.js';
import { file, layer } from '../fixtures/layers.js';
import { importFixtureImage, startRegistry } from '../fixtures/registry.js';
import { testTempDir } from '../fixtures/tmp.js';

class FakeMounts implements LazyMounter {
  readonly mounts = new Map<string, LazySource>();
  readonly unmounted: string[] = [];
  fail = false;
  /** How long a mount takes (a real one fetches the image's recipes). */
  delayMs = 0;

  async mount(src: LazySource, mountpoint: string): Promise<MountInfo> {
    if (this.delayMs > 0) await new Promise((r) => setTimeout(r, this.delayMs));
    if (this.fail) throw new CairnError(ErrorCode.UNAVAILABLE, 'no daemon (test)');
    this.mounts.set(mountpoint, src);
    return { mountpoint } as MountInfo;
  }

  unmount(mountpoint: string): Promise<void> {
    this.mounts.delete(mountpoint);
    this.unmounted.push(mountpoint);
    return Promise.resolve();
  }

  mounted(): Promise<Set<string>> {
    return Promise.resolve(new Set(this.mounts.keys()));
  }
}

async function alreadyExists(p: Promise<unknown>): Promise<CairnError> {
  try {
    await p;
  } catch (err) {
    if (isCairnError(err, ErrorCode.ALREADY_EXISTS)) return err;
    throw err;
  }
  throw new Error('Prepare succeeded, expected ALREADY_EXISTS');
}

async function setup() {
  const dir = await testTempDir('cairn-lazy-int-');
  const store = await RegistryStore.open(join(dir, 'reg'));
  const [imported] = await importFixtureImage(store, {
    image: { layers: [layer([file('a.txt', 'A')]), layer([file('b.txt', 'B')])] },
    target: 'lib/app:1',
  });
  const reg = await startRegistry(store);
  const mounts = new FakeMounts();
  const snapshotter = new Snapshotter({ rootDir: join(dir, 'snap'), unmountLazy: (mp) => mounts.unmount(mp) });
  const log = createLogger({ level: 'silent', component: 'test' });
  const remote = new RemotePreparer({ snapshotter, mounts, log, registry: reg.url });
  const result = imported!.result;
  const chain = chainIds(result.layers.map((l) => l.diffId));
  const labelsOf = (i: number): Record<string, string> => ({
    [LABEL_TARGET]: chain[i]!,
    [LABEL_CAIRN_IMAGE]: `lib/app@${result.digest}`,
    [LABEL_CAIRN_LAYER_INDEX]: String(i),
  });
  const close = async () => {
    await remote.close();
    snapshotter.close();
    await reg.close();
    store.close();
  };
  return { dir, snapshotter, mounts, remote, result, chain, labelsOf, close, reg };
}

describe('remote-snapshot labels', () => {
  test('chainIDs, image references and the labels that make a lazy Prepare', () => {
    const a = sha256('a');
    const b = sha256('b');
    expect(chainIds([a, b])).toEqual([a, sha256(`${a} ${b}`)]);
    expect(parseImageRef('127.0.0.1:5000/lib/app:1')).toEqual({ repository: 'lib/app', reference: '1' });
    expect(parseImageRef('lib/app')).toEqual({ repository: 'lib/app', reference: 'latest' });
    expect(parseImageRef(`registry.example/lib/app@${a}`)).toEqual({ repository: 'lib/app', reference: a });
    expect(parseRemoteLabels({})).toMatchObject({ ok: false });
    expect(parseRemoteLabels({ [LABEL_TARGET]: a })).toMatchObject({ ok: false, reason: /no layer labels/ });
    expect(
      parseRemoteLabels({ [LABEL_TARGET]: a, [LABEL_CAIRN_IMAGE]: 'lib/app:1', [LABEL_CAIRN_LAYER_INDEX]: '0' }),
    ).toMatchObject({ ok: false, reason: /REPO@DIGEST/ });
    expect(
      parseRemoteLabels({ [LABEL_TARGET]: a, [LABEL_CRI_IMAGE_REF]: 'h:1/lib/app:2', [LABEL_CRI_LAYER_DIGEST]: b }),
    ).toEqual({ ok: true, ref: { target: a, repository: 'lib/app', reference: '2', layerDigest: b } });
  });
});

describe('RemotePreparer over a cairn registry', () => {
  test('lazy layers answer ALREADY_EXISTS; a container over them mounts overlay with the lazy mount as its only lower', async () => {
    const t = await setup();
    try {
      await alreadyExists(t.remote.prepare('default/1/extract-1 x', '', t.labelsOf(0)));
      await alreadyExists(t.remote.prepare('default/2/extract-2 y', t.chain[0]!, t.labelsOf(1)));
      // The same target again (another namespace pulling the same image): still ALREADY_EXISTS, one snapshot.
      await alreadyExists(t.remote.prepare('other/3/extract-3 z', t.chain[0]!, t.labelsOf(1)));
      expect(t.remote.counts()).toEqual({ lazy: 3, fallback: 0 });
      const infos = t.snapshotter.list([]);
      expect(infos.map((i) => [i.name, i.parent, i.kind])).toEqual([
        [t.chain[0], '', 'committed'],
        [t.chain[1], t.chain[0], 'committed'],
      ]);
      // containerd finds the target with this filter after ALREADY_EXISTS.
      expect(
        t.snapshotter.list([`labels."${LABEL_TARGET}"==${t.chain[1]},parent=="${t.chain[0]}"`]).map((i) => i.name),
      ).toEqual([t.chain[1]]);
      const sources = [...t.mounts.mounts.values()];
      expect(sources.map((s) => s.layers)).toEqual([1, 2]);
      expect(sources[1]).toMatchObject({ registry: t.reg.url, repository: 'lib/app', digest: t.result.digest });

      const top = t.snapshotter.lazySnapshots().find((l) => l.name === t.chain[1])!;
      const lazyDir = t.snapshotter.fsDirOf(top.id);
      const [m] = await t.remote.prepare('default/4/ctr', t.chain[1]!, {});
      expect(m!.type).toBe('overlay');
      expect(m!.options).toContain(`lowerdir=${lazyDir}`);
      expect(m!.options.find((o) => o.startsWith('upperdir='))).toMatch(/snapshots\/\d+\/fs$/);
      expect(t.snapshotter.view('v', t.chain[1]!, {})).toEqual([
        { type: 'bind', source: lazyDir, options: ['ro', 'rbind'] },
      ]);
      // An ordinary layer over a lazy one: the lowers stop at the lazy mount (it holds everything below).
      await t.snapshotter.commit('default/5/layer3', 'default/4/ctr', {});
      const [m2] = t.snapshotter.prepare('c2', 'default/5/layer3', {});
      const lowers = m2!.options
        .find((o) => o.startsWith('lowerdir='))!
        .slice('lowerdir='.length)
        .split(':');
      expect(lowers).toHaveLength(2);
      expect(lowers[1]).toBe(lazyDir);

      // Removal takes the mount down first; a restart re-mounts what is gone.
      await t.snapshotter.remove('c2');
      await t.snapshotter.remove('v');
      await t.snapshotter.remove('default/5/layer3');
      await t.snapshotter.remove(t.chain[1]!);
      expect(t.mounts.unmounted).toContain(lazyDir);
      t.mounts.mounts.clear();
      await t.remote.restore();
      expect([...t.mounts.mounts.values()].map((s) => s.layers)).toEqual([1]);
    } finally {
      await t.close();
    }
  });

  test('fallbacks: ordinary snapshots, each counted with its reason', async () => {
    const t = await setup();
    try {
      // No target, not containerd's unpack key: a container's rootfs, not a fallback.
      expect(await t.remote.prepare('rootfs', '', {})).toHaveLength(1);
      expect(t.remote.counts().fallback).toBe(0);
      // ctr's own unpack: no label at all.
      await t.remote.prepare(`default/1/extract-12-ab ${t.chain[0]!}`, '', {});
      // A target whose chainID is not the layer's.
      await t.remote.prepare('k2', '', { ...t.labelsOf(0), [LABEL_TARGET]: sha256('other') });
      // An image the registry does not have.
      await t.remote.prepare('k3', '', { ...t.labelsOf(0), [LABEL_CAIRN_IMAGE]: `lib/none@${sha256('x')}` });
      // A layer index past the image.
      await t.remote.prepare('k4', '', { ...t.labelsOf(0), [LABEL_CAIRN_LAYER_INDEX]: '7' });
      // The daemon cannot mount: the lazy snapshot is dropped again.
      t.mounts.fail = true;
      await t.remote.prepare('k5', '', t.labelsOf(0));
      expect(t.snapshotter.list([]).filter((i) => i.kind === 'committed')).toEqual([]);
      expect(t.remote.counts()).toEqual({ lazy: 0, fallback: 5 });
      const text = await t.remote.metrics.metrics();
      for (const reason of ['no-target-label', 'chain-mismatch', 'unknown-image', 'unknown-layer', 'mount-failed'])
        expect(text).toContain(`cairn_snapshotter_prepares_total{path="fallback",reason="${reason}"} 1`);
      // Each fallback is an ordinary active snapshot containerd fills.
      expect(t.snapshotter.stat('k5').kind).toBe('active');
    } finally {
      await t.close();
    }
  });

  test('concurrent Prepares of one target: the second answers only once the mount is there, or falls back with it', async () => {
    const t = await setup();
    try {
      t.mounts.delayMs = 200;
      const mountedWhen: boolean[] = [];
      const both = ['ns1/1/extract-1 a', 'ns2/2/extract-2 b'].map((key) =>
        alreadyExists(t.remote.prepare(key, '', t.labelsOf(0))).then(() =>
          mountedWhen.push(t.mounts.mounts.size === 1),
        ),
      );
      await Promise.all(both);
      expect(mountedWhen).toEqual([true, true]);
      t.mounts.fail = true;
      const [a, b] = await Promise.all(
        ['ns1/3/extract-3 c', 'ns2/4/extract-4 d'].map((key) => t.remote.prepare(key, t.chain[0]!, t.labelsOf(1))),
      );
      expect([a!.length, b!.length]).toEqual([1, 1]); // ordinary snapshots' mounts
      expect(t.remote.counts()).toEqual({ lazy: 2, fallback: 2 });
    } finally {
      await t.close();
    }
  });

  test('CRI labels (image-ref with a host, layer digest) go lazy too', async () => {
    const t = await setup();
    try {
      await alreadyExists(
        t.remote.prepare('k', '', {
          [LABEL_TARGET]: t.chain[0]!,
          [LABEL_CRI_IMAGE_REF]: `${new URL(t.reg.url).host}/lib/app:1`,
          [LABEL_CRI_LAYER_DIGEST]: t.result.layers[0]!.diffId,
        }),
      );
      expect(t.remote.counts()).toEqual({ lazy: 1, fallback: 0 });
    } finally {
      await t.close();
    }
  });

  test('a metadata.db made before the lazy path gets its column', async () => {
    const dir = await testTempDir('cairn-lazy-db-');
    await mkdir(dir, { recursive: true });
    const file = join(dir, 'metadata.db');
    const db = new Database(file);
    db.exec(`CREATE TABLE snapshots (id INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT NOT NULL UNIQUE,
      parent TEXT NOT NULL, kind TEXT NOT NULL, created_ms INTEGER NOT NULL, updated_ms INTEGER NOT NULL,
      labels TEXT NOT NULL, size_bytes INTEGER NOT NULL DEFAULT 0, inodes INTEGER NOT NULL DEFAULT 0);
      INSERT INTO snapshots (key, parent, kind, created_ms, updated_ms, labels) VALUES ('old', '', 'committed', 1, 1, '{}');`);
    db.close();
    const meta = new SnapshotMetadata(file);
    try {
      expect(meta.get('old')).toMatchObject({ key: 'old', kind: 'committed' });
      expect(meta.get('old').lazy).toBeUndefined();
    } finally {
      meta.close();
    }
  });
});
