/**
 * The daemon's live metrics as a user sees them: `cairn mount --metrics
 * HOST:PORT` (port 0) over a real registry server on a loopback port, name
 * lookups on the real FUSE mount from this process (fs/promises: the daemon is
 * another process), the Prometheus text scraped over HTTP and parsed strictly,
 * `cairn stats --json` (depthFit, daemonDepthFit) and `--export-cost-model`.
 *
 * The image has files only in known layers, so every lookup's depth is known.
 * The kernel keeps names and attributes (long entry/attr timeouts) and does
 * not keep misses: each name is looked up once here, so one stat() of a new
 * name is one FUSE getattr, and a miss is one getattr every time.
 *
 * Needs root and FUSE; skipped (saying why) otherwise.
 */
import { costFrom } from '../../src/registry/reconstruct.js';
import { beforeAll, describe, expect, it, type TestContext } from 'vitest';
import { existsSync } from 'node:fs';
import { open, readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { ImageInput } from '../../src/image/layout-writer.js';
import { parseCostModel } from '../../src/metrics/cost-model.js';
import type { DepthFitResult } from '../../src/metrics/depth-fit.js';
import { sha256 } from '../../src/model/digest.js';
import { file, layer } from '../fixtures/layers.js';
import {
  cleanUpAfterTests,
  daemonPid,
  hashFile,
  Janitor,
  probeMounts,
  testMountDir,
  waitForExit,
  type TestMountDir,
} from '../fixtures/mount.js';
import {
  fetchRaw,
  importFixtureImage,
  parsePrometheusText,
  pseudoRandom,
  startRegistry,
  type PromExposition,
  type RunningRegistry,
} from '../fixtures/registry.js';
import { makeTempDir, type TempDir } from '../fixtures/tmp.js';
import { cairn, cairnJson, ensureBuilt, REPO_DIR, type CliResult } from './cli-harness.js';

const MARKER = 'cairn-e2e-metrics-';
const janitor = new Janitor(MARKER);

/** Layers bottom to top; the layer at depth d (1 = top) holds names `d<d>-<i>` only. */
const LAYERS = 6;
const NAMES_PER_LAYER = 12;
const depthOfLayer = (index: number): number => LAYERS - index;
const big = pseudoRandom(300_000, 'metrics big file');
const IMAGE: ImageInput = {
  layers: Array.from({ length: LAYERS }, (_, index) => {
    const d = depthOfLayer(index);
    const files = Array.from({ length: NAMES_PER_LAYER }, (_, i) => file(`d${d}-${i}`, `depth ${d} file ${i}\n`));
    // Content to read, three layers down.
    if (d === 3) files.push(file('big.bin', big));
    return layer(files);
  }),
};

interface Stats {
  mountpoint: string;
  digest: string;
  lookup: string;
  depthFit: DepthFitResult;
  daemonDepthFit: DepthFitResult;
  metricsUrl?: string;
}

let skipReason: string | undefined;
let base: TempDir | undefined;
let registry: RunningRegistry | undefined;

beforeAll(async () => {
  skipReason = await probeMounts(MARKER);
  if (skipReason) return;
  ensureBuilt();
  base = await makeTempDir(MARKER);
  registry = await startRegistry(join(base.path, 'registry'), { closeAfterTest: false });
  await importFixtureImage(registry.store, { image: IMAGE, target: 'depths/six:1' });
}, 120_000);

cleanUpAfterTests(janitor, async () => {
  await registry?.close();
  await base?.cleanup();
});

interface Env extends TestMountDir {
  cli(args: string[]): Promise<CliResult>;
  mount(mnt: string, ...extra: string[]): Promise<void>;
  stats(mnt: string): Promise<Stats>;
  scrape(mnt: string): Promise<PromExposition>;
}

async function setup(ctx: TestContext): Promise<Env> {
  if (skipReason) ctx.skip(skipReason);
  const t = await testMountDir(janitor);
  const state = t.state;
  const env: Env = {
    ...t,
    cli: (args) => cairn([...args, '--state-dir', state]),
    async mount(mnt, ...extra) {
      const r = await env.cli([
        'mount',
        registry?.url ?? '',
        'depths/six:1',
        mnt,
        '--metrics',
        '127.0.0.1:0',
        ...extra,
      ]);
      expect(r.code, r.stderr).toBe(0);
      await janitor.pid(await daemonPid(state));
    },
    stats: (mnt) => cairnJson<Stats>(['stats', mnt, '--state-dir', state]),
    async scrape(mnt) {
      const url = (await env.stats(mnt)).metricsUrl;
      expect(url).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/metrics$/);
      const u = new URL(url as string);
      const res = await fetchRaw(u.origin, u.pathname);
      expect(res.status).toBe(200);
      expect(res.headers['content-type']).toMatch(/^text\/plain; version=0\.0\.4/);
      return parsePrometheusText(res.text());
    },
  };
  return env;
}

const DURATION = 'cairn_fs_operation_duration_seconds';

/** `_count` of the duration histogram by depth label, for one operation (and source). */
function countsByDepth(e: PromExposition, operation: string, source?: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const s of e.samples) {
    if (s.name !== `${DURATION}_count` || s.labels.operation !== operation) continue;
    if (source !== undefined && s.labels.source !== source) continue;
    const d = s.labels.depth as string;
    out.set(d, (out.get(d) ?? 0) + s.value);
  }
  return out;
}

/** after - before, keeping only the labels that changed. */
function delta(before: Map<string, number>, after: Map<string, number>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [k, v] of after) if (v !== (before.get(k) ?? 0)) out[k] = v - (before.get(k) ?? 0);
  return out;
}

type ReadCounts = Record<'network' | 'disk' | 'memory' | 'none', number>;

/** Reads counted so far, by source, over every depth. */
function readCounts(e: PromExposition): ReadCounts {
  const total = (src: string): number => [...countsByDepth(e, 'read', src).values()].reduce((a, b) => a + b, 0);
  return { network: total('network'), disk: total('disk'), memory: total('memory'), none: total('none') };
}

/** The metric names documented in README.md's daemon metrics table. */
async function documentedMetrics(): Promise<string[]> {
  const readme = await readFile(join(REPO_DIR, 'README.md'), 'utf8');
  const start = readme.indexOf('### Daemon metrics');
  expect(start, 'README.md has a "### Daemon metrics" section').toBeGreaterThan(0);
  const section = readme.slice(start, readme.indexOf('\n## ', start));
  return [...section.matchAll(/^\| `(cairn_[a-z0-9_]+)(?:\{[^`]*\})?` \|/gm)].map((m) => m[1] as string);
}

describe('cairn mount --metrics: lookups by depth', () => {
  it.for(['stacked', 'flat'])(
    '--lookup %s: each lookup is one sample under its layer depth; misses under "none"; the fit counts them',
    async (mode, ctx) => {
      const e = await setup(ctx);
      const mnt = await e.mkdir('mnt');
      await e.mount(mnt, '--lookup', mode);
      const before = await e.scrape(mnt);
      const statsBefore = await e.stats(mnt);
      expect(statsBefore.lookup).toBe(mode);

      // At depth d, look up d + 1 distinct names (so every depth has its own count), and names that do not exist.
      const expected: Record<string, number> = {};
      for (let d = 1; d <= LAYERS; d++) {
        for (let i = 0; i <= d; i++) expect((await stat(join(mnt, `d${d}-${i}`))).size).toBeGreaterThan(0);
        expected[String(d)] = d + 1;
      }
      // A miss is kept by the kernel (negative_timeout: an immutable image never gains a name),
      // so the same missing name again reaches no one: three distinct misses, three lookups.
      for (const name of ['missing-0', 'missing-1', 'missing-2', 'missing-0', 'missing-1'])
        await expect(stat(join(mnt, name))).rejects.toThrow(/ENOENT/);
      expected.none = 3;

      const after = await e.scrape(mnt);
      expect(delta(countsByDepth(before, 'getattr'), countsByDepth(after, 'getattr'))).toEqual(expected);
      for (const s of after.samples.filter((x) => x.name === `${DURATION}_count` && x.labels.operation === 'getattr'))
        expect(s.labels.source).toBe('metadata');

      // The mount's fit is over exactly those lookups that found a name; the daemon's too (its only mount).
      const stats = await e.stats(mnt);
      const found = Object.entries(expected).reduce((n, [d, c]) => n + (d === 'none' ? 0 : c), 0);
      expect(stats.depthFit.n - statsBefore.depthFit.n).toBe(found);
      expect(stats.daemonDepthFit.n).toBe(stats.depthFit.n);
      for (const f of [stats.depthFit, stats.daemonDepthFit]) {
        expect(Number.isFinite(f.a) && Number.isFinite(f.b)).toBe(true);
        expect(f.r2).toBeGreaterThanOrEqual(0);
        expect(f.r2).toBeLessThanOrEqual(1);
      }
      const gauge = (name: string, mount: string): number | undefined =>
        after.samples.find((s) => s.name === name && s.labels.mount === mount)?.value;
      expect(gauge('cairn_lookup_depth_fit_samples', mnt)).toBe(stats.depthFit.n);
      expect(gauge('cairn_lookup_depth_fit_samples', '*')).toBe(stats.daemonDepthFit.n);
      expect(gauge('cairn_lookup_depth_slope_seconds', mnt)).toBeCloseTo(stats.depthFit.a, 12);

      // The cost model: this mount's fit, in the format the reconstruction reads.
      const out = join(e.dir, 'cost-model.json');
      const r = await e.cli(['stats', mnt, '--export-cost-model', out, '--json']);
      expect(r.code, r.stderr).toBe(0);
      const shown = JSON.parse(r.stdout) as Stats & { exportedCostModel: { file: string } };
      expect(shown.exportedCostModel.file).toBe(out);
      const text = await readFile(out, 'utf8');
      const model = parseCostModel(text, out);
      const raw = JSON.parse(text) as Record<string, unknown>;
      expect(raw).toMatchObject({ kind: 'cairn.cost-model', version: 1, unit: 'seconds per lookup' });
      expect(raw.source).toBe(`mount ${mnt} (image ${stats.digest})`);
      expect(Date.now() - Date.parse(raw.measuredAt as string)).toBeLessThan(60_000);
      expect(model.n).toBe(shown.depthFit.n);
      expect(model.b).toBeCloseTo(Math.max(0, shown.depthFit.b), 12);
      expect(model.a).toBeCloseTo(Math.max(0, shown.depthFit.a), 12);
      expect(model.r2).toBeCloseTo(shown.depthFit.r2, 12);
      // The reconstruction takes its a and b from this very file (`--cost-model`, reconstruct.json's costModel).
      expect((await costFrom({ costModel: out })).cost).toMatchObject({ a: model.a, b: model.b });
      // Nothing but the file itself is left in the directory (the temp file was renamed).
      expect((await readdir(e.dir)).filter((n) => n.includes('cost'))).toEqual(['cost-model.json']);
    },
  );

  it('the Prometheus text parses, declares every metric the README documents, and the control socket is root-only', async (ctx) => {
    const e = await setup(ctx);
    const mnt = await e.mkdir('mnt');
    await e.mount(mnt);
    await stat(join(mnt, 'd2-0'));
    const expo = await e.scrape(mnt);
    const documented = await documentedMetrics();
    expect(documented.length).toBeGreaterThanOrEqual(15);
    const declared = [...expo.types.keys()].filter(
      (n) => n.startsWith('cairn_') && !n.startsWith('cairn_daemon_process') && !n.startsWith('cairn_daemon_nodejs'),
    );
    expect(declared.sort()).toEqual([...documented].sort());
    expect(expo.types.get(DURATION)).toBe('histogram');
    expect(expo.types.get('cairn_cache_hits_total')).toBe('counter');
    expect(expo.types.get('cairn_cache_bytes')).toBe('gauge');
    expect(expo.samples.find((s) => s.name === 'cairn_daemon_mounts')?.value).toBe(1);
    // A histogram's buckets are cumulative and end at +Inf = _count.
    const series = expo.samples.filter(
      (s) => s.name === `${DURATION}_bucket` && s.labels.operation === 'getattr' && s.labels.depth === '2',
    );
    expect(series.at(-1)?.labels.le).toBe('+Inf');
    for (let i = 1; i < series.length; i++) expect(series[i]?.value).toBeGreaterThanOrEqual(series[i - 1]?.value ?? 0);
    const count = expo.samples.find(
      (s) => s.name === `${DURATION}_count` && s.labels.operation === 'getattr' && s.labels.depth === '2',
    );
    expect(series.at(-1)?.value).toBe(count?.value);

    // Other paths and methods of the listener.
    const u = new URL((await e.stats(mnt)).metricsUrl as string);
    expect((await fetchRaw(u.origin, '/')).status).toBe(404);
    expect((await fetchRaw(u.origin, '/metrics', { method: 'POST' })).status).toBe(405);

    // A second mount reaching the running daemon with another address: mounted, and told the listener stays.
    const second = await e.mkdir('second');
    const other = Number(u.port) === 65535 ? 65534 : Number(u.port) + 1;
    const r = await e.cli(['mount', registry?.url ?? '', 'depths/six:1', second, '--metrics', `127.0.0.1:${other}`]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toBe(
      `cairn: warning: --metrics 127.0.0.1:${other} ignored: the daemon already runs, serving metrics at ${u.href}\n`,
    );
    expect((await e.stats(second)).metricsUrl).toBe(u.href);

    // The control channel: a socket only root can open, in a directory only root can enter.
    expect((await stat(join(e.state, 'daemon.sock'))).mode & 0o777).toBe(0o600);
    expect((await stat(e.state)).mode & 0o777).toBe(0o700);
  });
});

describe('cairn mount --metrics: opens', () => {
  it('opens are timed by depth only with --time-opens; without it libfuse answers them and none is counted', async (ctx) => {
    const e = await setup(ctx);
    const timed = await e.mkdir('timed');
    await e.mount(timed, '--time-opens');
    const plain = await e.mkdir('plain');
    await e.mount(plain);
    const before = await e.scrape(timed);
    const openAll = async (mnt: string): Promise<void> => {
      for (let d = 1; d <= LAYERS; d++) {
        for (let i = 0; i < d; i++) {
          const fh = await open(join(mnt, `d${d}-${i}`), 'r');
          await fh.close();
        }
      }
    };
    await openAll(timed);
    await openAll(plain);
    // A missing name fails at its lookup, before any open.
    await expect(open(join(timed, 'missing'), 'r')).rejects.toThrow(/ENOENT/);
    const after = await e.scrape(timed);
    const expected: Record<string, number> = {};
    // The daemon serves both mounts: only the timed one's opens (d at depth d) are there.
    for (let d = 1; d <= LAYERS; d++) expected[String(d)] = d;
    expect(delta(countsByDepth(before, 'open'), countsByDepth(after, 'open'))).toEqual(expected);
    // Each open was a file the kernel had looked up first: the fit of the timed mount counts both.
    const stats = await e.stats(timed);
    const opens = Object.values(expected).reduce((a, b) => a + b, 0);
    expect(stats.depthFit.n).toBe(2 * opens);
    expect((await e.stats(plain)).depthFit.n).toBe(opens);
  });
});

describe('cairn mount --metrics: where reads come from', () => {
  it('first read from the network, again from memory; with --cache-dir, a new daemon reads it from disk', async (ctx) => {
    const e = await setup(ctx);
    const mnt = await e.mkdir('mnt');
    const cacheDir = await e.mkdir('cache');
    await e.mount(mnt, '--cache-dir', cacheDir);
    const path = join(mnt, 'big.bin');

    const r0 = readCounts(await e.scrape(mnt));
    expect(await hashFile(path)).toMatchObject({ digest: sha256(big) });
    const r1 = readCounts(await e.scrape(mnt));
    expect(r1.network - r0.network).toBeGreaterThanOrEqual(1);
    expect(r1.disk - r0.disk).toBe(0);
    expect(r1.none - r0.none).toBe(0);
    // Read again, its pages dropped from the kernel's cache: the daemon's memory tier answers.
    expect(await hashFile(path)).toMatchObject({ digest: sha256(big) });
    const r2 = readCounts(await e.scrape(mnt));
    expect(r2.memory - r1.memory).toBeGreaterThanOrEqual(1);
    expect(r2.network - r1.network).toBe(0);
    expect(r2.disk - r1.disk).toBe(0);
    // Reads carry the depth of the layer the file was opened from.
    const readDepths = countsByDepth(await e.scrape(mnt), 'read');
    expect([...readDepths.keys()]).toEqual(['3']);
    const served = (await e.scrape(mnt)).samples.find((s) => s.name === 'cairn_fs_bytes_served_total')?.value;
    expect(served).toBeGreaterThanOrEqual(2 * big.length);

    // A new daemon: its memory tier is empty, the disk tier still has the content.
    const pid = await daemonPid(e.state);
    expect((await e.cli(['unmount', mnt])).code).toBe(0);
    expect(await waitForExit(pid as number)).toBe(true);
    await e.mount(mnt, '--cache-dir', cacheDir);
    const r3 = readCounts(await e.scrape(mnt));
    expect(r3).toEqual({ network: 0, disk: 0, memory: 0, none: 0 });
    expect(await hashFile(path)).toMatchObject({ digest: sha256(big) });
    const after = await e.scrape(mnt);
    const r4 = readCounts(after);
    expect(r4.disk).toBeGreaterThanOrEqual(1);
    expect(r4.network).toBe(0);
    const value = (name: string, tier?: string): number | undefined =>
      after.samples.find((s) => s.name === name && (tier === undefined || s.labels.tier === tier))?.value;
    expect(value('cairn_fetch_bytes_total')).toBe(0);
    expect(value('cairn_cache_hits_total', 'disk')).toBeGreaterThanOrEqual(1);
    expect(value('cairn_cache_misses_total', 'memory')).toBeGreaterThanOrEqual(1);
  });
});

describe('cairn mount --metrics: bad input', () => {
  it('an address that is not HOST:PORT is refused, naming the option; nothing starts', async (ctx) => {
    const e = await setup(ctx);
    const mnt = await e.mkdir('mnt');
    for (const bad of ['nonsense', '127.0.0.1:70000', '127.0.0.1:']) {
      const r = await e.cli(['mount', registry?.url ?? '', 'depths/six:1', mnt, '--metrics', bad]);
      expect(r.code, r.stderr).toBe(64);
      expect(r.stderr).toBe(`cairn: --metrics: ${JSON.stringify(bad)} is not HOST:PORT\n`);
      const d = await e.cli(['daemon', '--metrics', bad]);
      expect(d.code).toBe(64);
      expect(d.stderr).toContain('--metrics');
    }
    expect(existsSync(join(e.state, 'daemon.sock'))).toBe(false);
  });

  it("an address in use: the mount fails at once with the daemon's reason, and no daemon stays", async (ctx) => {
    const e = await setup(ctx);
    const mnt = await e.mkdir('mnt');
    await e.mount(mnt);
    const taken = new URL((await e.stats(mnt)).metricsUrl as string).port;
    const other = await e.mkdir('other');
    const state2 = janitor.stateDir(join(e.dir, 'state2'));
    const started = Date.now();
    const r = await cairn([
      'mount',
      registry?.url ?? '',
      'depths/six:1',
      other,
      '--metrics',
      `127.0.0.1:${taken}`,
      '--state-dir',
      state2,
    ]);
    expect(r.code, r.stderr).toBe(69);
    expect(r.stderr).toMatch(
      new RegExp(
        `^cairn: the daemon exited at start: --metrics 127\\.0\\.0\\.1:${taken}: cannot listen: EADDRINUSE\\n$`,
      ),
    );
    expect(Date.now() - started).toBeLessThan(10_000);
    expect(await daemonPid(state2)).toBeUndefined();
  });

  it('--export-cost-model refuses a fit with lookups at one depth only, and writes nothing', async (ctx) => {
    const e = await setup(ctx);
    const mnt = await e.mkdir('mnt');
    await e.mount(mnt);
    // Only names of the top layer: a single depth.
    for (let i = 0; i < 4; i++) await stat(join(mnt, `d1-${i}`));
    const out = join(e.dir, 'model.json');
    const r = await e.cli(['stats', mnt, '--export-cost-model', out]);
    expect(r.code).toBe(65);
    expect(r.stderr).toMatch(
      new RegExp(
        `^cairn: mount ${mnt} \\(image sha256:[0-9a-f]{64}\\): cannot fit .* at only depth 1: it needs at least 3 lookups at two or more depths`,
      ),
    );
    expect(existsSync(out)).toBe(false);
    // A second depth makes it fittable.
    await stat(join(mnt, 'd4-0'));
    expect((await e.cli(['stats', mnt, '--export-cost-model', out])).code).toBe(0);
    expect(parseCostModel(await readFile(out, 'utf8'), out).n).toBeGreaterThanOrEqual(5);
  });
});
