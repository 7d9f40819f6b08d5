/**
 * `cairn snapshotter` under real containerd (Debian's containerd 1.6 and runc),
 * started here with a private config and `[proxy_plugins.cairn]`; the image is
 * the sample busybox image, pushed by skopeo to Debian's reference registry
 * (docker-registry) on loopback. ctr pulls and unpacks through cairn's
 * snapshots (no remote-snapshot labels: the ordinary path), runs a command,
 * and containerd's view agrees with cairn's after cairn is killed and restarted.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, expect, test } from 'vitest';
import { buildSampleImage } from '../../src/image/sample.js';
import { SnapshotMetadata } from '../../src/snapshotter/metadata.js';
import {
  containerdUsable,
  freePort,
  startContainerd,
  stopChild,
  unmountUnder,
  waitFor,
  type PrivateContainerd,
} from '../fixtures/containerd.js';
import { testTempDir } from '../fixtures/tmp.js';
import { ensureBuilt, spawnCairn, type CliChild } from './cli-harness.js';

const usable = containerdUsable(['skopeo', 'docker-registry']);

describe.skipIf(!usable)('cairn snapshotter with real containerd', () => {
  test('ctr pull --snapshotter cairn, ctr run, snapshot ls agrees across a snapshotter restart', async () => {
    ensureBuilt();
    const dir = await testTempDir('cairn-ctrd-');
    const snapSock = join(dir, 'snap.sock');
    const snapRoot = join(dir, 'snaproot');
    const port = await freePort();
    const image = `127.0.0.1:${port}/sample/busybox:latest`;
    let registry: ChildProcess | undefined;
    let containerd: PrivateContainerd | undefined;
    let snap: CliChild | undefined;
    const startSnapshotter = async () => {
      snap = spawnCairn(['snapshotter', '--socket', snapSock, '--root', snapRoot], { timeoutMs: 600_000 });
      await waitFor('the snapshotter socket', () => existsSync(snapSock) && snap!.stderr().includes('"serving"'));
    };
    const ctr = (...args: string[]) => containerd!.ctr(...args);
    /** `ctr run --rm` of the image with cairn's snapshots: the command's output. */
    const runIn = (id: string, ...cmd: string[]) => ctr('run', '--snapshotter', 'cairn', '--rm', image, id, ...cmd);
    try {
      await buildSampleImage(join(dir, 'layout'));
      await writeFile(
        join(dir, 'registry.yml'),
        `version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: ${join(dir, 'regdata')}\nhttp:\n  addr: 127.0.0.1:${port}\n`,
      );
      registry = spawn('docker-registry', ['serve', join(dir, 'registry.yml')], { stdio: 'ignore' });
      await startSnapshotter();
      containerd = await startContainerd(dir, snapSock);
      const pushed = async () => {
        const r = spawnSync('skopeo', [
          'copy',
          '--dest-tls-verify=false',
          `oci:${join(dir, 'layout')}:sample/busybox:latest`,
          `docker://${image}`,
        ]);
        return r.status === 0;
      };
      let ok = false;
      for (let i = 0; i < 50 && !(ok = await pushed()); i++) await sleep(200); // the registry may still be starting
      expect(ok).toBe(true);

      ctr('images', 'pull', '--plain-http', '--snapshotter', 'cairn', image);
      expect(runIn('c1', '/bin/sh', '-c', 'echo hello from $(cat /etc/hostname 2>/dev/null || echo cairn)')).toMatch(
        /hello from/,
      );

      // containerd's committed layers are cairn's committed snapshots, key for key.
      const ctrKeys = () => containerd!.snapshotNames();
      const cairnKeys = () => {
        const meta = new SnapshotMetadata(join(snapRoot, 'metadata.db'));
        try {
          return meta
            .all()
            .filter((r) => r.kind === 'committed')
            .map((r) => r.key.split('/').slice(2).join('/'))
            .sort();
        } finally {
          meta.close();
        }
      };
      const before = ctrKeys();
      expect(before.length).toBeGreaterThanOrEqual(2); // the sample image has two layers
      expect(cairnKeys()).toEqual(before);

      // Kill the snapshotter hard and restart it: containerd's view and cairn's still agree, and a container runs.
      snap!.child.kill('SIGKILL');
      await snap!.exited;
      await startSnapshotter();
      // containerd's gRPC client reconnects with backoff: give it time to see the new socket.
      await waitFor(
        'containerd to reconnect',
        () => containerd!.ctrOk('snapshot', '--snapshotter', 'cairn', 'ls'),
        60_000,
      );
      expect(ctrKeys()).toEqual(before);
      expect(cairnKeys()).toEqual(before);
      expect(runIn('c2', '/bin/sh', '-c', 'echo after restart; ls /bin | head -1')).toMatch(/after restart/);

      // Removing the image lets containerd's GC remove cairn's snapshots through List/Remove/Cleanup.
      ctr('images', 'rm', '--sync', image);
      await waitFor('garbage collection of the snapshots', () => cairnKeys().length === 0, 30_000);
    } finally {
      await stopChild(containerd?.child);
      await stopChild(snap?.child);
      await stopChild(registry);
      unmountUnder(dir);
    }
  }, 300_000);
});
