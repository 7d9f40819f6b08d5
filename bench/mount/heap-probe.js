#!/usr/bin/env node
// Daemon heap per entry, measured in a child run as `node --expose-gc`: this process builds
// the daemon's own objects (content stack, MountManager from dist/daemon) and mounts images
// through them exactly as `cairn daemon` does, then reports process.memoryUsage() after full
// collections, before and while each image is mounted. It never touches its own mounts
// (it serves them); it only reads its own memory figures.
//
//   node --expose-gc bench/mount/heap-probe.js URL MNT STATE_DIR REPO:TAG...   (prints JSON)
import { join } from 'node:path';
import { DIST } from '../lib/bench.js';

if (typeof globalThis.gc !== 'function') {
  process.stderr.write('heap-probe: run with node --expose-gc\n');
  process.exit(2);
}
const [url, mnt, stateDir, ...refs] = process.argv.slice(2);
const { buildContentStack } = await import(join(DIST, 'daemon/content-stack.js'));
const { MountManager } = await import(join(DIST, 'daemon/mounts.js'));
const { RegistryClient } = await import(join(DIST, 'fetch/registry-client.js'));
const { UnionView } = await import(join(DIST, 'union/view.js'));
const { createLogger } = await import(join(DIST, 'util/log.js'));

const log = createLogger({ level: 'warn', component: 'heap-probe' });
const settle = async () => {
  for (let i = 0; i < 3; i++) {
    await new Promise((r) => setImmediate(r));
    globalThis.gc();
  }
};
const mem = async () => {
  await settle();
  const m = process.memoryUsage();
  return {
    heapUsed: m.heapUsed,
    arrayBuffers: m.arrayBuffers,
    external: m.external,
    rss: m.rss,
    total: m.heapUsed + m.arrayBuffers,
  };
};
const diff = (a, b) => Object.fromEntries(Object.keys(a).map((k) => [k, b[k] - a[k]]));

const content = await buildContentStack({ memoryBytes: 256 << 20, readDeadlineMs: 10_000 }, log);
const mounts = new MountManager(content, { stateDir, readDeadlineMs: 10_000, log });
const split = (ref) => {
  const i = ref.lastIndexOf(':');
  return { repository: ref.slice(0, i), reference: ref.slice(i + 1) };
};
const out = { method: '', images: [] };
try {
  // Warm-up: load and run every code path once (modules, fuse-native, undici pools, JIT),
  // so the figures below are what one more mounted image costs.
  await mounts.mount({ registry: url, ...split(refs[0]), mountpoint: mnt, lookup: 'flat' });
  await mounts.unmount(mnt);
  const client = new RegistryClient({ url });
  for (const ref of refs) {
    const { repository, reference } = split(ref);
    const image = await client.image(repository, reference);
    const entries = image.layers.reduce((n, l) => n + l.entries, 0);
    const row = { ref, entries, layers: image.layers.length };
    for (const lookup of ['flat', 'stacked']) {
      const before = await mem();
      await mounts.mount({ registry: url, repository, reference, mountpoint: mnt, lookup });
      const during = await mem();
      await mounts.unmount(mnt);
      const after = await mem();
      const d = diff(before, during);
      row[lookup] = {
        retained: d,
        bytesPerEntry: d.total / entries,
        heapBytesPerEntry: d.heapUsed / entries,
        arrayBufferBytesPerEntry: d.arrayBuffers / entries,
        leftAfterUnmount: after.total - before.total,
      };
    }
    // The union view alone (no FUSE, no ImageFs): what of the above is the node table.
    {
      const before = await mem();
      const recipes = await Promise.all(image.layers.map((l) => client.recipe(l.recipe)));
      let view = UnionView.build(
        recipes.map((r) => r.entries),
        { lookup: 'flat' },
      );
      recipes.length = 0;
      const during = await mem();
      row.viewOnly = { bytesPerEntry: (during.total - before.total) / entries, files: view.statfs().files };
      view = undefined;
    }
    out.images.push(row);
    process.stderr.write(
      `[heap-probe] ${ref}: ${entries} entries, flat ${row.flat.bytesPerEntry.toFixed(1)} B/entry, stacked ${row.stacked.bytesPerEntry.toFixed(1)} B/entry, view alone ${row.viewOnly.bytesPerEntry.toFixed(1)} B/entry\n`,
    );
  }
  await client.close();
  out.method =
    'node --expose-gc child building the daemon objects from dist/ (buildContentStack + MountManager, as cairn daemon does); ' +
    'after a warm-up mount/unmount, per image and lookup mode: gc x3, memoryUsage() (heapUsed + arrayBuffers), mount through FUSE, gc x3, memoryUsage(); ' +
    'bytes per entry = growth / recipe entries of the image.';
} finally {
  await mounts.closeAll();
  await content.close();
}
process.stdout.write(`${JSON.stringify(out)}\n`);
