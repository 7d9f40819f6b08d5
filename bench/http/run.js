#!/usr/bin/env node
// File GET benchmark: cairn's registry server against Debian's nginx serving the
// same blob files from disk, on loopback, driven by wrk. See bench/http/README.md.
//
//   node bench/http/run.js [--duration 10] [--reps 3] [--proto a,b] [--out DIR] [--build] [--keep]
//
// Progress goes to stderr; results to bench/results/http/ (results.json,
// results.md, chart.svg). Every process it starts is killed on exit, failure or
// signal, and the temporary directory is removed (unless --keep).

import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  existsSync,
  mkdtempSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { createServer } from 'node:net';
import os from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { randomBytes } from 'node:crypto';

const HERE = dirname(fileURLToPath(import.meta.url));
const REPO = resolve(HERE, '..', '..');
const T0 = performance.now();

// ---------------------------------------------------------------- options

/** @param {string[]} argv */
function parseArgs(argv) {
  const o = {
    duration: 10,
    reps: 3,
    threads: 2,
    connections: 16,
    smallCount: 256,
    smallBytes: 4096,
    largeCount: 2,
    largeMiB: 64,
    warmup: 2,
    out: join(REPO, 'bench', 'results', 'http'),
    /** @type {string[]} */
    proto: [],
    build: false,
    keep: false,
    nginxCache: true,
    /** `cairn registry serve --workers`: auto matches nginx's `worker_processes auto`. */
    cairnWorkers: 'auto',
    sizes: ['small', 'large'],
    /** @type {string | undefined} */
    render: undefined,
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const val = () => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${a} needs a value`);
      return v;
    };
    const num = () => {
      const v = Number(val());
      if (!Number.isFinite(v) || v < 0) throw new Error(`${a}: not a number`);
      return v;
    };
    switch (a) {
      case '--duration':
        o.duration = num();
        break;
      case '--reps':
        o.reps = num();
        break;
      case '--threads':
        o.threads = num();
        break;
      case '--connections':
        o.connections = num();
        break;
      case '--small-count':
        o.smallCount = num();
        break;
      case '--large-count':
        o.largeCount = num();
        break;
      case '--large-mib':
        o.largeMiB = num();
        break;
      case '--warmup':
        o.warmup = num();
        break;
      case '--out':
        o.out = resolve(val());
        break;
      case '--proto':
        o.proto = val().split(',').filter(Boolean);
        break;
      case '--build':
        o.build = true;
        break;
      case '--render':
        o.render = resolve(val());
        break;
      case '--keep':
        o.keep = true;
        break;
      case '--no-nginx-cache':
        o.nginxCache = false;
        break;
      case '--cairn-workers':
        o.cairnWorkers = val();
        break;
      case '--sizes':
        o.sizes = val().split(',').filter(Boolean);
        if (!o.sizes.length || o.sizes.some((x) => x !== 'small' && x !== 'large'))
          throw new Error('--sizes: small and/or large');
        break;
      case '-h':
      case '--help':
        process.stdout.write(
          'usage: node bench/http/run.js [--duration S] [--reps N] [--threads N] [--connections N]\n' +
            '  [--small-count N] [--large-count N] [--large-mib N] [--warmup S] [--out DIR]\n' +
            '  [--proto VARIANT,...] (extra servers from bench/http/proto-server.js) [--sizes small,large]\n' +
            '  [--build] [--keep] [--no-nginx-cache] [--cairn-workers N|auto] (default auto, as nginx)\n' +
            '  [--render DIR] (only re-write DIR/results.md and DIR/chart.svg from DIR/results.json)\n',
        );
        process.exit(0);
        break;
      default:
        throw new Error(`unknown option ${a} (try --help)`);
    }
  }
  return o;
}

/** @param {string} msg */
function progress(msg) {
  const s = ((performance.now() - T0) / 1000).toFixed(1).padStart(6);
  process.stderr.write(`[http-bench ${s}s] ${msg}\n`);
}

// ---------------------------------------------------------------- process bookkeeping

/** @type {Set<import('node:child_process').ChildProcess>} */
const children = new Set();
/** @type {string | undefined} */
let tempDir;
let keepTemp = false;

/** Kills one child we started, and its process group (nginx workers, cluster workers). */
function killChild(child, signal = 'SIGKILL') {
  if (child.pid === undefined) return;
  try {
    process.kill(-child.pid, signal); // detached: the child leads its own group
  } catch {
    try {
      child.kill(signal);
    } catch {
      /* already gone */
    }
  }
}

function cleanupSync() {
  for (const c of children) killChild(c, 'SIGKILL');
  children.clear();
  if (tempDir && !keepTemp) {
    try {
      rmSync(tempDir, { recursive: true, force: true });
    } catch {
      /* best effort */
    }
    tempDir = undefined;
  }
}

let interrupted = false;

/** Stops every child gracefully (so nginx's master reaps its workers), then removes the temp dir. */
async function cleanup() {
  await Promise.all([...children].map((c) => stopChild(c, 2000)));
  cleanupSync();
}

// Last resort when the process exits some other way: synchronous SIGKILL of every group.
process.on('exit', cleanupSync);
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.on(sig, () => {
    interrupted = true;
    progress(`${sig}: cleaning up`);
    setTimeout(() => process.exit(130), 5000).unref();
    void cleanup().finally(() => process.exit(130));
  });
}

/**
 * Starts a long-running child in its own process group and tracks it.
 * @param {string} cmd @param {string[]} args @param {object} [opts]
 */
function startChild(cmd, args, opts = {}) {
  const child = spawn(cmd, args, { detached: true, stdio: ['ignore', 'pipe', 'pipe'], ...opts });
  children.add(child);
  let tail = '';
  const keep = (d) => {
    tail = (tail + d.toString()).slice(-4000);
  };
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  child.on('exit', () => children.delete(child));
  return { child, tail: () => tail };
}

/** Stops a child politely, then by force. */
async function stopChild(child, graceMs = 3000) {
  if (child.exitCode !== null || child.signalCode !== null) {
    killChild(child, 'SIGKILL'); // leftovers in its group
    return;
  }
  const exited = new Promise((r) => child.once('exit', r));
  killChild(child, 'SIGTERM');
  const t = setTimeout(() => killChild(child, 'SIGKILL'), graceMs);
  await exited;
  clearTimeout(t);
  killChild(child, 'SIGKILL'); // any worker left in the group
}

/** Runs a command to completion, collecting output. @returns {Promise<{code:number|null, stdout:string, stderr:string}>} */
function run(cmd, args, opts = {}) {
  return new Promise((res, rej) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], detached: true, ...opts });
    children.add(child);
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('error', (e) => {
      children.delete(child);
      rej(e);
    });
    child.on('close', (code) => {
      children.delete(child);
      res({ code, stdout, stderr });
    });
  });
}

/** @returns {string | undefined} */
function which(name, extra = []) {
  const dirs = [...(process.env.PATH ?? '').split(':'), '/usr/sbin', '/sbin', ...extra];
  for (const d of dirs) {
    if (d && existsSync(join(d, name))) return join(d, name);
  }
  return undefined;
}

/** Finds a tool, installing its Debian package with apt-get when missing (as root). */
function ensureTool(name, packages) {
  let p = which(name);
  if (p) return p;
  if (process.getuid?.() !== 0) throw new Error(`${name} is missing: apt-get install ${packages[0]}`);
  for (const pkg of packages) {
    progress(`${name} missing: apt-get install -y ${pkg}`);
    let r = spawnSync('apt-get', ['install', '-y', '-q', pkg], { stdio: ['ignore', 'ignore', 'inherit'] });
    if (r.status !== 0) {
      spawnSync('apt-get', ['update', '-q'], { stdio: ['ignore', 'ignore', 'inherit'] });
      r = spawnSync('apt-get', ['install', '-y', '-q', pkg], { stdio: ['ignore', 'ignore', 'inherit'] });
    }
    p = which(name);
    if (p) return p;
  }
  throw new Error(`${name}: could not install any of ${packages.join(', ')}`);
}

function freePort() {
  return new Promise((res, rej) => {
    const s = createServer();
    s.once('error', rej);
    s.listen(0, '127.0.0.1', () => {
      const addr = s.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      s.close(() => res(port));
    });
  });
}

async function waitHttp(url, what, proc, timeoutMs = 20000) {
  const until = Date.now() + timeoutMs;
  for (;;) {
    try {
      const r = await fetch(url, { signal: AbortSignal.timeout(2000) });
      await r.arrayBuffer();
      if (r.status < 500) return;
    } catch {
      /* not up yet */
    }
    if (proc.child.exitCode !== null || proc.child.signalCode !== null) {
      throw new Error(`${what} exited early:\n${proc.tail()}`);
    }
    if (Date.now() > until) throw new Error(`${what} did not answer ${url} within ${timeoutMs} ms:\n${proc.tail()}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

// ---------------------------------------------------------------- setup

async function makeFiles(root, o) {
  const distBlob = join(REPO, 'dist', 'registry', 'blob-store.js');
  const { BlobStore } = await import(pathToFileURL(distBlob).href);
  const blobs = new BlobStore({ root });
  await blobs.init();
  /** @type {string[]} */
  const small = [];
  for (let i = 0; i < o.smallCount; i++) small.push((await blobs.put(randomBytes(o.smallBytes))).digest);
  /** @type {string[]} */
  const large = [];
  for (let i = 0; i < o.largeCount; i++) large.push((await blobs.put(randomBytes(o.largeMiB * 1024 * 1024))).digest);
  if (new Set(small).size !== small.length || new Set(large).size !== large.length)
    throw new Error('duplicate random files?');
  for (const d of [...small, ...large]) {
    if (!existsSync(blobs.path(d))) throw new Error(`blob ${d} not at ${blobs.path(d)}`);
  }
  return { small, large, blobPath: (d) => blobs.path(d) };
}

function nginxConf(dir, root, port, o) {
  const asRoot = process.getuid?.() === 0;
  const blobDir = join(root, 'blobs', 'sha256');
  return `# generated by bench/http/run.js
daemon off;
master_process on;
${asRoot ? 'user root;' : ''}
worker_processes auto;
pid ${join(dir, 'nginx.pid')};
error_log ${join(dir, 'error.log')} warn;
events { worker_connections 4096; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  tcp_nodelay on;
  keepalive_timeout 30s;
  keepalive_requests 1000000;
  server_tokens off;
  default_type application/octet-stream;
  ${o.nginxCache ? 'open_file_cache max=4096 inactive=60s; open_file_cache_valid 60s; open_file_cache_errors on;' : ''}
  client_body_temp_path ${join(dir, 'body')};
  proxy_temp_path ${join(dir, 'proxy')};
  fastcgi_temp_path ${join(dir, 'fastcgi')};
  uwsgi_temp_path ${join(dir, 'uwsgi')};
  scgi_temp_path ${join(dir, 'scgi')};
  server {
    listen 127.0.0.1:${port};
    location = /healthz { return 200 "ok\\n"; }
    location ~ "^/api/v1/files/sha256:([0-9a-f]{2})([0-9a-f]{62})$" {
      alias ${blobDir}/$1/$1$2;
      add_header Cache-Control "public, max-age=31536000, immutable";
    }
  }
}
`;
}

/** Fetches a URL with curl and returns the sha256 of the body. */
async function curlSha256(url) {
  return new Promise((res, rej) => {
    const child = spawn('curl', ['-sS', '-f', '--max-time', '60', url], { stdio: ['ignore', 'pipe', 'pipe'] });
    children.add(child);
    const h = createHash('sha256');
    let bytes = 0;
    let err = '';
    child.stdout.on('data', (d) => {
      h.update(d);
      bytes += d.length;
    });
    child.stderr.on('data', (d) => (err += d));
    child.on('error', rej);
    child.on('close', (code) => {
      children.delete(child);
      if (code !== 0) rej(new Error(`curl ${url}: exit ${code} ${err}`));
      else res({ sha: `sha256:${h.digest('hex')}`, bytes });
    });
  });
}

async function verify(sys, files) {
  const sample = [...files.small.slice(0, 4), files.small[files.small.length - 1], ...files.large];
  for (const d of sample) {
    const { sha, bytes } = await curlSha256(`${sys.base}/api/v1/files/${d}`);
    if (sha !== d) throw new Error(`${sys.name} served wrong bytes for ${d}: got ${sha} (${bytes} bytes)`);
  }
  progress(`${sys.name}: curl + sha256 check ok on ${sample.length} files`);
}

// ---------------------------------------------------------------- CPU accounting

const CLK_TCK = Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout) || 100;

/** utime+stime (s) of every process in process group `pgid` (our detached servers lead their groups). */
function groupCpuSeconds(pgid) {
  let ticks = 0;
  let procs = 0;
  let pids = [];
  try {
    pids = readdirSync('/proc').filter((d) => /^\d+$/.test(d));
  } catch {
    return { seconds: NaN, procs: 0 };
  }
  for (const pid of pids) {
    let stat;
    try {
      stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    } catch {
      continue;
    }
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // f[0] is field 3 (state): pgrp is field 5, utime 14, stime 15.
    if (Number(f[2]) !== pgid) continue;
    ticks += Number(f[11]) + Number(f[12]);
    procs++;
  }
  return { seconds: ticks / CLK_TCK, procs };
}

/** CPU seconds of the whole machine by kind (/proc/stat, first line). */
function machineCpuSeconds() {
  try {
    const f = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
    const [user = 0, nice = 0, system = 0, , , irq = 0, softirq = 0, steal = 0] = f;
    return { procs: (user + nice + system) / CLK_TCK, irq: (irq + softirq) / CLK_TCK, steal: steal / CLK_TCK };
  } catch {
    return { procs: NaN, irq: NaN, steal: NaN };
  }
}

// ---------------------------------------------------------------- load

async function wrk(sys, kind, pathsFile, seconds, o, wrkBin) {
  const args = [
    `-t${o.threads}`,
    `-c${o.connections}`,
    `-d${seconds}s`,
    '--latency',
    '--timeout',
    '60s',
    '-s',
    join(HERE, 'rotate.lua'),
    `${sys.base}/`,
    '--',
    pathsFile,
  ];
  const cpu0 = groupCpuSeconds(sys.proc.child.pid);
  const m0 = machineCpuSeconds();
  // Through sh so that its cutime/cstime (fields 16, 17 of /proc/<sh>/stat) give wrk's own CPU time.
  const r = await run('/bin/sh', [
    '-c',
    'wrk_bin=$1; shift; "$wrk_bin" "$@"; rc=$?; echo "@@SHSTAT@@$(cat /proc/$$/stat)" >&2; exit $rc',
    'sh',
    wrkBin,
    ...args,
  ]);
  const shStat = /@@SHSTAT@@(.*)/.exec(r.stderr)?.[1] ?? '';
  const shF = shStat.slice(shStat.lastIndexOf(')') + 2).split(' ');
  const clientSeconds = (Number(shF[13]) + Number(shF[14])) / CLK_TCK;
  const cpu1 = groupCpuSeconds(sys.proc.child.pid);
  const m1 = machineCpuSeconds();
  const line = r.stdout.split('\n').find((l) => l.startsWith('@@WRKJSON@@'));
  if (r.code !== 0 || !line)
    throw new Error(`wrk against ${sys.name} (${kind}) failed: exit ${r.code}\n${r.stdout}\n${r.stderr}`);
  const j = JSON.parse(line.slice('@@WRKJSON@@'.length));
  const errs = Object.values(j.errors).reduce((a, b) => a + b, 0);
  const secs = j.durationUs / 1e6;
  const bodyBytes = kind === 'small' ? o.smallBytes : o.largeMiB * 1024 * 1024;
  return {
    system: sys.name,
    size: kind,
    requests: j.requests,
    seconds: secs,
    reqPerSec: j.requests / secs,
    // Body bytes of completed responses (the wire figure, with headers, is wireMBps).
    MBps: (j.requests * bodyBytes) / secs / 1e6,
    wireMBps: j.bytes / secs / 1e6,
    p50ms: j.latencyUs.p50 / 1000,
    p99ms: j.latencyUs.p99 / 1000,
    latencyUs: j.latencyUs,
    errors: j.errors,
    errorCount: errs,
    // CPU used by the server's processes (cores busy on average) and by the whole machine.
    serverCores: (cpu1.seconds - cpu0.seconds) / secs,
    serverProcs: cpu1.procs,
    serverCpuUsPerReq: ((cpu1.seconds - cpu0.seconds) * 1e6) / Math.max(1, j.requests),
    clientCores: clientSeconds / secs,
    clientCpuUsPerReq: (clientSeconds * 1e6) / Math.max(1, j.requests),
    // Interrupt + softirq time (loopback TCP receive work is largely here) and hypervisor steal.
    irqCores: (m1.irq - m0.irq) / secs,
    stealCores: (m1.steal - m0.steal) / secs,
    // Process time used by neither the server nor wrk: other processes on the machine (noise).
    otherCores: (m1.procs - m0.procs - (cpu1.seconds - cpu0.seconds) - clientSeconds) / secs,
    wrkText: r.stdout
      .split('\n')
      .filter((l) => !l.startsWith('@@WRKJSON@@'))
      .join('\n'),
  };
}

// ---------------------------------------------------------------- reporting

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};

function sh(cmd, args) {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  return `${r.stdout ?? ''}${r.stderr ?? ''}`.trim();
}

function machineInfo(nginxBin, wrkBin) {
  const cpu = (() => {
    try {
      return /model name\s*:\s*(.*)/.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1] ?? os.cpus()[0]?.model;
    } catch {
      return os.cpus()[0]?.model;
    }
  })();
  const dirty = sh('git', ['-C', REPO, 'status', '--porcelain', '--', 'src']) !== '';
  return {
    date: new Date().toISOString(),
    nproc: Number(sh('nproc', [])) || os.availableParallelism(),
    cpu,
    memGiB: Math.round(os.totalmem() / 2 ** 30),
    node: process.version,
    nginx: sh(nginxBin, ['-v']).replace(/^nginx version:\s*/, ''),
    wrk: sh(wrkBin, ['-v']).split('\n')[0]?.split(' Copyright')[0],
    kernel: `${os.type()} ${os.release()} ${os.arch()}`,
    gitCommit: sh('git', ['-C', REPO, 'rev-parse', 'HEAD']),
    srcDirty: dirty,
    // What was measured when src/ is dirty: the served code is dist/, compiled from this server.ts.
    serverTsSha256: createHash('sha256')
      .update(readFileSync(join(REPO, 'src', 'registry', 'http', 'server.ts')))
      .digest('hex')
      .slice(0, 16),
    distServerMtime: statSync(join(REPO, 'dist', 'registry', 'http', 'server.js')).mtime.toISOString(),
  };
}

const fmt = (v, d = 0) => (v >= 100 || d === 0 ? Math.round(v).toLocaleString('en-US') : v.toFixed(d));
const fmtMs = (v) => (v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2));

function summarize(runs, systems) {
  const out = {};
  for (const size of ['small', 'large']) {
    if (!runs.some((r) => r.size === size)) continue;
    out[size] = {};
    for (const s of systems) {
      const rs = runs.filter((r) => r.system === s && r.size === size);
      if (!rs.length) continue;
      out[size][s] = {
        runs: rs.length,
        reqPerSec: median(rs.map((r) => r.reqPerSec)),
        MBps: median(rs.map((r) => r.MBps)),
        p50ms: median(rs.map((r) => r.p50ms)),
        p99ms: median(rs.map((r) => r.p99ms)),
        serverCores: median(rs.map((r) => r.serverCores)),
        serverCpuUsPerReq: median(rs.map((r) => r.serverCpuUsPerReq)),
        irqCores: median(rs.map((r) => r.irqCores)),
        stealCores: median(rs.map((r) => r.stealCores)),
        clientCores: median(rs.map((r) => r.clientCores)),
        clientCpuUsPerReq: median(rs.map((r) => r.clientCpuUsPerReq)),
        otherCores: median(rs.map((r) => r.otherCores)),
        reqPerSecAll: rs.map((r) => Math.round(r.reqPerSec)),
        MBpsAll: rs.map((r) => Math.round(r.MBps)),
      };
    }
  }
  return out;
}

function markdown(res) {
  const { machine: m, config: c, medians, targets } = res;
  const sizeName = { small: `${c.smallBytes / 1024} KiB`, large: `${c.largeMiB} MiB` };
  const L = [];
  L.push('# cairn registry vs nginx: file GET throughput and latency', '');
  L.push(
    `Generated by \`${res.command ?? 'node bench/http/run.js'}\` on ${m.date}. Loopback (127.0.0.1), wrk \`-t${c.threads} -c${c.connections} -d${c.duration}s --latency\`, ` +
      `${c.reps} interleaved runs per system and size (order alternates each round); medians shown. ` +
      `${c.smallCount} distinct ${sizeName.small} files (URLs rotated by a wrk Lua script) and ${c.largeCount} distinct ${sizeName.large} files, ` +
      `stored through BlobStore; cairn runs \`registry serve --workers ${c.cairnWorkers ?? 1}\`; nginx serves the same blob paths with \`sendfile on; tcp_nopush on; access_log off; worker_processes auto\`` +
      `${c.nginxCache ? ', open_file_cache' : ''}. MB/s is response-body bytes / s (10^6 bytes); latencies are wrk's per-request percentiles.`,
    '',
  );
  L.push(
    '| size | system | req/s | MB/s | p50 ms | p99 ms | server CPU cores | server CPU µs/req | wrk CPU cores | wrk CPU µs/req | irq+softirq cores | steal cores | other procs cores | each run (4 KiB: req/s, 64 MiB: MB/s) |',
    '| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |',
  );
  for (const size of Object.keys(medians)) {
    for (const [s, v] of Object.entries(medians[size])) {
      L.push(
        `| ${sizeName[size]} | ${s} | ${fmt(v.reqPerSec)} | ${fmt(v.MBps)} | ${fmtMs(v.p50ms)} | ${fmtMs(v.p99ms)} | ` +
          `${v.serverCores.toFixed(2)} | ${fmt(v.serverCpuUsPerReq)} | ${v.clientCores.toFixed(2)} | ${fmt(v.clientCpuUsPerReq)} | ` +
          `${v.irqCores.toFixed(2)} | ${v.stealCores.toFixed(2)} | ${v.otherCores.toFixed(2)} | ${(size === 'small' ? v.reqPerSecAll : v.MBpsAll).join(', ')} |`,
      );
    }
  }
  L.push('', '**Ratios cairn / nginx (medians)**', '');
  L.push(
    '| size | system | req/s | MB/s | p50 | p99 | target | met |',
    '| --- | --- | ---: | ---: | ---: | ---: | --- | --- |',
  );
  for (const size of Object.keys(medians)) {
    const ng = medians[size].nginx;
    if (!ng) continue;
    for (const [s, v] of Object.entries(medians[size])) {
      if (s === 'nginx') continue;
      const t = targets[size];
      const ratio = v[t.metric] / ng[t.metric];
      const tgt = s === 'cairn' ? `${t.metric} ≥ ${t.min}× nginx` : '';
      const met =
        s === 'cairn' ? (ratio >= t.min ? 'yes' : '**no**') : ratio >= t.min ? '(would meet)' : '(would miss)';
      L.push(
        `| ${sizeName[size]} | ${s} | ${(v.reqPerSec / ng.reqPerSec).toFixed(2)} | ${(v.MBps / ng.MBps).toFixed(2)} | ` +
          `${(v.p50ms / ng.p50ms).toFixed(2)} | ${(v.p99ms / ng.p99ms).toFixed(2)} | ${tgt} | ${met} |`,
      );
    }
  }
  L.push('', '![chart](chart.svg)', '', '**Machine**', '');
  L.push('| | |', '| --- | --- |');
  L.push(`| nproc | ${m.nproc} (${m.cpu}) |`);
  L.push(`| memory | ${m.memGiB} GiB |`);
  L.push(`| node | ${m.node} |`);
  L.push(`| nginx | ${m.nginx} |`);
  L.push(`| wrk | ${m.wrk} |`);
  L.push(`| kernel | ${m.kernel} |`);
  L.push(`| git commit | ${m.gitCommit}${m.srcDirty ? ' (src/ has uncommitted changes)' : ''} |`);
  L.push(
    `| server.ts sha256 (first 16) | ${m.serverTsSha256}; dist/registry/http/server.js built ${m.distServerMtime} |`,
  );
  L.push(`| date | ${m.date} |`);
  L.push('', `Total bench wall time: ${res.wallSeconds.toFixed(0)} s.`, '');
  return L.join('\n');
}

function svgChart(res) {
  const { medians, config: c, targets } = res;
  const systems = [...new Set(Object.values(medians).flatMap((m) => Object.keys(m)))];
  const palette = { cairn: '#d9822b', nginx: '#2b7bd9' };
  const extra = ['#7a9a3a', '#9a3a7a', '#3a9a9a', '#777777', '#c0392b', '#16a085'];
  let ei = 0;
  const color = (s) => palette[s] ?? (palette[s] = extra[ei++ % extra.length]);
  systems.forEach(color);
  const many = systems.length > 3; // then bars are told apart by the legend, not by labels
  const panels = [
    { title: `${c.smallBytes / 1024} KiB files: requests/s`, size: 'small', key: 'reqPerSec' },
    { title: `${c.largeMiB} MiB files: MB/s`, size: 'large', key: 'MBps' },
    { title: `${c.smallBytes / 1024} KiB files: p50 (solid) / p99 (light) latency, ms`, size: 'small', key: 'lat' },
    { title: `${c.largeMiB} MiB files: p50 (solid) / p99 (light) latency, ms`, size: 'large', key: 'lat' },
  ];
  const W = Math.max(460, 60 + systems.length * 2 * 34);
  const H = 270;
  const esc = (s) => String(s).replace(/&/g, '&amp;').replace(/</g, '&lt;');
  const parts = [];
  // Legend, wrapped to the chart's width.
  let lx = 20;
  let ly = 40;
  for (const s of systems) {
    const w = 16 + 7 * s.length + 18;
    if (lx > 20 && lx + w > 2 * W - 10) {
      lx = 20;
      ly += 18;
    }
    parts.push(`<rect x="${lx}" y="${ly}" width="12" height="12" fill="${color(s)}"/>`);
    parts.push(`<text x="${lx + 16}" y="${ly + 10}" font-size="12">${esc(s)}</text>`);
    lx += w;
  }
  const top = ly + 30;
  panels.forEach((p, i) => {
    const m = medians[p.size];
    if (!m) return;
    const x0 = (i % 2) * W;
    const y0 = top + Math.floor(i / 2) * H;
    const bars = [];
    for (const s of systems) {
      if (!m[s]) continue;
      if (p.key === 'lat') {
        bars.push({ label: 'p50', v: m[s].p50ms, s });
        bars.push({ label: 'p99', v: m[s].p99ms, s, light: true });
      } else bars.push({ label: many ? '' : s, v: m[s][p.key], s });
    }
    const t = p.key === 'lat' ? undefined : targets[p.size];
    const targetV = t && m.nginx && t.metric === p.key ? t.min * m.nginx[p.key] : undefined;
    const max = Math.max(...bars.map((b) => b.v), targetV ?? 0, 1e-9);
    const plotX = x0 + 40;
    const plotW = W - 70;
    const plotY = y0 + 36;
    const plotH = H - 100;
    parts.push(
      `<text x="${x0 + W / 2}" y="${y0 + 16}" text-anchor="middle" font-size="14" font-weight="bold">${esc(p.title)}</text>`,
    );
    parts.push(`<line x1="${plotX}" y1="${plotY + plotH}" x2="${plotX + plotW}" y2="${plotY + plotH}" stroke="#333"/>`);
    const slot = plotW / bars.length;
    const bw = Math.max(6, Math.min(60, slot - 10));
    bars.forEach((b, j) => {
      const h = (b.v / max) * plotH;
      const bx = plotX + (j + 0.5) * slot - bw / 2;
      const by = plotY + plotH - h;
      parts.push(
        `<rect x="${bx.toFixed(1)}" y="${by.toFixed(1)}" width="${bw.toFixed(1)}" height="${h.toFixed(1)}" fill="${color(b.s)}" fill-opacity="${b.light ? 0.45 : 1}"/>`,
      );
      const label = p.key === 'lat' ? fmtMs(b.v) : fmt(b.v);
      parts.push(
        `<text x="${(bx + bw / 2).toFixed(1)}" y="${(by - 4).toFixed(1)}" text-anchor="middle" font-size="${many ? 9 : 11}">${esc(label)}</text>`,
      );
      if (b.label) {
        parts.push(
          `<text x="${(bx + bw / 2).toFixed(1)}" y="${plotY + plotH + 14}" text-anchor="middle" font-size="${many ? 9 : 11}">${esc(b.label)}</text>`,
        );
      }
    });
    if (targetV !== undefined) {
      const ty = plotY + plotH - (targetV / max) * plotH;
      parts.push(
        `<line x1="${plotX}" y1="${ty.toFixed(1)}" x2="${plotX + plotW}" y2="${ty.toFixed(1)}" stroke="#c00" stroke-dasharray="5,4"/>`,
      );
      parts.push(
        `<text x="${plotX + plotW}" y="${(ty - 4).toFixed(1)}" text-anchor="end" font-size="10" fill="#c00">target ${t.min}× nginx</text>`,
      );
    }
    if (p.key !== 'lat' && m.cairn && m.nginx) {
      const r = m.cairn[p.key] / m.nginx[p.key];
      parts.push(
        `<text x="${x0 + W / 2}" y="${plotY + plotH + 34}" text-anchor="middle" font-size="12">cairn / nginx = ${r.toFixed(2)}×</text>`,
      );
    }
  });
  const totalW = 2 * W;
  const totalH = top + 2 * H;
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${totalW}" height="${totalH}" viewBox="0 0 ${totalW} ${totalH}" font-family="sans-serif">
<rect width="100%" height="100%" fill="white"/>
<text x="${totalW / 2}" y="24" text-anchor="middle" font-size="16" font-weight="bold">${esc(
    `cairn registry vs nginx: file GETs on loopback, wrk -t${c.threads} -c${c.connections} -d${c.duration}s, medians of ${c.reps} interleaved runs`,
  )}</text>
${parts.join('\n')}
</svg>
`;
}

// ---------------------------------------------------------------- main

async function main() {
  const o = parseArgs(process.argv.slice(2));
  if (o.render) {
    const res = JSON.parse(readFileSync(join(o.render, 'results.json'), 'utf8'));
    writeFileSync(join(o.render, 'results.md'), markdown(res));
    writeFileSync(join(o.render, 'chart.svg'), svgChart(res));
    progress(`re-rendered ${o.render}/results.md and chart.svg`);
    return;
  }
  keepTemp = o.keep;
  const wrkBin = ensureTool('wrk', ['wrk']);
  const nginxBin = ensureTool('nginx', ['nginx-light', 'nginx']);
  if (!which('curl')) ensureTool('curl', ['curl']);

  const distMain = join(REPO, 'dist', 'cli', 'main.js');
  if (o.build || !existsSync(distMain)) {
    progress('building: npx tsc -p tsconfig.build.json');
    const r = spawnSync('npx', ['tsc', '-p', 'tsconfig.build.json'], { cwd: REPO, encoding: 'utf8' });
    if (r.status !== 0)
      progress(`tsc reported errors (emitting anyway):\n${(r.stdout + r.stderr).trim().slice(0, 2000)}`);
  }
  const srcServer = join(REPO, 'src', 'registry', 'http', 'server.ts');
  const distServer = join(REPO, 'dist', 'registry', 'http', 'server.js');
  if (statSync(srcServer).mtimeMs > statSync(distServer).mtimeMs) {
    progress('warning: src/registry/http/server.ts is newer than dist/ (run with --build)');
  }

  tempDir = mkdtempSync(join(os.tmpdir(), 'cairn-http-bench-'));
  const root = join(tempDir, 'registry');
  const ngDir = join(tempDir, 'nginx');
  mkdirSync(ngDir);
  progress(
    `temp dir ${tempDir}; writing ${o.smallCount} x ${o.smallBytes} B and ${o.largeCount} x ${o.largeMiB} MiB files through BlobStore`,
  );
  const files = await makeFiles(root, o);
  const smallPaths = join(tempDir, 'small.txt');
  const largePaths = join(tempDir, 'large.txt');
  writeFileSync(smallPaths, files.small.map((d) => `/api/v1/files/${d}`).join('\n') + '\n');
  writeFileSync(largePaths, files.large.map((d) => `/api/v1/files/${d}`).join('\n') + '\n');

  /** @type {{name:string, base:string, proc:any}[]} */
  const systems = [];

  // cairn: the real CLI.
  {
    const port = await freePort();
    const proc = startChild(process.execPath, [
      join(REPO, 'bin', 'cairn.js'),
      'registry',
      'serve',
      '--root',
      root,
      '--listen',
      `127.0.0.1:${port}`,
      '--log-level',
      'warn',
      '--workers',
      o.cairnWorkers,
    ]);
    const base = `http://127.0.0.1:${port}`;
    await waitHttp(`${base}/healthz`, 'cairn registry serve', proc);
    progress(`cairn registry serve up on ${base} (pid ${proc.child.pid})`);
    systems.push({ name: 'cairn', base, proc });
  }
  // nginx: private prefix, config, pid and logs in the temp dir.
  {
    const port = await freePort();
    const conf = join(ngDir, 'nginx.conf');
    writeFileSync(conf, nginxConf(ngDir, root, port, o));
    const t = spawnSync(nginxBin, ['-t', '-p', ngDir, '-c', conf, '-e', join(ngDir, 'error.log')], {
      encoding: 'utf8',
    });
    if (t.status !== 0) throw new Error(`nginx -t failed:\n${t.stderr}`);
    const proc = startChild(nginxBin, ['-p', ngDir, '-c', conf, '-e', join(ngDir, 'error.log')]);
    const base = `http://127.0.0.1:${port}`;
    await waitHttp(`${base}/healthz`, 'nginx', proc);
    progress(`nginx up on ${base} (master pid ${proc.child.pid})`);
    systems.push({ name: 'nginx', base, proc });
  }
  // Optional prototypes of server changes (bench/http/proto-server.js).
  for (const variant of o.proto) {
    const port = await freePort();
    const proc = startChild(process.execPath, [
      join(HERE, 'proto-server.js'),
      '--root',
      root,
      '--port',
      String(port),
      '--variant',
      variant,
    ]);
    const base = `http://127.0.0.1:${port}`;
    await waitHttp(`${base}/healthz`, `proto ${variant}`, proc);
    progress(`proto:${variant} up on ${base} (pid ${proc.child.pid})`);
    systems.push({ name: `proto:${variant}`, base, proc });
  }

  for (const s of systems) await verify(s, files);

  const sizes = [
    { kind: 'small', paths: smallPaths },
    { kind: 'large', paths: largePaths },
  ].filter((sz) => o.sizes.includes(sz.kind));
  if (o.warmup > 0) {
    for (const sz of sizes) {
      for (const s of systems) {
        progress(`warm-up ${s.name} ${sz.kind} ${o.warmup}s`);
        await wrk(s, sz.kind, sz.paths, o.warmup, o, wrkBin);
      }
    }
  }
  const runs = [];
  for (let rep = 0; rep < o.reps; rep++) {
    // Interleaved; the order flips every round so neither system always goes first.
    const order = rep % 2 === 0 ? systems : [...systems].reverse();
    for (const sz of sizes) {
      for (const s of order) {
        const r = await wrk(s, sz.kind, sz.paths, o.duration, o, wrkBin);
        if (s.proc.child.exitCode !== null || s.proc.child.signalCode !== null) {
          throw new Error(`${s.name} died during the run:\n${s.proc.tail()}`);
        }
        r.round = rep + 1;
        runs.push(r);
        progress(
          `round ${rep + 1}/${o.reps} ${sz.kind.padEnd(5)} ${s.name.padEnd(6)} ${fmt(r.reqPerSec).padStart(8)} req/s ` +
            `${fmt(r.MBps).padStart(6)} MB/s p50 ${fmtMs(r.p50ms)} ms p99 ${fmtMs(r.p99ms)} ms, server ${r.serverCores.toFixed(2)} cores (${fmt(r.serverCpuUsPerReq)} µs/req), wrk ${r.clientCores.toFixed(2)} cores (${fmt(r.clientCpuUsPerReq)} µs/req), irq ${r.irqCores.toFixed(2)}, steal ${r.stealCores.toFixed(2)}, other procs ${r.otherCores.toFixed(2)} cores${r.errorCount ? ` ERRORS ${JSON.stringify(r.errors)}` : ''}`,
        );
      }
    }
  }

  const bad = runs.filter((r) => r.errorCount > 0);
  for (const s of systems) await stopChild(s.proc.child);

  const names = systems.map((s) => s.name);
  const medians = summarize(runs, names);
  const targets = { small: { metric: 'reqPerSec', min: 0.5 }, large: { metric: 'MBps', min: 0.8 } };
  const result = {
    machine: machineInfo(nginxBin, wrkBin),
    config: { ...o, out: undefined, proto: o.proto },
    command: `node bench/http/run.js ${process.argv.slice(2).join(' ')}`.trim(),
    targets,
    medians,
    ratios: Object.fromEntries(
      o.sizes.map((size) => [
        size,
        Object.fromEntries(
          names
            .filter((n) => n !== 'nginx')
            .map((n) => [
              n,
              {
                reqPerSec: medians[size][n].reqPerSec / medians[size].nginx.reqPerSec,
                MBps: medians[size][n].MBps / medians[size].nginx.MBps,
                p50ms: medians[size][n].p50ms / medians[size].nginx.p50ms,
                p99ms: medians[size][n].p99ms / medians[size].nginx.p99ms,
                serverCpuUsPerReq: medians[size][n].serverCpuUsPerReq / medians[size].nginx.serverCpuUsPerReq,
              },
            ]),
        ),
      ]),
    ),
    targetsMet: Object.fromEntries(
      o.sizes.map((size) => {
        const t = targets[size];
        return [size, medians[size].cairn[t.metric] / medians[size].nginx[t.metric] >= t.min];
      }),
    ),
    runs,
    wallSeconds: (performance.now() - T0) / 1000,
  };
  mkdirSync(o.out, { recursive: true });
  writeFileSync(join(o.out, 'results.json'), JSON.stringify(result, null, 2) + '\n');
  writeFileSync(join(o.out, 'results.md'), markdown(result));
  writeFileSync(join(o.out, 'chart.svg'), svgChart(result));
  process.stdout.write(markdown(result));
  progress(`wrote ${join(o.out, 'results.json')}, results.md, chart.svg`);
  if (bad.length) {
    progress(`WARNING: ${bad.length} run(s) had wrk errors (see results.json)`);
    process.exitCode = 2;
  }
}

main()
  .catch((err) => {
    if (interrupted) progress('interrupted');
    else progress(`failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
    process.exitCode = 1;
  })
  .finally(() => cleanup());
