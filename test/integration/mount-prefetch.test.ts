import { describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { RegistryStore } from '../../src/registry/store.js';
import { mountInProcess, prefetchDone } from '../fixtures/daemon.js';
import { dir, file, layer } from '../fixtures/layers.js';
import { importFixtureImage, pseudoRandom, startRegistry } from '../fixtures/registry.js';
import { testTempDir } from '../fixtures/tmp.js';

const run = promisify(execFile);

describe('--prefetch', () => {
  it('fetches in the background what an earlier mount of the image read, and nothing else', async () => {
    const tmp = await testTempDir('cairn-prefetch-');
    const store = await RegistryStore.open(join(tmp, 'registry'));
    const a = pseudoRandom(300_000, 'a');
    const b = pseudoRandom(300_000, 'b');
    await importFixtureImage(store, {
      image: { ref: 'p:1', layers: [layer([dir('data'), file('data/a', a), file('data/b', b)])] },
      target: 'lib/p:1',
    });
    const reg = await startRegistry(store);
    const stateDir = join(tmp, 'state');
    const mnt = join(tmp, 'mnt');
    await mkdir(mnt);
    const session = (prefetch: boolean) => mountInProcess(reg.url, 'lib/p:1', stateDir, mnt, { prefetch });
    // First mount reads data/a only.
    let s = await session(false);
    try {
      expect((await run('sha256sum', [join(mnt, 'data/a')])).stdout.split(' ')[0]).toBe(
        createHash('sha256').update(a).digest('hex'),
      );
    } finally {
      await s.close();
    }
    // Second mount, fresh caches: prefetch brings data/a, so reading it fetches nothing more.
    s = await session(true);
    try {
      const stats = await prefetchDone(s.stats, 1);
      expect(stats.prefetch?.done).toBe(1);
      // The registry's profile names data/a too (the first mount shared it): planned once.
      expect(stats.prefetch?.planned).toBe(1);
      expect(stats.prefetch?.fromRegistry).toBe(0);
      const afterPrefetch = stats.bytesFetched;
      expect(afterPrefetch).toBeGreaterThanOrEqual(a.length);
      expect(afterPrefetch).toBeLessThan(a.length + b.length);
      await run('cat', [join(mnt, 'data/a')]);
      expect(s.stats().bytesFetched).toBe(afterPrefetch);
      await run('cat', [join(mnt, 'data/b')]);
      expect(s.stats().bytesFetched).toBeGreaterThanOrEqual(afterPrefetch + b.length);
    } finally {
      await s.close();
      await reg.close();
      store.close();
    }
  });
});
