#!/usr/bin/env node
// The layer-depth experiment of Li et al. (WWW'22, Fig. 13), on four systems side by side:
// 30 layers of 1000 empty files each; for D in {1, 2, 4, 8, 12, 16, 20, 25, 30} an image of the
// bottom D layers stacked (layer 1 at the bottom, layer D on top), mounted by
//   overlay         kernel overlayfs, the layers extracted to directories (read-only lowerdirs)
//   fuse-overlayfs  the Debian package, over its own copy of the extracted layers
//   cairn-stacked   `cairn mount --lookup stacked` (names resolved layer by layer, as overlayfs)
//   cairn-flat      `cairn mount --lookup flat` (a merged index)
// (both cairn systems from `cairn registry serve` on loopback, images imported beforehand, one
// daemon for every cairn mount). A measurement: drop the kernel's caches, then a child process
// opens and closes 20 random files of the bottom layer (or, separately, of the top layer) and
// times the 20 opens itself. One cache drop serves one (D, layer) pair for all four systems,
// which read disjoint data (overlayfs and fuse-overlayfs have their own copies of the layers;
// cairn's daemon reads nothing from disk for an empty file), in rotating order. Mounts stay up
// for the whole run, as a running container's image does. L(D) = median over the repetitions;
// a least-squares line L = a·D + b per system and layer.
//
//   node bench/depth/run.js [--reps 40] [--mount-reps 2] [--depths 1,2,4,...] [--files 1000]
//        [--opens 20] [--seed 1] [--work /var/tmp] [--out bench/results/depth] [--quick]
//
// --quick: depths 1,4,8, 3 repetitions, 1 mount repetition, written to a temp dir (a smoke
// test). Needs root (FUSE, overlayfs, drop_caches) and fuse-overlayfs (scripts/setup.sh).
// This process never touches a mounted path: the prober child does.
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { mkdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { lineChart } from '../lib/svg.js';
import {
  Cleanup,
  DIST,
  REPO,
  cairnMount,
  childEnv,
  cleanupOnSignals,
  dropCaches,
  forceUnmount,
  linearFit,
  loadAverage,
  machineInfo,
  now,
  prng,
  procMounts,
  progress,
  quantile,
  removeTree,
  run,
  runChecked,
  setProgressPrefix,
  snapshotBuild,
  startDaemon,
  startRegistry,
  summary,
} from '../lib/bench.js';

setProgressPrefix('depth');

// ---- options ------------------------------------------------------------------------------

const argv = process.argv.slice(2);
const opt = (name, def) => {
  const i = argv.indexOf(name);
  return i >= 0 ? argv[i + 1] : def;
};
if (argv.includes('--help') || argv.includes('-h')) {
  process.stdout.write(
    `${[
      'usage: npm run bench -- depth [options]',
      '  --reps N         repetitions of every (system, depth, layer) measurement (default 40)',
      '  --mount-reps N   mounts timed per (system, depth) (default 2)',
      '  --depths LIST    image depths (default 1,2,4,8,12,16,20,25,30)',
      '  --files N        empty files per layer (default 1000)',
      '  --opens N        files opened per measurement (default 20)',
      '  --seed N         seed of the random file picks (default 1)',
      '  --work DIR       where layers, mounts and the registry go (default /var/tmp)',
      '  --out DIR        results directory (default bench/results/depth)',
      '  --quick          depths 1,4,8, 3 repetitions, results to a temp dir (smoke test)',
      '  --report FILE    only rewrite results.md and the plots in --out from a results.json',
    ].join('\n')}\n`,
  );
  process.exit(0);
}
const QUICK = argv.includes('--quick');
const DEPTHS = opt('--depths', QUICK ? '1,4,8' : '1,2,4,8,12,16,20,25,30')
  .split(',')
  .map(Number);
const REPS = Number(opt('--reps', QUICK ? '3' : '40'));
const MOUNT_REPS = Number(opt('--mount-reps', QUICK ? '1' : '2'));
const FILES = Number(opt('--files', '1000'));
const OPENS = Number(opt('--opens', '20'));
const SEED = Number(opt('--seed', '1'));
const workBase = opt('--work', '/var/tmp');
const out = opt('--out', QUICK ? join(tmpdir(), 'cairn-bench-depth-quick') : join(REPO, 'bench/results/depth'));
for (const [name, v] of Object.entries({ REPS, MOUNT_REPS, FILES, OPENS })) {
  if (!Number.isInteger(v) || v < 1) throw new Error(`depth bench: --${name.toLowerCase()} must be a positive integer`);
}
if (DEPTHS.some((d) => !Number.isInteger(d) || d < 1) || DEPTHS.length < 2) {
  throw new Error('depth bench: --depths must list at least two positive integers');
}
if (OPENS > FILES) throw new Error('depth bench: --opens must not exceed --files');
const LAYERS = Math.max(...DEPTHS);

const SYSTEMS = ['overlay', 'fuse-overlayfs', 'cairn-stacked', 'cairn-flat'];
const LABEL = {
  overlay: 'kernel overlayfs',
  'fuse-overlayfs': 'fuse-overlayfs',
  'cairn-stacked': 'cairn --lookup stacked',
  'cairn-flat': 'cairn --lookup flat',
};
const SHORT = {
  overlay: 'overlayfs',
  'fuse-overlayfs': 'fuse-overlayfs',
  'cairn-stacked': 'cairn stacked',
  'cairn-flat': 'cairn flat',
};
const COLOR = { overlay: '#1f77b4', 'fuse-overlayfs': '#ff7f0e', 'cairn-stacked': '#d62728', 'cairn-flat': '#2ca02c' };
const POSITIONS = ['bottom', 'top'];
/** Li et al., WWW'22, Fig. 13: L = a·D + b for 20 cold opens over overlay layers. */
const PAPER = { a: 0.001526, b: 0.03087 };

// --report FILE: rewrite results.md and the plots in --out from a results.json, measuring nothing.
const REPORT_FROM = opt('--report', undefined);
if (REPORT_FROM === undefined && process.getuid?.() !== 0) {
  process.stderr.write('depth bench: needs root (FUSE, overlayfs, drop_caches)\n');
  process.exit(77);
}

const pad = (n, w) => String(n).padStart(w, '0');
const fileName = (layer, i) => `l${pad(layer, 2)}-${pad(i, 4)}`;
const rotate = (arr, k) => arr.map((_, i) => arr[(i + k) % arr.length]);

/** `k` distinct indices out of 0..n-1. */
function pickDistinct(rand, n, k) {
  const picked = new Set();
  while (picked.size < k) picked.add(Math.floor(rand() * n));
  return [...picked];
}

// ---- setup --------------------------------------------------------------------------------

if (REPORT_FROM !== undefined) {
  writeReport(JSON.parse(readFileSync(REPORT_FROM, 'utf8')));
  process.exit(0);
}

const cleanup = new Cleanup();
cleanupOnSignals(cleanup);
const work = mkdtempSync(join(workBase, 'cairn-bench-depth-'));
cleanup.add('remove work dir', () => removeTree(work));

/** Writes the layers: tars for cairn, two extracted copies (overlayfs, fuse-overlayfs). */
async function buildLayers(buildTar) {
  const tars = [];
  await mkdir(join(work, 'empty'));
  for (let k = 1; k <= LAYERS; k++) {
    const entries = Array.from({ length: FILES }, (_, i) => ({
      header: { name: fileName(k, i), type: 'file', mode: 0o644, mtime: 1_700_000_000 },
      content: Buffer.alloc(0),
    }));
    const tar = buildTar(entries);
    tars.push(tar);
    for (const copy of ['ovl', 'fovl']) {
      const dir = join(work, copy, `l${pad(k, 2)}`);
      await mkdir(dir, { recursive: true });
      await runChecked('tar', ['-x', '-f', '-', '-C', dir, '--numeric-owner', '-p'], { input: tar });
    }
  }
  return tars;
}

/** The prober child (bench/depth/probe.js): resolves { open(paths) -> ms, close() }. */
function startProber() {
  const child = spawn(process.execPath, [join(REPO, 'bench/depth/probe.js')], {
    env: childEnv(),
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  const waiting = [];
  createInterface({ input: child.stdout }).on('line', (line) => waiting.shift()?.(JSON.parse(line)));
  const stop = cleanup.add(`prober ${child.pid}`, () => {
    child.stdin.end();
    child.kill('SIGKILL');
  });
  return {
    open(paths) {
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          child.kill('SIGKILL');
          reject(new Error(`prober: no answer within 60 s opening ${paths[0]} ...`));
        }, 60_000);
        waiting.push((r) => {
          clearTimeout(timer);
          if (r.error) reject(new Error(`prober: ${r.error}`));
          else resolve(r.ms);
        });
        child.stdin.write(`${JSON.stringify({ paths })}\n`);
      });
    },
    stop,
  };
}

// ---- mounts -------------------------------------------------------------------------------

/** Mounts `sys` at depth D; resolves { ms (wall time of the mount command), readyMs?, unmount }. */
async function mountSystem(sys, D, reg, stateDir) {
  const mnt = join(work, 'mnt', `${sys}-${D}`);
  await mkdir(mnt, { recursive: true });
  // Top first. Kernel overlayfs wants two lowerdirs when it has no upperdir: at D=1 an empty
  // directory goes under layer 1 (a regular file found in layer 1 never looks below it).
  const lower = (copy) =>
    [
      ...Array.from({ length: D }, (_, i) => join(work, copy, `l${pad(D - i, 2)}`)),
      ...(D === 1 && copy === 'ovl' ? [join(work, 'empty')] : []),
    ].join(':');
  if (sys === 'overlay' || sys === 'fuse-overlayfs') {
    const [cmd, args] =
      sys === 'overlay'
        ? ['mount', ['-t', 'overlay', 'overlay', '-o', `ro,lowerdir=${lower('ovl')}`, mnt]]
        : ['fuse-overlayfs', ['-o', `lowerdir=${lower('fovl')}`, mnt]];
    const undo = cleanup.add(`unmount ${mnt}`, () => forceUnmount(mnt));
    const r = await run(cmd, args, { timeoutMs: 60_000 });
    if (r.code !== 0) {
      await undo();
      throw new Error(`${cmd} at ${mnt} failed (${r.code}): ${r.stderr.trim()}`);
    }
    const unmount = async () => {
      await runChecked(sys === 'overlay' ? 'umount' : 'fusermount3', sys === 'overlay' ? [mnt] : ['-u', mnt], {
        timeoutMs: 30_000,
      });
      await undo();
    };
    return { mnt, ms: r.ms, unmount };
  }
  const m = await cairnMount(cleanup, {
    url: reg.url,
    ref: `depth/d${D}:1`,
    mnt,
    stateDir,
    args: ['--lookup', sys === 'cairn-flat' ? 'flat' : 'stacked'],
    daemonExits: false,
  });
  return { mnt, ms: m.cliMs, readyMs: m.info.readySeconds * 1000, unmount: m.unmount };
}

// ---- the experiment -------------------------------------------------------------------------

async function bench() {
  const { buildTar } = await import(join(DIST, 'tar/writer.js'));
  const { writeOciLayout } = await import(join(DIST, 'image/layout-writer.js'));
  const { importImage } = await import(join(DIST, 'registry/importer.js'));
  const { RegistryStore } = await import(join(DIST, 'registry/store.js'));

  let t0 = now();
  const tars = await buildLayers(buildTar);
  progress(
    'setup',
    `${LAYERS} layers x ${FILES} empty files written and extracted twice in ${((now() - t0) / 1000).toFixed(1)} s`,
  );
  t0 = now();
  const layout = join(work, 'layout');
  await writeOciLayout(
    layout,
    DEPTHS.map((D) => ({
      ref: `depth/d${D}:1`,
      layers: tars.slice(0, D).map((tar) => ({ tar, compression: 'none' })),
      config: { Cmd: ['/bin/sh'] },
    })),
  );
  const regRoot = join(work, 'registry');
  const store = await RegistryStore.open(regRoot);
  try {
    for (const D of DEPTHS) await importImage(store, `${layout}:depth/d${D}:1`, `depth/d${D}:1`);
  } finally {
    store.close();
  }
  await rm(layout, { recursive: true, force: true });
  progress('setup', `${DEPTHS.length} images imported into a cairn registry in ${((now() - t0) / 1000).toFixed(1)} s`);
  const reg = await startRegistry(cleanup, regRoot, join(work, 'registry.log'));
  const stateDir = join(work, 'state');
  await startDaemon(cleanup, stateDir);
  progress('setup', `registry at ${reg.url}; one cairn daemon on ${stateDir}`);

  // Mount time: every (system, depth) mounted MOUNT_REPS times, interleaved; the last stays up.
  const mountMs = Object.fromEntries(SYSTEMS.map((s) => [s, Object.fromEntries(DEPTHS.map((D) => [D, []]))]));
  const readyMs = Object.fromEntries(DEPTHS.map((D) => [D, { 'cairn-stacked': [], 'cairn-flat': [] }]));
  const mounts = Object.fromEntries(SYSTEMS.map((s) => [s, {}]));
  for (let r = 0; r < MOUNT_REPS; r++) {
    for (const D of DEPTHS) {
      for (const sys of rotate(SYSTEMS, r + D)) {
        const m = await mountSystem(sys, D, reg, stateDir);
        mountMs[sys][D].push(m.ms);
        if (m.readyMs !== undefined) readyMs[D][sys].push(m.readyMs);
        if (r < MOUNT_REPS - 1) await m.unmount();
        else mounts[sys][D] = m;
      }
    }
    progress('mount', `mount round ${r + 1}/${MOUNT_REPS} done (${DEPTHS.length * SYSTEMS.length} mounts)`);
  }

  // Every mount shows the files of its D layers.
  for (const sys of SYSTEMS) {
    for (const D of DEPTHS) {
      const r = await runChecked('sh', ['-c', 'ls -AU "$1" | wc -l', 'sh', mounts[sys][D].mnt], { timeoutMs: 60_000 });
      const n = Number(r.stdout.trim());
      if (n !== D * FILES) throw new Error(`${sys} at depth ${D} lists ${n} entries, not ${D * FILES}`);
    }
  }
  progress('setup', `all ${SYSTEMS.length * DEPTHS.length} mounts list the right number of files`);

  const prober = startProber();
  const rand = prng(SEED);
  const samples = Object.fromEntries(
    SYSTEMS.map((s) => [
      s,
      Object.fromEntries(POSITIONS.map((p) => [p, Object.fromEntries(DEPTHS.map((D) => [D, []]))])),
    ]),
  );
  const groups = DEPTHS.flatMap((D) => POSITIONS.map((pos) => ({ D, pos })));
  const loads = [];
  const tRun = now();
  for (let r = 0; r < REPS; r++) {
    for (const [gi, { D, pos }] of rotate(groups, r).entries()) {
      const layer = pos === 'bottom' ? 1 : D;
      const names = pickDistinct(rand, FILES, OPENS).map((i) => fileName(layer, i));
      await dropCaches();
      for (const sys of rotate(SYSTEMS, r + gi)) {
        const ms = await prober.open(names.map((n) => join(mounts[sys][D].mnt, n)));
        samples[sys][pos][D].push(ms);
      }
    }
    loads.push(loadAverage());
    const el = (now() - tRun) / 1000;
    const last = DEPTHS[DEPTHS.length - 1];
    progress(
      'run',
      `repetition ${r + 1}/${REPS} (${el.toFixed(0)} s, about ${((el / (r + 1)) * (REPS - r - 1)).toFixed(0)} s left; load ${loads.at(-1)}); median ms of the ${OPENS} bottom-layer opens at D=${last} so far: ${SYSTEMS.map((s) => `${s} ${summary(samples[s].bottom[last]).median.toFixed(2)}`).join(', ')}`,
    );
  }
  await prober.stop();
  for (const sys of SYSTEMS) for (const D of DEPTHS) await mounts[sys][D].unmount();

  // Fits on the per-depth medians (the paper fitted means: both are kept).
  const stat = (xs) => ({
    ...summary(xs),
    p25: quantile(xs, 0.25),
    p75: quantile(xs, 0.75),
    mean: xs.reduce((a, b) => a + b, 0) / xs.length,
  });
  const systems = {};
  for (const sys of SYSTEMS) {
    systems[sys] = { label: LABEL[sys], mountMs: {}, daemonMountMs: {} };
    for (const D of DEPTHS) {
      systems[sys].mountMs[D] = summary(mountMs[sys][D]);
      if (readyMs[D][sys]) systems[sys].daemonMountMs[D] = summary(readyMs[D][sys]);
    }
    for (const pos of POSITIONS) {
      const points = DEPTHS.map((D) => ({ D, ...stat(samples[sys][pos][D]) }));
      systems[sys][pos] = {
        points,
        fit: linearFit(points.map((p) => [p.D, p.median])),
        fitOfMeans: linearFit(points.map((p) => [p.D, p.mean])),
      };
    }
  }
  const first = DEPTHS[0];
  const last = DEPTHS[DEPTHS.length - 1];
  const at = (sys, pos, D) => systems[sys][pos].points.find((p) => p.D === D).median;
  const ratios = {};
  for (const sys of SYSTEMS) {
    ratios[sys] = {};
    for (const pos of POSITIONS) {
      ratios[sys][pos] = {
        slope: systems[sys][pos].fit.a / systems.overlay[pos].fit.a,
        atFirst: at(sys, pos, first) / at('overlay', pos, first),
        atLast: at(sys, pos, last) / at('overlay', pos, last),
      };
    }
  }
  const flat = systems['cairn-flat'].bottom;
  const kernel = systems.overlay.bottom;
  const targets = {
    flatSlope: {
      target: "cairn flat's slope (bottom-layer opens) at most 1/10 of kernel overlayfs's",
      measured: ratios['cairn-flat'].bottom.slope,
      met: flat.fit.a <= kernel.fit.a / 10,
    },
    flatFasterAtLast: {
      target: `cairn flat faster than kernel overlayfs at D=${last} (bottom-layer opens, median)`,
      measured: { cairnFlatMs: at('cairn-flat', 'bottom', last), overlayMs: at('overlay', 'bottom', last) },
      met: at('cairn-flat', 'bottom', last) < at('overlay', 'bottom', last),
    },
  };
  return {
    config: {
      depths: DEPTHS,
      layers: LAYERS,
      filesPerLayer: FILES,
      opens: OPENS,
      reps: REPS,
      mountReps: MOUNT_REPS,
      seed: SEED,
    },
    systems,
    ratios,
    targets,
    paper: { ...PAPER, note: "Li et al., WWW'22, Fig. 13: mean of 500 runs of 20 cold opens, overlay layers" },
    loadDuringRuns: loads,
    measureSeconds: (now() - tRun) / 1000,
  };
}

// ---- report -------------------------------------------------------------------------------

function panel(res, pos, title) {
  const series = [];
  for (const sys of SYSTEMS) {
    const s = res.systems[sys][pos];
    series.push({ name: SHORT[sys], color: COLOR[sys], points: s.points.map((p) => [p.D, p.median]) });
    series.push({
      name: `  fit: ${s.fit.a.toFixed(3)}·D + ${s.fit.b.toFixed(2)}`,
      color: COLOR[sys],
      dashed: true,
      points: [res.config.depths[0], res.config.layers].map((D) => [D, s.fit.a * D + s.fit.b]),
    });
  }
  return lineChart({
    title,
    xLabel: 'image depth D (layers)',
    yLabel: `ms for ${res.config.opens} cold opens (median; dashed: fit)`,
    xTicks: res.config.depths,
    series,
    width: 820,
    height: 460,
  });
}

/** Two SVG charts side by side in one SVG. */
function sideBySide(a, b, width = 820, height = 460) {
  const inner = (svg, x) => svg.replace('<svg ', `<svg x="${x}" y="0" `);
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${2 * width}" height="${height}">\n${inner(a, 0)}\n${inner(b, width)}\n</svg>\n`;
}

function writeReport(res) {
  mkdirSync(out, { recursive: true });
  writeFileSync(join(out, 'results.json'), `${JSON.stringify(res, null, 2)}\n`);
  const m = res.machine;
  const { depths, opens, reps, filesPerLayer, layers } = res.config;
  const first = depths[0];
  const last = depths[depths.length - 1];
  const yes = (b) => (b ? 'yes' : '**no**');
  const f2 = (x) => x.toFixed(2);
  const f3 = (x) => x.toFixed(3);
  const cell = (p) => `${f2(p.median)} (${f2(p.p25)}–${f2(p.p75)})`;
  const md = [
    '# Layer depth against open latency (`npm run bench -- depth`)',
    '',
    `Command: \`node bench/run.js depth ${res.command}\` · commit ${m.commit}${m.srcDirty ? ' (uncommitted changes in src/)' : ''} · build snapshot ${m.distHash} · ${m.date} · ${res.totalSeconds.toFixed(0)} s (measurements ${res.measureSeconds.toFixed(0)} s)`,
    '',
    `Machine: ${m.cpu}, ${m.cores} cores, ${m.memGiB} GiB, kernel ${m.kernel}, Node ${m.node}; work dir on ${m.workFs}. Load average (1/5/15 min) before ${res.loadavg.before}, after ${res.loadavg.after}; during the repetitions ${res.loadDuringRuns[0]} … ${res.loadDuringRuns.at(-1)}. The machine is shared with other work: systems are interleaved and medians quoted.`,
    '',
    '## Method',
    '',
    `The experiment of Li et al. (WWW'22, Fig. 13). ${layers} layers of ${filesPerLayer} empty files each, all in the layer's root directory (\`lKK-NNNN\`). An image of depth D stacks layers 1..D (layer 1 at the bottom, layer D on top); D ∈ {${depths.join(', ')}}. Systems, all mounted for the whole run (no remount between repetitions): **kernel overlayfs** (layers extracted to directories, read-only \`lowerdir\`; at D=1 an empty directory under layer 1, since overlayfs needs two lowerdirs without an upperdir), **fuse-overlayfs** (Debian package, its own copy of the extracted layers), **cairn --lookup stacked** and **cairn --lookup flat** (\`cairn registry serve\` on loopback, images imported beforehand, one \`cairn daemon\` serving every cairn mount). One measurement: \`sync; echo 3 > /proc/sys/vm/drop_caches\` (the kernel's page, dentry and inode caches), then a child process opens (O_RDONLY) and closes ${opens} random distinct files of the bottom layer (layer 1), or, separately, of the top layer (layer D), and times the ${opens} opens itself (hrtime around the loop; the child is long-lived, so no process start-up is included). One cache drop serves one (D, layer) pair for the four systems, in rotating order: they read disjoint data (two copies of the layers; cairn reads nothing from disk for an empty file). The files are empty, so cairn's memory cache tier holds nothing for them and nothing is fetched; what stays across a drop is cairn's in-memory metadata (the union index, as in any mounted image) and, likewise, fuse-overlayfs's own in-process node cache. L(D) = median of ${reps} repetitions (p25–p75 in brackets); a least-squares line L = a·D + b through the medians (the fit of the means is in results.json). Ratios are to kernel overlayfs.`,
    '',
    '![latency against depth](depth.svg)',
    '',
    '## Targets',
    '',
    '| target | measured | met |',
    '|---|---|---|',
    `| ${res.targets.flatSlope.target} | ${f3(res.targets.flatSlope.measured)}× kernel's slope (cairn flat a = ${f3(res.systems['cairn-flat'].bottom.fit.a)} ms/layer, kernel a = ${f3(res.systems.overlay.bottom.fit.a)} ms/layer) | ${yes(res.targets.flatSlope.met)} |`,
    `| ${res.targets.flatFasterAtLast.target} | cairn flat ${f2(res.targets.flatFasterAtLast.measured.cairnFlatMs)} ms, kernel overlayfs ${f2(res.targets.flatFasterAtLast.measured.overlayMs)} ms | ${yes(res.targets.flatFasterAtLast.met)} |`,
    '',
    '## Fits: L = a·D + b',
    '',
    `| system | layer opened | a (ms per layer) | b (ms) | R² | L(D=${first}) ms | L(D=${last}) ms | slope ÷ kernel's | L(${first}) ÷ kernel's | L(${last}) ÷ kernel's |`,
    '|---|---|---|---|---|---|---|---|---|---|',
  ];
  for (const pos of POSITIONS) {
    for (const sys of SYSTEMS) {
      const s = res.systems[sys][pos];
      const q = res.ratios[sys][pos];
      // A ratio of slopes means something only when kernel overlayfs's latency does grow with D.
      const k = res.systems.overlay[pos].fit;
      const slopeRatio = k.r2 >= 0.5 && k.a > 0 ? f2(q.slope) : 'n/a (kernel flat)';
      md.push(
        `| ${LABEL[sys]} | ${pos} | ${f3(s.fit.a)} | ${f2(s.fit.b)} | ${f3(s.fit.r2)} | ${f2(s.points[0].median)} | ${f2(s.points.at(-1).median)} | ${slopeRatio} | ${f2(q.atFirst)} | ${f2(q.atLast)} |`,
      );
    }
  }
  md.push(
    `| Li et al. (paper, overlay, means of 500 runs) | bottom | ${(res.paper.a * 1000).toFixed(3)} | ${(res.paper.b * 1000).toFixed(2)} | | ${((res.paper.a * first + res.paper.b) * 1000).toFixed(2)} | ${((res.paper.a * last + res.paper.b) * 1000).toFixed(2)} | | | |`,
    '',
  );
  for (const pos of POSITIONS) {
    md.push(
      `## ${pos === 'bottom' ? 'Bottom-layer' : 'Top-layer'} opens: ms for ${opens} files, median (p25–p75) of ${reps}`,
      '',
      `| D | ${SYSTEMS.map((s) => LABEL[s]).join(' | ')} |`,
      `|---|${SYSTEMS.map(() => '---').join('|')}|`,
      ...depths.map((D, i) => `| ${D} | ${SYSTEMS.map((s) => cell(res.systems[s][pos].points[i])).join(' | ')} |`),
      '',
    );
  }
  md.push(
    `## Mount time against depth: ms, median (min–max) of ${res.config.mountReps}`,
    '',
    "Wall time of the mount command run as a child: `mount -t overlay`, `fuse-overlayfs` (returns once mounted), `cairn mount` (the CLI, with the daemon already running; the daemon's own mount time, from the image's metadata to the FUSE mount, in brackets). Page cache warm.",
    '',
    `| D | ${SYSTEMS.map((s) => LABEL[s]).join(' | ')} |`,
    `|---|${SYSTEMS.map(() => '---').join('|')}|`,
    ...depths.map(
      (D) =>
        `| ${D} | ${SYSTEMS.map((s) => {
          const x = res.systems[s].mountMs[D];
          const d = res.systems[s].daemonMountMs[D];
          return `${x.median.toFixed(0)} (${x.min.toFixed(0)}–${x.max.toFixed(0)})${d ? ` [daemon ${d.median.toFixed(0)}]` : ''}`;
        }).join(' | ')} |`,
    ),
    '',
  );
  writeFileSync(join(out, 'results.md'), md.join('\n'));
  writeFileSync(
    join(out, 'depth.svg'),
    sideBySide(
      panel(res, 'bottom', `${opens} cold opens of bottom-layer files`),
      panel(res, 'top', `${opens} cold opens of top-layer files`),
    ),
  );
  writeFileSync(
    join(out, 'mounttime.svg'),
    lineChart({
      title: 'Mount time against image depth (median)',
      xLabel: 'image depth D (layers)',
      yLabel: 'ms',
      xTicks: depths,
      series: SYSTEMS.map((s) => ({
        name: LABEL[s],
        color: COLOR[s],
        points: depths.map((D) => [D, res.systems[s].mountMs[D].median]),
      })),
    }),
  );
  progress('report', `wrote ${out}/results.json, results.md, depth.svg, mounttime.svg`);
}

// ---- main ---------------------------------------------------------------------------------

let failed = false;
const started = now();
try {
  const loadBefore = loadAverage();
  const distHash = await snapshotBuild(work);
  const res = await bench();
  res.loadavg = { before: loadBefore, after: loadAverage() };
  res.machine = { ...machineInfo(work), distHash };
  res.command = argv.join(' ');
  res.totalSeconds = (now() - started) / 1000;
  writeReport(res);
  for (const t of Object.values(res.targets)) progress('target', `${t.target}: ${t.met ? 'met' : 'NOT met'}`);
} catch (err) {
  failed = true;
  progress('error', err instanceof Error ? (err.stack ?? err.message) : String(err));
} finally {
  await cleanup.run();
  const left = procMounts().filter((m) => m.mnt.startsWith(work));
  if (left.length > 0) {
    failed = true;
    progress('cleanup', `still mounted: ${left.map((m) => m.mnt).join(', ')}`);
  }
  progress('done', `${((now() - started) / 1000).toFixed(0)} s in all${failed ? ' (failed)' : ''}`);
  process.exit(failed ? 1 : 0);
}
