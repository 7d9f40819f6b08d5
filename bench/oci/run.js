#!/usr/bin/env node
// Push and pull the whole corpus with skopeo, against cairn's /v2 API and against Debian's
// docker-registry (the reference distribution registry), in the same run, interleaved (the
// order of the two flips every round), each round on fresh, empty stores. Records push time,
// pull time and the disk each registry uses once everything is pushed, and writes results.json,
// results.md and oci.svg to bench/results/oci/.
//
//   node bench/oci/run.js [--corpus /var/tmp/cairn-corpus] [--rounds 3] [--out bench/results/oci]
//
// Needs: skopeo, docker-registry (Debian packages), the corpus (bench/corpus/README.md), a build.
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { barPanels } from '../lib/svg.js';
import {
  CAIRN,
  Cleanup,
  childEnv,
  freePort,
  machineInfo,
  median,
  REPO,
  runChecked,
  sleep,
  summary,
  waitExit,
} from '../mount/lib.js';

const args = process.argv.slice(2);
const opt = (name, def) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : def;
};
const corpus = opt('--corpus', '/var/tmp/cairn-corpus');
const rounds = Number(opt('--rounds', '3'));
const out = opt('--out', join(REPO, 'bench/results/oci'));
const layout = join(corpus, 'layout');
const progress = (s) => process.stderr.write(`[oci] ${s}\n`);
if (!existsSync(join(layout, 'index.json'))) {
  console.error(`oci bench: no corpus at ${layout}; build it first: bash bench/corpus/build-corpus.sh ${corpus}`);
  process.exit(2);
}
if (!existsSync(join(REPO, 'dist/registry/oci/api.js'))) await runChecked('npm', ['run', 'build']);
const refs = readFileSync(join(corpus, 'images.txt'), 'utf8').split('\n').filter(Boolean);
const USER = 'bench';
const PASSWORD = 'bench-password';

/** Starts a server process and waits until its /v2/ answers (any status). */
async function startServer(cleanup, name, cmd, cmdArgs, port) {
  const child = spawn(cmd, cmdArgs, { env: childEnv(), stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  child.stderr.on('data', (c) => (log = (log + c.toString()).slice(-8000)));
  const stop = cleanup.add(`${name} ${child.pid}`, async () => {
    child.kill('SIGTERM');
    await waitExit(child.pid, 10_000);
  });
  for (let i = 0; i < 200; i++) {
    if (child.exitCode !== null) throw new Error(`${name} exited with ${child.exitCode}: ${log}`);
    const ok = await fetch(`http://127.0.0.1:${port}/v2/`).then(
      () => true,
      () => false,
    );
    if (ok) return { stop, log: () => log };
    await sleep(100);
  }
  throw new Error(`${name} did not answer on port ${port}: ${log}`);
}

const systems = {
  cairn: {
    async start(cleanup, root, port) {
      const cfg = join(root, '..', 'cairn-config.json');
      writeFileSync(
        cfg,
        JSON.stringify({
          root,
          listen: `127.0.0.1:${port}`,
          logLevel: 'warn',
          // Compressed layer blobs go as soon as their image is in the file store: the compact setting.
          oci: { auth: { users: { [USER]: PASSWORD } }, layerBlobGraceSeconds: 0 },
        }),
      );
      return startServer(cleanup, 'cairn', process.execPath, [CAIRN, 'registry', 'serve', '--config', cfg], port);
    },
    creds: ['--dest-creds', `${USER}:${PASSWORD}`],
  },
  'docker-registry': {
    async start(cleanup, root, port) {
      const cfg = join(root, '..', 'docker-registry.yml');
      writeFileSync(
        cfg,
        [
          'version: 0.1',
          'log: {level: error}',
          'storage:',
          '  filesystem:',
          `    rootdirectory: ${root}`,
          '  delete: {enabled: true}',
          'http:',
          `  addr: 127.0.0.1:${port}`,
          '',
        ].join('\n'),
      );
      return startServer(cleanup, 'docker-registry', 'docker-registry', ['serve', cfg], port);
    },
    creds: [],
  },
};

async function diskBytes(dir) {
  await runChecked('sync', []);
  const allocated = Number((await runChecked('du', ['-s', '--block-size=1', dir])).stdout.split('\t')[0]);
  const apparent = Number(
    (await runChecked('du', ['-s', '--apparent-size', '--block-size=1', dir])).stdout.split('\t')[0],
  );
  return { allocated, apparent };
}

async function oneRound(name, work) {
  const sys = systems[name];
  const cleanup = new Cleanup();
  const base = mkdtempSync(join(work, `${name}-`));
  const root = join(base, 'root');
  mkdirSync(root);
  try {
    const port = await freePort();
    const server = await sys.start(cleanup, root, port);
    const host = `127.0.0.1:${port}`;
    const pushMs = [];
    let t0 = performance.now();
    for (const ref of refs) {
      const t = performance.now();
      await runChecked(
        'skopeo',
        ['copy', '-q', '--dest-tls-verify=false', ...sys.creds, `oci:${layout}:${ref}`, `docker://${host}/${ref}`],
        { timeoutMs: 600_000 },
      );
      pushMs.push(performance.now() - t);
    }
    const pushTotalMs = performance.now() - t0;
    const disk = await diskBytes(root);
    const pullDir = join(base, 'pulled');
    mkdirSync(pullDir);
    const pullMs = [];
    t0 = performance.now();
    for (const [i, ref] of refs.entries()) {
      const t = performance.now();
      await runChecked(
        'skopeo',
        ['copy', '-q', '--src-tls-verify=false', `docker://${host}/${ref}`, `dir:${join(pullDir, String(i))}`],
        { timeoutMs: 600_000 },
      );
      pullMs.push(performance.now() - t);
    }
    const pullTotalMs = performance.now() - t0;
    const pulledBytes = (await diskBytes(pullDir)).apparent;
    await server.stop();
    return { pushTotalMs, pushMs, pullTotalMs, pullMs, disk, pulledBytes };
  } finally {
    await cleanup.run();
    rmSync(base, { recursive: true, force: true });
  }
}

const work = mkdtempSync(join(process.env.CAIRN_BENCH_TMP ?? tmpdir(), 'cairn-oci-bench-'));
const corpusBytes = (await diskBytes(join(layout, 'blobs'))).apparent;
const results = { cairn: [], 'docker-registry': [] };
try {
  for (let r = 0; r < rounds; r++) {
    const order = r % 2 === 0 ? ['cairn', 'docker-registry'] : ['docker-registry', 'cairn'];
    for (const name of order) {
      progress(`round ${r + 1}/${rounds}: ${name}`);
      const res = await oneRound(name, work);
      progress(
        `  push ${(res.pushTotalMs / 1000).toFixed(1)} s, pull ${(res.pullTotalMs / 1000).toFixed(1)} s, disk ${(res.disk.allocated / 1e6).toFixed(1)} MB`,
      );
      results[name].push(res);
    }
  }
} finally {
  rmSync(work, { recursive: true, force: true });
}

const sum = (name) => ({
  pushSeconds: summary(results[name].map((x) => x.pushTotalMs / 1000)),
  pullSeconds: summary(results[name].map((x) => x.pullTotalMs / 1000)),
  diskBytes: summary(results[name].map((x) => x.disk.allocated)),
  diskApparentBytes: summary(results[name].map((x) => x.disk.apparent)),
  pulledBytes: summary(results[name].map((x) => x.pulledBytes)),
  perImagePushSeconds: refs.map((ref, i) => ({ ref, median: median(results[name].map((x) => x.pushMs[i] / 1000)) })),
  perImagePullSeconds: refs.map((ref, i) => ({ ref, median: median(results[name].map((x) => x.pullMs[i] / 1000)) })),
});
const c = sum('cairn');
const d = sum('docker-registry');
const ratio = (a, b) => +(a.median / b.median).toFixed(3);
const report = {
  bench: 'oci',
  what: 'skopeo push and pull of the whole corpus; disk used by each registry after the pushes',
  command: `node bench/oci/run.js --corpus ${corpus} --rounds ${rounds}`,
  machine: machineInfo(work),
  corpus: { path: corpus, images: refs, blobBytes: corpusBytes },
  settings: {
    cairn: 'basic auth, layerBlobGraceSeconds 0 (compressed layers dropped after ingest), serves uncompressed layers',
    'docker-registry': `Debian docker-registry, filesystem storage, no auth (${(await runChecked('docker-registry', ['--version'])).stdout.trim()})`,
    skopeo: (await runChecked('skopeo', ['--version'])).stdout.trim(),
    pullDestination: 'dir: (blobs written as served, no recompression)',
  },
  rounds,
  summary: { cairn: c, 'docker-registry': d },
  ratios: {
    pushCairnOverDockerRegistry: ratio(c.pushSeconds, d.pushSeconds),
    pullCairnOverDockerRegistry: ratio(c.pullSeconds, d.pullSeconds),
    diskCairnOverDockerRegistry: ratio(c.diskBytes, d.diskBytes),
  },
  raw: results,
};
mkdirSync(out, { recursive: true });
writeFileSync(join(out, 'results.json'), `${JSON.stringify(report, null, 2)}\n`);
const mb = (b) => (b / 1e6).toFixed(1);
const s = (x) => `${x.median.toFixed(1)} (${x.min.toFixed(1)}–${x.max.toFixed(1)})`;
const md = [
  '# OCI distribution: cairn against docker-registry',
  '',
  `Command: \`${report.command}\`, ${rounds} rounds, the two registries interleaved (order flipped each round), fresh stores each round.`,
  `Machine: ${report.machine.cpu}, ${report.machine.cores} cores, ${report.machine.memGiB} GiB, kernel ${report.machine.kernel}, Node ${report.machine.node}, commit ${report.machine.commit}, ${report.machine.date}.`,
  `Corpus: ${refs.length} images, ${mb(corpusBytes)} MB of blobs in the OCI layout (${corpus}).`,
  '',
  '| | cairn | docker-registry | cairn / docker-registry |',
  '| --- | --- | --- | --- |',
  `| push, whole corpus (s), median (min–max) | ${s(c.pushSeconds)} | ${s(d.pushSeconds)} | ${report.ratios.pushCairnOverDockerRegistry} |`,
  `| pull, whole corpus (s), median (min–max) | ${s(c.pullSeconds)} | ${s(d.pullSeconds)} | ${report.ratios.pullCairnOverDockerRegistry} |`,
  `| disk after push (MB allocated) | ${mb(c.diskBytes.median)} | ${mb(d.diskBytes.median)} | ${report.ratios.diskCairnOverDockerRegistry} |`,
  `| disk after push (MB apparent) | ${mb(c.diskApparentBytes.median)} | ${mb(d.diskApparentBytes.median)} | ${ratio(c.diskApparentBytes, d.diskApparentBytes)} |`,
  `| bytes pulled (MB) | ${mb(c.pulledBytes.median)} | ${mb(d.pulledBytes.median)} | ${ratio(c.pulledBytes, d.pulledBytes)} |`,
  '',
  'Per image (median s):',
  '',
  '| image | cairn push | docker-registry push | cairn pull | docker-registry pull |',
  '| --- | --- | --- | --- | --- |',
  ...refs.map(
    (ref, i) =>
      `| ${ref} | ${c.perImagePushSeconds[i].median.toFixed(2)} | ${d.perImagePushSeconds[i].median.toFixed(2)} | ${c.perImagePullSeconds[i].median.toFixed(2)} | ${d.perImagePullSeconds[i].median.toFixed(2)} |`,
  ),
  '',
  'Settings: cairn ingests each image inline in the manifest PUT (layers split into files, deduplicated),',
  'drops the compressed layer blobs at once, and serves layers as uncompressed tars rebuilt from recipes',
  '(so a pull moves more bytes; a re-push of a shared base layer is uploaded again, since its compressed',
  'blob is gone). docker-registry stores the compressed blobs as pushed. Pulls go to skopeo `dir:`',
  '(no recompression on the client).',
  '',
].join('\n');
writeFileSync(join(out, 'results.md'), md);
writeFileSync(
  join(out, 'oci.svg'),
  barPanels({
    title: `skopeo, whole corpus (${refs.length} images), median of ${rounds} rounds`,
    panels: [
      {
        title: 'push (s)',
        unit: 's',
        bars: [
          { name: 'cairn', value: c.pushSeconds.median },
          { name: 'docker-registry', value: d.pushSeconds.median },
        ],
      },
      {
        title: 'pull (s)',
        unit: 's',
        bars: [
          { name: 'cairn', value: c.pullSeconds.median },
          { name: 'docker-registry', value: d.pullSeconds.median },
        ],
      },
      {
        title: 'disk after push (MB)',
        unit: 'MB',
        bars: [
          { name: 'cairn', value: c.diskBytes.median / 1e6 },
          { name: 'docker-registry', value: d.diskBytes.median / 1e6 },
        ],
      },
    ],
  }),
);
process.stdout.write(md);
