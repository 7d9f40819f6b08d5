/**
 * `cairn mount` as a user runs it: the sample image built with `cairn sample`,
 * imported with `cairn import`, served by a `cairn registry serve` child,
 * mounted by `cairn mount` (a background daemon per test, with a private
 * --state-dir), looked at with ls, cat, find, sha256sum and chroot, measured
 * with `cairn stats --json`, and unmounted with `cairn unmount`.
 *
 * Needs root, FUSE, overlayfs, chroot and busybox-static; skipped (saying
 * why) otherwise.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it, type TestContext } from 'vitest';
import { existsSync } from 'node:fs';
import { mkdir, readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { callControl } from '../../src/daemon/control.js';
import { controlSocketPath } from '../../src/daemon/daemon.js';
import { writeOciLayout, type ImageInput } from '../../src/image/layout-writer.js';
import { DEFAULT_BUSYBOX, SAMPLE_HELLO_OUTPUT, SAMPLE_REF, sampleLayers } from '../../src/image/sample.js';
import { CHUNK_BYTES } from '../../src/model/chunks.js';
import { sha256 } from '../../src/model/digest.js';
import { dir, file, layer } from '../fixtures/layers.js';
import {
  daemonPid,
  hashFile,
  Janitor,
  leftoverMounts,
  mustRun,
  procMounts,
  probeMounts,
  run,
  waitForExit,
} from '../fixtures/mount.js';
import { pseudoRandom } from '../fixtures/registry.js';
import { hasCommand } from '../fixtures/tools.js';
import { makeTempDir, type TempDir } from '../fixtures/tmp.js';
import {
  cairn,
  cairnJson,
  ensureBuilt,
  logLines,
  spawnCairn,
  waitForListening,
  type CliChild,
  type CliOptions,
  type CliResult,
} from './cli-harness.js';

const MARKER = 'cairn-e2e-mount-';
const janitor = new Janitor(MARKER);

interface Stats {
  mountpoint: string;
  image: string;
  lookup: string;
  writable: boolean;
  imageBytes: number;
  bytesServed: number;
  bytesFetched: number;
  readErrors: number;
  fetchErrors: number;
  cache: Record<string, { hits: number; misses: number; evictions?: number; bytes?: number }>;
}

// Two images sharing a large file (a multi-chunk content), each with a file of its own.
const shared = pseudoRandom(3 * CHUNK_BYTES + 4321, 'e2e shared');
const onlyA = pseudoRandom(300_000, 'e2e only a');
const onlyB = pseudoRandom(200_000, 'e2e only b');
const imageA: ImageInput = {
  layers: [layer([dir('opt'), file('opt/shared.bin', shared)]), layer([file('a.bin', onlyA)])],
};
const imageB: ImageInput = {
  layers: [layer([dir('usr'), file('usr/shared.bin', shared, { mode: 0o755 })]), layer([file('b.bin', onlyB)])],
};

let skipReason: string | undefined;
let base: TempDir | undefined;
let server: CliChild | undefined;
let url = '';
let sampleBusybox: Buffer | undefined;

beforeAll(async () => {
  skipReason = await probeMounts(MARKER);
  if (!skipReason && !hasCommand('chroot')) skipReason = 'chroot is not installed (apt-get install coreutils)';
  if (!skipReason && !existsSync(DEFAULT_BUSYBOX)) {
    skipReason = `${DEFAULT_BUSYBOX} is missing (apt-get install busybox-static, or run scripts/setup.sh)`;
  }
  if (skipReason) return;
  ensureBuilt();
  sampleBusybox = await readFile(DEFAULT_BUSYBOX);
  base = await makeTempDir(MARKER);
  const root = join(base.path, 'registry');
  const ok = (r: CliResult, what: string): void => {
    if (r.code !== 0) throw new Error(`${what} exited with ${r.code ?? r.signal}: ${r.stderr}`);
  };
  ok(await cairn(['sample', join(base.path, 'sample')]), 'cairn sample');
  ok(await cairn(['import', join(base.path, 'sample'), SAMPLE_REF, '--root', root]), 'cairn import (sample)');
  for (const [name, image] of [
    ['a', imageA],
    ['b', imageB],
  ] as const) {
    const layout = join(base.path, `layout-${name}`);
    await writeOciLayout(layout, [image]);
    ok(await cairn(['import', layout, `shared/${name}:1`, '--root', root]), `cairn import (image ${name})`);
  }
  server = spawnCairn(['registry', 'serve', '--root', root, '--listen', '127.0.0.1:0'], {
    timeoutMs: 600_000,
  });
  url = (await waitForListening(server)).url;
}, 180_000);

afterEach(async () => {
  await janitor.clear();
});

afterAll(async () => {
  try {
    await janitor.clear();
    if (server && server.child.exitCode === null) {
      server.child.kill('SIGTERM');
      await server.exited;
    }
    await base?.cleanup();
  } finally {
    expect(await leftoverMounts(MARKER)).toEqual([]);
  }
});

interface Env {
  dir: string;
  state: string;
  /** `cairn ARGS... --state-dir STATE`, expected to succeed. */
  ok(args: string[], opts?: CliOptions): Promise<CliResult>;
  stats(mnt: string): Promise<Stats>;
  /** A fresh empty directory under the test's directory. */
  mkdir(name: string): Promise<string>;
}

async function setup(ctx: TestContext): Promise<Env> {
  if (skipReason) ctx.skip(skipReason);
  const tmp = await makeTempDir(MARKER);
  janitor.later(() => tmp.cleanup());
  const state = janitor.stateDir(join(tmp.path, 'state'));
  const env: Env = {
    dir: tmp.path,
    state,
    async ok(args, opts) {
      const r = await cairn([...args, '--state-dir', state], opts);
      expect(r.code, `cairn ${args.join(' ')}: ${r.stderr}`).toBe(0);
      if (args[0] === 'mount') await janitor.pid(await daemonPid(state));
      return r;
    },
    stats: (mnt) => cairnJson<Stats>(['stats', mnt, '--state-dir', state]),
    async mkdir(name) {
      const p = join(tmp.path, name);
      await mkdir(p, { recursive: true });
      return p;
    },
  };
  return env;
}

/** `find -printf` of a tree: path, type, mode, owner, size, links, link target, mtime; sorted. */
async function findListing(root: string): Promise<string[]> {
  const out = await mustRun('find', [root, '-printf', '%P\\t%y\\t%m\\t%U\\t%G\\t%s\\t%n\\t%l\\t%T@\\n']);
  return out.toString().split('\n').filter(Boolean).sort();
}

/** sha256 of every regular file under `root` (paths relative), read by sha256sum. */
async function fileHashes(root: string): Promise<Record<string, string>> {
  const out = await mustRun('sh', ['-c', 'cd "$1" && find . -type f -exec sha256sum {} +', 'sh', root]);
  const hashes: Record<string, string> = {};
  for (const line of out.toString().split('\n').filter(Boolean)) {
    const m = /^([0-9a-f]{64}) {2}\.\/(.*)$/.exec(line);
    if (m) hashes[m[2] as string] = `sha256:${m[1]}`;
  }
  return hashes;
}

/** Paths (with type, size and mtime) of everything under `root`, recursively (not a FUSE mount). */
async function snapshot(root: string): Promise<string[]> {
  const out: string[] = [];
  for (const rel of await readdir(root, { recursive: true })) {
    const st = await stat(join(root, rel));
    out.push(`${rel} ${st.isDirectory() ? 'd' : st.size} ${st.mtimeMs}`);
  }
  return out.sort();
}

function readyPids(log: string): number[] {
  return logLines(log)
    .filter((l) => l.msg === 'daemon ready')
    .map((l) => l.pid as number);
}

async function mountsUnder(path: string): Promise<string[]> {
  return (await procMounts()).filter((m) => m.path.startsWith(path)).map((m) => `${m.type} ${m.path}`);
}

describe('cairn mount: the sample image', () => {
  it('mounts lazily: ls, cat, chroot runs /app/hello.sh; stats; --lookup stacked shows the same tree', async (ctx) => {
    const e = await setup(ctx);
    const mnt = await e.mkdir('mnt');
    const r = await e.ok(['mount', url, SAMPLE_REF, mnt]);
    expect(r.stdout).toMatch(new RegExp(`^mounted ${SAMPLE_REF} \\(sha256:[0-9a-f]{64}\\) at ${mnt}: 2 layers, flat`));
    const expected = sampleLayers(sampleBusybox as Buffer).expected;

    const ls = (await mustRun('ls', ['-A', mnt])).toString().split('\n').filter(Boolean);
    expect(ls).toEqual(['app', 'bin', 'etc', 'root', 'tmp', 'usr', 'var']);
    expect((await mustRun('cat', [join(mnt, 'etc/hostname')])).toString()).toBe('cairn-sample\n');
    const hello = await run('chroot', [mnt, '/app/hello.sh']);
    expect(hello.code, hello.stderr).toBe(0);
    expect(hello.stdout.toString()).toBe(`${SAMPLE_HELLO_OUTPUT}\n`);
    for (const p of expected.absent) expect((await run('ls', [join(mnt, p)])).stderr).toMatch(/No such file/);

    const before = await e.stats(mnt);
    const hashes = await fileHashes(mnt);
    expect(hashes).toEqual(Object.fromEntries(Object.entries(expected.files).map(([p, f]) => [p, f.digest])));
    const s = await e.stats(mnt);
    // The merged view's regular-file bytes, each inode once (the app layer's hardlink counts once).
    const linked = Object.keys(expected.hardlinks).reduce((n, p) => n + (expected.files[p]?.size ?? 0), 0);
    const imageBytes = Object.values(expected.files).reduce((n, f) => n + f.size, 0) - linked;
    expect(s).toMatchObject({ image: SAMPLE_REF, lookup: 'flat', writable: false, imageBytes, readErrors: 0 });
    // Every file has been read: everything was fetched once (plus busybox's chunk list), and no more.
    expect(s.bytesFetched).toBeGreaterThan(0);
    expect(s.bytesFetched).toBeGreaterThanOrEqual(imageBytes);
    expect(s.bytesFetched).toBeLessThanOrEqual(imageBytes + 4096);
    expect(before.bytesFetched).toBeLessThan(s.bytesFetched);
    expect(s.bytesServed).toBeGreaterThanOrEqual(imageBytes);
    expect(s.cache.memory?.misses).toBeGreaterThan(0);
    expect(s.cache.disk).toBeUndefined();
    // Read again with its pages dropped: from the daemon's memory tier, nothing fetched.
    expect(await hashFile(join(mnt, 'bin/busybox'))).toMatchObject({ digest: expected.files['bin/busybox']?.digest });
    const again = await e.stats(mnt);
    expect(again.cache.memory?.hits).toBeGreaterThan(s.cache.memory?.hits ?? 0);
    expect(again.bytesFetched).toBe(s.bytesFetched);
    expect(again.bytesServed).toBeGreaterThan(s.bytesServed);

    // The same image with --lookup stacked, in the same daemon: the same tree.
    const stacked = await e.mkdir('stacked');
    await e.ok(['mount', url, SAMPLE_REF, stacked, '--lookup', 'stacked']);
    expect((await e.stats(stacked)).lookup).toBe('stacked');
    const [flatList, stackedList] = await Promise.all([findListing(mnt), findListing(stacked)]);
    expect(flatList.length).toBeGreaterThan(30);
    expect(stackedList).toEqual(flatList);
    expect(await fileHashes(stacked)).toEqual(hashes);

    await e.ok(['unmount', stacked]);
    const pid = await daemonPid(e.state);
    await e.ok(['unmount', mnt]);
    expect(await waitForExit(pid as number), 'the daemon exits after its last mount').toBe(true);
    expect(await mountsUnder(e.dir)).toEqual([]);
  });

  it('--writable --upper DIR (a tmpfs): changes land in DIR/upper, the lazy lower stays as it was', async (ctx) => {
    const e = await setup(ctx);
    const mnt = await e.mkdir('rw');
    const ro = await e.mkdir('ro');
    const upper = await e.mkdir('upper-fs');
    await mustRun('mount', ['-t', 'tmpfs', '-o', 'size=16m,mode=0700', 'tmpfs', upper]);
    janitor.later(async () => void (await run('umount', ['-l', upper])));

    await e.ok(['mount', url, SAMPLE_REF, mnt, '--writable', '--upper', upper]);
    const overlay = (await procMounts()).find((m) => m.path === mnt);
    expect(overlay?.type).toBe('overlay');
    const lower = /lowerdir=([^,]+)/.exec(overlay?.options ?? '')?.[1] ?? '';
    expect(lower.startsWith(e.state)).toBe(true);
    expect((await procMounts()).find((m) => m.path === lower)?.type).toBe('fuse.cairn');

    await mustRun('sh', ['-c', 'echo brand new > "$1/app/new.txt" && echo changed >> "$1/etc/hostname"', 'sh', mnt]);
    expect((await mustRun('cat', [join(mnt, 'etc/hostname')])).toString()).toBe('cairn-sample\nchanged\n');
    expect(await readFile(join(upper, 'upper/app/new.txt'), 'utf8')).toBe('brand new\n');
    expect(await readFile(join(upper, 'upper/etc/hostname'), 'utf8')).toBe('cairn-sample\nchanged\n');
    expect((await run('chroot', [mnt, '/app/hello.sh'])).stdout.toString()).toBe(`${SAMPLE_HELLO_OUTPUT}\n`);

    // The lazy lower is untouched: a read-only mount of the image shows the original.
    await e.ok(['mount', url, SAMPLE_REF, ro]);
    expect((await mustRun('cat', [join(ro, 'etc/hostname')])).toString()).toBe('cairn-sample\n');
    expect((await run('ls', [join(ro, 'app/new.txt')])).code).not.toBe(0);
    expect((await run('touch', [join(ro, 'app/x')])).stderr).toMatch(/Read-only file system/);

    // unmount takes the overlay down, then the lazy view under it.
    const r = await e.ok(['unmount', mnt]);
    expect(r.stdout.trim()).toBe(`unmounted ${mnt}`);
    const left = await procMounts();
    expect(left.find((m) => m.path === mnt)).toBeUndefined();
    expect(left.find((m) => m.path === lower)).toBeUndefined();
    expect(existsSync(lower)).toBe(false);
    // The changes stay in DIR.
    expect(await readFile(join(upper, 'upper/etc/hostname'), 'utf8')).toBe('cairn-sample\nchanged\n');
    await e.ok(['unmount', ro]);
    expect(await mountsUnder(e.state)).toEqual([]);
    expect(await mountsUnder(mnt)).toEqual([]);
  });

  it('--foreground serves in the calling process; SIGTERM unmounts cleanly', async (ctx) => {
    const e = await setup(ctx);
    const mnt = await e.mkdir('mnt');
    const c = spawnCairn(['mount', url, SAMPLE_REF, mnt, '--foreground', '--state-dir', e.state]);
    await janitor.pid(c.child.pid);
    const deadline = Date.now() + 15_000;
    while (!c.stdout().includes('mounted')) {
      if (c.child.exitCode !== null || Date.now() > deadline) throw new Error(`no mount: ${c.stderr()}`);
      await new Promise((r) => setTimeout(r, 25));
    }
    expect(c.stdout()).toMatch(/Ctrl-C unmounts/);
    expect((await procMounts()).find((m) => m.path === mnt)?.type).toBe('fuse.cairn');
    expect(await daemonPid(e.state)).toBe(c.child.pid);
    expect((await mustRun('cat', [join(mnt, 'etc/os-release')])).toString()).toMatch(/^NAME="cairn sample"/);

    c.child.kill('SIGTERM');
    const r = await c.exited;
    expect(r.signal, r.stderr).toBeNull();
    expect(r.code, r.stderr).toBe(0);
    expect(await mountsUnder(mnt)).toEqual([]);
    expect(existsSync(join(e.state, 'daemon.sock'))).toBe(false);
    const msgs = logLines(r.stderr).map((l) => l.msg);
    expect(msgs.indexOf('stopping')).toBeGreaterThan(msgs.indexOf('mounted'));
    expect(msgs.indexOf('unmounted')).toBeGreaterThan(msgs.indexOf('stopping'));
  });
});

describe('cairn mount: one daemon, two images, nothing on local disk', () => {
  it('a second mount reuses the daemon; a file both images share is fetched once; diskless writes only the state dir', async (ctx) => {
    const e = await setup(ctx);
    // Where a careless daemon would write: its TMPDIR, HOME and working directory, watched.
    const watched = await e.mkdir('watched');
    const home = await e.mkdir('watched/home');
    const tmp = await e.mkdir('watched/tmp');
    const cwd = await e.mkdir('watched/cwd');
    await writeFile(join(home, '.profile'), '# there before\n');
    const opts: CliOptions = { env: { HOME: home, TMPDIR: tmp, TMP: tmp, TEMP: tmp, XDG_CACHE_HOME: undefined }, cwd };
    const before = await snapshot(watched);

    const a = await e.mkdir('a');
    const b = await e.mkdir('b');
    await e.ok(['mount', url, 'shared/a:1', a], opts);
    const pid = await daemonPid(e.state);
    expect(await fileHashes(a)).toEqual({ 'opt/shared.bin': sha256(shared), 'a.bin': sha256(onlyA) });
    const sa = await e.stats(a);
    expect(sa.bytesFetched).toBeGreaterThanOrEqual(shared.length + onlyA.length);
    expect(sa.bytesFetched).toBeLessThan(shared.length + onlyA.length + 4096); // + the chunk list

    await e.ok(['mount', url, 'shared/b:1', b], opts);
    expect(await daemonPid(e.state)).toBe(pid);
    expect(readyPids(await readFile(join(e.state, 'daemon.log'), 'utf8'))).toEqual([pid]);
    expect(await fileHashes(b)).toEqual({ 'usr/shared.bin': sha256(shared), 'b.bin': sha256(onlyB) });
    const sb = await e.stats(b);
    // Only b's own file was fetched: the shared content came from the daemon's memory tier.
    expect(sb.bytesFetched - sa.bytesFetched).toBe(onlyB.length);
    expect(sb.imageBytes).toBe(shared.length + onlyB.length);
    expect(sb.cache.memory?.hits).toBeGreaterThan(sa.cache.memory?.hits ?? 0);
    expect(sb.cache.disk).toBeUndefined();
    const list = (await callList(e)).map((m) => m.mountpoint).sort();
    expect(list).toEqual([a, b].sort());

    await e.ok(['unmount', a], opts);
    await e.ok(['unmount', b], opts);
    expect(await waitForExit(pid as number)).toBe(true);
    expect(await snapshot(watched)).toEqual(before);
    // The state dir holds the daemon's log and its read records, nothing like a cache.
    const names = (await snapshot(e.state)).map((l) => l.split(' ')[0] as string);
    expect(names.filter((n) => !['daemon.log', 'reads'].includes(n) && !/^reads\/[0-9a-f]{64}\.json$/.test(n))).toEqual(
      [],
    );
  });
});

/** The daemon's mounts, asked over its control socket. */
async function callList(e: Env): Promise<{ mountpoint: string }[]> {
  return (await callControl(controlSocketPath(e.state), { op: 'list' })) as { mountpoint: string }[];
}

describe('cairn mount: errors', () => {
  const cases: {
    name: string;
    args: (e: Env, mnt: string) => string[];
    code: number;
    names: (mnt: string) => string;
  }[] = [
    {
      name: 'a mountpoint that does not exist',
      args: (_e, mnt) => ['mount', url, SAMPLE_REF, join(mnt, 'missing')],
      code: 66,
      names: (mnt) => join(mnt, 'missing'),
    },
    {
      name: 'an unknown tag',
      args: (_e, mnt) => ['mount', url, 'sample/busybox:nosuch', mnt],
      code: 66,
      names: () => 'sample/busybox:nosuch',
    },
    {
      name: 'an unreachable registry',
      args: (_e, mnt) => ['mount', 'http://127.0.0.1:1', SAMPLE_REF, mnt, '--read-deadline-ms', '2000'],
      code: 69,
      names: () => 'http://127.0.0.1:1',
    },
  ];
  it.for(cases)('$name: non-zero exit, one cairn: line naming it, no daemon left behind', async (c, ctx) => {
    const e = await setup(ctx);
    const mnt = await e.mkdir('mnt');
    const r = await cairn([...c.args(e, mnt), '--state-dir', e.state]);
    expect(r.code, r.stderr).toBe(c.code);
    expect(r.stdout).toBe('');
    const lines = r.stderr.replace(/\n$/, '').split('\n');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/^cairn: /);
    expect(lines[0]).toContain(c.names(mnt));
    // The daemon started for the mount has nothing to serve and exits.
    const pids = readyPids(await readFile(join(e.state, 'daemon.log'), 'utf8'));
    expect(pids).toHaveLength(1);
    await janitor.pid(pids[0]);
    expect(await waitForExit(pids[0] as number, 5000)).toBe(true);
    expect(await mountsUnder(e.dir)).toEqual([]);
  });
});
