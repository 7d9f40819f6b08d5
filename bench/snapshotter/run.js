#!/usr/bin/env node
// Time from pull to a command's output under containerd: `cairn containerd pull` + `ctr run
// --snapshotter cairn` (lazy layers) against `ctr images pull` + `ctr run` with containerd's own
// overlayfs snapshotter, the same image from the same cairn registry (its /v2 for ctr), the two
// interleaved (order flipped each round), medians of --runs rounds. Each round starts cold for
// both: the image is removed from containerd (GC'd, --sync) and the lazy path gets a fresh mount
// daemon (empty memory cache), started before the clock starts (a host runs it all the time).
// The page cache is not dropped (the machine is shared): the registry's files may be cached for
// both paths alike. Writes bench/results/snapshotter/results.{json,md}.
//
//   node bench/snapshotter/run.js [--runs 5] [--corpus /var/tmp/cairn-corpus] [--refs a,b] [--out DIR]
//
// Images: a synthetic one (24 MiB of data files under the sample image's busybox layers, command
// /app/hello.sh), and the corpus images named by --refs (default lang/python:3.11-b) when the
// corpus exists (their commands from its commands.json).
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import {
  CAIRN,
  Cleanup,
  DIST,
  REPO,
  childEnv,
  cairnCli,
  daemonPid,
  loadAverage,
  machineInfo,
  now,
  progress,
  run,
  runChecked,
  setProgressPrefix,
  sleep,
  startRegistry,
  summary,
  waitExit,
} from '../lib/bench.js';
import { option } from '../lib/args.js';
import { prng } from '../lib/prng.js';

setProgressPrefix('snapshotter');
const RUNS = Number(option('--runs', '5'));
const CORPUS = option('--corpus', '/var/tmp/cairn-corpus');
const REFS = option('--refs', 'lang/python:3.11-b').split(',').filter(Boolean);
const OUT = option('--out', join(REPO, 'bench/results/snapshotter'));
const SYNTH_REF = 'bench/synthetic:1';
const SYNTH_DATA = { files: 6, bytes: 4 * 1024 * 1024 };

if (!Number.isSafeInteger(RUNS) || RUNS < 1) throw new Error('--runs: must be a positive integer');
if (process.getuid?.() !== 0) throw new Error('needs root (containerd, mounts)');

/** The synthetic image as an OCI layout: data at the bottom, the sample's layers above. */
async function writeSynthetic(dir) {
  const { writeOciLayout, tarOfFiles } = await import(join(DIST, 'image/layout-writer.js'));
  const { sampleLayers, DEFAULT_BUSYBOX, hostPlatform } = await import(join(DIST, 'image/sample.js'));
  const rand = prng(7);
  const files = new Map();
  for (let i = 0; i < SYNTH_DATA.files; i++) {
    const b = Buffer.allocUnsafe(SYNTH_DATA.bytes);
    for (let j = 0; j < b.length; j += 4) b.writeUInt32LE((rand() * 2 ** 32) >>> 0, j);
    files.set(`data/f${i}.bin`, b);
  }
  const { tars } = sampleLayers(await readFile(DEFAULT_BUSYBOX));
  await writeOciLayout(dir, [
    {
      ref: SYNTH_REF,
      platform: hostPlatform(),
      layers: [tarOfFiles(files), ...tars].map((tar) => ({ tar, compression: 'gzip' })),
    },
  ]);
}

async function startContainerd(cleanup, dir, snapSock) {
  const socket = join(dir, 'containerd.sock');
  const { containerdConfig } = await import(join(DIST, 'containerd/config.js'));
  const config = containerdConfig({
    root: join(dir, 'ctrd-root'),
    state: join(dir, 'ctrd-state'),
    address: socket,
    snapshotterAddress: snapSock,
  });
  await writeFile(join(dir, 'containerd.toml'), config);
  const child = spawn('containerd', ['--config', join(dir, 'containerd.toml')], { stdio: 'ignore' });
  cleanup.add(`containerd ${child.pid}`, async () => {
    child.kill('SIGTERM');
    await waitExit(child.pid, 10_000);
  });
  for (let i = 0; ; i++) {
    if (existsSync(socket) && (await run('ctr', ['-a', socket, 'version'], { timeoutMs: 5000 })).code === 0) break;
    if (i > 200) throw new Error('containerd did not start');
    await sleep(100);
  }
  return socket;
}

async function startSnapshotter(cleanup, dir, url) {
  const snapSock = join(dir, 'snap.sock');
  const root = join(dir, 'snaproot');
  const child = spawn(
    process.execPath,
    [CAIRN, 'snapshotter', '--socket', snapSock, '--root', root, '--registry', url],
    {
      cwd: REPO,
      env: childEnv(),
      stdio: ['ignore', 'ignore', 'pipe'],
    },
  );
  let log = '';
  child.stderr.setEncoding('utf8').on('data', (c) => (log += c));
  cleanup.add(`snapshotter ${child.pid}`, async () => {
    child.kill('SIGTERM');
    await waitExit(child.pid, 10_000);
    await writeFile(join(dir, 'snapshotter.log'), log);
  });
  for (let i = 0; !log.includes('"serving"'); i++) {
    if (i > 200 || child.exitCode !== null) throw new Error(`snapshotter did not start: ${log}`);
    await sleep(50);
  }
  return { snapSock, daemonState: join(root, 'daemon') };
}

/** A fresh mount daemon for the lazy path (empty cache), answering before the clock starts. */
async function freshDaemon(stateDir) {
  const child = spawn(process.execPath, [CAIRN, 'daemon', '--state-dir', stateDir, '--log-level', 'warn'], {
    cwd: REPO,
    env: childEnv(),
    stdio: 'ignore',
    detached: true,
  });
  child.unref();
  for (let i = 0; (await daemonPid(stateDir)) !== child.pid; i++) {
    if (i > 200) throw new Error('mount daemon did not start');
    await sleep(50);
  }
  return child.pid;
}

async function stopDaemon(stateDir, pid) {
  const { callControl } = await import(join(DIST, 'daemon/control.js'));
  await callControl(join(stateDir, 'daemon.sock'), { op: 'shutdown' }, 10_000).catch(() => undefined);
  await waitExit(pid, 15_000);
}

async function main() {
  const cleanup = new Cleanup();
  for (const sig of ['SIGINT', 'SIGTERM']) process.once(sig, () => void cleanup.run().then(() => process.exit(130)));
  const work = await mkdtemp('/var/tmp/cairn-bench-snapshotter-');
  cleanup.add('work dir', () => rm(work, { recursive: true, force: true }));
  try {
    const regRoot = join(work, 'reg');
    const images = [];
    progress('setup', 'synthetic image');
    await writeSynthetic(join(work, 'synthetic'));
    await runChecked(process.execPath, [CAIRN, 'import', join(work, 'synthetic'), SYNTH_REF, '--root', regRoot], {
      timeoutMs: 600_000,
    });
    images.push({ ref: SYNTH_REF, command: ['/app/hello.sh'] });
    const commandsFile = join(CORPUS, 'commands.json');
    if (existsSync(commandsFile)) {
      const commands = JSON.parse(readFileSync(commandsFile, 'utf8'));
      for (const ref of REFS) {
        if (!commands[ref]) throw new Error(`--refs: ${ref} is not in ${commandsFile}`);
        progress('setup', `import ${ref}`);
        await runChecked(
          process.execPath,
          [CAIRN, 'import', `${join(CORPUS, 'layout')}:${ref}`, ref, '--root', regRoot],
          { timeoutMs: 600_000 },
        );
        images.push({ ref, command: commands[ref] });
      }
    } else progress('setup', `no corpus at ${CORPUS}: the synthetic image only`);

    const { url } = await startRegistry(cleanup, regRoot, join(work, 'registry.log'));
    const host = new URL(url).host;
    const { snapSock, daemonState } = await startSnapshotter(cleanup, work, url);
    const socket = await startContainerd(cleanup, work, snapSock);
    const ctr = (args, opts = {}) => runChecked('ctr', ['-a', socket, ...args], { timeoutMs: 300_000, ...opts });
    const { callControl } = await import(join(DIST, 'daemon/control.js'));
    const loads = [loadAverage()];

    const lazyRun = async (img, round) => {
      const pid = await freshDaemon(daemonState);
      try {
        const t0 = now();
        const pull = await cairnCli(['containerd', 'pull', img.ref, '--address', socket, '--registry', url, '--json'], {
          timeoutMs: 300_000,
          check: true,
        });
        const t1 = now();
        const out = await ctr(['run', '--snapshotter', 'cairn', '--rm', img.ref, `lazy-${round}`, ...img.command]);
        const t2 = now();
        const mounts = await callControl(join(daemonState, 'daemon.sock'), { op: 'list' });
        const top = mounts.reduce((a, b) => (b.layers > a.layers ? b : a));
        const stats = await callControl(join(daemonState, 'daemon.sock'), { op: 'stats', mountpoint: top.mountpoint });
        const p = JSON.parse(pull.stdout);
        if (p.lazy + p.present !== p.layers) throw new Error(`lazy pull of ${img.ref}: ${pull.stdout}`);
        return {
          pullMs: t1 - t0,
          runMs: t2 - t1,
          totalMs: t2 - t0,
          output: out.stdout.trim().slice(0, 200),
          bytesFetched: stats.bytesFetched,
          imageBytes: stats.imageBytes,
        };
      } finally {
        await ctr(['images', 'rm', '--sync', img.ref]).catch(() => undefined);
        for (let i = 0; i < 100; i++) {
          const left = await callControl(join(daemonState, 'daemon.sock'), { op: 'list' }).catch(() => []);
          if (left.length === 0) break;
          await sleep(100);
        }
        await stopDaemon(daemonState, pid);
      }
    };
    const overlayRun = async (img, round) => {
      const name = `${host}/${img.ref}`;
      try {
        const t0 = now();
        await ctr(['images', 'pull', '--plain-http', name]);
        const t1 = now();
        const out = await ctr(['run', '--rm', name, `overlay-${round}`, ...img.command]);
        const t2 = now();
        return { pullMs: t1 - t0, runMs: t2 - t1, totalMs: t2 - t0, output: out.stdout.trim().slice(0, 200) };
      } finally {
        await ctr(['images', 'rm', '--sync', name]).catch(() => undefined);
      }
    };

    const results = [];
    for (const img of images) {
      const lazy = [];
      const overlay = [];
      for (let round = 0; round < RUNS; round++) {
        const order = round % 2 === 0 ? ['lazy', 'overlay'] : ['overlay', 'lazy'];
        for (const which of order) {
          const r = which === 'lazy' ? await lazyRun(img, round) : await overlayRun(img, round);
          (which === 'lazy' ? lazy : overlay).push(r);
          progress(img.ref, `round ${round + 1}/${RUNS} ${which}: ${(r.totalMs / 1000).toFixed(3)} s`);
        }
        loads.push(loadAverage());
      }
      const s = (rs, k) => summary(rs.map((r) => r[k] / 1000));
      results.push({
        ref: img.ref,
        command: img.command,
        output: lazy[0]?.output,
        lazy: {
          totalS: s(lazy, 'totalMs'),
          pullS: s(lazy, 'pullMs'),
          runS: s(lazy, 'runMs'),
          bytesFetched: summary(lazy.map((r) => r.bytesFetched)),
          imageBytes: lazy[0]?.imageBytes,
        },
        overlay: { totalS: s(overlay, 'totalMs'), pullS: s(overlay, 'pullMs'), runS: s(overlay, 'runMs') },
      });
    }
    const report = { runs: RUNS, machine: machineInfo(work), loadavg: loads, results };
    await mkdir(OUT, { recursive: true });
    await writeFile(join(OUT, 'results.json'), `${JSON.stringify(report, null, 2)}\n`);
    await writeFile(join(OUT, 'results.md'), markdown(report));
    progress('done', `results in ${OUT}`);
  } finally {
    await cleanup.run();
  }
}

const f3 = (x) => x.toFixed(3);
const range = (s) => `${f3(s.median)} (${f3(s.min)}–${f3(s.max)})`;
const mb = (b) => (b / 1e6).toFixed(1);

function markdown(r) {
  const m = r.machine;
  const lines = [
    '# containerd: lazy pull with cairn against ctr pull with overlayfs',
    '',
    `Command: \`node bench/snapshotter/run.js --runs ${r.runs}\`: ${r.runs} rounds per image, the two paths interleaved (order flipped each round).`,
    `Machine: ${m.cpu}, ${m.cores} cores, ${m.memGiB} GiB, kernel ${m.kernel}, Node ${m.node}, commit ${m.commit}, ${m.date}.`,
    `Load average (1, 5, 15 min; the machine is shared) at the start and after each round: ${r.loadavg.join(' | ')}.`,
    '',
    '- **cairn**: `cairn containerd pull REF` (manifest and config into containerd, each layer a lazy snapshot) + `ctr run --snapshotter cairn --rm REF ID CMD`, with a fresh mount daemon (empty cache) per round.',
    "- **overlayfs**: `ctr images pull --plain-http HOST/REF` (containerd downloads and unpacks every layer into its overlayfs snapshotter) + `ctr run --rm`, from the same cairn registry's /v2.",
    '- Each round starts with the image removed from containerd (`ctr images rm --sync`: content and snapshots collected). The page cache is not dropped.',
    '',
    '| image | command | cairn: pull + run to output (s) | overlayfs: pull + run to output (s) | cairn / overlayfs | cairn pull / run (s) | overlayfs pull / run (s) | bytes fetched by cairn (MB) / image (MB) |',
    '| --- | --- | --- | --- | --- | --- | --- | --- |',
  ];
  for (const x of r.results) {
    lines.push(
      `| ${x.ref} | \`${x.command.join(' ')}\` | ${range(x.lazy.totalS)} | ${range(x.overlay.totalS)} | ${(x.lazy.totalS.median / x.overlay.totalS.median).toFixed(3)} | ${f3(x.lazy.pullS.median)} / ${f3(x.lazy.runS.median)} | ${f3(x.overlay.pullS.median)} / ${f3(x.overlay.runS.median)} | ${mb(x.lazy.bytesFetched.median)} / ${mb(x.lazy.imageBytes)} (${((100 * x.lazy.bytesFetched.median) / x.lazy.imageBytes).toFixed(1)} %) |`,
    );
  }
  lines.push('', 'Medians, (min–max) over the rounds. Samples in results.json.', '');
  return lines.join('\n');
}

await main();
