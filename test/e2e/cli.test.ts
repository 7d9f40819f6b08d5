import { beforeAll, describe, expect, it, onTestFinished } from 'vitest';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { writeOciLayout, type ImageInput, type WrittenImage } from '../../src/image/layout-writer.js';
import { importImage } from '../../src/registry/importer.js';
import { RegistryStore } from '../../src/registry/store.js';
import { DEFAULT_BUSYBOX, SAMPLE_REF } from '../../src/image/sample.js';
import { sha256, type Digest } from '../../src/model/digest.js';
import { dir, file, layer, symlink, type FixtureEntry } from '../fixtures/layers.js';
import { testTempDir } from '../fixtures/tmp.js';
import { fetchRaw, parsePrometheusText, pseudoRandom } from '../fixtures/registry.js';
import {
  CAIRN_BIN,
  REPO_DIR,
  cairn,
  cairnJson,
  cliEnv,
  ensureBuilt,
  logLines,
  spawnCairn,
  waitForListening,
  type CliChild,
  type CliOptions,
  type CliResult,
} from './cli-harness.js';

beforeAll(() => {
  ensureBuilt();
}, 120_000);

/** Escape sequences or carriage returns: what a progress line on a terminal is made of. */
// eslint-disable-next-line no-control-regex
const TERMINAL_CONTROL = /[\x1b\r]/;

interface RegistryStatsJson {
  images: number;
  repositories: number;
  tags: number;
  layers: number;
  entries: number;
  files: number;
  uniqueFiles: number;
  fileBytes: number;
  storedBytes: number;
  dedupSavingPercent: number;
  metadataBytes: number;
  recipeBytes: number;
  skeletonBytes: number;
}

interface ImportJson {
  repository: string;
  tag: string;
  digest: Digest;
  platform: string;
  layers: { recipe: Digest; diffId: Digest; entries: number; newRecipe: boolean }[];
  entries: number;
  files: number;
  newFiles: number;
  newBytes: number;
  tarBytes: number;
  seconds: number;
}

interface LsJson {
  digest: Digest;
  repository: string;
  tags: string;
}

/** Writes one image as an OCI layout in a fresh directory; returns the layout path and what was written. */
async function layoutOf(image: ImageInput): Promise<{ path: string; written: WrittenImage }> {
  const path = join(await testTempDir('cairn-e2e-src-'), 'layout');
  const w = await writeOciLayout(path, [image]);
  return { path, written: w.images[0]! };
}

const smallImage: ImageInput = {
  ref: 'small:1',
  layers: [layer([dir('etc'), file('etc/hostname', 'small\n'), file('etc/motd', 'hello\n')])],
};

/** A `registry serve` child on an ephemeral port, killed when the test ends if still running. */
async function serve(args: string[], opts: CliOptions = {}): Promise<{ c: CliChild; url: string; root: unknown }> {
  const c = spawnCairn(['registry', 'serve', ...args], opts);
  onTestFinished(() => {
    if (c.child.exitCode === null && c.child.signalCode === null) c.child.kill('SIGKILL');
  });
  const line = await waitForListening(c);
  return { c, url: line.url, root: line.root };
}

/** The pids of `pid`'s children (from /proc). */
function childPids(pid: number): number[] {
  const r = spawnSync('ps', ['-o', 'pid=', '--ppid', String(pid)], { encoding: 'utf8' });
  return r.stdout
    .split('\n')
    .map((l) => Number(l.trim()))
    .filter((n) => n > 0);
}

async function waitUntil(cond: () => boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`condition not met within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Sends SIGTERM and expects a clean exit. */
async function stop(c: CliChild): Promise<CliResult> {
  c.child.kill('SIGTERM');
  const r = await c.exited;
  expect(r.signal, r.stderr).toBeNull();
  expect(r.code, r.stderr).toBe(0);
  return r;
}

/** Every blob file under ROOT/blobs (as digests) and every entry of ROOT/tmp. */
async function storeFiles(root: string): Promise<{ blobs: Set<string>; tmp: string[] }> {
  const blobs = new Set<string>();
  const shardsDir = join(root, 'blobs', 'sha256');
  for (const shard of await readdir(shardsDir).catch(() => [] as string[])) {
    for (const name of await readdir(join(shardsDir, shard)).catch(() => [] as string[])) blobs.add(`sha256:${name}`);
  }
  const tmp = await readdir(join(root, 'tmp')).catch(() => [] as string[]);
  return { blobs, tmp };
}

/** The contents the store's metadata references (read straight from SQLite, read-only). */
function referencedContents(root: string): Set<string> {
  const db = new Database(join(root, 'registry.db'), { readonly: true, fileMustExist: true });
  try {
    return new Set((db.prepare('SELECT digest FROM files').all() as { digest: string }[]).map((r) => r.digest));
  } finally {
    db.close();
  }
}

function withoutMetadataBytes(s: RegistryStatsJson): Omit<RegistryStatsJson, 'metadataBytes'> {
  const { metadataBytes: _sqliteFileSizes, ...rest } = s;
  return rest;
}

describe('cairn CLI: help and usage errors', () => {
  it('prints help for every command and subcommand, exit 0', async () => {
    const commands = [
      [],
      ['import'],
      ['registry'],
      ['registry', 'serve'],
      ['registry', 'stats'],
      ['registry', 'ls'],
      ['registry', 'gc'],
      ['sample'],
    ];
    const results = await Promise.all(commands.map((c) => cairn([...c, '--help'])));
    results.forEach((r, i) => {
      const name = ['cairn', ...commands[i]!].join(' ');
      expect(r.code, `${name} --help: ${r.stderr}`).toBe(0);
      expect(r.stdout, name).toContain(`Usage: ${name} `);
      expect(r.stderr, name).toBe('');
    });
    // Subcommands are listed by their parents.
    expect(results[0]!.stdout).toMatch(/import[\s\S]*registry[\s\S]*sample/);
    expect(results[2]!.stdout).toMatch(/serve[\s\S]*stats[\s\S]*ls[\s\S]*gc/);
    // The options users reach for are documented.
    expect(results[1]!.stdout).toMatch(/--root[\s\S]*--platform[\s\S]*--json/);
    for (const opt of ['--root', '--listen', '--config', '--log-level', 'CAIRN_ROOT', 'CAIRN_LISTEN'])
      expect(results[3]!.stdout).toContain(opt);
    expect(results[6]!.stdout).toMatch(/--grace-seconds[\s\S]*--dry-run/);
    const help = await cairn(['help', 'registry']);
    expect(help.code).toBe(0);
    expect(help.stdout).toContain('Usage: cairn registry ');
    const version = await cairn(['--version']);
    expect(version.code).toBe(0);
    expect(version.stdout.trim()).toMatch(/^\d+\.\d+\.\d+/);
  });

  interface BadCase {
    name: string;
    args: (d: { root: string; layout: string; missing: string }) => string[];
    /** What the one line must name. */
    names: (d: { root: string; layout: string; missing: string }) => string;
    code: number;
  }
  const badCases: BadCase[] = [
    {
      name: 'a missing source',
      args: (d) => ['import', d.missing, 'app:1', '--root', d.root],
      names: (d) => d.missing,
      code: 66,
    },
    {
      name: 'a REPO:TAG without a tag',
      args: (d) => ['import', d.layout, 'notag', '--root', d.root],
      names: () => '"notag"',
      code: 65,
    },
    {
      name: 'a REPO:TAG with an invalid repository name',
      args: (d) => ['import', d.layout, 'Bad_Repo:1', '--root', d.root],
      names: () => '"Bad_Repo"',
      code: 65,
    },
    {
      name: 'a REPO:TAG with an invalid tag',
      args: (d) => ['import', d.layout, 'app:-x', '--root', d.root],
      names: () => '"-x"',
      code: 65,
    },
    {
      name: 'a bad --platform',
      args: (d) => ['import', d.layout, 'app:1', '--platform', 'linux', '--root', d.root],
      names: () => '"linux"',
      code: 64,
    },
    {
      name: 'a bad --grace-seconds',
      args: (d) => ['registry', 'gc', '--root', d.root, '--grace-seconds', 'soon'],
      names: () => '"soon"',
      code: 64,
    },
    {
      name: 'a bad --listen',
      args: (d) => ['registry', 'serve', '--root', d.root, '--listen', 'nowhere'],
      names: () => '"nowhere"',
      code: 64,
    },
    {
      name: 'serve without a root',
      args: () => ['registry', 'serve', '--listen', '127.0.0.1:0'],
      names: () => '--root',
      code: 64,
    },
    {
      name: 'an unknown option',
      args: (d) => ['import', d.layout, 'app:1', '--root', d.root, '--frobnicate'],
      names: () => '--frobnicate',
      code: 64,
    },
    {
      name: 'a missing argument',
      args: (d) => ['import', d.layout, '--root', d.root],
      names: () => 'target',
      code: 64,
    },
    {
      name: 'an unknown command',
      args: () => ['frobnicate'],
      names: () => 'frobnicate',
      code: 64,
    },
  ];
  for (const c of badCases) {
    it(`exits non-zero with one "cairn:" line naming ${c.name}`, async () => {
      const tmp = await testTempDir();
      const { path: layout } = await layoutOf(smallImage);
      const d = { root: join(tmp, 'root'), layout, missing: join(tmp, 'no-such-image') };
      const r = await cairn(c.args(d));
      expect(r.code).not.toBe(0);
      expect(r.signal).toBeNull();
      expect(r.stdout).toBe('');
      const lines = r.stderr.replace(/\n$/, '').split('\n');
      expect(lines, `stderr: ${JSON.stringify(r.stderr)}`).toHaveLength(1);
      expect(lines[0]).toMatch(/^cairn: /);
      expect(lines[0]).toContain(c.names(d));
      expect(r.code).toBe(c.code);
    });
  }
});

describe('cairn CLI: import, stats, ls', () => {
  it('import --json prints the image: digest, platform, layers with recipes and diff_ids', async () => {
    const root = join(await testTempDir(), 'root');
    const image: ImageInput = {
      ref: 'app:1',
      layers: [
        layer([dir('etc'), file('etc/hostname', 'app\n')], 'gzip'),
        layer([dir('app'), file('app/main.js', 'console.log(1)\n'), symlink('app/index.js', 'main.js')], 'none'),
      ],
    };
    const { path, written } = await layoutOf(image);
    const r = await cairn(['import', `${path}:app:1`, 'lib/app:1', '--root', root, '--json']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toBe('');
    const out = JSON.parse(r.stdout) as ImportJson;
    expect(out).toMatchObject({
      repository: 'lib/app',
      tag: '1',
      digest: written.manifestDigest,
      platform: 'linux/amd64',
      entries: 5,
      files: 2,
      newFiles: 2,
    });
    expect(out.layers.map((l) => l.diffId)).toEqual(written.layers.map((l) => l.diffId));
    expect(out.layers.map((l) => l.entries)).toEqual([2, 3]);
    for (const l of out.layers) {
      expect(l.recipe).toMatch(/^sha256:[0-9a-f]{64}$/);
      expect(l.newRecipe).toBe(true);
    }
    // Again: nothing new, same answer.
    const again = await cairnJson<ImportJson>(['import', `${path}:app:1`, 'lib/app:1', '--root', root]);
    expect(again.digest).toBe(out.digest);
    expect(again.newFiles).toBe(0);
    expect(again.layers.map((l) => l.recipe)).toEqual(out.layers.map((l) => l.recipe));
    expect(again.layers.every((l) => !l.newRecipe)).toBe(true);
  });

  it('registry stats --json counts shared files twice in fileBytes and once in storedBytes; ls lists the images', async () => {
    const root = join(await testTempDir(), 'root');
    const shared = pseudoRandom(100_000, 'shared');
    const base: FixtureEntry[] = [dir('etc'), file('etc/os-release', 'ID=fixture\n')];
    const one: FixtureEntry[] = [dir('data'), file('data/shared.bin', shared), file('data/one.txt', 'one\n')];
    const two: FixtureEntry[] = [
      dir('data'),
      file('data/shared.bin', shared),
      file('data/two.txt', 'two, two\n'),
      symlink('data/latest', 'shared.bin'),
    ];
    const a = await layoutOf({ ref: 'one:1', layers: [layer(base), layer(one)] });
    const b = await layoutOf({ ref: 'two:1', layers: [layer(base), layer(two, 'none')] });
    const empty = await cairnJson<RegistryStatsJson>(['registry', 'stats', '--root', root]);
    expect(withoutMetadataBytes(empty)).toEqual({
      images: 0,
      repositories: 0,
      tags: 0,
      layers: 0,
      entries: 0,
      files: 0,
      uniqueFiles: 0,
      fileBytes: 0,
      storedBytes: 0,
      dedupSavingPercent: 0,
      recipeBytes: 0,
      skeletonBytes: 0,
    });
    await cairnJson(['import', a.path, 'lib/one:1', '--root', root]);
    await cairnJson(['import', b.path, 'lib/two:1', '--root', root]);

    // Expected figures from the fixture: the base layer is the same in both images (one unique layer).
    const uniqueLayers = [base, one, two];
    const files = uniqueLayers.flat().filter((e) => e.header.type === 'file');
    const distinct = new Map(files.map((e) => [sha256(e.content!), e.content!.length]));
    const fileBytes = files.reduce((n, e) => n + e.content!.length, 0);
    const storedBytes = [...distinct.values()].reduce((n, s) => n + s, 0);
    expect(fileBytes - storedBytes).toBe(100_000);

    const s = await cairnJson<RegistryStatsJson>(['registry', 'stats', '--root', root]);
    for (const key of [
      'images',
      'layers',
      'entries',
      'files',
      'uniqueFiles',
      'fileBytes',
      'storedBytes',
      'dedupSavingPercent',
    ]) {
      expect(s, key).toHaveProperty(key);
    }
    expect(s).toMatchObject({
      images: 2,
      repositories: 2,
      tags: 2,
      layers: 3,
      entries: uniqueLayers.reduce((n, l) => n + l.length, 0),
      files: files.length,
      uniqueFiles: distinct.size,
      fileBytes,
      storedBytes,
    });
    expect(s.dedupSavingPercent).toBeCloseTo(100 * (1 - storedBytes / fileBytes), 2);
    expect(s.metadataBytes).toBeGreaterThan(0);
    expect(s.recipeBytes).toBeGreaterThan(0);
    expect(s.skeletonBytes).toBeGreaterThan(0);

    const ls = await cairnJson<LsJson[]>(['registry', 'ls', '--root', root]);
    expect(ls).toEqual([
      { repository: 'lib/one', tags: '1', digest: a.written.manifestDigest },
      { repository: 'lib/two', tags: '1', digest: b.written.manifestDigest },
    ]);

    // Text forms: one line per image for ls, the figures for stats, no terminal control codes.
    const lsText = await cairn(['registry', 'ls', '--root', root]);
    expect(lsText.stdout.trim().split('\n')).toEqual([
      `lib/one\t1\t${a.written.manifestDigest}`,
      `lib/two\t1\t${b.written.manifestDigest}`,
    ]);
    const statsText = await cairn(['registry', 'stats', '--root', root]);
    expect(statsText.code).toBe(0);
    expect(statsText.stdout).toMatch(/dedup saving\s+\d+\.\d %/);
    expect(statsText.stdout + statsText.stderr).not.toMatch(TERMINAL_CONTROL);
  });

  it('writes no progress escape codes when output is not a terminal (and does on a terminal)', async (ctx) => {
    const root = join(await testTempDir(), 'root');
    const entries: FixtureEntry[] = [dir('data')];
    for (let i = 0; i < 64; i++) entries.push(file(`data/f${i}`, pseudoRandom(64 * 1024, `p${i}`)));
    const { path } = await layoutOf({ ref: 'p:1', layers: [layer(entries, 'gzip')] });
    const r = await cairn(['import', path, 'lib/p:1', '--root', root]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^imported lib\/p:1 sha256:[0-9a-f]{64} \(linux\/amd64\)\n/);
    expect(r.stdout).not.toMatch(TERMINAL_CONTROL);
    expect(r.stderr).toBe('');

    // The control: on a pseudo-terminal (util-linux `script`) the same import draws its progress line.
    if (spawnSync('script', ['--version'], { stdio: 'ignore' }).error) {
      ctx.skip('script (util-linux) is not installed: the TTY control was not run');
    }
    const cmd = [process.execPath, CAIRN_BIN, 'import', path, 'lib/p:2', '--root', root]
      .map((a) => `'${a.replace(/'/g, `'\\''`)}'`)
      .join(' ');
    const tty = spawnSync('script', ['-qec', cmd, '/dev/null'], { env: cliEnv(), cwd: REPO_DIR, encoding: 'utf8' });
    if (tty.status !== 0 && /pseudo-?terminal|openpty|\bpty\b/i.test(`${tty.stderr}${tty.stdout}`)) {
      ctx.skip(`no pseudo-terminal available for the TTY control: ${tty.stderr.trim()}`);
    }
    expect(tty.status, tty.stderr).toBe(0);
    expect(tty.stdout).toContain('importing layer 1/1');
    expect(tty.stdout).toMatch(TERMINAL_CONTROL);
  });

  it('builds the sample image and imports it: cairn sample DIR, cairn import DIR:REF REF', async (ctx) => {
    if (!existsSync(DEFAULT_BUSYBOX)) ctx.skip(`${DEFAULT_BUSYBOX} is missing (apt-get install busybox-static)`);
    const tmp = await testTempDir();
    const dirPath = join(tmp, 'sample');
    const root = join(tmp, 'root');
    const s = await cairn(['sample', dirPath]);
    expect(s.code, s.stderr).toBe(0);
    expect(s.stdout).toContain(dirPath);
    expect(existsSync(join(dirPath, 'index.json'))).toBe(true);
    const r = await cairn(['import', `${dirPath}:${SAMPLE_REF}`, SAMPLE_REF, '--root', root]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain(`imported ${SAMPLE_REF} sha256:`);
    const ls = await cairnJson<LsJson[]>(['registry', 'ls', '--root', root]);
    expect(ls.map((i) => [i.repository, i.tags])).toEqual([['sample/busybox', 'latest']]);
    const stats = await cairnJson<RegistryStatsJson>(['registry', 'stats', '--root', root]);
    expect(stats).toMatchObject({ images: 1, layers: 2 });
    // app/data.txt and its hardlink share one content; busybox is the biggest file.
    expect(stats.storedBytes).toBeGreaterThan(500_000);
  });
});

describe('cairn CLI: registry serve', () => {
  it('serves on --listen 127.0.0.1:0, logs its URL, answers /healthz and stops cleanly on SIGTERM', async () => {
    const root = join(await testTempDir(), 'root');
    const { path, written } = await layoutOf(smallImage);
    await cairnJson(['import', path, 'lib/small:1', '--root', root]);
    const { c, url, root: loggedRoot } = await serve(['--root', root, '--listen', '127.0.0.1:0']);
    expect(url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    expect(url).not.toMatch(/:0$/);
    expect(loggedRoot).toBe(root);
    const health = await fetchRaw(url, '/healthz');
    expect(health.status).toBe(200);
    expect(health.json()).toEqual({ status: 'ok' });
    const img = await fetchRaw(url, '/api/v1/repositories/lib/small/images/1');
    expect(img.json<{ digest: string }>().digest).toBe(written.manifestDigest);
    expect(c.stdout()).toBe('');
    const r = await stop(c);
    const lines = logLines(r.stderr);
    expect(lines.map((l) => l.msg)).toEqual(['listening', 'stopping']);
    expect(lines[1]).toMatchObject({ level: 'info', signal: 'SIGTERM' });
    await expect(fetchRaw(url, '/healthz')).rejects.toThrow(/ECONNREFUSED/);
  });

  it('--workers 2: two processes share the socket, /metrics sums both, a killed worker is replaced, SIGTERM stops all', async () => {
    const root = join(await testTempDir(), 'root');
    const { path } = await layoutOf(smallImage);
    await cairnJson(['import', path, 'lib/small:1', '--root', root]);
    const { c, url } = await serve(['--root', root, '--listen', '127.0.0.1:0', '--workers', '2']);
    const workers = (): number[] => childPids(c.child.pid ?? -1);
    expect(workers()).toHaveLength(2);
    const digest = sha256(Buffer.from('small\n'));
    // One connection each: the primary deals connections round-robin, so each worker
    // serves about half, and a /metrics that were not the sum would show about 20.
    const bodies = await Promise.all(Array.from({ length: 40 }, () => fetchRaw(url, `/api/v1/files/${digest}`)));
    expect(bodies.every((b) => b.status === 200 && b.text() === 'small\n')).toBe(true);
    const metrics = parsePrometheusText((await fetchRaw(url, '/metrics')).text());
    const files = metrics.samples.find(
      (x) => x.name === 'cairn_registry_http_requests_total' && x.labels.route === 'file',
    );
    expect(files?.value).toBe(40);

    // A worker killed outright is replaced; the server keeps answering.
    const [victim] = workers();
    process.kill(victim as number, 'SIGKILL');
    await waitUntil(() => workers().length === 2 && !workers().includes(victim as number), 10_000);
    expect((await fetchRaw(url, '/healthz')).status).toBe(200);
    expect(logLines(c.stderr()).some((l) => l.msg === 'worker died; starting another')).toBe(true);

    const survivors = workers();
    await stop(c);
    for (const pid of survivors) expect(() => process.kill(pid, 0)).toThrow();
    await expect(fetchRaw(url, '/healthz')).rejects.toThrow(/ECONNREFUSED/);

    const bad = await cairn(['registry', 'serve', '--root', root, '--workers', 'many']);
    expect(bad.code).toBe(64);
    expect(bad.stderr).toMatch(/^cairn: --workers: "many" is not auto or an integer/);
  });

  it('takes root and listen from a config file, the environment over it, and options over both', async () => {
    const tmp = await testTempDir();
    const fileRoot = join(tmp, 'file-root');
    const envRoot = join(tmp, 'env-root');
    const cliRoot = join(tmp, 'cli-root');
    const config = join(tmp, 'cairn.json');
    await writeFile(config, JSON.stringify({ root: fileRoot, listen: '127.0.0.1:0' }));

    // The config file alone.
    let s = await serve(['--config', config]);
    expect(s.root).toBe(fileRoot);
    expect((await fetchRaw(s.url, '/healthz')).status).toBe(200);
    await stop(s.c);

    // The environment over the file (the file's listen would fail if it were used).
    await writeFile(config, JSON.stringify({ root: fileRoot, listen: 'not-an-address' }));
    s = await serve(['--config', config], { env: { CAIRN_ROOT: envRoot, CAIRN_LISTEN: '127.0.0.1:0' } });
    expect(s.root).toBe(envRoot);
    expect((await fetchRaw(s.url, '/healthz')).status).toBe(200);
    await stop(s.c);

    // Options over the environment and the file.
    s = await serve(['--config', config, '--root', cliRoot, '--listen', '127.0.0.1:0'], {
      env: { CAIRN_ROOT: envRoot, CAIRN_LISTEN: 'also-not-an-address' },
    });
    expect(s.root).toBe(cliRoot);
    expect((await fetchRaw(s.url, '/healthz')).status).toBe(200);
    await stop(s.c);
    expect(existsSync(join(cliRoot, 'registry.db'))).toBe(true);

    // A config file with an unknown key is refused, naming it.
    await writeFile(config, JSON.stringify({ root: fileRoot, listen: '127.0.0.1:0', port: 5000 }));
    const bad = await cairn(['registry', 'serve', '--config', config]);
    expect(bad.code).toBe(64);
    expect(bad.stderr.trim().split('\n')).toHaveLength(1);
    expect(bad.stderr).toMatch(/^cairn: .*"port"/);

    // The other commands honour CAIRN_ROOT, and --root wins over it.
    const { path } = await layoutOf(smallImage);
    const imported = await cairn(['import', path, 'lib/small:1'], { env: { CAIRN_ROOT: envRoot } });
    expect(imported.code, imported.stderr).toBe(0);
    expect(existsSync(join(envRoot, 'registry.db'))).toBe(true);
    const fromEnv = await cairnJson<RegistryStatsJson>(['registry', 'stats'], { env: { CAIRN_ROOT: envRoot } });
    expect(fromEnv.images).toBe(1);
    const ls = await cairnJson<LsJson[]>(['registry', 'ls'], { env: { CAIRN_ROOT: envRoot } });
    expect(ls.map((i) => i.repository)).toEqual(['lib/small']);
    const overridden = await cairnJson<RegistryStatsJson>(['registry', 'stats', '--root', cliRoot], {
      env: { CAIRN_ROOT: envRoot },
    });
    expect(overridden.images).toBe(0);
  });

  it('serves a tag that separate `cairn import` processes re-point as one image or the other, never a mix', async () => {
    const root = join(await testTempDir(), 'root');
    const base = [dir('usr'), dir('usr/lib'), file('usr/lib/libbase.so', pseudoRandom(300_000, 'base'))];
    const many = (tag: string, n: number): FixtureEntry[] => [
      dir(tag),
      ...Array.from({ length: n }, (_, i) => file(`${tag}/f${i}`, pseudoRandom(4_000 + i, `${tag}${i}`))),
    ];
    const a = await layoutOf({ ref: 'a', layers: [layer(base), layer(many('a', 30))] });
    const b = await layoutOf({ ref: 'b', layers: [layer(base), layer(many('b1', 20), 'none'), layer(many('b2', 10))] });
    const expected = new Map([
      [a.written.manifestDigest, a.written.layers.map((l) => l.diffId)],
      [b.written.manifestDigest, b.written.layers.map((l) => l.diffId)],
    ]);
    const setup = await RegistryStore.open(root);
    try {
      await importImage(setup, b.path, 'app:b');
      await importImage(setup, a.path, 'app:latest');
    } finally {
      setup.close();
    }
    const { c, url } = await serve(['--root', root, '--listen', '127.0.0.1:0']);

    const seen = new Map<string, number>();
    let done = false;
    let requests = 0;
    const check = async (): Promise<void> => {
      const res = await fetchRaw(url, '/api/v1/repositories/app/images/latest');
      expect(res.status, res.text()).toBe(200);
      const img = res.json<{ digest: Digest; layers: { diffId: Digest }[] }>();
      expect(expected.has(img.digest), `unexpected image ${img.digest}`).toBe(true);
      expect(img.layers.map((l) => l.diffId)).toEqual(expected.get(img.digest));
      seen.set(img.digest, (seen.get(img.digest) ?? 0) + 1);
    };
    const client = async (): Promise<void> => {
      while (!done || requests < 200) {
        requests++;
        await check();
      }
    };
    const imports = (async () => {
      try {
        for (let i = 0; i < 5; i++) {
          const src = i % 2 === 0 ? b.path : a.path;
          const r = await cairn(['import', src, 'app:latest', '--root', root]);
          expect(r.code, r.stderr).toBe(0);
        }
      } finally {
        done = true;
      }
    })();
    await Promise.all([imports, ...Array.from({ length: 4 }, () => client())]);
    await check();
    expect(requests).toBeGreaterThanOrEqual(200);
    expect(seen.get(a.written.manifestDigest) ?? 0).toBeGreaterThan(0);
    expect(seen.get(b.written.manifestDigest) ?? 0).toBeGreaterThan(0);
    const last = await fetchRaw(url, '/api/v1/repositories/app/images/latest');
    expect(last.json<{ digest: string }>().digest).toBe(b.written.manifestDigest);
    const r = await stop(c);
    expect(logLines(r.stderr).filter((l) => l.level === 'error')).toEqual([]);
  });
});

describe('cairn CLI: a killed import and gc', () => {
  it('leaves the store as it was, and registry gc --grace-seconds 0 removes what it wrote', async () => {
    const tmp = await testTempDir();
    const root = join(tmp, 'root');
    const { path: smallPath } = await layoutOf(smallImage);
    expect((await cairn(['import', smallPath, 'lib/small:1', '--root', root])).code).toBe(0);
    const statsBefore = await cairnJson<RegistryStatsJson>(['registry', 'stats', '--root', root]);
    const lsBefore = await cairnJson<LsJson[]>(['registry', 'ls', '--root', root]);
    const filesBefore = await storeFiles(root);
    expect(filesBefore.blobs).toEqual(referencedContents(root));

    // About 200 MB of incompressible files in an uncompressed layer: the import takes a while.
    const entries: FixtureEntry[] = [dir('big')];
    for (let i = 0; i < 256; i++) entries.push(file(`big/f${String(i).padStart(3, '0')}`, randomBytes(800 * 1024)));
    const big = join(tmp, 'big');
    await writeOciLayout(big, [{ ref: 'big:1', layers: [layer(entries, 'none')] }]);

    const child = spawnCairn(['import', big, 'lib/big:1', '--root', root]);
    const deadline = Date.now() + 30_000;
    for (;;) {
      const now = await storeFiles(root);
      if (now.tmp.length > 0 || [...now.blobs].some((d) => !filesBefore.blobs.has(d))) break;
      if (child.child.exitCode !== null) throw new Error(`import ended before it was killed: ${child.stderr()}`);
      if (Date.now() > deadline) throw new Error('the import wrote nothing in 30 s');
      await new Promise((r) => setTimeout(r, 10));
    }
    child.child.kill('SIGKILL');
    const killed = await child.exited;
    expect(killed.signal, 'the import finished before it was killed').toBe('SIGKILL');

    const after = await storeFiles(root);
    const strays = [...after.blobs].filter((d) => !filesBefore.blobs.has(d));
    expect(strays.length + after.tmp.length, 'the killed import left files behind').toBeGreaterThan(0);
    // Nothing it wrote is visible: same images, same figures.
    const statsAfter = await cairnJson<RegistryStatsJson>(['registry', 'stats', '--root', root]);
    expect(withoutMetadataBytes(statsAfter)).toEqual(withoutMetadataBytes(statsBefore));
    expect(await cairnJson<LsJson[]>(['registry', 'ls', '--root', root])).toEqual(lsBefore);

    // A dry run reports and removes nothing.
    const dry = await cairnJson<{ removedBlobs: number; removedTemp: number }>([
      'registry',
      'gc',
      '--root',
      root,
      '--grace-seconds',
      '0',
      '--dry-run',
    ]);
    expect(dry).toMatchObject({ removedBlobs: strays.length, removedTemp: after.tmp.length });
    expect((await storeFiles(root)).blobs.size).toBe(after.blobs.size);
    // With the default grace period the fresh strays are kept (an import might still be writing them).
    const graced = await cairnJson<{ removedBlobs: number; removedTemp: number }>(['registry', 'gc', '--root', root]);
    expect(graced).toMatchObject({ removedBlobs: 0, removedTemp: 0 });

    const gc = await cairnJson<{ scanned: number; removedBlobs: number; removedBytes: number; removedTemp: number }>([
      'registry',
      'gc',
      '--root',
      root,
      '--grace-seconds',
      '0',
    ]);
    expect(gc).toMatchObject({ scanned: after.blobs.size, removedBlobs: strays.length, removedTemp: after.tmp.length });
    expect(gc.removedBytes).toBeGreaterThanOrEqual(strays.length * 800 * 1024);
    const final = await storeFiles(root);
    expect(final.blobs).toEqual(referencedContents(root));
    expect(final.blobs).toEqual(filesBefore.blobs);
    expect(final.tmp).toEqual([]);
    const statsFinal = await cairnJson<RegistryStatsJson>(['registry', 'stats', '--root', root]);
    expect(withoutMetadataBytes(statsFinal)).toEqual(withoutMetadataBytes(statsBefore));
    // And the store still works.
    const again = await cairn(['import', smallPath, 'lib/small:2', '--root', root]);
    expect(again.code, again.stderr).toBe(0);
  });
});
