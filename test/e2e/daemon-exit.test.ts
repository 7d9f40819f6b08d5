/**
 * A stopped daemon ends its process even when one of its FUSE mounts was detached by
 * someone else (umount -l): fusermount then fails, fuse-native keeps its session
 * thread, and the process would never exit. `cairn snapshotter`'s lazy layers live in
 * such a long-lived daemon, so it must stop when asked.
 */
import { spawn } from 'node:child_process';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, test } from 'vitest';
import { callControl, controlSocketPath } from '../../src/daemon/control.js';
import { RegistryStore } from '../../src/registry/store.js';
import { waitFor } from '../fixtures/containerd.js';
import { file, layer } from '../fixtures/layers.js';
import { importFixtureImage, startRegistry } from '../fixtures/registry.js';
import { testTempDir } from '../fixtures/tmp.js';
import { hasCommand } from '../fixtures/tools.js';
import { CAIRN_BIN, cairn, cliEnv, ensureBuilt } from './cli-harness.js';

const usable = process.getuid?.() === 0 && hasCommand('fusermount', '-V');

describe.skipIf(!usable)('cairn daemon stop', () => {
  test('exits after shutdown even when a mount of it was detached with umount -l', async () => {
    ensureBuilt();
    const dir = await testTempDir('cairn-daemon-exit-');
    const store = await RegistryStore.open(join(dir, 'reg'));
    await importFixtureImage(store, { image: { layers: [layer([file('a.txt', 'A')])] }, target: 'lib/a:1' });
    const reg = await startRegistry(store);
    const stateDir = join(dir, 'state');
    const mnt = join(dir, 'mnt');
    await mkdir(mnt);
    const daemon = spawn(process.execPath, [CAIRN_BIN, 'daemon', '--state-dir', stateDir], {
      env: cliEnv(),
      stdio: 'ignore',
    });
    const exited = new Promise<number | null>((r) => daemon.once('exit', (code) => r(code)));
    try {
      await waitFor('the daemon', () => daemon.exitCode === null, 100);
      for (let i = 0; i < 100; i++) {
        if (await callControl(controlSocketPath(stateDir), { op: 'ping' }, 1000).catch(() => undefined)) break;
        await new Promise((r) => setTimeout(r, 100));
      }
      const m = await cairn(['mount', reg.url, 'lib/a:1', mnt, '--state-dir', stateDir]);
      expect(m.code, m.stderr).toBe(0);
      spawn('umount', ['-l', mnt], { stdio: 'ignore' });
      await new Promise((r) => setTimeout(r, 300));
      await callControl(controlSocketPath(stateDir), { op: 'shutdown' }, 5000);
      const code = await Promise.race([exited, new Promise((r) => setTimeout(() => r('still running'), 10_000))]);
      expect(code).toBe(0);
    } finally {
      if (daemon.exitCode === null) daemon.kill('SIGKILL');
      await reg.close();
      store.close();
    }
  }, 60_000);
});
