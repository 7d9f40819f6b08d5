/**
 * How a cairn mount fails, and recovers: a registry that stops answering or
 * sends wrong bytes, a disk cache damaged while the daemon was down, a daemon
 * killed under its mounts.
 *
 * The registry runs in this process (RegistryHttpServer over a real store),
 * behind the misbehaving proxy of test/fixtures/proxy.ts; mounts are made by
 * the CLI (`cairn mount`, a background daemon per test with a private
 * --state-dir), and every look at a mount is made by a child process.
 * Needs root and FUSE; skipped (saying why) otherwise.
 */
import { mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it, type TestContext } from 'vitest';
import { callControl } from '../../src/daemon/control.js';
import { controlSocketPath } from '../../src/daemon/daemon.js';
import { CHUNK_BYTES } from '../../src/model/chunks.js';
import { sha256 } from '../../src/model/digest.js';
import { cairn, cairnJson, ensureBuilt } from '../e2e/cli-harness.js';
import { dir, file, layer } from '../fixtures/layers.js';
import {
  daemonPid,
  hashFile,
  Janitor,
  leftoverMounts,
  procMounts,
  probeMounts,
  run,
  waitForExit,
} from '../fixtures/mount.js';
import { startProxy } from '../fixtures/proxy.js';
import { importFixtureImage, pseudoRandom, startRegistry, type RunningRegistry } from '../fixtures/registry.js';
import { makeTempDir, type TempDir } from '../fixtures/tmp.js';

const MARKER = 'cairn-mount-failure-';
const IMAGE = 'fail/app:1';
const DEADLINE_MS = 1500;
/** What a failing read may take past its deadline: the kernel, a child process starting, the CLI. */
const SLACK_MS = 2500;

const contents = {
  'a.txt': Buffer.from('file a, read first and cached\n'),
  'b.txt': Buffer.from('file b, read while the registry is down\n'),
  'c.txt': Buffer.from('file c, read while the registry corrupts bytes\n'),
  // Four chunks: fetched and verified chunk by chunk, with the registry's chunk list.
  'big.bin': pseudoRandom(3 * CHUNK_BYTES + 5, 'mount-failure big'),
};
type Name = keyof typeof contents;
const NAMES = Object.keys(contents) as Name[];
const digestOf = (n: Name): string => sha256(contents[n]);

interface Stats {
  imageBytes: number;
  bytesServed: number;
  bytesFetched: number;
  readErrors: number;
  fetchErrors: number;
  cache: {
    memory: { hits: number; misses: number };
    disk?: {
      hits: number;
      misses: number;
      corrupt: number;
      repair: { rowsDropped: number; filesIndexed: number; filesDeleted: number; tempsDeleted: number };
    };
  };
}

let skipReason: string | undefined;
let registry: RunningRegistry | undefined;
let registryDir: TempDir | undefined;
const janitor = new Janitor(MARKER);

beforeAll(async () => {
  skipReason = await probeMounts(MARKER);
  if (skipReason) return;
  ensureBuilt();
  registryDir = await makeTempDir(MARKER);
  registry = await startRegistry(join(registryDir.path, 'registry'), { closeAfterTest: false });
  await importFixtureImage(registry.store, {
    image: {
      layers: [
        layer([dir('data'), ...NAMES.map((n) => file(`data/${n}`, contents[n]))]),
        layer([file('top.txt', 'top layer\n')]),
      ],
    },
    target: IMAGE,
  });
}, 180_000);

afterEach(async () => {
  await janitor.clear();
});

afterAll(async () => {
  try {
    await janitor.clear();
    await registry?.close();
    await registryDir?.cleanup();
  } finally {
    expect(await leftoverMounts(MARKER)).toEqual([]);
  }
});

interface Setup {
  dir: string;
  state: string;
  mnt: string;
  /** `cairn mount URL IMAGE MNT --state-dir STATE ...extra`, expected to succeed. */
  mount(url: string, extra?: string[], at?: string): Promise<void>;
  /** The mount's figures, from the daemon's control socket (`cairnStats` asks the CLI). */
  stats(at?: string): Promise<Stats>;
  cairnStats(at?: string): Promise<Stats>;
  path(n: Name): string;
}

async function setup(ctx: TestContext): Promise<Setup> {
  if (skipReason) ctx.skip(skipReason);
  const tmp = await makeTempDir(MARKER);
  janitor.later(() => tmp.cleanup());
  const state = janitor.stateDir(join(tmp.path, 'state'));
  const mnt = join(tmp.path, 'mnt');
  await mkdir(mnt);
  return {
    dir: tmp.path,
    state,
    mnt,
    async mount(url, extra = [], at = mnt) {
      const r = await cairn(['mount', url, IMAGE, at, '--state-dir', state, ...extra]);
      expect(r.code, r.stderr).toBe(0);
      await janitor.pid(await daemonPid(state));
    },
    stats: async (at = mnt) =>
      (await callControl(controlSocketPath(state), { op: 'stats', mountpoint: at }, 10_000)) as Stats,
    cairnStats: (at = mnt) => cairnJson<Stats>(['stats', at, '--state-dir', state]),
    path: (n) => join(mnt, 'data', n),
  };
}

/** One read(2) of up to 64 KiB at an offset (default 0), readahead off; the bytes go to stdout. */
const READ_ONCE_PY = String.raw`
import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
os.lseek(fd, int(sys.argv[2]) if len(sys.argv) > 2 else 0, os.SEEK_SET)
sys.stdout.buffer.write(os.read(fd, 65536))
`;

/** Expects a command reading from the mount to fail with EIO, serving no bytes; returns how long it took. */
async function expectEio(cmd: string, args: string[]): Promise<number> {
  const r = await run(cmd, args);
  expect(r.code, `${cmd} ${args.join(' ')} should fail`).not.toBe(0);
  expect(r.stderr).toMatch(/Input\/output error/);
  expect(r.stdout.length, 'no bytes are served').toBe(0);
  return r.ms;
}

describe('cairn mount when the registry fails', () => {
  it('a registry that stops answering: reads fail with EIO within the deadline, cached files still read, the mount recovers', async (ctx) => {
    const s = await setup(ctx);
    const proxy = await startProxy((registry as RunningRegistry).url);
    await s.mount(proxy.url, ['--read-deadline-ms', String(DEADLINE_MS)]);

    expect((await hashFile(s.path('a.txt'))).digest).toBe(digestOf('a.txt'));
    const before = await s.stats();

    // Hanging: one read waits for its deadline, no longer (a single read without readahead).
    await proxy.setMode('hang');
    const one = await expectEio('python3', ['-c', READ_ONCE_PY, s.path('b.txt')]);
    expect(one).toBeGreaterThanOrEqual(DEADLINE_MS - 100);
    expect(one).toBeLessThan(DEADLINE_MS + SLACK_MS);
    expect((await s.stats()).readErrors).toBeGreaterThanOrEqual(1);
    // cat: the kernel tries a page whose readahead failed once more before it reports the error,
    // so a program can wait twice the deadline (two FUSE reads, two read errors).
    const cat = await expectEio('cat', [s.path('b.txt')]);
    expect(cat).toBeGreaterThanOrEqual(DEADLINE_MS - 100);
    expect(cat).toBeLessThan(2 * DEADLINE_MS + SLACK_MS);

    // The cached file still reads (its pages dropped, so from the daemon's memory tier).
    expect(await hashFile(s.path('a.txt'))).toMatchObject({ digest: digestOf('a.txt') });
    const mid = await s.stats();
    expect(mid.cache.memory.hits).toBeGreaterThan(before.cache.memory.hits);

    // Refusing connections: a multi-chunk file fails too, within the deadline.
    await proxy.setMode('refuse');
    expect(await expectEio('sha256sum', [s.path('big.bin')])).toBeLessThan(DEADLINE_MS + SLACK_MS);
    expect(await expectEio('cat', [s.path('b.txt')])).toBeLessThan(DEADLINE_MS + SLACK_MS);

    // Back: the same files read correctly; nothing about the failures was remembered.
    await proxy.setMode('pass');
    expect(await hashFile(s.path('b.txt'))).toMatchObject({ digest: digestOf('b.txt') });
    expect(await hashFile(s.path('big.bin'))).toMatchObject({ digest: digestOf('big.bin') });
    const after = await s.stats();
    expect(after.readErrors).toBeGreaterThanOrEqual(3);
    expect(after.fetchErrors).toBeGreaterThanOrEqual(3);
  });

  it('a registry that sends wrong bytes: EIO, never the wrong bytes, and the right ones once it is fixed (also from the disk cache)', async (ctx) => {
    const s = await setup(ctx);
    const cacheDir = join(s.dir, 'cache');
    const proxy = await startProxy((registry as RunningRegistry).url);
    const opts = ['--read-deadline-ms', '4000', '--cache-dir', cacheDir, '--disk-cache', '64M'];
    await s.mount(proxy.url, opts);

    await proxy.setMode('corrupt');
    await expectEio('cat', [s.path('c.txt')]);
    // Chunk 1 of the large file, alone: its chunk and its chunk list come corrupted.
    await expectEio('python3', ['-c', READ_ONCE_PY, s.path('big.bin'), String(CHUNK_BYTES + 100)]);
    await expectEio('sha256sum', [s.path('big.bin')]);
    expect(proxy.requests.filter((r) => r.mode === 'corrupt').length).toBeGreaterThan(0);

    await proxy.setMode('pass');
    expect(await hashFile(s.path('c.txt'))).toMatchObject({ digest: digestOf('c.txt') });
    expect(await hashFile(s.path('big.bin'))).toMatchObject({ digest: digestOf('big.bin') });
    const st = await s.stats();
    expect(st.readErrors).toBeGreaterThanOrEqual(3);
    expect(st.fetchErrors).toBeGreaterThanOrEqual(3);
    expect(st.cache.disk?.corrupt).toBe(0);

    // What the disk tier kept is right: remount (the daemon exits in between) with the registry refusing
    // contents, and every byte comes from disk.
    const pid = await daemonPid(s.state);
    expect((await cairn(['unmount', s.mnt, '--state-dir', s.state])).code).toBe(0);
    expect(await waitForExit(pid as number)).toBe(true);
    await s.mount(proxy.url, opts);
    proxy.addRule({ mode: 'reset', path: /\/files\// });
    expect(await hashFile(s.path('c.txt'))).toMatchObject({ digest: digestOf('c.txt') });
    expect(await hashFile(s.path('big.bin'))).toMatchObject({ digest: digestOf('big.bin') });
    const again = await s.stats();
    expect(again.bytesFetched).toBe(0);
    expect(again.cache.disk?.hits).toBeGreaterThanOrEqual(5);
    expect(again.cache.disk?.corrupt).toBe(0);
  });
});

describe('cairn mount with a damaged disk cache', () => {
  it('repairs it at start: a flipped byte, a deleted chunk, junk; reads stay correct and the counters show it', async (ctx) => {
    const s = await setup(ctx);
    const reg = registry as RunningRegistry;
    const cacheDir = join(s.dir, 'cache');
    const opts = ['--cache-dir', cacheDir, '--disk-cache', '64M'];
    await s.mount(reg.url, opts);
    for (const n of NAMES) expect(await hashFile(s.path(n))).toMatchObject({ digest: digestOf(n) });
    const first = await s.stats();
    expect(first.cache.disk?.misses).toBe(NAMES.length + 3); // big.bin is 4 chunks
    const pid = await daemonPid(s.state);
    expect((await cairn(['unmount', s.mnt, '--state-dir', s.state])).code).toBe(0);
    expect(await waitForExit(pid as number), 'the daemon exits after its last mount').toBe(true);

    // Damage the cache while no daemon runs.
    const hex = (n: Name): string => digestOf(n).slice('sha256:'.length);
    const chunkFile = (n: Name, i: number): string => join(cacheDir, 'chunks', hex(n).slice(0, 2), `${hex(n)}.${i}`);
    const flipped = chunkFile('big.bin', 1);
    const bytes = await readFile(flipped);
    expect(bytes.length).toBe(CHUNK_BYTES);
    bytes[12345]! ^= 0x40;
    await writeFile(flipped, bytes);
    await rm(chunkFile('a.txt', 0));
    await writeFile(join(cacheDir, 'chunks', hex('b.txt').slice(0, 2), 'junk'), 'not a chunk');
    await writeFile(join(cacheDir, 'chunks', 'README'), 'not a shard');
    await writeFile(join(cacheDir, 'tmp', 'left-over.tmp'), 'a write that never finished');

    await s.mount(reg.url, opts);
    for (const n of NAMES) expect(await hashFile(s.path(n))).toMatchObject({ digest: digestOf(n) });
    const st = await s.cairnStats();
    expect(st.cache.disk).toMatchObject({
      corrupt: 1,
      repair: { rowsDropped: 1, filesIndexed: 0, filesDeleted: 2, tempsDeleted: 1 },
    });
    // Fetched again: the deleted content and the corrupt chunk (with its chunk list), nothing else.
    const refetched = contents['a.txt'].length + CHUNK_BYTES;
    expect(st.bytesFetched).toBeGreaterThanOrEqual(refetched);
    expect(st.bytesFetched).toBeLessThan(refetched + 4096);
    expect(st.cache.disk?.hits).toBe(NAMES.length + 3 - 2);
    // The junk is gone, the damaged files are whole again.
    expect(await readdir(join(cacheDir, 'tmp'))).toEqual([]);
    expect((await readdir(join(cacheDir, 'chunks'))).includes('README')).toBe(false);
    expect((await readdir(join(cacheDir, 'chunks', hex('b.txt').slice(0, 2)))).includes('junk')).toBe(false);
    const pid2 = await daemonPid(s.state);
    expect((await cairn(['unmount', s.mnt, '--state-dir', s.state])).code).toBe(0);
    expect(await waitForExit(pid2 as number)).toBe(true);
    expect(sha256(await readFile(flipped))).toBe(sha256(contents['big.bin'].subarray(CHUNK_BYTES, 2 * CHUNK_BYTES)));
    expect(sha256(await readFile(chunkFile('a.txt', 0)))).toBe(digestOf('a.txt'));
  });
});

describe('cairn mount after its daemon is killed', () => {
  it('a stale mount answers ENOTCONN; cairn mount reclaims the path; cairn unmount clears stale mounts with no daemon', async (ctx) => {
    const s = await setup(ctx);
    const reg = registry as RunningRegistry;
    const writable = join(s.dir, 'rw');
    const upper = join(s.dir, 'upper');
    await mkdir(writable);
    await s.mount(reg.url);
    await s.mount(reg.url, ['--writable', '--upper', upper], writable);
    const pid = await daemonPid(s.state);
    expect(pid).toBeGreaterThan(0);
    // The log names the same process.
    const ready = (await readFile(join(s.state, 'daemon.log'), 'utf8'))
      .split('\n')
      .filter((l) => l.includes('"daemon ready"'))
      .map((l) => (JSON.parse(l) as { pid: number }).pid);
    expect(ready).toEqual([pid]);

    process.kill(pid as number, 'SIGKILL');
    expect(await waitForExit(pid as number)).toBe(true);
    for (const m of [s.mnt, writable]) {
      const ls = await run('ls', [m]);
      expect(ls.code).not.toBe(0);
      expect(ls.stderr).toMatch(/Transport endpoint is not connected/);
    }

    // A new daemon mounts over the stale FUSE mount.
    await s.mount(reg.url);
    const pid2 = await daemonPid(s.state);
    expect(pid2).not.toBe(pid);
    expect(await hashFile(s.path('a.txt'))).toMatchObject({ digest: digestOf('a.txt') });
    expect((await run('cat', [join(s.mnt, 'top.txt')])).stdout.toString()).toBe('top layer\n');

    // Killed again: cairn unmount, with no daemon to ask, clears both stale mounts (the overlay and its lazy lower).
    process.kill(pid2 as number, 'SIGKILL');
    expect(await waitForExit(pid2 as number)).toBe(true);
    for (const m of [s.mnt, writable]) {
      const r = await cairn(['unmount', m, '--state-dir', s.state]);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout).toMatch(/cleared stale mount/);
    }
    const left = (await procMounts()).filter((m) => m.path.startsWith(s.dir)).map((m) => `${m.type} ${m.path}`);
    expect(left).toEqual([]);
    // Nothing is mounted there any more: unmount says so.
    const again = await cairn(['unmount', s.mnt, '--state-dir', s.state]);
    expect(again.code).not.toBe(0);
    expect(again.stderr).toMatch(/^cairn: .*not a cairn mount/);
  });
});
