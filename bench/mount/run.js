#!/usr/bin/env node
// Benchmarks of `cairn mount` (the lazy FUSE view of an image), against the project's targets:
//
//   mounttime  time from `cairn mount` (CLI invocation) to the first byte of a file read by a
//              child (`head -c1`), synthetic images of 1k/10k/100k entries, with a daemon the
//              mount starts (cold) and with one already running (warm); plus daemon heap per
//              entry (bench/mount/heap-probe.js). Targets: 100k entries < 1 s; < 300 B/entry.
//   coldstart  real corpus images (bench/corpus), empty caches: (A) pull every blob over
//              loopback HTTP (nginx serving the corpus OCI layout) + unpack with tar and
//              whiteouts + chroot run, vs (B) `cairn mount --writable` from a cairn registry +
//              chroot run; umoci unpack as a reference. Target: B >= 5x faster; cairn fetches
//              < 15 % of the image.
//   read       warm sequential MB/s of a 256 MiB file and cold lstat+open+close files/s over
//              10k small files: native ext4, kernel overlayfs over the extracted layers, cairn.
//              Target: cairn warm >= 0.8x native.
//
//   node bench/mount/run.js [mounttime|coldstart|read|all] [--runs 5] [--corpus /var/tmp/cairn-corpus]
//        [--images REPO:TAG,...] [--sizes 1000,10000,100000] [--umoci-runs 3] [--out bench/results/mount]
//
// Needs root (FUSE, overlayfs, chroot, drop_caches). Writes results.json, results.md and SVG
// plots to --out; a run of one sub-bench keeps the other sub-benches' results already there.
// Every mount is made and read by child processes: this process never serves FUSE and never
// touches a mounted path itself. Whatever it mounts or starts is unmounted and stopped at the
// end, on failure too, and on SIGINT/SIGTERM.
import { spawn } from 'node:child_process';
import { randomFillSync } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { lineChart } from '../lib/svg.js';
import { barChart } from './plot.js';
import { pullAndUnpack } from './pull.js';
import { syntheticLayers, writeLayout } from './synth.js';
import {
  CAIRN,
  CHROOT_PATH,
  Cleanup,
  DIST,
  REPO,
  cairnMount,
  cairnStats,
  childEnv,
  cleanupOnSignals,
  dropCaches,
  forceUnmount,
  freePort,
  machineInfo,
  now,
  procMounts,
  progress,
  removeTree,
  rssOf,
  run,
  runChecked,
  median,
  setProgressPrefix,
  sleep,
  snapshotBuild,
  startDaemon,
  startRegistry,
  summary,
  waitExit,
} from '../lib/bench.js';

{
  const i = process.argv.indexOf('--progress-name');
  setProgressPrefix(i >= 0 ? process.argv[i + 1] : 'mount');
}

// ---- options ------------------------------------------------------------------------------

const SUBS = ['mounttime', 'coldstart', 'read'];
const argv = process.argv.slice(2);
const opt = (name, def) => {
  const i = argv.indexOf(name);
  return i >= 0 ? argv[i + 1] : def;
};
const positional = argv.filter((a, i) => !a.startsWith('--') && !(i > 0 && argv[i - 1].startsWith('--')));
if (argv.includes('--help') || argv.includes('-h')) {
  process.stdout.write(
    `${[
      'usage: node bench/mount/run.js [mounttime|coldstart|read|all] [options]',
      '  --runs N             runs per measurement (default 5)',
      '  --corpus DIR         the corpus of real images (default /var/tmp/cairn-corpus)',
      '  --images LIST        coldstart cases: REF runs its commands.json command, REF+serve a server',
      '                       until its readiness line (known: app/web:1, lang/python:3.11-b)',
      '  --umoci-runs N       pull+umoci reference runs (default 3)',
      '  --variant-runs N     coldstart diagnostic variants (default 3)',
      '  --sizes LIST         mounttime image sizes in entries (default 1000,10000,100000)',
      '  --big-mib N          read: size of the large file (default 256)',
      '  --small-files N      read: small files measured (default 10000)',
      '  --work DIR           work directory (default /var/tmp)',
      '  --out DIR            results directory (default bench/results/mount)',
    ].join('\n')}\n`,
  );
  process.exit(0);
}
const which = positional[0] ?? 'all';
if (![...SUBS, 'all'].includes(which)) {
  process.stderr.write(`usage: node bench/mount/run.js [${SUBS.join('|')}|all] [options]\n`);
  process.exit(64);
}
const RUNS = Number(opt('--runs', '5'));
const corpus = opt('--corpus', '/var/tmp/cairn-corpus');
const out = opt('--out', join(REPO, 'bench/results/mount'));
const sizes = opt('--sizes', '1000,10000,100000').split(',').map(Number);
const coldImages = opt('--images', 'lang/python:3.11-a,tools/net:1,app/web:1+serve,lang/python:3.11-b+serve').split(
  ',',
);
/**
 * Long-running programs of the cold-start bench (HelloBench style): an image named `REF+serve`
 * runs `command` and is ready when a line of its output contains `readyLine`; it is then stopped
 * (SIGTERM). nginx logs "start worker process" at notice level once it listens (port 8080, the
 * image's configuration); python's http.server prints "Serving HTTP on" once bound (port 0).
 */
const SERVICES = {
  'app/web:1': { command: ['nginx', '-g', 'daemon off; error_log stderr notice;'], readyLine: 'start worker process' },
  'lang/python:3.11-b': {
    command: ['python3', '-u', '-m', 'http.server', '0', '--bind', '127.0.0.1'],
    readyLine: 'Serving HTTP on',
  },
};
const imageOf = (id) => id.replace(/\+serve$/, '');
const serviceOf = (id) => (id.endsWith('+serve') ? SERVICES[imageOf(id)] : undefined);
for (const id of coldImages) {
  if (id.endsWith('+serve') && !serviceOf(id)) {
    process.stderr.write(
      `--images: ${id}: no long-running command known for ${imageOf(id)} (known: ${Object.keys(SERVICES).join(', ')})\n`,
    );
    process.exit(64);
  }
}
const TITLE = opt('--title', 'cairn mount benchmarks');
const COMMAND_NAME = opt('--command-name', 'node bench/mount/run.js');
const umociRuns = Number(opt('--umoci-runs', '3'));
const VARIANT_RUNS = Number(opt('--variant-runs', '3'));
const BIG_MIB = Number(opt('--big-mib', '256'));
const SMALL_FILES = Number(opt('--small-files', '10000'));
const DD_PER_SAMPLE = Number(opt('--dd-per-sample', '9'));
const workBase = opt('--work', '/var/tmp');

if (process.getuid?.() !== 0) {
  process.stderr.write('mount bench: needs root (FUSE, overlayfs, chroot, drop_caches)\n');
  process.exit(77);
}

// ---- setup and cleanup ----------------------------------------------------------------------

const cleanup = new Cleanup();
/** Cleanup of the sub-bench running now (run at its end; the global cleanup runs it on failure). */
let scope = cleanup;
const work = mkdtempSync(join(workBase, 'cairn-bench-mount-'));
const shm = mkdtempSync('/dev/shm/cairn-bench-mount-');

cleanup.add('remove work dirs', async () => {
  await removeTree(work);
  await removeTree(shm);
});

const distHash = await snapshotBuild(work);
cleanupOnSignals(cleanup);

const dist = (p) => import(join(DIST, p));
const { buildTar } = await dist('tar/writer.js');
const { importImage } = await dist('registry/importer.js');
const { RegistryStore } = await dist('registry/store.js');

const MB = 1e6;
const MiB = 2 ** 20;
const fmtMs = (s) => `${s.median.toFixed(0)} (${s.min.toFixed(0)}–${s.max.toFixed(0)})`;
const rotate = (arr, k) => arr.map((_, i) => arr[(i + k) % arr.length]);

/** Starts a daemon of our own (`cairn daemon`, no idle exit) on `stateDir`, stopped with the running sub-bench. */
const startOwnDaemon = (stateDir, extra = []) => startDaemon(scope, stateDir, extra);

/** Imports one OCI layout ref into the store at `root`; not timed by the benches. */
async function importInto(store, layout, ref, target = ref) {
  return importImage(store, `${layout}:${ref}`, target);
}

// ---- 1. mount time ------------------------------------------------------------------------

async function benchMounttime() {
  const tag = 'mounttime';
  const regRoot = join(shm, 'synth-registry');
  const store = await RegistryStore.open(regRoot);
  const images = [];
  try {
    for (const n of sizes) {
      const t0 = now();
      const s = syntheticLayers(n, { buildTar, seed: n });
      const genSeconds = (now() - t0) / 1000;
      const ref = `synth/e${n}:1`;
      const layout = join(shm, `layout-${n}`);
      await writeLayout(DIST, layout, ref, s.tars);
      const r = await importInto(store, layout, ref);
      await rm(layout, { recursive: true, force: true });
      images.push({
        n,
        ref,
        entries: r.entries,
        layerEntries: s.counts,
        visibleFiles: s.visible.size,
        probe: s.probe,
        probeDepth: s.probe.split('/').length,
        tarBytes: r.tarBytes,
        genSeconds,
        importSeconds: r.seconds,
      });
      progress(
        tag,
        `image ${ref}: ${r.entries} entries in ${s.counts.length} layers (${s.visible.size} visible files), generated in ${genSeconds.toFixed(1)} s, imported in ${r.seconds.toFixed(1)} s`,
      );
    }
  } finally {
    store.close();
  }
  const reg = await startRegistryHere(regRoot, 'synthetic');

  // The CLI's own start-up (node + loading the CLI modules), for the breakdown.
  const cliStartup = [];
  const bareNode = [];
  for (let i = 0; i < RUNS; i++) {
    cliStartup.push((await runChecked(process.execPath, [CAIRN, '--version'])).ms);
    bareNode.push((await runChecked(process.execPath, ['-e', '0'])).ms);
  }

  const warmState = join(work, 'state-warm');
  const { pid: warmPid, stop: stopWarm } = await startOwnDaemon(warmState);
  const samples = Object.fromEntries(images.map((im) => [im.n, { cold: [], warm: [] }]));
  for (let r = 0; r < RUNS; r++) {
    for (const im of rotate(images, r)) {
      for (const mode of r % 2 ? ['warm', 'cold'] : ['cold', 'warm']) {
        const mnt = join(work, `mnt-${im.n}-${mode}-${r}`);
        await mkdir(mnt);
        const stateDir = mode === 'cold' ? join(work, `state-${im.n}-${r}`) : warmState;
        const rssBefore = mode === 'warm' ? rssOf(warmPid) : undefined;
        const t0 = now();
        const m = await cairnMount(scope, { url: reg.url, ref: im.ref, mnt, stateDir, daemonExits: mode === 'cold' });
        const h = await run('head', ['-c1', join(mnt, im.probe)], { timeoutMs: 30_000 });
        const t1 = now();
        if (h.code !== 0 || h.stdoutBytes !== 1)
          throw new Error(`head -c1 ${im.probe} on ${mnt}: ${h.code} ${h.stderr}`);
        const sample = {
          totalMs: t1 - t0,
          cliMs: m.cliMs,
          readyMs: m.info.readySeconds * 1000,
          headMs: h.ms,
        };
        if (mode === 'warm') sample.rssGrowth = rssOf(warmPid) - rssBefore;
        samples[im.n][mode].push(sample);
        await m.unmount();
        await rm(mnt, { recursive: true, force: true });
        progress(
          tag,
          `run ${r + 1}/${RUNS} ${im.n} entries, ${mode} daemon: first byte after ${sample.totalMs.toFixed(0)} ms (cli ${sample.cliMs.toFixed(0)}, daemon mount ${sample.readyMs.toFixed(0)}, head ${sample.headMs.toFixed(0)})`,
        );
      }
    }
  }

  await stopWarm();

  // The daemon's mount step by step (bench/mount/mount-phases.js), for each image.
  const phases = {};
  for (const im of images) {
    const pm = join(work, `mnt-phases-${im.n}`);
    await mkdir(pm);
    const r = await run(
      process.execPath,
      [join(REPO, 'bench/mount/mount-phases.js'), reg.url, im.ref, pm, String(RUNS)],
      {
        timeoutMs: 300_000,
      },
    );
    await forceUnmount(pm);
    if (r.code !== 0) throw new Error(`mount-phases failed: ${r.stderr}`);
    phases[im.n] = JSON.parse(r.stdout);
    const f = phases[im.n].firstMs;
    progress(
      tag,
      `phases of the daemon's mount of ${im.ref} (first of ${RUNS} in a fresh process, ms): image ${f.image.toFixed(0)}, view HTTP ${f.viewHttp.toFixed(0)}, sha256 ${f.viewSha256.toFixed(0)}, decode ${f.viewDecode.toFixed(0)}, FUSE mount ${f.fuseMount.toFixed(0)}; without a view: recipes HTTP ${f.recipeHttp.toFixed(0)}, gunzip ${f.gunzip.toFixed(0)}, decode ${f.decodeRecipe.toFixed(0)}, union build ${f.unionBuild.toFixed(0)}`,
    );
  }

  // Daemon heap per entry, in a --expose-gc child building the daemon's objects.
  progress(tag, 'heap per entry: bench/mount/heap-probe.js');
  const hpMnt = join(work, 'mnt-heap');
  await mkdir(hpMnt);
  const hp = await run(
    process.execPath,
    [
      '--expose-gc',
      join(REPO, 'bench/mount/heap-probe.js'),
      reg.url,
      hpMnt,
      join(work, 'state-heap'),
      ...images.map((im) => im.ref),
    ],
    { timeoutMs: 300_000 },
  );
  await forceUnmount(hpMnt);
  if (hp.code !== 0) throw new Error(`heap-probe failed: ${hp.stderr}`);
  process.stderr.write(hp.stderr);
  const heap = JSON.parse(hp.stdout);

  const rows = images.map((im) => {
    const pick = (mode, k) => summary(samples[im.n][mode].map((s) => s[k]));
    return {
      ...im,
      cold: {
        totalMs: pick('cold', 'totalMs'),
        cliMs: pick('cold', 'cliMs'),
        readyMs: pick('cold', 'readyMs'),
        headMs: pick('cold', 'headMs'),
      },
      warm: {
        totalMs: pick('warm', 'totalMs'),
        cliMs: pick('warm', 'cliMs'),
        readyMs: pick('warm', 'readyMs'),
        headMs: pick('warm', 'headMs'),
        rssGrowth: pick('warm', 'rssGrowth'),
      },
      heap: heap.images.find((h) => h.ref === im.ref),
      phases: phases[im.n],
    };
  });
  const biggest = rows[rows.length - 1];
  return {
    images: rows,
    cliStartupMs: summary(cliStartup),
    bareNodeMs: summary(bareNode),
    heapMethod: heap.method,
    targets: {
      mount100kUnder1s: {
        target: 'first byte < 1000 ms for 100k entries (cold daemon: the mount starts it)',
        entries: biggest.entries,
        measuredMs: biggest.cold.totalMs.median,
        met: biggest.cold.totalMs.median < 1000,
        warmDaemonMs: biggest.warm.totalMs.median,
        warmDaemonMet: biggest.warm.totalMs.median < 1000,
      },
      heapUnder300: {
        target: '< 300 bytes of daemon heap (heapUsed + arrayBuffers) per entry, flat lookup',
        measured: biggest.heap.flat.bytesPerEntry,
        met: biggest.heap.flat.bytesPerEntry < 300,
      },
    },
  };
}

async function startRegistryHere(root, what) {
  const reg = await startRegistry(scope, root, join(work, `registry-${what}.log`));
  progress('setup', `registry (${what}) at ${reg.url}, root ${root}`);
  return reg;
}

// ---- 2. cold start ------------------------------------------------------------------------

/** nginx serving `root` on a loopback port (the plain registry of the pull path). */
async function startNginx(root) {
  const prefix = join(work, 'nginx');
  await mkdir(join(prefix, 'logs'), { recursive: true });
  const port = await freePort();
  const conf = join(prefix, 'nginx.conf');
  await writeFile(
    conf,
    [
      'daemon off;',
      'worker_processes 2;',
      `pid ${prefix}/nginx.pid;`,
      `error_log ${prefix}/logs/error.log warn;`,
      'events { worker_connections 256; }',
      'http {',
      '  access_log off;',
      '  sendfile on; tcp_nopush on;',
      '  default_type application/octet-stream;',
      `  server { listen 127.0.0.1:${port}; root ${root}; }`,
      '}',
      '',
    ].join('\n'),
  );
  const child = spawn('nginx', ['-p', prefix, '-c', conf, '-e', `${prefix}/logs/error.log`], {
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  scope.add(`nginx ${child.pid}`, async () => {
    child.kill('SIGTERM');
    await waitExit(child.pid, 5000);
  });
  const base = `http://127.0.0.1:${port}`;
  for (let i = 0; i < 100; i++) {
    const r = await run('curl', ['-fsS', '-o', '/dev/null', `${base}/index.json`], { timeoutMs: 5000 });
    if (r.code === 0) return base;
    await sleep(50);
  }
  throw new Error('nginx did not start');
}

/**
 * Runs a long-running program until a line of its stdout or stderr contains `readyLine`, then
 * stops it (SIGTERM, SIGKILL past 10 s) and waits for it to exit. Resolves like run(), with `ms`
 * from spawn to the ready line and `readyLine` the line; code 0 when it became ready.
 */
function runUntilReady(cmd, args, readyLine, timeoutMs = 60_000) {
  return new Promise((resolve, reject) => {
    const t0 = now();
    const child = spawn(cmd, args, { env: childEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
    let text = '';
    let ready;
    const stop = () => {
      child.kill('SIGTERM');
      setTimeout(() => child.kill('SIGKILL'), 10_000).unref();
    };
    const timer = setTimeout(stop, timeoutMs);
    const onData = (c) => {
      text += c;
      if (ready) return;
      const line = text.split('\n').find((l) => l.includes(readyLine));
      if (line) {
        ready = { ms: now() - t0, line: line.trim() };
        clearTimeout(timer);
        stop();
      }
    };
    child.stdout.setEncoding('utf8').on('data', onData);
    child.stderr.setEncoding('utf8').on('data', onData);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      if (ready) resolve({ code: 0, signal, stdout: text, stderr: '', ms: ready.ms, readyLine: ready.line });
      else
        resolve({
          code: code ?? 1,
          signal,
          stdout: text,
          stderr: `not ready (no line with "${readyLine}"): ${text.slice(-2000)}`,
          ms: now() - t0,
        });
    });
  });
}

async function benchColdstart() {
  const tag = 'coldstart';
  const layout = join(corpus, 'layout');
  if (!existsSync(join(layout, 'index.json'))) {
    throw new Error(`no corpus at ${layout}; build it: bash bench/corpus/build-corpus.sh ${corpus}`);
  }
  const commands = JSON.parse(readFileSync(join(corpus, 'commands.json'), 'utf8'));
  const index = JSON.parse(readFileSync(join(layout, 'index.json'), 'utf8'));
  const blob = (d) => readFileSync(join(layout, 'blobs/sha256', d.slice(7)));
  const regRoot = join(work, 'corpus-registry');
  const store = await RegistryStore.open(regRoot);
  const info = {};
  try {
    for (const ref of coldImages) {
      const image = imageOf(ref);
      const desc = index.manifests.find((m) => m.annotations?.['org.opencontainers.image.ref.name'] === image);
      if (!desc) throw new Error(`${image}: not in the corpus`);
      if (!commands[image]) throw new Error(`${image}: no command in commands.json`);
      const manifest = JSON.parse(blob(desc.digest).toString());
      const r = await importInto(store, layout, image);
      info[ref] = {
        image,
        command: serviceOf(ref)?.command ?? commands[image],
        readyLine: serviceOf(ref)?.readyLine,
        layers: manifest.layers.length,
        mediaTypes: [...new Set(manifest.layers.map((l) => l.mediaType.split('.').pop()))],
        compressedBytes: manifest.layers.reduce((a, l) => a + l.size, 0),
        tarBytes: r.tarBytes,
      };
      progress(
        tag,
        `imported ${image} into the cairn registry (${(r.tarBytes / MB).toFixed(0)} MB of layers, not timed)`,
      );
    }
  } finally {
    store.close();
  }
  const reg = await startRegistryHere(regRoot, 'corpus');
  const base = await startNginx(layout);
  progress('setup', `nginx serving ${layout} at ${base}`);

  const samples = Object.fromEntries(coldImages.map((ref) => [ref, { pull: [], cairn: [], profile: [], umoci: [] }]));
  let seq = 0;
  const chrootArgs = (root, ref) => [root, '/usr/bin/env', '-i', CHROOT_PATH, ...info[ref].command];
  const runCmd = (root, ref) =>
    serviceOf(ref)
      ? runUntilReady('chroot', chrootArgs(root, ref), info[ref].readyLine)
      : run('chroot', chrootArgs(root, ref), { timeoutMs: 60_000 });
  /** `cairn mount --writable --upper UPPER` of `ref` at `mnt` on the daemon of `stateDir`. */
  const mountWritable = (ref, mnt, stateDir, upper, { args = [], daemonExits = true } = {}) =>
    cairnMount(scope, {
      url: reg.url,
      ref: imageOf(ref),
      mnt,
      stateDir,
      args: ['--writable', '--upper', upper, ...args],
      daemonExits,
    });
  const firstLine = (r) => r.readyLine ?? `${r.stdout}${r.stderr}`.trim().split('\n')[0];
  // The registry's read profiles: one cairn run per image on a daemon of its own (another node,
  // as far as caches go), not timed; its unmount shares what the run read. The 'profile' method
  // then mounts with --prefetch on fresh daemons. (Every timed cairn run shares its reads too;
  // they are the same reads, so the profiles do not change.)
  const profiles = {};
  for (const ref of coldImages) {
    const id = seq++;
    const mnt = join(work, `pmnt-${id}`);
    const upper = join(work, `pupper-${id}`);
    const stateDir = join(work, `pstate-${id}`);
    await mkdir(mnt);
    await mkdir(upper);
    const m = await mountWritable(ref, mnt, stateDir, upper);
    const c = await runCmd(mnt, ref);
    if (c.code !== 0) throw new Error(`${ref} (profile seed): command exited ${c.code}: ${c.stderr}`);
    await m.unmount();
    await removeTree(mnt);
    await removeTree(upper);
    await removeTree(stateDir);
    const digest = (
      await (
        await fetch(`${reg.url}/api/v1/repositories/${imageOf(ref).split(':')[0]}/images/${imageOf(ref).split(':')[1]}`)
      ).json()
    ).digest;
    const files = (await (await fetch(`${reg.url}/api/v1/images/${digest}/profile`)).json()).files;
    const bytes = files.reduce(
      (a, [, size, blocks]) => a + (blocks ? Math.min(size, blocks.length * 262144) : size),
      0,
    );
    profiles[ref] = { files: files.length, partial: files.filter((f) => f[2]).length, bytes };
    progress(
      tag,
      `${ref}: read profile shared by an untimed run: ${files.length} contents (${profiles[ref].partial} in part), ${(bytes / MB).toFixed(1)} MB`,
    );
  }
  for (let r = 0; r < RUNS; r++) {
    for (const [i, ref] of coldImages.entries()) {
      const methods = rotate(['pull', 'cairn', 'profile', ...(r < umociRuns ? ['umoci'] : [])], r + i);
      for (const method of methods) {
        if (method === 'umoci' && info[ref].mediaTypes.includes('zstd')) continue; // umoci 0.4.7 has no zstd
        const id = seq++;
        if (method === 'pull' || method === 'umoci') {
          const dir = join(work, `pull-${id}`);
          await dropCaches();
          const t0 = now();
          const p = await pullAndUnpack(base, imageOf(ref), dir, method === 'umoci' ? 'umoci' : 'tar');
          const c = await runCmd(p.rootfs, ref);
          const t1 = now();
          if (c.code !== 0) throw new Error(`${ref} (${method}): command exited ${c.code}: ${c.stderr}`);
          const s = {
            totalMs: t1 - t0,
            downloadMs: p.downloadMs,
            unpackMs: p.unpackMs,
            runMs: c.ms,
            downloadedBytes: p.downloadedBytes,
            output: firstLine(c),
          };
          samples[ref][method].push(s);
          await removeTree(dir);
          progress(
            tag,
            `run ${r + 1}/${RUNS} ${ref} ${method === 'pull' ? 'pull+tar' : 'pull+umoci'}: ${s.totalMs.toFixed(0)} ms (download ${s.downloadMs.toFixed(0)}, unpack ${s.unpackMs.toFixed(0)}, run ${s.runMs.toFixed(0)}) -> ${s.output.slice(0, 60)}`,
          );
        } else {
          const mnt = join(work, `cmnt-${id}`);
          const upper = join(work, `cupper-${id}`);
          const stateDir = join(work, `cstate-${id}`);
          await mkdir(mnt);
          await mkdir(upper);
          await dropCaches();
          const t0 = now();
          const m = await mountWritable(ref, mnt, stateDir, upper, {
            args: method === 'profile' ? ['--prefetch'] : [],
          });
          const c = await runCmd(mnt, ref);
          const t1 = now();
          if (c.code !== 0) throw new Error(`${ref} (${method}): command exited ${c.code}: ${c.stderr}`);
          const st = await cairnStats(mnt, stateDir);
          const s = {
            totalMs: t1 - t0,
            mountMs: m.cliMs,
            readyMs: m.info.readySeconds * 1000,
            runMs: c.ms,
            bytesFetched: st.bytesFetched,
            bytesServed: st.bytesServed,
            imageBytes: st.imageBytes,
            output: firstLine(c),
            ...(st.prefetch ? { prefetch: st.prefetch } : {}),
          };
          samples[ref][method].push(s);
          await m.unmount();
          await removeTree(mnt);
          await removeTree(upper);
          await removeTree(stateDir);
          progress(
            tag,
            `run ${r + 1}/${RUNS} ${ref} ${method === 'profile' ? 'cairn --prefetch (registry profile)' : 'cairn'}: ${s.totalMs.toFixed(0)} ms (mount ${s.mountMs.toFixed(0)}, run ${s.runMs.toFixed(0)}), fetched ${(s.bytesFetched / MB).toFixed(1)} MB of ${(s.imageBytes / MB).toFixed(1)} MB -> ${s.output.slice(0, 60)}`,
          );
        }
      }
    }
  }
  // Diagnostic variants (not the target's case): a daemon started beforehand, fresh and with
  // empty caches, then caches dropped -> no daemon start-up in the time; then a second mount of
  // the same image by that daemon (its memory cache now holds what the first run read, the
  // kernel's caches of the new mount are empty) -> no fetching: FUSE + overlay cost only.
  const variants = Object.fromEntries(coldImages.map((ref) => [ref, { runningDaemon: [], memoryWarm: [] }]));
  for (let r = 0; r < VARIANT_RUNS; r++) {
    for (const ref of coldImages) {
      const stateDir = join(work, `vstate-${seq++}`);
      const d = await startOwnDaemon(stateDir);
      let fetchedBefore = 0;
      for (const variant of ['runningDaemon', 'memoryWarm']) {
        const id = seq++;
        const mnt = join(work, `vmnt-${id}`);
        const upper = join(work, `vupper-${id}`);
        await mkdir(mnt);
        await mkdir(upper);
        if (variant === 'runningDaemon') await dropCaches();
        const t0 = now();
        const m = await mountWritable(ref, mnt, stateDir, upper, { daemonExits: false });
        const c = await runCmd(mnt, ref);
        const t1 = now();
        if (c.code !== 0) throw new Error(`${ref} (${variant}): command exited ${c.code}: ${c.stderr}`);
        const st = await cairnStats(mnt, stateDir);
        await m.unmount();
        await removeTree(mnt);
        await removeTree(upper);
        const sm = {
          totalMs: t1 - t0,
          mountMs: m.cliMs,
          readyMs: m.info.readySeconds * 1000,
          runMs: c.ms,
          bytesFetched: st.bytesFetched - fetchedBefore,
        };
        fetchedBefore = st.bytesFetched;
        variants[ref][variant].push(sm);
        progress(
          tag,
          `variant ${r + 1}/${VARIANT_RUNS} ${ref} cairn, ${variant === 'runningDaemon' ? 'daemon started beforehand, caches dropped' : 'same daemon again, memory cache warm'}: ${sm.totalMs.toFixed(0)} ms (mount ${sm.mountMs.toFixed(0)}, run ${sm.runMs.toFixed(0)}), fetched ${(sm.bytesFetched / MB).toFixed(1)} MB`,
        );
      }
      await d.stop();
      await removeTree(stateDir);
    }
  }
  const rows = coldImages.map((ref) => {
    const S = samples[ref];
    const pick = (m, k) => (S[m].length ? summary(S[m].map((s) => s[k])) : undefined);
    const pull = {
      totalMs: pick('pull', 'totalMs'),
      downloadMs: pick('pull', 'downloadMs'),
      unpackMs: pick('pull', 'unpackMs'),
      runMs: pick('pull', 'runMs'),
    };
    const cairn = {
      totalMs: pick('cairn', 'totalMs'),
      mountMs: pick('cairn', 'mountMs'),
      readyMs: pick('cairn', 'readyMs'),
      runMs: pick('cairn', 'runMs'),
      bytesFetched: pick('cairn', 'bytesFetched'),
    };
    const profile = {
      totalMs: pick('profile', 'totalMs'),
      mountMs: pick('profile', 'mountMs'),
      runMs: pick('profile', 'runMs'),
      bytesFetched: pick('profile', 'bytesFetched'),
      shared: profiles[ref],
    };
    const umoci = S.umoci.length
      ? { totalMs: pick('umoci', 'totalMs'), unpackMs: pick('umoci', 'unpackMs') }
      : undefined;
    const imageBytes = S.cairn[0].imageBytes;
    return {
      ref,
      ...info[ref],
      imageBytes,
      downloadedBytes: S.pull[0].downloadedBytes,
      pull,
      cairn,
      profile,
      umoci,
      speedup: pull.totalMs.median / cairn.totalMs.median,
      speedupWithProfile: pull.totalMs.median / profile.totalMs.median,
      fetchedPctWithProfile: (100 * profile.bytesFetched.median) / S.cairn[0].imageBytes,
      speedupVsUmoci: umoci ? umoci.totalMs.median / cairn.totalMs.median : undefined,
      fetchedPctOfImage: (100 * cairn.bytesFetched.median) / imageBytes,
      fetchedPctOfCompressed: (100 * cairn.bytesFetched.median) / info[ref].compressedBytes,
      outputs: { pull: S.pull[0].output, cairn: S.cairn[0].output },
      bytesServed: summary(S.cairn.map((x) => x.bytesServed)),
      variants: Object.fromEntries(
        Object.entries(variants[ref]).map(([k, v]) => [
          k,
          {
            totalMs: summary(v.map((x) => x.totalMs)),
            mountMs: summary(v.map((x) => x.mountMs)),
            readyMs: summary(v.map((x) => x.readyMs)),
            runMs: summary(v.map((x) => x.runMs)),
            bytesFetched: summary(v.map((x) => x.bytesFetched)),
          },
        ]),
      ),
      samples: S,
    };
  });
  return {
    images: rows,
    targets: {
      speedup5x: {
        target: 'cairn mount + run >= 5x faster than pull + unpack + run (median, each image)',
        measured: Object.fromEntries(rows.map((r) => [r.ref, r.speedup])),
        met: rows.every((r) => r.speedup >= 5),
      },
      speedup5xWithProfile: {
        target:
          "the same, cairn mounting with --prefetch and the registry's read profile of the image (shared by a run on another daemon)",
        measured: Object.fromEntries(rows.map((r) => [r.ref, r.speedupWithProfile])),
        met: rows.every((r) => r.speedupWithProfile >= 5),
      },
      fetchedUnder15pct: {
        target: 'bytes fetched by cairn < 15 % of the image (regular-file bytes of the merged view)',
        measured: Object.fromEntries(rows.map((r) => [r.ref, r.fetchedPctOfImage])),
        met: rows.every((r) => r.fetchedPctOfImage < 15),
      },
      fetchedUnder15pctWithProfile: {
        target: 'the same, with --prefetch and the read profile',
        measured: Object.fromEntries(rows.map((r) => [r.ref, r.fetchedPctWithProfile])),
        met: rows.every((r) => r.fetchedPctWithProfile < 15),
      },
    },
  };
}

// ---- 3. read ------------------------------------------------------------------------------

async function benchRead() {
  const tag = 'read';
  const bigPath = 'srv/data/big.bin';
  const big = Buffer.allocUnsafe(BIG_MIB * MiB);
  randomFillSync(big);
  // About 1.9 entries per visible small file in these layers: enough entries for SMALL_FILES files.
  let s = syntheticLayers(Math.ceil(SMALL_FILES * 2), {
    buildTar,
    seed: 7,
    layers: 3,
    whiteouts: false,
    extra: [{ layer: 1, path: bigPath, content: big }],
  });
  const small = [...s.visible]
    .filter(([p, size]) => p !== bigPath && size <= 16384)
    .map(([p]) => p)
    .sort();
  if (small.length < SMALL_FILES) throw new Error(`only ${small.length} small files generated`);
  const step = small.length / SMALL_FILES;
  const list = Array.from({ length: SMALL_FILES }, (_, i) => small[Math.floor(i * step)]);
  const listFile = join(work, 'small-files.txt');
  writeFileSync(listFile, `${list.join('\n')}\n`);
  const ref = 'bench/read:1';
  const layout = join(work, 'read-layout');
  await writeLayout(DIST, layout, ref, s.tars);
  const regRoot = join(work, 'read-registry');
  const store = await RegistryStore.open(regRoot);
  let imported;
  try {
    imported = await importInto(store, layout, ref);
  } finally {
    store.close();
  }
  await rm(layout, { recursive: true, force: true });
  // Native: the layers extracted in order into one directory. Overlay: each layer extracted
  // into its own directory (no whiteouts in this image, so no conversion needed).
  const native = join(work, 'native');
  const lowers = s.tars.map((_, k) => join(work, `ovl-l${k}`));
  await mkdir(native);
  for (const [k, tar] of s.tars.entries()) {
    await mkdir(lowers[k]);
    for (const dir of [native, lowers[k]])
      await runChecked('tar', ['-x', '-f', '-', '-C', dir, '--numeric-owner', '-p'], {
        input: tar,
        timeoutMs: 300_000,
      });
  }
  const layerEntries = s.counts;
  s = undefined;
  progress(
    tag,
    `image ${ref}: ${imported.entries} entries, ${BIG_MIB} MiB file + ${SMALL_FILES} small files measured; imported and extracted (not timed)`,
  );
  const reg = await startRegistryHere(regRoot, 'read');

  const ovlMnt = join(work, 'ovl-merged');
  await mkdir(ovlMnt);
  const ovlOpts = `lowerdir=${[...lowers].reverse().join(':')}`;
  const mountOverlay = async () => {
    await runChecked('mount', ['-t', 'overlay', 'overlay', '-o', ovlOpts, ovlMnt]);
  };
  scope.add('unmount overlay', () => forceUnmount(ovlMnt));
  await mountOverlay();
  const cairnMnt = join(work, 'cairn-mnt');
  await mkdir(cairnMnt);
  let cairnState;
  let cairnM;
  let stateSeq = 0;
  const mountCairn = async () => {
    cairnState = join(work, `read-state-${stateSeq++}`);
    cairnM = await cairnMount(scope, {
      url: reg.url,
      ref,
      mnt: cairnMnt,
      stateDir: cairnState,
      args: ['--memory-cache', '1G'],
    });
  };
  await mountCairn();
  const roots = { native, overlay: ovlMnt, cairn: cairnMnt };
  const systems = Object.keys(roots);

  // Phase 1: over the small files, cold (fresh mount, dropped caches) then warm (the same list
  // again): lstat+open+close, and separately (another fresh mount) lstat+open+read+close.
  const statopen = async (sys, mode) => {
    const r = await runChecked(process.execPath, [join(REPO, 'bench/mount/statopen.js'), roots[sys], listFile, mode], {
      timeoutMs: 300_000,
    });
    const j = JSON.parse(r.stdout);
    return { filesPerS: j.files / j.seconds, MBps: j.bytes / MB / j.seconds };
  };
  const so = Object.fromEntries(systems.map((k) => [k, { cold: [], warm: [] }]));
  const sr = Object.fromEntries(systems.map((k) => [k, { cold: [], warm: [], coldMBps: [], warmMBps: [] }]));
  for (let r = 0; r < RUNS; r++) {
    for (const sys of rotate(systems, r)) {
      for (const mode of r % 2 ? ['read', 'statopen'] : ['statopen', 'read']) {
        if (sys === 'overlay') {
          await forceUnmount(ovlMnt);
          await mountOverlay();
        } else if (sys === 'cairn') {
          await cairnM.unmount();
          await mountCairn();
        }
        await dropCaches();
        const cold = await statopen(sys, mode);
        const warm = await statopen(sys, mode);
        const to = mode === 'read' ? sr[sys] : so[sys];
        to.cold.push(cold.filesPerS);
        to.warm.push(warm.filesPerS);
        if (mode === 'read') {
          to.coldMBps.push(cold.MBps);
          to.warmMBps.push(warm.MBps);
        }
        progress(
          tag,
          `run ${r + 1}/${RUNS} ${sys}: ${mode === 'read' ? 'lstat+open+read+close' : 'lstat+open+close'} ${cold.filesPerS.toFixed(0)} files/s cold, ${warm.filesPerS.toFixed(0)} files/s warm`,
        );
      }
    }
  }

  // A fresh cairn mount (new daemon, empty caches) for phase 2: what it fetches is the big file.
  await cairnM.unmount();
  await mountCairn();

  // Phase 2: sequential read of the big file with dd: once cold (dropped caches), then warm runs.
  const dd = async (sys) => {
    const r = await runChecked('dd', [`if=${roots[sys]}/${bigPath}`, 'of=/dev/null', 'bs=1M'], { timeoutMs: 300_000 });
    const m = /^(\d+) bytes .* copied, ([\d.e-]+) s/m.exec(r.stderr);
    if (!m || Number(m[1]) !== BIG_MIB * MiB) throw new Error(`dd on ${sys}: ${r.stderr}`);
    return Number(m[1]) / MB / Number(m[2]);
  };
  await dropCaches();
  const seqCold = {};
  for (const sys of systems) {
    seqCold[sys] = await dd(sys);
    progress(tag, `${sys}: first (cold) sequential read ${seqCold[sys].toFixed(0)} MB/s`);
  }
  const beforeWarm = await cairnStats(cairnMnt, cairnState);
  // A warm read of 256 MiB takes ~50 ms: one sample = the median of DD_PER_SAMPLE reads in a row,
  // so that a scheduler hiccup on a shared 2-core VM does not decide a sample.
  const seqWarm = Object.fromEntries(systems.map((k) => [k, []]));
  const seqWarmAll = Object.fromEntries(systems.map((k) => [k, []]));
  for (let r = 0; r < RUNS; r++) {
    for (const sys of rotate(systems, r)) {
      const xs = [];
      for (let j = 0; j < DD_PER_SAMPLE; j++) xs.push(await dd(sys));
      seqWarmAll[sys].push(...xs);
      seqWarm[sys].push(median(xs));
      progress(
        tag,
        `run ${r + 1}/${RUNS} ${sys}: warm sequential read ${seqWarm[sys].at(-1).toFixed(0)} MB/s (median of ${DD_PER_SAMPLE} reads, ${Math.min(...xs).toFixed(0)}-${Math.max(...xs).toFixed(0)})`,
      );
    }
  }
  const stats = await cairnStats(cairnMnt, cairnState);
  const servedDuringWarm = stats.bytesServed - beforeWarm.bytesServed;
  await cairnM.unmount();
  await forceUnmount(ovlMnt);

  const res = {
    image: { ref, entries: imported.entries, layerEntries, bigFileMiB: BIG_MIB, smallFiles: SMALL_FILES },
    cairnMount: {
      memoryCache: '1G',
      lookup: 'flat',
      bytesFetched: stats.bytesFetched,
      bytesServed: stats.bytesServed,
      servedDuringWarm,
      cache: stats.cache,
    },
    statOpen: {},
    smallRead: {},
    seqColdMBps: seqCold,
    seqWarm: {},
  };
  for (const sys of systems) {
    res.statOpen[sys] = { cold: summary(so[sys].cold), warm: summary(so[sys].warm) };
    res.smallRead[sys] = {
      cold: summary(sr[sys].cold),
      warm: summary(sr[sys].warm),
      coldMBps: summary(sr[sys].coldMBps),
      warmMBps: summary(sr[sys].warmMBps),
    };
    res.seqWarm[sys] = summary(seqWarm[sys]);
    res.seqWarmAllReads = res.seqWarmAllReads ?? {};
    res.seqWarmAllReads[sys] = summary(seqWarmAll[sys]);
  }
  const ratio = (a, b) => a.median / b.median;
  res.ratios = {
    warmSeqCairnVsNative: ratio(res.seqWarm.cairn, res.seqWarm.native),
    warmSeqOverlayVsNative: ratio(res.seqWarm.overlay, res.seqWarm.native),
    coldStatOpenCairnVsNative: ratio(res.statOpen.cairn.cold, res.statOpen.native.cold),
    coldStatOpenOverlayVsNative: ratio(res.statOpen.overlay.cold, res.statOpen.native.cold),
    warmStatOpenCairnVsNative: ratio(res.statOpen.cairn.warm, res.statOpen.native.warm),
  };
  res.targets = {
    warmRead08: {
      target: 'cairn warm sequential read >= 0.8x native',
      measured: res.ratios.warmSeqCairnVsNative,
      met: res.ratios.warmSeqCairnVsNative >= 0.8,
    },
  };
  return res;
}

// ---- report -------------------------------------------------------------------------------

function writeReport(results) {
  mkdirSync(out, { recursive: true });
  writeFileSync(join(out, 'results.json'), `${JSON.stringify(results, null, 2)}\n`);
  const m = results.machine;
  const yes = (b) => (b ? 'yes' : '**no**');
  const md = [
    `# ${TITLE}`,
    '',
    `Command: \`${COMMAND_NAME} ${results.command}\` · commit ${m.commit}${m.srcDirty ? ' (with uncommitted changes in src/: other work in progress)' : ''} · build snapshot ${m.distHash} (sha256 of dist/*.js, copied at the start so that a concurrent rebuild cannot mix builds) · ${m.date} · ${results.totalSeconds.toFixed(0)} s`,
    '',
    `Machine: ${m.cpu}, ${m.cores} cores, ${m.memGiB} GiB, kernel ${m.kernel}, Node ${m.node}, ${m.fusermount}; work dir ${m.workDir} on ${m.workFs}. Loopback only.`,
    '',
    `Load average (/proc/loadavg: 1, 5, 15 min) before → after each sub-bench: ${SUBS.filter((k) => results[k]?.loadavg)
      .map(
        (k) =>
          `${k} ${results[k].loadavg.before.split(' ').slice(0, 3).join(' ')} → ${results[k].loadavg.after.split(' ').slice(0, 3).join(' ')}`,
      )
      .join('; ')}. The VM is shared with other engineers' work (tests, CI runs), which adds noise on its 2 cores.`,
    '',
    '## Targets',
    '',
    '| target | measured | met |',
    '|---|---|---|',
  ];
  const T = [];
  if (results.mounttime) {
    const t = results.mounttime.targets;
    T.push(
      `| ${t.mount100kUnder1s.target} | ${t.mount100kUnder1s.measuredMs.toFixed(0)} ms (${t.mount100kUnder1s.entries} entries; with a daemon already running: ${t.mount100kUnder1s.warmDaemonMs.toFixed(0)} ms) | ${yes(t.mount100kUnder1s.met)}${t.mount100kUnder1s.warmDaemonMet ? ' (yes with a running daemon)' : ''} |`,
      `| ${t.heapUnder300.target} | ${t.heapUnder300.measured.toFixed(1)} B/entry | ${yes(t.heapUnder300.met)} |`,
    );
  }
  if (results.coldstart) {
    const t = results.coldstart.targets;
    // One row per image-wise target: each image's figure, and whether all met it.
    const perImage = (x, fmt) =>
      x
        ? [
            `| ${x.target} | ${Object.entries(x.measured)
              .map(([k, v]) => `${k} ${fmt(v)}`)
              .join(', ')} | ${yes(x.met)} |`,
          ]
        : [];
    const times = (v) => `${v.toFixed(2)}×`;
    const pct = (v) => `${v.toFixed(1)} %`;
    T.push(
      ...perImage(t.speedup5x, times),
      ...perImage(t.fetchedUnder15pct, pct),
      ...perImage(t.speedup5xWithProfile, times),
      ...perImage(t.fetchedUnder15pctWithProfile, pct),
    );
  }
  if (results.read) {
    const t = results.read.targets.warmRead08;
    T.push(`| ${t.target} | ${t.measured.toFixed(2)}× | ${yes(t.met)} |`);
  }
  md.push(...T, '');

  if (results.mounttime) {
    const r = results.mounttime;
    md.push(
      '## 1. Mount time to first byte (`mounttime`)',
      '',
      `Synthetic images (bench/mount/synth.js): four layers (55/25/15/5 % of the entries), Debian-like trees (python and node modules at depth 7, docs, locales, shared libraries with symlinks, headers, binaries), upper layers overwriting 4 % and whiting out 1 % of lower files plus one opaque directory each; uncompressed layers, file contents from a pool of 1024 blobs (every file entry still has its own digest). Registry on tmpfs, served by \`cairn registry serve\` on loopback. Time = from spawning \`cairn mount URL REF MNT --json\` until a child \`head -c1\` of a depth-7 file of the bottom layer has exited with its byte. **cold daemon**: a fresh --state-dir, so \`cairn mount\` starts the daemon (the case the target is about); **running daemon**: a \`cairn daemon\` started beforehand (not timed). Median (min–max) of ${RUNS} runs, interleaved.`,
      '',
      '![mount time](mounttime.svg)',
      '',
      '| entries (layers) | first byte, cold daemon ms | of which `cairn mount` CLI ms | daemon mount (readySeconds) ms | `head -c1` ms | first byte, running daemon ms | CLI ms | daemon mount ms | spread cold / running |',
      '|---|---|---|---|---|---|---|---|---|',
      ...r.images.map(
        (im) =>
          `| ${im.entries} (${im.layerEntries.length}) | ${fmtMs(im.cold.totalMs)} | ${fmtMs(im.cold.cliMs)} | ${fmtMs(im.cold.readyMs)} | ${fmtMs(im.cold.headMs)} | ${fmtMs(im.warm.totalMs)} | ${fmtMs(im.warm.cliMs)} | ${fmtMs(im.warm.readyMs)} | ${im.cold.totalMs.spreadPct.toFixed(0)} % / ${im.warm.totalMs.spreadPct.toFixed(0)} % |`,
      ),
      '',
      `Process start-up for reference: \`node bin/cairn.js --version\` ${fmtMs(r.cliStartupMs)} ms, \`node -e 0\` ${fmtMs(r.bareNodeMs)} ms (median (min–max) of ${RUNS}). A cold-daemon mount pays the CLI's start-up twice (the CLI, then the daemon it spawns).`,
      '',
      "### Where the daemon's mount time goes",
      '',
      `bench/mount/mount-phases.js repeats the steps of MountManager.mount one by one with a timer around each, in a fresh child process (${RUNS} repetitions: the first is what a fresh daemon pays, JIT cold; the median is a warmed-up process). ms, first / median. A mount restores the view the registry built at import (\`GET /api/v1/images/DIGEST/view\`: the node table and the flat index as typed arrays, checked node by node); without one (an older registry, a view refused) it builds the view from the recipes, second table.`,
      '',
      '| entries | view bytes | image metadata | view HTTP | sha256 | UnionView.decode (checks + restore) | FUSE mount | sum |',
      '|---|---|---|---|---|---|---|---|',
      ...r.images.map((im) => {
        const f = im.phases.firstMs;
        const md = im.phases.medianMs;
        const c = (k) => (f[k] === undefined ? '–' : `${f[k].toFixed(0)} / ${md[k].toFixed(0)}`);
        return `| ${im.entries} | ${((im.phases.recipeBytes.viewBytes ?? 0) / MB).toFixed(1)} MB | ${c('image')} | ${c('viewHttp')} | ${c('viewSha256')} | ${c('viewDecode')} | ${c('fuseMount')} | ${c('viewTotal')} |`;
      }),
      '',
      'Without a view (the fallback, measured after the view path in the same process):',
      '',
      '| entries | recipes gzip / JSON | image metadata | recipes HTTP | gunzip | decode (sha256 + JSON.parse + validate) | of which JSON.parse | UnionView.build | FUSE mount | sum |',
      '|---|---|---|---|---|---|---|---|---|---|',
      ...r.images.map((im) => {
        const f = im.phases.firstMs;
        const md = im.phases.medianMs;
        const c = (k) => `${f[k].toFixed(0)} / ${md[k].toFixed(0)}`;
        return `| ${im.entries} | ${(im.phases.recipeBytes.gzipBytes / MB).toFixed(2)} / ${(im.phases.recipeBytes.jsonBytes / MB).toFixed(1)} MB | ${c('image')} | ${c('recipeHttp')} | ${c('gunzip')} | ${c('decodeRecipe')} | ${c('jsonParse')} | ${c('unionBuild')} | ${c('fuseMount')} | ${c('total')} |`;
      }),
      '',
      '### Daemon heap per entry',
      '',
      `Method: ${r.heapMethod}`,
      '',
      '| entries | flat: B/entry (heapUsed + arrayBuffers) | of which heap / arrayBuffers B/entry | stacked: B/entry | union view alone: B/entry | left after unmount (flat) bytes |',
      '|---|---|---|---|---|---|',
      ...r.images.map(
        (im) =>
          `| ${im.entries} | ${im.heap.flat.bytesPerEntry.toFixed(1)} | ${im.heap.flat.heapBytesPerEntry.toFixed(1)} / ${im.heap.flat.arrayBufferBytesPerEntry.toFixed(1)} | ${im.heap.stacked.bytesPerEntry.toFixed(1)} | ${im.heap.viewOnly.bytesPerEntry.toFixed(1)} | ${im.heap.flat.leftAfterUnmount} |`,
      ),
      '',
      `Cross-check on the real daemon (running-daemon runs): RSS growth of the daemon process over one mount + first read, median: ${r.images.map((im) => `${im.entries} entries ${(im.warm.rssGrowth.median / MiB).toFixed(1)} MiB`).join(', ')} (RSS includes garbage not yet collected and allocator slack, so it is an upper bound).`,
      '',
    );
  }

  if (results.coldstart) {
    const r = results.coldstart;
    md.push(
      '## 2. Cold start of a container command (`coldstart`)',
      '',
      `Corpus images (bench/corpus, ${corpus}); each case runs a command as \`chroot ROOT /usr/bin/env -i PATH=... CMD\` (table below): a short command runs to its end (its time is to its exit); a long-running program (\`+serve\`, in the style of HelloBench) runs until its readiness line appears on its stdout or stderr (its time is to that line), then is stopped. Before every run: \`sync; echo 3 > /proc/sys/vm/drop_caches\`. **pull+tar**: GET index.json, manifest, config and every layer blob (in parallel, sha256-checked while streaming) from nginx serving the corpus OCI layout on loopback, into a fresh OCI layout on ${m.workFs}; unpack the layers in order with GNU tar (-p, --xattrs, numeric owners) and apply whiteouts/opaque markers (bench/mount/pull.js; checked identical to \`umoci raw unpack\`, file by file); then chroot + run. **cairn**: \`cairn mount --writable --upper DIR\` from \`cairn registry serve\` (store on ${m.workFs}, images imported beforehand, not timed), a fresh --state-dir each run, so a fresh daemon with an empty memory cache and no disk cache; then chroot + run. **cairn + profile**: the same with \`--prefetch\`: the fresh daemon has no record of its own, so it prefetches, behind the run's demand reads, what the registry's read profile of the image names (what an untimed run on another daemon read in its first 30 s, shared at its unmount: the contents, and the 256 KiB blocks of the large ones). **pull+umoci**: the same pull, unpacked by \`umoci raw unpack\` (${umociRuns} runs; a reference for a common unpacker). Median (min–max) in ms of ${RUNS} runs, methods interleaved.`,
      '',
      '| case | image | command | ready when a line contains |',
      '|---|---|---|---|',
      ...r.images.map(
        (im) =>
          `| ${im.ref} | ${im.image ?? im.ref} | \`${(im.command ?? []).join(' ')}\` | ${im.readyLine ? `\`${im.readyLine}\`` : '(runs to its exit)'} |`,
      ),
      '',
      '![cold start](coldstart.svg)',
      '',
      '| image (layers) | pull+tar+run | download | unpack | run | cairn mount+run | mount (CLI) | run | speedup (≥ 5×) | pull+umoci+run | speedup vs umoci |',
      '|---|---|---|---|---|---|---|---|---|---|---|',
      ...r.images.map(
        (im) =>
          `| ${im.ref} (${im.layers}) | ${fmtMs(im.pull.totalMs)} | ${fmtMs(im.pull.downloadMs)} | ${fmtMs(im.pull.unpackMs)} | ${fmtMs(im.pull.runMs)} | ${fmtMs(im.cairn.totalMs)} | ${fmtMs(im.cairn.mountMs)} | ${fmtMs(im.cairn.runMs)} | ${im.speedup.toFixed(2)}× | ${im.umoci ? fmtMs(im.umoci.totalMs) : 'n/a'} | ${im.speedupVsUmoci ? `${im.speedupVsUmoci.toFixed(2)}×` : 'n/a'} |`,
      ),
      '',
      "**With the registry's read profile** (`cairn mount --prefetch`, fresh daemon, empty caches):",
      '',
      '| image | profile: contents (in part) / MB | cairn + profile: mount+run | mount (CLI) | run | speedup vs pull+tar+run (≥ 5×) | bytesFetched | % of image bytes (< 15 %) | without profile: mount+run |',
      '|---|---|---|---|---|---|---|---|---|',
      ...r.images
        .filter((im) => im.profile?.totalMs)
        .map(
          (im) =>
            `| ${im.ref} | ${im.profile.shared.files} (${im.profile.shared.partial}) / ${(im.profile.shared.bytes / MB).toFixed(1)} MB | ${fmtMs(im.profile.totalMs)} | ${fmtMs(im.profile.mountMs)} | ${fmtMs(im.profile.runMs)} | ${im.speedupWithProfile.toFixed(2)}× | ${(im.profile.bytesFetched.median / MB).toFixed(2)} MB | ${im.fetchedPctWithProfile.toFixed(1)} % | ${fmtMs(im.cairn.totalMs)} |`,
        ),
      '',
      'Spread ((max − min) / median): ' +
        r.images
          .map(
            (im) =>
              `${im.ref} pull ${im.pull.totalMs.spreadPct.toFixed(0)} %, cairn ${im.cairn.totalMs.spreadPct.toFixed(0)} %`,
          )
          .join('; ') +
        '.',
      '',
      '| image | image bytes (merged view files) | layer tars | compressed blobs (pulled) | cairn bytesFetched (median) | % of image bytes (< 15 %) | % of compressed blobs | bytesServed (read through FUSE) | % of image bytes | output |',
      '|---|---|---|---|---|---|---|---|---|---|',
      ...r.images.map(
        (im) =>
          `| ${im.ref} | ${(im.imageBytes / MB).toFixed(1)} MB | ${(im.tarBytes / MB).toFixed(1)} MB | ${(im.compressedBytes / MB).toFixed(1)} MB | ${(im.cairn.bytesFetched.median / MB).toFixed(2)} MB | ${im.fetchedPctOfImage.toFixed(1)} % | ${im.fetchedPctOfCompressed.toFixed(1)} % | ${(im.bytesServed.median / MB).toFixed(2)} MB | ${((100 * im.bytesServed.median) / im.imageBytes).toFixed(1)} % | \`${im.outputs.cairn.slice(0, 40)}\` |`,
      ),
      '',
      `Diagnostic variants (${VARIANT_RUNS} runs each, median (min–max) ms; not the target's case): **daemon started beforehand** = a \`cairn daemon\` started (fresh, empty caches) before the caches are dropped, so its start-up is not timed; **memory cache warm** = the same daemon mounting the same image again right after (what the first run read is in its memory cache; the new mount's kernel caches are empty; nothing is fetched): what is left is CLI + mount + FUSE/overlay cost.`,
      '',
      '| image | cold (fresh daemon, as above) total | mount | run | daemon started beforehand: total | mount | daemon mount | run | memory cache warm: total | mount | run | native run (pull+tar) |',
      '|---|---|---|---|---|---|---|---|---|---|---|---|',
      ...r.images.map((im) => {
        const a = im.variants.runningDaemon;
        const b = im.variants.memoryWarm;
        return `| ${im.ref} | ${fmtMs(im.cairn.totalMs)} | ${fmtMs(im.cairn.mountMs)} | ${fmtMs(im.cairn.runMs)} | ${fmtMs(a.totalMs)} | ${fmtMs(a.mountMs)} | ${fmtMs(a.readyMs)} | ${fmtMs(a.runMs)} | ${fmtMs(b.totalMs)} | ${fmtMs(b.mountMs)} | ${fmtMs(b.runMs)} | ${fmtMs(im.pull.runMs)} |`;
      }),
      '',
    );
  }

  if (results.read) {
    const r = results.read;
    const sys = ['native', 'overlay', 'cairn'];
    const label = {
      native: `native (${m.workFs?.split(' ')[0]})`,
      overlay: 'kernel overlayfs (layers extracted to disk)',
      cairn: 'cairn (flat lookup)',
    };
    md.push(
      '## 3. Read throughput and metadata operations (`read`)',
      '',
      `Image ${r.image.ref}: ${r.image.entries} entries in 3 layers, one ${r.image.bigFileMiB} MiB random file, ${r.image.smallFiles} small files (≤ 16 KiB) picked evenly over the sorted tree. native = the layers extracted into one directory; overlayfs = each layer extracted to its own directory, mounted read-only as lowerdirs; cairn = \`cairn mount --memory-cache 1G\` from \`cairn registry serve\` (store on the same disk). Sequential read: \`dd bs=1M\` to /dev/null in a child, MB/s from dd's own time; the first read after dropping caches is the cold one, then ${RUNS} warm samples per system, systems interleaved, each sample the median of ${DD_PER_SAMPLE} reads in a row (one warm read lasts ~50 ms). Small files: a child (bench/mount/statopen.js) doing lstat + open + close on each small file in sorted order, and separately lstat + open + read to the end + close; cold = fresh mount (overlayfs remounted; cairn unmounted and mounted again with a new daemon, so its caches are empty and a cold read fetches from the registry) + dropped caches, warm = the same list again right after. Median (min–max) of ${RUNS} runs.`,
      '',
      '![read](read.svg)',
      '',
      '| system | warm seq. read MB/s | × native | first (cold) read MB/s | cold lstat+open+close files/s | × native | warm files/s | × native |',
      '|---|---|---|---|---|---|---|---|',
      ...sys.map(
        (k) =>
          `| ${label[k]} | ${fmtMs(r.seqWarm[k])} | ${(r.seqWarm[k].median / r.seqWarm.native.median).toFixed(2)} | ${r.seqColdMBps[k].toFixed(0)} | ${fmtMs(r.statOpen[k].cold)} | ${(r.statOpen[k].cold.median / r.statOpen.native.cold.median).toFixed(2)} | ${fmtMs(r.statOpen[k].warm)} | ${(r.statOpen[k].warm.median / r.statOpen.native.warm.median).toFixed(2)} |`,
      ),
      '',
      `Small-file reads (lstat + open + read to the end + close; ${r.image.smallFiles} files), files/s and MB/s:`,
      '',
      '| system | cold files/s | × native | cold MB/s | warm files/s | × native | warm MB/s |',
      '|---|---|---|---|---|---|---|',
      ...(r.smallRead
        ? sys.map(
            (k) =>
              `| ${label[k]} | ${fmtMs(r.smallRead[k].cold)} | ${(r.smallRead[k].cold.median / r.smallRead.native.cold.median).toFixed(2)} | ${r.smallRead[k].coldMBps.median.toFixed(1)} | ${fmtMs(r.smallRead[k].warm)} | ${(r.smallRead[k].warm.median / r.smallRead.native.warm.median).toFixed(2)} | ${r.smallRead[k].warmMBps.median.toFixed(1)} |`,
          )
        : []),
      '',
      `cairn fetched ${(r.cairnMount.bytesFetched / MB).toFixed(1)} MB from the registry during the read phase (the big file once; metadata operations fetch nothing). FUSE read bytes served by the daemon during the ${RUNS} warm reads: ${r.cairnMount.servedDuringWarm} (0 = every warm read came from the kernel page cache, kept across opens by \`kernel_cache\`).`,
      '',
    );
  }
  writeFileSync(join(out, 'results.md'), md.join('\n'));

  if (results.mounttime) {
    const r = results.mounttime;
    const pts = (f) => r.images.map((im) => [im.entries, f(im)]);
    writeFileSync(
      join(out, 'mounttime.svg'),
      lineChart({
        title: 'cairn mount: time to first byte vs image entries (median)',
        xLabel: 'entries in the image (all layers)',
        yLabel: 'ms',
        xTicks: r.images.map((im) => im.entries),
        series: [
          { name: 'first byte, cold daemon', points: pts((im) => im.cold.totalMs.median) },
          { name: 'first byte, running daemon', points: pts((im) => im.warm.totalMs.median) },
          { name: 'daemon mount (readySeconds)', points: pts((im) => im.cold.readyMs.median) },
          { name: 'target 1 s', points: pts(() => 1000), dashed: true },
        ],
      }),
    );
  }
  if (results.coldstart) {
    const r = results.coldstart;
    const bar = (s) => ({
      value: s.median / 1000,
      min: s.min / 1000,
      max: s.max / 1000,
      label: (s.median / 1000).toFixed(2),
    });
    writeFileSync(
      join(out, 'coldstart.svg'),
      barChart({
        title: 'Cold start: time to run the image command (empty caches)',
        yLabel: 'seconds (median, min–max)',
        series: ['pull + tar unpack + run', 'pull + umoci unpack + run', 'cairn mount + run', 'cairn --prefetch + run'],
        groups: r.images.map((im) => ({
          label: im.ref,
          bars: [
            bar(im.pull.totalMs),
            im.umoci ? bar(im.umoci.totalMs) : { value: 0 },
            bar(im.cairn.totalMs),
            im.profile?.totalMs ? bar(im.profile.totalMs) : { value: 0 },
          ],
        })),
      }),
    );
  }
  if (results.read) {
    const r = results.read;
    const sys = ['native', 'overlay', 'cairn'];
    const bar = (s) => ({ value: s.median, min: s.min, max: s.max, label: s.median.toFixed(0) });
    writeFileSync(
      join(out, 'read.svg'),
      barChart({
        title: 'Read: native vs overlayfs vs cairn',
        yLabel: 'MB/s or files/s (median, min–max)',
        series: ['native', 'kernel overlayfs', 'cairn'],
        groups: [
          { label: 'warm seq. read MB/s', bars: sys.map((k) => bar(r.seqWarm[k])) },
          { label: 'cold lstat+open+close files/s', bars: sys.map((k) => bar(r.statOpen[k].cold)) },
          ...(r.smallRead
            ? [
                { label: 'cold small-file read files/s', bars: sys.map((k) => bar(r.smallRead[k].cold)) },
                { label: 'warm small-file read files/s', bars: sys.map((k) => bar(r.smallRead[k].warm)) },
              ]
            : []),
        ],
      }),
    );
  }
  progress('report', `wrote ${out}/results.json, results.md and the plots`);
}

// ---- main ---------------------------------------------------------------------------------

let failed = false;
const started = now();
try {
  let results = {};
  if (existsSync(join(out, 'results.json'))) {
    try {
      results = JSON.parse(readFileSync(join(out, 'results.json'), 'utf8'));
    } catch {
      results = {};
    }
  }
  const todo = which === 'all' ? SUBS : [which];
  const fns = { mounttime: benchMounttime, coldstart: benchColdstart, read: benchRead };
  const seconds = {};
  for (const sub of todo) {
    const t0 = now();
    progress(sub, 'starting');
    const loadBefore = readFileSync('/proc/loadavg', 'utf8').trim();
    const mine = new Cleanup();
    scope = mine;
    const undo = cleanup.add(`${sub} resources`, () => mine.run());
    try {
      results[sub] = await fns[sub]();
    } finally {
      await undo();
      scope = cleanup;
    }
    seconds[sub] = (now() - t0) / 1000;
    results[sub].seconds = seconds[sub];
    results[sub].loadavg = { before: loadBefore, after: readFileSync('/proc/loadavg', 'utf8').trim() };
    progress(sub, `done in ${seconds[sub].toFixed(0)} s`);
  }
  results.machine = { ...machineInfo(work), distHash };
  // The command as the user typed it: without the options bench/run.js adds for its suite names.
  const suiteOptions = ['--out', '--title', '--command-name', '--progress-name'];
  const typed = argv.filter((a, i) => !suiteOptions.includes(a) && !suiteOptions.includes(argv[i - 1]));
  results.command = COMMAND_NAME === 'node bench/mount/run.js' ? typed.join(' ') || 'all' : typed.slice(1).join(' ');
  results.totalSeconds = (now() - started) / 1000;
  writeReport(results);
} catch (err) {
  failed = true;
  progress('error', err instanceof Error ? (err.stack ?? err.message) : String(err));
} finally {
  await cleanup.run();
  const left = procMounts().filter((m) => m.mnt.startsWith(work) || m.mnt.startsWith(shm));
  if (left.length > 0) {
    failed = true;
    progress('cleanup', `still mounted: ${left.map((m) => m.mnt).join(', ')}`);
  }
  progress('done', `${((now() - started) / 1000).toFixed(0)} s in all${failed ? ' (failed)' : ''}`);
  process.exit(failed ? 1 : 0);
}
