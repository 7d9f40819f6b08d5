import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { lstat, readdir, readFile, readlink } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { describe, expect, it, type TestContext } from 'vitest';
import { sha256 } from '../../src/model/digest.js';
import { CairnError, ErrorCode } from '../../src/model/errors.js';
import { MediaType } from '../../src/model/oci.js';
import {
  buildSampleImage,
  DEFAULT_BUSYBOX,
  isStaticElf,
  SAMPLE_HELLO_OUTPUT,
  SAMPLE_MTIME,
  SAMPLE_REF,
} from '../../src/image/sample.js';
import { readTarBuffer } from '../fixtures/tar-read.js';
import { testTempDir } from '../fixtures/tmp.js';
import { runCommand, skipWithout } from '../fixtures/tools.js';

function needBusybox(ctx: TestContext): void {
  if (!existsSync(DEFAULT_BUSYBOX)) ctx.skip(`${DEFAULT_BUSYBOX} is missing (apt-get install busybox-static)`);
}

async function walk(root: string): Promise<string[]> {
  const out: string[] = [];
  const go = async (d: string): Promise<void> => {
    for (const e of await readdir(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      out.push(relative(root, p));
      if (e.isDirectory()) await go(p);
    }
  };
  await go(root);
  return out.sort();
}

describe('sample image', () => {
  it('is deterministic', async (ctx) => {
    needBusybox(ctx);
    const tmp = await testTempDir();
    const a = await buildSampleImage(join(tmp, 'a'));
    const b = await buildSampleImage(join(tmp, 'b'));
    expect(a.ref).toBe(SAMPLE_REF);
    expect(b.images[0]?.manifestDigest).toBe(a.images[0]?.manifestDigest);
    expect(b.topLevel.equals(a.topLevel)).toBe(true);
    expect(a.images[0]?.layers.map((l) => l.mediaType)).toEqual([MediaType.OCI_LAYER_GZIP, MediaType.OCI_LAYER_GZIP]);
    expect(a.busyboxDigest).toBe(sha256(await readFile(DEFAULT_BUSYBOX)));
    expect(JSON.parse(a.topLevel.toString()).manifests[0].annotations).toEqual({
      'org.opencontainers.image.ref.name': SAMPLE_REF,
    });
  });

  it('has a base layer and an app layer with a whiteout, an opaque directory and a hardlink', async (ctx) => {
    needBusybox(ctx);
    const sample = await buildSampleImage(join(await testTempDir(), 'oci'));
    const [base, app] = await Promise.all(sample.layerTars.map((t) => readTarBuffer(t)));
    if (!base || !app) throw new Error('layers missing');
    const names = (entries: typeof base): string[] => entries.map((e) => e.header.name);
    expect(names(base)).toContain('etc/motd');
    expect(names(base)).toContain('var/cache/sample/old.txt');
    expect(names(base)).toContain('bin/sh');
    expect(base.find((e) => e.header.name === 'tmp/')?.header.mode).toBe(0o1777);
    expect(names(app)).toEqual([
      'app/',
      'app/data.txt',
      'app/data-link.txt',
      'app/hello.sh',
      'etc/',
      'etc/.wh.motd',
      'etc/hostname',
      'var/',
      'var/cache/',
      'var/cache/sample/',
      'var/cache/sample/.wh..wh..opq',
      'var/cache/sample/new.txt',
    ]);
    expect(app.find((e) => e.header.name === 'app/data-link.txt')?.header).toMatchObject({
      type: 'hardlink',
      linkname: 'app/data.txt',
    });
    expect(app.find((e) => e.header.name === 'app/data.txt')?.data.length).toBeGreaterThan(4096);
    for (const e of [...base, ...app]) expect(e.header.mtime).toBe(SAMPLE_MTIME);
  });

  it('unpacks with umoci to the expected root filesystem, and runs', async (ctx) => {
    needBusybox(ctx);
    skipWithout(ctx, 'umoci');
    const tmp = await testTempDir();
    const sample = await buildSampleImage(join(tmp, 'oci'));
    const rootless = process.getuid?.() !== 0 ? ['--rootless'] : [];
    runCommand('umoci', ['unpack', ...rootless, '--image', `${join(tmp, 'oci')}:${SAMPLE_REF}`, join(tmp, 'bundle')]);
    const rootfs = join(tmp, 'bundle', 'rootfs');
    const { expected } = sample;
    // The expectation describes the whole merged tree, nothing more, nothing less.
    expect(await walk(rootfs)).toEqual(
      [...Object.keys(expected.files), ...Object.keys(expected.dirs), ...Object.keys(expected.symlinks)].sort(),
    );
    for (const [path, f] of Object.entries(expected.files)) {
      const data = await readFile(join(rootfs, path));
      expect(sha256(data), path).toBe(f.digest);
      if (f.text !== undefined) expect(data.toString('utf8')).toBe(f.text);
      expect((await lstat(join(rootfs, path))).mode & 0o7777, path).toBe(f.mode);
    }
    for (const [path, mode] of Object.entries(expected.dirs)) {
      const st = await lstat(join(rootfs, path));
      expect(st.isDirectory(), path).toBe(true);
      expect(st.mode & 0o7777, path).toBe(mode);
    }
    for (const [path, target] of Object.entries(expected.symlinks)) {
      expect(await readlink(join(rootfs, path)), path).toBe(target);
    }
    for (const [path, target] of Object.entries(expected.hardlinks)) {
      expect((await lstat(join(rootfs, path))).ino).toBe((await lstat(join(rootfs, target))).ino);
    }
    for (const path of expected.absent) expect(existsSync(join(rootfs, path)), path).toBe(false);
    expect(expected.files['etc/hostname']?.text).toBe('cairn-sample\n');

    if (process.getuid?.() !== 0) return;
    const r = spawnSync('chroot', [rootfs, '/app/hello.sh'], { encoding: 'utf8' });
    if (r.status !== 0) ctx.skip(`chroot is not permitted here: ${r.stderr || r.error?.message}`);
    expect(r.stdout).toBe(`${SAMPLE_HELLO_OUTPUT}\n`);
    const sum = spawnSync('chroot', [rootfs, '/bin/sha256sum', '/app/data.txt'], { encoding: 'utf8' });
    expect(sum.stdout.split(' ')[0]).toBe(expected.files['app/data.txt']?.digest.slice(7));
  });

  it('writes the archive formats too', async (ctx) => {
    needBusybox(ctx);
    skipWithout(ctx, 'skopeo');
    const tmp = await testTempDir();
    const docker = await buildSampleImage(join(tmp, 'sample-docker.tar'), { format: 'docker-archive' });
    const info = JSON.parse(
      runCommand('skopeo', ['inspect', `docker-archive:${tmp}/sample-docker.tar:${SAMPLE_REF}`]).toString(),
    ) as { Layers: string[] };
    expect(info.Layers).toEqual(docker.images[0]?.layers.map((l) => l.digest));
    const oci = await buildSampleImage(join(tmp, 'sample-oci.tar'), { format: 'oci-archive', compression: 'zstd' });
    const ociInfo = JSON.parse(
      runCommand('skopeo', ['inspect', `oci-archive:${tmp}/sample-oci.tar:${SAMPLE_REF}`]).toString(),
    ) as { Digest: string };
    expect(ociInfo.Digest).toBe(oci.images[0]?.manifestDigest);
  });

  it('says how to install busybox when it is missing or not static', async () => {
    const tmp = await testTempDir();
    const missing = await buildSampleImage(join(tmp, 'x'), { busyboxPath: join(tmp, 'no-busybox') }).catch((e) => e);
    expect(missing).toBeInstanceOf(CairnError);
    expect((missing as CairnError).code).toBe(ErrorCode.NOT_FOUND);
    expect((missing as CairnError).message).toMatch(/apt-get install busybox-static/);
    const dynamic = await buildSampleImage(join(tmp, 'x'), { busyboxPath: process.execPath }).catch((e) => e);
    expect((dynamic as Error).message).toMatch(/not a statically linked executable.*busybox-static/);
    expect(isStaticElf(await readFile(process.execPath))).toBe(false);
    expect(isStaticElf(Buffer.from('#!/bin/sh\n'))).toBe(false);
  });
});
