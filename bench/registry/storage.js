#!/usr/bin/env node
// Storage and import figures of cairn's registry on the real-image corpus (bench/corpus):
// imports every image in order into a fresh store, records cairn's stats after each one,
// compares the final figures with bench/corpus/independent_stats.py (which reads the layer
// tars directly), and writes results.json, results.md and storage.svg to bench/results/registry/.
//
//   node bench/registry/storage.js [--corpus /var/tmp/cairn-corpus] [--out bench/results/registry]
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { lineChart } from '../lib/svg.js';

const repo = fileURLToPath(new URL('../..', import.meta.url));
const args = process.argv.slice(2);
const opt = (name, def) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : def;
};
const corpus = opt('--corpus', '/var/tmp/cairn-corpus');
const out = opt('--out', join(repo, 'bench/results/registry'));
const layout = join(corpus, 'layout');
if (!existsSync(join(layout, 'index.json'))) {
  console.error(`storage bench: no corpus at ${layout}; build it first: bash bench/corpus/build-corpus.sh ${corpus}`);
  process.exit(2);
}
if (!existsSync(join(repo, 'dist/registry/importer.js')))
  execFileSync('npm', ['run', 'build'], { cwd: repo, stdio: 'inherit' });
const { importImage } = await import(join(repo, 'dist/registry/importer.js'));
const { RegistryStore } = await import(join(repo, 'dist/registry/store.js'));
const { registryStats } = await import(join(repo, 'dist/registry/stats.js'));

const refs = readFileSync(join(corpus, 'images.txt'), 'utf8').split('\n').filter(Boolean);
const index = JSON.parse(readFileSync(join(layout, 'index.json'), 'utf8'));
const blob = (d) => JSON.parse(readFileSync(join(layout, 'blobs/sha256', d.slice(7)), 'utf8'));
const progress = (s) => process.stderr.write(`[storage] ${s}\n`);

const root = mkdtempSync(join(process.env.CAIRN_BENCH_TMP ?? tmpdir(), 'cairn-storage-'));
const store = await RegistryStore.open(join(root, 'registry'));
const rows = [];
const seenBlobs = new Map(); // what a conventional registry stores: layer blobs, unique by digest
const seenDiffs = new Map();
try {
  for (const [i, ref] of refs.entries()) {
    const desc = index.manifests.find((m) => m.annotations?.['org.opencontainers.image.ref.name'] === ref);
    const manifest = blob(desc.digest);
    const config = blob(manifest.config.digest);
    manifest.layers.forEach((l, j) => {
      seenBlobs.set(l.digest, l.size);
      seenDiffs.set(config.rootfs.diff_ids[j], true);
    });
    const r = await importImage(store, `${layout}:${ref}`, ref);
    const s = await registryStats(store);
    const conventional = [...seenBlobs.values()].reduce((a, b) => a + b, 0);
    rows.push({
      n: i + 1,
      ref,
      importSeconds: r.seconds,
      tarBytes: r.tarBytes,
      importMBps: r.tarBytes / 1e6 / r.seconds,
      newFiles: r.newFiles,
      newBytes: r.newBytes,
      stats: s,
      conventionalBytes: conventional,
      cairnDiskBytes: s.storedBytes + s.metadataBytes,
    });
    progress(
      `${i + 1}/${refs.length} ${ref}: ${(r.tarBytes / 1e6).toFixed(0)} MB in ${r.seconds.toFixed(2)} s, stored ${(s.storedBytes / 1e6).toFixed(0)} MB`,
    );
  }
  const final = rows[rows.length - 1].stats;
  progress('running bench/corpus/independent_stats.py');
  const independent = JSON.parse(
    execFileSync('python3', [join(repo, 'bench/corpus/independent_stats.py'), layout], {
      maxBuffer: 64 << 20,
    }).toString(),
  );
  const keys = ['images', 'layers', 'entries', 'files', 'uniqueFiles', 'fileBytes', 'dedupSavingPercent'];
  const comparison = keys.map((k) => ({
    key: k,
    cairn: final[k],
    independent: independent[k],
    equal: final[k] === independent[k],
  }));
  comparison.push({
    key: 'storedBytes',
    cairn: final.storedBytes,
    independent: independent.uniqueFileBytes,
    equal: final.storedBytes === independent.uniqueFileBytes,
  });
  const mbps = rows.map((r) => r.importMBps).sort((a, b) => a - b);
  const totalTar = rows.reduce((a, r) => a + r.tarBytes, 0);
  const totalSec = rows.reduce((a, r) => a + r.importSeconds, 0);
  const commit = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: repo }).toString().trim();
  const machine = {
    cores: cpus().length,
    node: process.version,
    kernel: execFileSync('uname', ['-r']).toString().trim(),
    commit,
    date: new Date().toISOString(),
  };
  const result = {
    machine,
    corpus,
    rows,
    independent,
    comparison,
    import: {
      totalTarBytes: totalTar,
      totalSeconds: totalSec,
      overallMBps: totalTar / 1e6 / totalSec,
      medianMBps: mbps[Math.floor(mbps.length / 2)],
    },
  };
  mkdirSync(out, { recursive: true });
  writeFileSync(join(out, 'results.json'), JSON.stringify(result, null, 2));
  const MB = (b) => (b / 1e6).toFixed(1);
  const md = [
    '# Registry storage on the real-image corpus',
    '',
    `Command: \`node bench/registry/storage.js --corpus ${corpus}\` · commit ${commit} · ${machine.date} · ${machine.cores} cores, Node ${machine.node}, kernel ${machine.kernel}`,
    '',
    '![storage](storage.svg)',
    '',
    '## After each import',
    '',
    '| # | image | layer data MB | import s | MB/s | new files | file MB (unique layers) | cairn stored MB | cairn + metadata MB | plain registry (compressed blobs) MB | dedup saving % |',
    '|---|---|---|---|---|---|---|---|---|---|---|',
    ...rows.map(
      (r) =>
        `| ${r.n} | ${r.ref} | ${MB(r.tarBytes)} | ${r.importSeconds.toFixed(2)} | ${r.importMBps.toFixed(1)} | ${r.newFiles} | ${MB(r.stats.fileBytes)} | ${MB(r.stats.storedBytes)} | ${MB(r.cairnDiskBytes)} | ${MB(r.conventionalBytes)} | ${r.stats.dedupSavingPercent} |`,
    ),
    '',
    `Import: ${MB(totalTar)} MB of uncompressed layer data in ${totalSec.toFixed(1)} s = ${result.import.overallMBps.toFixed(1)} MB/s overall, median ${result.import.medianMBps.toFixed(1)} MB/s per image (every new file fsynced).`,
    '',
    '## cairn stats against an independent count of the layer tars',
    '',
    '| figure | cairn registry stats | independent_stats.py | equal |',
    '|---|---|---|---|',
    ...comparison.map((c) => `| ${c.key} | ${c.cairn} | ${c.independent} | ${c.equal ? 'yes' : '**no**'} |`),
    '',
  ].join('\n');
  writeFileSync(join(out, 'results.md'), md);
  const pts = (f) => rows.map((r) => [r.n, f(r) / 1e6]);
  writeFileSync(
    join(out, 'storage.svg'),
    lineChart({
      title: 'Registry storage as corpus images are imported',
      xLabel: 'images imported',
      yLabel: 'MB',
      series: [
        { name: 'file bytes (unique layers)', points: pts((r) => r.stats.fileBytes), dashed: true },
        { name: 'plain registry (gzip/zstd blobs)', points: pts((r) => r.conventionalBytes) },
        { name: 'cairn contents (uncompressed)', points: pts((r) => r.stats.storedBytes) },
        { name: 'cairn contents + metadata', points: pts((r) => r.cairnDiskBytes) },
      ],
    }),
  );
  progress(`wrote ${out}/results.json, results.md, storage.svg`);
  if (comparison.some((c) => !c.equal)) {
    console.error('storage bench: cairn stats differ from the independent count');
    process.exitCode = 1;
  }
} finally {
  store.close();
  rmSync(root, { recursive: true, force: true });
}
