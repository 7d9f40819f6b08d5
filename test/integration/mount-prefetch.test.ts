import { describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { RegistryStore } from '../../src/registry/store.js';
import { buildContentStack } from '../../src/daemon/content-stack.js';
import { MountManager } from '../../src/daemon/mounts.js';
import { createLogger } from '../../src/util/log.js';
import { dir, file, layer } from '../fixtures/layers.js';
import { importFixtureImage, pseudoRandom, startRegistry } from '../fixtures/registry.js';
import { testTempDir } from '../fixtures/tmp.js';

const run = promisify(execFile);
const log = createLogger({ level: 'silent', component: 'test' });

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
    const session = async (prefetch: boolean) => {
      const content = await buildContentStack({ memoryBytes: 64 << 20, readDeadlineMs: 5000 }, log);
      const mounts = new MountManager(content, { stateDir, readDeadlineMs: 5000, log });
      await mounts.mount({
        registry: reg.url,
        repository: 'lib/p',
        reference: '1',
        mountpoint: mnt,
        lookup: 'flat',
        prefetch,
      });
      return { content, mounts };
    };
    // First mount reads data/a only.
    let s = await session(false);
    try {
      expect((await run('sha256sum', [join(mnt, 'data/a')])).stdout.split(' ')[0]).toBe(
        createHash('sha256').update(a).digest('hex'),
      );
    } finally {
      await s.mounts.closeAll();
      await s.content.close();
    }
    // Second mount, fresh caches: prefetch brings data/a, so reading it fetches nothing more.
    s = await session(true);
    try {
      let stats = s.mounts.stats(mnt) as { prefetch?: { planned: number; done: number }; bytesFetched: number };
      expect(stats.prefetch?.planned).toBe(1);
      for (let i = 0; i < 100 && stats.prefetch?.done !== 1; i++) {
        await new Promise((r) => setTimeout(r, 50));
        stats = s.mounts.stats(mnt) as typeof stats;
      }
      expect(stats.prefetch?.done).toBe(1);
      const afterPrefetch = stats.bytesFetched;
      expect(afterPrefetch).toBeGreaterThanOrEqual(a.length);
      expect(afterPrefetch).toBeLessThan(a.length + b.length);
      await run('cat', [join(mnt, 'data/a')]);
      expect((s.mounts.stats(mnt) as typeof stats).bytesFetched).toBe(afterPrefetch);
      await run('cat', [join(mnt, 'data/b')]);
      expect((s.mounts.stats(mnt) as typeof stats).bytesFetched).toBeGreaterThanOrEqual(afterPrefetch + b.length);
    } finally {
      await s.mounts.closeAll();
      await s.content.close();
      await reg.close();
      store.close();
    }
  });
});
