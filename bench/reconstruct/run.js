#!/usr/bin/env node
// Image reconstruction, evaluated as Li et al. (WWW'22) do (their Figs. 14-21), on the
// real-image corpus (bench/corpus, imported into a fresh store) and on a synthetic corpus
// of up to 1250 images (synth.js). Writes results.json, results.md and SVG plots to
// bench/results/reconstruct/.
//
//   node bench/reconstruct/run.js [--corpus /var/tmp/cairn-corpus] [--images 1250] [--out DIR]
//
// Storage is layer-level: the regular-file bytes of the unique layers (by entry set) the
// images use, what a registry that stores whole layers stores. Every SOIRA, GOIRA and LIDH
// plan is checked (merged view equal to the original's); OFPL plans are not (past 500
// layers they cannot be mounted), they give the floor.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, release, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { option } from '../lib/args.js';
import { lineChart } from '../lib/svg.js';
import { makeCorpus, rng } from './synth.js';

const repo = fileURLToPath(new URL('../..', import.meta.url));
const corpus = option('--corpus', '/var/tmp/cairn-corpus');
const maxImages = Number(option('--images', '1250'));
const out = option('--out', join(repo, 'bench/results/reconstruct'));
const goiraBudgetS = Number(option('--goira-budget-s', '240'));
if (!existsSync(join(repo, 'dist/reconstruct/index.js')))
  execFileSync('npm', ['run', 'build'], { cwd: repo, stdio: 'inherit' });
const R = await import(join(repo, 'dist/reconstruct/index.js'));

const COST = R.DEFAULT_COST;
const log = (...a) => process.stderr.write(`${a.join(' ')}\n`);
const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.floor(s.length / 2)] : 0;
};
const bytesOf = (entries) => entries.reduce((n, e) => n + (e.type === 'file' ? e.size : 0), 0);

/** Running layer-level storage: unique layers by entry set. */
class LayerStore {
  constructor() {
    this.layers = new Map();
    this.bytes = 0;
  }
  add(entries) {
    const id = R.entrySetHash(entries);
    if (!this.layers.has(id)) {
      const b = bytesOf(entries);
      this.layers.set(id, b);
      this.bytes += b;
    }
    return id;
  }
}

/** Runs an online algorithm over images in order; each repository's catalog grows with its images' layers. */
function online(images, algo, cost, checkpoints) {
  const catalogs = new Map();
  const store = new LayerStore();
  const rows = [];
  const perImage = [];
  let layerSum = 0;
  let invalid = 0;
  images.forEach((img, i) => {
    let catalog = catalogs.get(img.repository);
    if (!catalog) catalogs.set(img.repository, (catalog = new R.LayerCatalog()));
    const p = R.reconstructImage(img.layers, algo, catalog, { cost, skipValidity: algo === 'ofpl' });
    if (!p.valid) invalid++;
    const ids = p.layers.map((l) => store.add(l.entries));
    p.layers.forEach((l, j) => catalog.add(ids[j], l.entries));
    layerSum += p.layerCount;
    perImage.push({ seconds: p.seconds, layers: ids });
    if (checkpoints.includes(i + 1)) {
      rows.push({
        images: i + 1,
        storageBytes: store.bytes,
        uniqueLayers: store.layers.size,
        meanLayersPerImage: layerSum / (i + 1),
        medianSecondsPerImage: median(perImage.slice(Math.max(0, i + 1 - 50)).map((x) => x.seconds)),
        invalid,
      });
    }
  });
  return { rows, perImage, store };
}

function offline(images, cost) {
  const t = performance.now();
  const g = R.reconstructOffline(
    images.map((i) => i.layers),
    undefined,
    { cost },
  );
  const store = new LayerStore();
  let layerSum = 0;
  const perImage = g.plans.map((p) => {
    layerSum += p.layerCount;
    return { layers: p.layers.map((l) => store.add(l.entries)) };
  });
  return {
    storageBytes: store.bytes,
    uniqueLayers: store.layers.size,
    meanLayersPerImage: layerSum / images.length,
    invalid: g.plans.filter((p) => !p.valid).length,
    fallback: g.fallback.length,
    merges: g.merges,
    seconds: (performance.now() - t) / 1000,
    perImage,
    store,
  };
}

/** N clients each pulling M random images; layer cache vs file cache. */
function network(images, perImageLayers, layerStore, clients, pulls, seed) {
  const r = rng(seed);
  let layerTraffic = 0;
  let layerStorage = 0;
  let fileTraffic = 0;
  for (let c = 0; c < clients; c++) {
    const layers = new Set();
    const files = new Set();
    for (let k = 0; k < pulls; k++) {
      const i = Math.floor(r() * images.length);
      for (const id of perImageLayers[i].layers) {
        if (layers.has(id)) continue;
        layers.add(id);
        layerTraffic += layerStore.layers.get(id);
      }
      for (const l of images[i].layers)
        for (const e of l) {
          if (e.type !== 'file' || files.has(e.digest)) continue;
          files.add(e.digest);
          fileTraffic += e.size;
        }
    }
    for (const id of layers) layerStorage += layerStore.layers.get(id);
  }
  return {
    layerTrafficBytes: layerTraffic / clients,
    layerStorageBytes: layerStorage / clients,
    fileTrafficBytes: fileTraffic / clients,
  };
}

async function realCorpus() {
  const layout = join(corpus, 'layout');
  if (!existsSync(join(layout, 'index.json'))) return { skipped: `no corpus at ${layout}` };
  const { RegistryStore } = await import(join(repo, 'dist/registry/store.js'));
  const { importImage } = await import(join(repo, 'dist/registry/importer.js'));
  const { decodeRecipe } = await import(join(repo, 'dist/model/recipe.js'));
  const root = mkdtempSync(join(tmpdir(), 'cairn-bench-reconstruct-'));
  const store = await RegistryStore.open(root);
  try {
    const refs = readFileSync(join(corpus, 'images.txt'), 'utf8').split('\n').filter(Boolean);
    const images = [];
    for (const ref of refs) {
      log(`real corpus: importing ${ref}`);
      const res = await importImage(store, `${layout}:${ref}`, ref);
      const img = store.meta.image(res.digest);
      images.push({
        name: ref,
        repository: res.repository,
        layers: img.layers.map((l) => decodeRecipe(store.meta.recipe(l.recipe), { gzipped: true }).entries),
      });
    }
    const n = images.length;
    const result = { images: n, algorithms: {} };
    for (const algo of ['lidh', 'soira', 'ofpl']) {
      const o = online(images, algo, COST, [n]);
      result.algorithms[algo] = { ...o.rows[0], secondsPerImage: o.perImage.map((p) => p.seconds) };
    }
    const g = offline(images, COST);
    result.algorithms.goira = {
      images: n,
      storageBytes: g.storageBytes,
      uniqueLayers: g.uniqueLayers,
      meanLayersPerImage: g.meanLayersPerImage,
      invalid: g.invalid,
      seconds: g.seconds,
    };
    const files = new Map();
    for (const img of images)
      for (const l of img.layers) for (const e of l) if (e.type === 'file') files.set(e.digest, e.size);
    result.fileLevelBytes = [...files.values()].reduce((a, b) => a + b, 0);
    return result;
  } finally {
    store.close();
    rmSync(root, { recursive: true, force: true });
  }
}

// ---- run ---------------------------------------------------------------------------------

const started = Date.now();
const real = await realCorpus();
log(
  'real corpus:',
  JSON.stringify(
    real.algorithms
      ? Object.fromEntries(Object.entries(real.algorithms).map(([k, v]) => [k, [v.storageBytes, v.uniqueLayers]]))
      : real,
  ),
);

log(`synthetic corpus: ${maxImages} images`);
const images = makeCorpus({ images: maxImages, seed: 42 });
const checkpoints = [50, 100, 250, 500, 750, 1000, 1250, 1500, 2000].filter((n) => n <= maxImages);
if (!checkpoints.includes(maxImages)) checkpoints.push(maxImages);
const fileBytesAt = checkpoints.map((n) => {
  const files = new Map();
  for (const img of images.slice(0, n))
    for (const l of img.layers) for (const e of l) if (e.type === 'file') files.set(e.digest, e.size);
  return { images: n, fileLevelBytes: [...files.values()].reduce((a, b) => a + b, 0) };
});
const runs = {};
for (const algo of ['lidh', 'soira', 'ofpl']) {
  const t = performance.now();
  runs[algo] = online(images, algo, COST, checkpoints);
  log(`${algo}: ${((performance.now() - t) / 1000).toFixed(1)} s`, JSON.stringify(runs[algo].rows.at(-1)));
}
const goiraRows = [];
let goiraFull;
for (const n of checkpoints) {
  const g = offline(images.slice(0, n), COST);
  goiraRows.push({
    images: n,
    storageBytes: g.storageBytes,
    uniqueLayers: g.uniqueLayers,
    meanLayersPerImage: g.meanLayersPerImage,
    invalid: g.invalid,
    fallback: g.fallback,
    merges: g.merges,
    seconds: g.seconds,
    secondsPerImage: g.seconds / n,
  });
  log(`goira ${n}: ${g.seconds.toFixed(1)} s`, g.storageBytes, g.uniqueLayers);
  if (n === maxImages) goiraFull = g;
  if (g.seconds > goiraBudgetS) break;
}

// alpha:beta sweep on the first 250 images.
const sweepN = Math.min(250, maxImages);
const ratios = [
  [10, 1],
  [5, 1],
  [2, 1],
  [1, 1],
  [1, 2],
  [1, 5],
  [1, 10],
];
const sweep = [];
for (const [alpha, beta] of ratios) {
  const cost = { ...COST, alpha, beta };
  const s = online(images.slice(0, sweepN), 'soira', cost, [sweepN]).rows[0];
  const g = offline(images.slice(0, sweepN), cost);
  sweep.push({
    ratio: `${alpha}:${beta}`,
    alpha,
    beta,
    soira: { storageBytes: s.storageBytes, meanLayersPerImage: s.meanLayersPerImage, uniqueLayers: s.uniqueLayers },
    goira: { storageBytes: g.storageBytes, meanLayersPerImage: g.meanLayersPerImage, uniqueLayers: g.uniqueLayers },
  });
  log(`sweep ${alpha}:${beta}`, s.storageBytes, g.storageBytes);
}

// Network: 10 clients, M random images each, over the full set.
const net = [];
for (const m of [1, 5, 10, 25, 50]) {
  const row = { pulls: m };
  for (const algo of ['lidh', 'soira', 'ofpl'])
    row[algo] = network(images, runs[algo].perImage, runs[algo].store, 10, m, 7);
  if (goiraFull) row.goira = network(images, goiraFull.perImage, goiraFull.store, 10, m, 7);
  net.push(row);
}

const commit = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: repo }).toString().trim();
const machine = {
  cores: cpus().length,
  cpu: cpus()[0]?.model,
  node: process.version,
  kernel: release(),
  commit,
  date: new Date().toISOString(),
};
const results = {
  machine,
  command: `node bench/reconstruct/run.js --images ${maxImages}`,
  cost: COST,
  real,
  synthetic: {
    images: maxImages,
    fileLevel: fileBytesAt,
    lidh: runs.lidh.rows,
    soira: runs.soira.rows,
    ofpl: runs.ofpl.rows,
    goira: goiraRows,
    sweep,
    network: net,
  },
  seconds: (Date.now() - started) / 1000,
};
mkdirSync(out, { recursive: true });
writeFileSync(join(out, 'results.json'), `${JSON.stringify(results, null, 2)}\n`);

// ---- plots --------------------------------------------------------------------------------
const GB = 1e9;
const series = (key, f) =>
  ['lidh', 'goira', 'soira', 'ofpl'].map((a) => ({
    name: a.toUpperCase(),
    points: (a === 'goira' ? goiraRows : runs[a].rows).map((r) => [r.images, f(r)]),
  }));
writeFileSync(
  join(out, 'storage.svg'),
  lineChart({
    title: 'Storage of unique layers vs images (cf. paper Fig. 14)',
    xLabel: 'images',
    yLabel: 'GB',
    series: [
      ...series('s', (r) => r.storageBytes / GB),
      { name: 'file-level (cairn)', dashed: true, points: fileBytesAt.map((r) => [r.images, r.fileLevelBytes / GB]) },
    ],
  }),
);
writeFileSync(
  join(out, 'layers.svg'),
  lineChart({
    title: 'Unique layers vs images (cf. paper Fig. 15)',
    xLabel: 'images',
    yLabel: 'unique layers',
    series: series('l', (r) => r.uniqueLayers).filter((s) => s.name !== 'OFPL'),
  }),
);
writeFileSync(
  join(out, 'pareto.svg'),
  lineChart({
    title: `α:β 10:1 … 1:10, first ${sweepN} images (cf. Figs. 16, 17, 20)`,
    xLabel: 'mean layers per image',
    yLabel: 'storage GB',
    series: ['soira', 'goira'].map((a) => ({
      name: a.toUpperCase(),
      points: sweep.map((s) => [s[a].meanLayersPerImage, s[a].storageBytes / GB]).sort((x, y) => x[0] - y[0]),
    })),
  }),
);
writeFileSync(
  join(out, 'network.svg'),
  lineChart({
    title: 'Traffic per client, 10 clients pulling M random images (cf. Figs. 18, 19)',
    xLabel: 'images pulled per client',
    yLabel: 'GB per client',
    series: [
      ...Object.keys(net[0])
        .filter((k) => k !== 'pulls')
        .map((a) => ({
          name: `${a.toUpperCase()} layer cache`,
          points: net.map((r) => [r.pulls, r[a].layerTrafficBytes / GB]),
        })),
      {
        name: 'file cache (cairn mount)',
        dashed: true,
        points: net.map((r) => [r.pulls, r.lidh.fileTrafficBytes / GB]),
      },
    ],
  }),
);
writeFileSync(
  join(out, 'time.svg'),
  lineChart({
    title: 'Reconstruction time per image vs images (cf. Fig. 21)',
    xLabel: 'images in the registry',
    yLabel: 'seconds per image (median of last 50)',
    series: [
      { name: 'SOIRA (with validity check)', points: runs.soira.rows.map((r) => [r.images, r.medianSecondsPerImage]) },
      { name: 'GOIRA (offline, per image)', points: goiraRows.map((r) => [r.images, r.secondsPerImage]) },
      {
        name: 'paper SOIRA',
        dashed: true,
        points: [
          [100, 0.012],
          [1250, 0.047],
        ],
      },
    ],
  }),
);

// ---- markdown -------------------------------------------------------------------------------
const fmt = (b) => (b / GB).toFixed(3);
const md = [];
md.push('# Image reconstruction: LIDH, SOIRA, GOIRA, OFPL', '');
md.push(
  `Command: \`${results.command}\` · commit ${commit} · ${machine.date} · ${machine.cores} cores (${machine.cpu}), Node ${machine.node}, kernel ${machine.kernel} · ${results.seconds.toFixed(0)} s in all.`,
  '',
);
md.push(
  `Cost: α = ${COST.alpha}, β = ${COST.beta}, a = ${COST.a}, b = ${COST.b} (the paper's), C_s in MB. Storage is layer-level: file bytes of the unique layers (by entry set) the images use. SOIRA, GOIRA and LIDH plans are all checked against the original's merged view ("invalid" counts rejections); OFPL is not checked (it cannot be mounted past 500 layers) and is the floor.`,
  '',
);
if (real.algorithms) {
  md.push(
    `## Real corpus (${real.images} images from bench/corpus, imported)`,
    '',
    '| algorithm | storage GB | unique layers | mean layers/image | invalid |',
    '| --- | --- | --- | --- | --- |',
  );
  for (const [a, v] of Object.entries(real.algorithms))
    md.push(
      `| ${a.toUpperCase()} | ${fmt(v.storageBytes)} | ${v.uniqueLayers} | ${v.meanLayersPerImage.toFixed(1)} | ${v.invalid} |`,
    );
  md.push(`| file-level (cairn's store) | ${fmt(real.fileLevelBytes)} | | | |`, '');
} else md.push(`## Real corpus: skipped (${real.skipped})`, '');
md.push(
  `## Synthetic corpus (synth.js, seed 42): storage and unique layers vs images (Figs. 14, 15)`,
  '',
  '| images | LIDH GB | GOIRA GB | SOIRA GB | OFPL GB | file-level GB | LIDH layers | GOIRA layers | SOIRA layers | OFPL layers | SOIRA invalid |',
  '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |',
);
checkpoints.forEach((n, i) => {
  const g = goiraRows.find((r) => r.images === n);
  const [l, s, o] = ['lidh', 'soira', 'ofpl'].map((a) => runs[a].rows[i]);
  md.push(
    `| ${n} | ${fmt(l.storageBytes)} | ${g ? fmt(g.storageBytes) : '–'} | ${fmt(s.storageBytes)} | ${fmt(o.storageBytes)} | ${fmt(fileBytesAt[i].fileLevelBytes)} | ${l.uniqueLayers} | ${g ? g.uniqueLayers : '–'} | ${s.uniqueLayers} | ${o.uniqueLayers} | ${s.invalid} |`,
  );
});
md.push('', '![storage](storage.svg)', '', '![layers](layers.svg)', '');
md.push(
  `## α:β from 10:1 to 1:10, first ${sweepN} images (Figs. 16, 17, 20)`,
  '',
  '| α:β | SOIRA GB | SOIRA layers/image | GOIRA GB | GOIRA layers/image |',
  '| --- | --- | --- | --- | --- |',
);
for (const s of sweep)
  md.push(
    `| ${s.ratio} | ${fmt(s.soira.storageBytes)} | ${s.soira.meanLayersPerImage.toFixed(2)} | ${fmt(s.goira.storageBytes)} | ${s.goira.meanLayersPerImage.toFixed(2)} |`,
  );
md.push('', '![pareto](pareto.svg)', '');
md.push(
  `## Network and client storage: 10 clients, each pulling M random images of the ${maxImages} (Figs. 18, 19)`,
  '',
  '| M | ' +
    Object.keys(net[0])
      .filter((k) => k !== 'pulls')
      .map((a) => `${a.toUpperCase()} traffic GB | ${a.toUpperCase()} client GB`)
      .join(' | ') +
    ' | file cache traffic = client GB |',
  '| --- | ' +
    Object.keys(net[0])
      .filter((k) => k !== 'pulls')
      .map(() => '--- | ---')
      .join(' | ') +
    ' | --- |',
);
for (const r of net)
  md.push(
    `| ${r.pulls} | ` +
      Object.keys(r)
        .filter((k) => k !== 'pulls')
        .map((a) => `${fmt(r[a].layerTrafficBytes)} | ${fmt(r[a].layerStorageBytes)}`)
        .join(' | ') +
      ` | ${fmt(r.lidh.fileTrafficBytes)} |`,
  );
md.push('', '![network](network.svg)', '');
md.push(
  '## Reconstruction time per image (Fig. 21; the paper: SOIRA 0.012 s at 100 images, 0.047 s at 1250)',
  '',
  '| images | SOIRA median s/image (last 50, incl. validity check) | GOIRA s/image (whole offline run / images) |',
  '| --- | --- | --- |',
);
for (const r of runs.soira.rows) {
  const g = goiraRows.find((x) => x.images === r.images);
  md.push(`| ${r.images} | ${r.medianSecondsPerImage.toFixed(4)} | ${g ? g.secondsPerImage.toFixed(4) : '–'} |`);
}
md.push('', '![time](time.svg)', '');
writeFileSync(join(out, 'results.md'), `${md.join('\n')}\n`);
log(`wrote ${out}`);
