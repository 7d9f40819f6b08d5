#!/usr/bin/env node
// The benchmark suite's entry point: `npm run bench -- NAME [options]` (or node bench/run.js).
// Each bench runs in its own process (they mount, start daemons and clean up after themselves)
// and writes JSON, a Markdown table and SVG plots under bench/results/.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const REPO = fileURLToPath(new URL('..', import.meta.url));
const DEFAULT_CORPUS = '/var/tmp/cairn-corpus';

const BENCHES = {
  depth: {
    what: "Li et al.'s layer-depth experiment: 20 cold opens vs image depth 1..30, kernel overlayfs, fuse-overlayfs, cairn stacked and flat; fits L = a·D + b (bench/results/depth)",
    script: 'bench/depth/run.js',
    args: () => [],
  },
  coldstart: {
    what: 'corpus images, empty caches: pull + extract + run vs cairn mount + run, with readiness lines for servers; bytes fetched (bench/results/coldstart; builds the corpus first when it is missing)',
    script: 'bench/mount/run.js',
    args: () => [
      'coldstart',
      '--out',
      join(REPO, 'bench/results/coldstart'),
      '--title',
      'Cold start (`npm run bench -- coldstart`)',
      '--command-name',
      'node bench/run.js coldstart',
      '--progress-name',
      'coldstart',
    ],
    before: ensureCorpus,
  },
  throughput: {
    what: 'cold and warm lstat/open/read files/s on small files and MB/s on one large file: native disk, kernel overlayfs, cairn (bench/results/throughput)',
    script: 'bench/mount/run.js',
    args: () => [
      'read',
      '--out',
      join(REPO, 'bench/results/throughput'),
      '--title',
      'Throughput (`npm run bench -- throughput`)',
      '--command-name',
      'node bench/run.js throughput',
      '--progress-name',
      'throughput',
    ],
  },
  mount: {
    what: 'the mount benches: mounttime (time to first byte, heap per entry), coldstart, read (bench/results/mount); sub-bench as first option',
    script: 'bench/mount/run.js',
    args: () => [],
  },
  http: {
    what: 'registry file serving against nginx (bench/results/http)',
    script: 'bench/http/run.js',
    args: () => [],
  },
  storage: {
    what: 'registry storage and deduplication over the corpus (bench/results/registry)',
    script: 'bench/registry/storage.js',
    args: () => [],
  },
  oci: {
    what: "skopeo push and pull of the corpus, cairn's /v2 against Debian's docker-registry, and disk use (bench/results/oci)",
    script: 'bench/oci/run.js',
    args: () => [],
    before: ensureCorpus,
  },
  reconstruct: {
    what: 'LIDH, SOIRA, GOIRA and OFPL on the corpus and on synthetic images: storage, layers, time (bench/results/reconstruct)',
    script: 'bench/reconstruct/run.js',
    args: () => [],
    before: ensureCorpus,
  },
  snapshotter: {
    what: 'containerd: cairn containerd pull + ctr run (lazy layers) vs ctr images pull + ctr run (overlayfs), time to the output and bytes fetched (bench/results/snapshotter; corpus images when the corpus exists)',
    script: 'bench/snapshotter/run.js',
    args: () => [],
  },
};

function usage(stream) {
  stream.write(
    [
      'usage: npm run bench -- NAME [options]    (node bench/run.js NAME [options])',
      '',
      'benches:',
      ...Object.entries(BENCHES).map(([name, b]) => `  ${name.padEnd(11)} ${b.what}`),
      '',
      'Options go to the bench; `npm run bench -- NAME --help` lists them where the bench has any',
      '(depth: --quick for a small smoke run). Needs root (FUSE, overlayfs, drop_caches).',
      '',
    ].join('\n'),
  );
}

/** The value of `--name` in `argv`, or `def`. */
function optionOf(argv, name, def) {
  const i = argv.indexOf(name);
  return i >= 0 ? argv[i + 1] : def;
}

function runChild(cmd, args) {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd: REPO, stdio: 'inherit' });
    const forward = (sig) => child.kill(sig);
    for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) process.on(sig, forward);
    child.on('error', reject);
    child.on('exit', (code, signal) => resolve(code ?? (signal ? 128 : 1)));
  });
}

/**
 * The coldstart bench needs the corpus of real images (bench/corpus). When it is missing, build
 * it: bench/corpus/build-corpus.sh (debootstrap + apt from the Debian mirror) takes about 3
 * minutes here from nothing (179 s measured) and keeps ~950 MB of build cache in OUT/work.
 */
async function ensureCorpus(argv) {
  const corpus = optionOf(argv, '--corpus', DEFAULT_CORPUS);
  if (existsSync(join(corpus, 'layout/index.json')) && existsSync(join(corpus, 'commands.json'))) return;
  process.stderr.write(
    `[bench:corpus] no corpus at ${corpus}: building it with bench/corpus/build-corpus.sh (debootstrap and apt from the Debian mirror; about 3 minutes from nothing on a 2-core machine, ~1.1 GB of disk)\n`,
  );
  const t0 = performance.now();
  const code = await runChild('bash', [join(REPO, 'bench/corpus/build-corpus.sh'), corpus]);
  if (code !== 0) throw new Error(`bench/corpus/build-corpus.sh ${corpus} failed with ${code}`);
  process.stderr.write(`[bench:corpus] corpus built in ${((performance.now() - t0) / 1000).toFixed(0)} s\n`);
}

const [name, ...rest] = process.argv.slice(2);
if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
  usage(process.stdout);
  process.exit(name === undefined ? 64 : 0);
}
const bench = BENCHES[name];
if (!bench) {
  process.stderr.write(`bench: unknown bench ${JSON.stringify(name)}\n`);
  usage(process.stderr);
  process.exit(64);
}
try {
  if (bench.before && !rest.includes('--help')) await bench.before(rest);
  process.exit(await runChild(process.execPath, [join(REPO, bench.script), ...bench.args(), ...rest]));
} catch (err) {
  process.stderr.write(`bench ${name}: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
}
