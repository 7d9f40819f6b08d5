/**
 * Real clients against cairn's /v2 API on a loopback port: skopeo pushes an
 * OCI layout and copies it back (same diffIDs, same files), containerd (a
 * private instance) pulls, unpacks and runs a command, podman pulls.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it, type TestContext } from 'vitest';
import { hexOf, type Digest } from '../../src/model/digest.js';
import { layerCompression, parseConfig, parseManifest } from '../../src/model/oci.js';
import { buildSampleImage, DEFAULT_BUSYBOX, SAMPLE_HELLO_OUTPUT, SAMPLE_REF } from '../../src/image/sample.js';
import { LayerStream } from '../../src/registry/decompress.js';
import { importImage } from '../../src/registry/importer.js';
import { RegistryStore } from '../../src/registry/store.js';
import { startRegistry, type RunningRegistry } from '../fixtures/registry.js';
import { testTempDir } from '../fixtures/tmp.js';
import { PASSWORD, testOciOptions, USER } from '../fixtures/oci.js';
import { hasCommand, missingReason, runAsync, skipWithout } from '../fixtures/tools.js';

const CREDS = `${USER}:${PASSWORD}`;

function needBusybox(ctx: TestContext): void {
  if (!existsSync(DEFAULT_BUSYBOX)) ctx.skip(`${DEFAULT_BUSYBOX} is missing (apt-get install busybox-static)`);
}

async function sampleLayout(compression: 'gzip' | 'zstd' = 'gzip') {
  const dir = join(await testTempDir('cairn-oci-sample-'), 'layout');
  const sample = await buildSampleImage(dir, { compression });
  return { dir, sample, image: sample.images[0] as NonNullable<(typeof sample.images)[0]> };
}

function host(reg: RunningRegistry): string {
  return `127.0.0.1:${reg.port}`;
}

/** Pushes the sample layout with skopeo, as the test user. */
function skopeoPush(layout: string, ref: string): Promise<string> {
  return runAsync('skopeo', [
    'copy',
    '--dest-tls-verify=false',
    '--dest-creds',
    CREDS,
    `oci:${layout}:${SAMPLE_REF}`,
    `docker://${ref}`,
  ]);
}

/** The diffIDs of an OCI layout's image, computed from its layer blobs (decompressed and hashed). */
async function layoutDiffIds(dir: string): Promise<{ computed: Digest[]; config: string[] }> {
  const blob = (d: string): Promise<Buffer> => readFile(join(dir, 'blobs', 'sha256', hexOf(d as Digest)));
  const index = JSON.parse((await readFile(join(dir, 'index.json'))).toString()) as {
    manifests: { digest: string }[];
  };
  const parsed = parseManifest(await blob(index.manifests[0]?.digest as string), 'copied manifest');
  if (parsed.kind !== 'manifest') throw new Error('copied layout holds an index');
  const computed: Digest[] = [];
  for (const l of parsed.manifest.layers) {
    const data = await blob(l.digest);
    const s = new LayerStream(
      (async function* () {
        yield data;
      })(),
      layerCompression(l.mediaType, 'layer'),
      'layer',
    );
    for await (const c of s.output) void c;
    computed.push(s.uncompressed.digest());
  }
  const config = parseConfig(await blob(parsed.manifest.config.digest), 'copied config').rootfs?.diff_ids ?? [];
  return { computed, config };
}

describe('skopeo', () => {
  it('pushes an OCI layout to cairn and copies it back: same diffIDs, same files', async (ctx) => {
    needBusybox(ctx);
    skipWithout(ctx, 'skopeo');
    const reg = await startRegistry(await testTempDir('cairn-oci-skopeo-'), { oci: testOciOptions() });
    const { dir, image } = await sampleLayout();
    const dest = `docker://${host(reg)}/sample/busybox:latest`;
    // Without credentials the push is refused.
    await expect(
      runAsync('skopeo', ['copy', '--dest-tls-verify=false', `oci:${dir}:${SAMPLE_REF}`, dest]),
    ).rejects.toThrow(/unauthorized|authentication required/i);
    expect(reg.store.meta.repositories()).toEqual([]);
    await skopeoPush(dir, dest.slice('docker://'.length));
    const stored = reg.store.meta.image(image.manifestDigest);
    expect(stored?.layers.map((l) => l.diffId)).toEqual(image.layers.map((l) => l.diffId));

    const back = join(await testTempDir('cairn-oci-back-'), 'layout');
    await runAsync('skopeo', ['copy', '--src-tls-verify=false', dest, `oci:${back}:back`]);
    const ids = await layoutDiffIds(back);
    expect(ids.computed).toEqual(image.layers.map((l) => l.diffId));
    expect(ids.config).toEqual(ids.computed);
    // The same files: importing the copy gives the very recipes (entries, metadata, content digests).
    const fresh = await RegistryStore.open(await testTempDir('cairn-oci-reimport-'));
    try {
      const again = await importImage(fresh, `${back}:back`, 'back/busybox:1');
      expect(again.layers.map((l) => l.recipe)).toEqual(stored?.layers.map((l) => l.recipe));
    } finally {
      fresh.close();
    }
  });

  it('pushes zstd layers and logs in through a bearer token endpoint', async (ctx) => {
    needBusybox(ctx);
    skipWithout(ctx, 'skopeo');
    if (!hasCommand('zstd')) ctx.skip(missingReason('zstd'));
    const reg = await startRegistry(await testTempDir('cairn-oci-bearer-'), {
      oci: testOciOptions({}, { scheme: 'bearer', protectReads: true }),
    });
    const { dir, image } = await sampleLayout('zstd');
    const dest = `docker://${host(reg)}/z/busybox:1`;
    await skopeoPush(dir, dest.slice('docker://'.length));
    expect(reg.store.meta.image(image.manifestDigest)?.layers.map((l) => l.diffId)).toEqual(
      image.layers.map((l) => l.diffId),
    );
    await expect(runAsync('skopeo', ['inspect', '--tls-verify=false', dest])).rejects.toThrow();
    const info = JSON.parse(await runAsync('skopeo', ['inspect', '--tls-verify=false', '--creds', CREDS, dest])) as {
      Layers: string[];
    };
    expect(info.Layers).toEqual(image.layers.map((l) => l.diffId));
  });
});

/** A containerd of the test's own: private config, root, state and socket. */
async function startContainerd(dir: string): Promise<{ address: string; stop: () => Promise<void> }> {
  const address = join(dir, 'c.sock');
  const config = [
    'version = 2',
    `root = "${join(dir, 'root')}"`,
    `state = "${join(dir, 'state')}"`,
    '[grpc]',
    `  address = "${address}"`,
    '[ttrpc]',
    `  address = "${join(dir, 't.sock')}"`,
    '[plugins."io.containerd.grpc.v1.cri"]',
    '  disable_tcp_service = true',
    '',
  ].join('\n');
  const { writeFile } = await import('node:fs/promises');
  await writeFile(join(dir, 'config.toml'), config);
  const child: ChildProcess = spawn('containerd', ['--config', join(dir, 'config.toml')], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let log = '';
  child.stderr?.on('data', (c: Buffer) => (log = (log + c.toString()).slice(-4000)));
  for (let i = 0; i < 100 && !existsSync(address); i++) await new Promise((r) => setTimeout(r, 100));
  if (!existsSync(address)) {
    child.kill('SIGKILL');
    throw new Error(`containerd did not start: ${log}`);
  }
  const stop = async (): Promise<void> => {
    if (child.exitCode === null) {
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      await Promise.race([exited, new Promise((r) => setTimeout(r, 10_000))]);
      if (child.exitCode === null) child.kill('SIGKILL');
    }
    // Anything containerd left mounted under its root (snapshots) is unmounted, deepest first.
    const mounts = (await readFile('/proc/mounts', 'utf8'))
      .split('\n')
      .map((l) => l.split(' ')[1] ?? '')
      .filter((m) => m.startsWith(dir))
      .sort((a, b) => b.length - a.length);
    for (const m of mounts) await runAsync('umount', ['-l', m]).catch(() => undefined);
  };
  return { address, stop };
}

describe('containerd', () => {
  it('pulls with ctr --plain-http --user, unpacks, and runs a command of the image', async (ctx) => {
    needBusybox(ctx);
    skipWithout(ctx, 'skopeo');
    skipWithout(ctx, 'containerd', 'containerd');
    skipWithout(ctx, 'ctr', 'containerd');
    skipWithout(ctx, 'runc');
    if (process.getuid?.() !== 0) ctx.skip('containerd needs root');
    const reg = await startRegistry(await testTempDir('cairn-oci-ctr-reg-'), {
      oci: testOciOptions({}, { protectReads: true }),
    });
    const { dir, image } = await sampleLayout();
    const ref = `${host(reg)}/sample/busybox:latest`;
    await skopeoPush(dir, ref);

    const cdir = await testTempDir('cairn-ctr-');
    const ctd = await startContainerd(cdir);
    ctx.onTestFinished(ctd.stop);
    const ctr = (...args: string[]): Promise<string> =>
      runAsync('ctr', ['--address', ctd.address, '--namespace', 'cairn-test', ...args], { timeoutMs: 180_000 });
    // Reads are protected here: without --user the pull is refused.
    await expect(ctr('images', 'pull', '--plain-http', ref)).rejects.toThrow(/401|unauthorized/i);
    await ctr('images', 'pull', '--plain-http', '--user', CREDS, ref);
    const listed = await ctr('images', 'ls', '-q');
    expect(listed.split('\n')).toContain(ref);
    // Unpacked into a snapshot: the committed chain ends with the image's top layer.
    const snapshots = await ctr('snapshots', 'ls');
    expect(snapshots.split('\n').filter((l) => l.includes('Committed')).length).toBeGreaterThanOrEqual(
      image.layers.length,
    );
    const out = await ctr('run', '--rm', ref, `cairn-${process.pid}`, '/app/hello.sh');
    expect(out.trim()).toBe(SAMPLE_HELLO_OUTPUT);
  });
});

describe('podman', () => {
  it('pulls from cairn (running a container is blocked by this sandbox: setrlimit is refused)', async (ctx) => {
    needBusybox(ctx);
    skipWithout(ctx, 'skopeo');
    skipWithout(ctx, 'podman');
    if (process.getuid?.() !== 0) ctx.skip('podman with a private root needs root here');
    const reg = await startRegistry(await testTempDir('cairn-oci-podman-reg-'), { oci: testOciOptions() });
    const { dir, image } = await sampleLayout();
    const ref = `${host(reg)}/sample/busybox:latest`;
    await skopeoPush(dir, ref);
    const pdir = await testTempDir('cairn-podman-');
    const podman = (...args: string[]): Promise<string> =>
      runAsync(
        'podman',
        [
          '--root',
          join(pdir, 'root'),
          '--runroot',
          join(pdir, 'run'),
          '--storage-driver',
          'vfs',
          '--events-backend',
          'file',
          '--cgroup-manager',
          'cgroupfs',
          ...args,
        ],
        { timeoutMs: 180_000 },
      );
    await podman('pull', '--tls-verify=false', ref);
    const layers = JSON.parse(await podman('image', 'inspect', '--format', '{{json .RootFS.Layers}}', ref)) as string[];
    expect(layers).toEqual(image.layers.map((l) => l.diffId));
    await podman('rmi', '--all', '--force').catch(() => undefined);
    expect(await readdir(pdir)).toContain('root');
  });
});
