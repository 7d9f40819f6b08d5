/**
 * A real, dynamically linked Debian program runs from a lazy mount: the image is
 * built from this machine's own Debian binaries (dash, coreutils, their shared
 * libraries and the dynamic loader), so the loader maps libraries through FUSE
 * exactly as in a container, with a large file the program never reads.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, realpath, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { writeOciLayout } from '../../src/image/layout-writer.js';
import { dir, file, layer, symlink, type FixtureEntry } from '../fixtures/layers.js';
import { makeTempDir, type TempDir } from '../fixtures/tmp.js';
import { cairn, cairnJson, ensureBuilt, spawnCairn, waitForListening, type CliChild } from './cli-harness.js';
import { daemonPid, Janitor, leftoverMounts } from '../fixtures/mount.js';

const run = promisify(execFile);
const PROGRAMS = ['dash', 'ls', 'cat', 'sha256sum', 'head', 'wc', 'mkdir'];
const MARKER = 'cairn-e2e-debian-';

async function sharedLibs(bin: string): Promise<string[]> {
  const { stdout } = await run('ldd', [bin]);
  return [...stdout.matchAll(/(\/\S+)/g)].map((m) => m[1] as string);
}

/** The base layer: usr-merged Debian layout with the programs, their libraries and the loader. */
async function debianBase(): Promise<FixtureEntry[]> {
  const files = new Map<string, Buffer>();
  const modes = new Map<string, number>();
  const add = async (hostPath: string): Promise<void> => {
    const real = await realpath(hostPath);
    const inImage = real.replace(/^\/(lib|lib64|bin)\//, 'usr/$1/').replace(/^\//, '');
    if (!files.has(inImage)) {
      files.set(inImage, await readFile(real));
      modes.set(inImage, (await stat(real)).mode & 0o7777);
    }
    if (inImage !== hostPath.replace(/^\//, '').replace(/^(lib|lib64|bin)\//, 'usr/$1/')) {
      files.set(
        `@link:${hostPath.replace(/^\/(lib|lib64|bin)\//, 'usr/$1/').replace(/^\//, '')}`,
        Buffer.from(`/${inImage}`),
      );
    }
  };
  for (const p of PROGRAMS) {
    await add(`/usr/bin/${p}`);
    for (const lib of await sharedLibs(`/usr/bin/${p}`)) await add(lib);
  }
  const entries: FixtureEntry[] = [
    dir('usr'),
    dir('usr/bin'),
    dir('usr/lib'),
    dir('usr/lib/x86_64-linux-gnu'),
    dir('usr/lib64'),
    symlink('bin', 'usr/bin'),
    symlink('lib', 'usr/lib'),
    symlink('lib64', 'usr/lib64'),
    dir('etc'),
    file('etc/os-release', await readFile('/etc/os-release')),
    dir('tmp', { mode: 0o1777 }),
  ];
  for (const [path, content] of [...files].sort(([a], [b]) => (a < b ? -1 : 1))) {
    if (path.startsWith('@link:')) entries.push(symlink(path.slice(6), content.toString()));
    else entries.push(file(path, content, { mode: modes.get(path) ?? 0o644 }));
  }
  entries.push(symlink('usr/bin/sh', 'dash'));
  return entries;
}

let tmp: TempDir;
let server: CliChild | undefined;
let url = '';
let root = '';
let skipReason: string | undefined;
const janitor = new Janitor(MARKER);
const UNUSED_BYTES = 24 * 1024 * 1024;

beforeAll(async () => {
  if (process.getuid?.() !== 0) {
    skipReason = 'needs root (FUSE, chroot, overlayfs)';
    return;
  }
  ensureBuilt();
  tmp = await makeTempDir(MARKER);
  root = join(tmp.path, 'registry');
  const layout = join(tmp.path, 'layout');
  await writeOciLayout(layout, [
    {
      ref: 'debian-mini:1',
      layers: [
        layer(await debianBase()),
        layer(
          [dir('usr/share'), dir('usr/share/unused'), file('usr/share/unused/blob.bin', randomBytes(UNUSED_BYTES))],
          'none',
        ),
        layer([
          dir('app'),
          file(
            'app/run.sh',
            '#!/bin/sh\nset -e\nsha256sum /usr/bin/ls | head -c 64; echo\nls /etc\n. /etc/os-release; echo "$ID"\nmkdir -p /tmp/work && echo written > /tmp/work/out\nwc -c < /tmp/work/out\n',
            { mode: 0o755 },
          ),
        ]),
      ],
    },
  ]);
  expect((await cairn(['import', `${layout}:debian-mini:1`, 'os/debian-mini:1', '--root', root])).code).toBe(0);
  server = spawnCairn(['registry', 'serve', '--root', root, '--listen', '127.0.0.1:0'], { timeoutMs: 600_000 });
  url = (await waitForListening(server)).url;
}, 180_000);

afterAll(async () => {
  try {
    await janitor.clear();
    if (server && server.child.exitCode === null) {
      server.child.kill('SIGTERM');
      await server.exited;
    }
    await tmp?.cleanup();
  } finally {
    expect(await leftoverMounts(MARKER)).toEqual([]);
  }
});

describe('a dynamically linked Debian program from a lazy, writable mount', () => {
  it('runs in a chroot, fetching a small part of the image, writing to the upper dir', async (ctx) => {
    if (skipReason) ctx.skip(skipReason);
    const state = janitor.stateDir(join(tmp.path, 'state'));
    const mnt = join(tmp.path, 'mnt');
    const upper = join(tmp.path, 'upper');
    await mkdir(mnt, { recursive: true });
    const m = await cairn([
      'mount',
      url,
      'os/debian-mini:1',
      mnt,
      '--writable',
      '--upper',
      upper,
      '--state-dir',
      state,
    ]);
    expect(m.code, m.stderr).toBe(0);
    await janitor.pid(await daemonPid(state));
    try {
      const out = await run('chroot', [mnt, '/app/run.sh']);
      const lines = out.stdout.trim().split('\n');
      const hostLs = (await run('sha256sum', ['/usr/bin/ls'])).stdout.slice(0, 64);
      expect(lines[0]).toBe(hostLs);
      expect(lines).toContain('os-release');
      expect(lines).toContain('debian');
      expect(lines[lines.length - 1]).toBe('8');
      expect((await readFile(join(upper, 'upper/tmp/work/out'), 'utf8')).trim()).toBe('written');
      const s = await cairnJson<{ imageBytes: number; bytesFetched: number }>(['stats', mnt, '--state-dir', state]);
      expect(s.imageBytes).toBeGreaterThan(UNUSED_BYTES);
      // The unread 24 MiB file is never fetched; programs and libraries are.
      expect(s.bytesFetched).toBeGreaterThan(0);
      expect(s.bytesFetched / s.imageBytes).toBeLessThan(0.15);
      process.stdout.write(
        `debian-mini: fetched ${s.bytesFetched} of ${s.imageBytes} bytes (${((100 * s.bytesFetched) / s.imageBytes).toFixed(1)} %)\n`,
      );
    } finally {
      const u = await cairn(['unmount', mnt, '--state-dir', state]);
      expect(u.code, u.stderr).toBe(0);
    }
    await expect(stat(join(mnt, 'app'))).rejects.toThrow();
  });
});
