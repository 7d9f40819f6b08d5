// Helpers shared by the benches (bench/run.js NAME): child processes with deadlines, the cleanup
// stack, a private snapshot of the build, cairn CLI mounts and daemons, page-cache drops,
// statistics (summaries, least-squares fits) and machine facts.
//
// Rule kept throughout: this process never serves a FUSE mount and never touches one
// itself; every access to a mounted path happens in a child process with a deadline.
import { spawn, execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, readdirSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { cpus, totalmem } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createServer } from 'node:net';

export const REPO = fileURLToPath(new URL('../..', import.meta.url));
/**
 * The cairn build the benches run: by default the repository's own dist/ and bin/; run.js
 * points these at a private snapshot of them (setCairnRoot), so a rebuild of dist/ by someone
 * else during a run cannot mix two builds. Children inherit it through BENCH_CAIRN_ROOT.
 */
export let CAIRN_ROOT = process.env.BENCH_CAIRN_ROOT ?? REPO;
export let DIST = join(CAIRN_ROOT, 'dist');
export let CAIRN = join(CAIRN_ROOT, 'bin/cairn.js');

export function setCairnRoot(root) {
  CAIRN_ROOT = root;
  DIST = join(root, 'dist');
  CAIRN = join(root, 'bin/cairn.js');
  process.env.BENCH_CAIRN_ROOT = root;
}
export const CHROOT_PATH = 'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

let progressPrefix = 'bench';
/** Sets the prefix of progress lines (the bench's name). */
export function setProgressPrefix(prefix) {
  progressPrefix = prefix;
}
export const progress = (tag, s) => process.stderr.write(`[${progressPrefix}:${tag}] ${s}\n`);
export const now = () => performance.now();
export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** The environment for children: the caller's, without CAIRN_* settings. */
export function childEnv(extra = {}) {
  const env = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('CAIRN_')) env[k] = v;
  return { ...env, ...extra };
}

/**
 * Runs a command to completion; resolves { code, signal, stdout, stderr, ms } (ms from spawn
 * to exit). Killed (SIGKILL) past `timeoutMs`. Rejects only when it cannot start, or when
 * `check` and it failed.
 */
export function run(cmd, args, opts = {}) {
  return new Promise((resolve, reject) => {
    const t0 = now();
    const child = spawn(cmd, args, {
      cwd: opts.cwd ?? REPO,
      env: opts.env ?? childEnv(),
      stdio: [opts.input !== undefined ? 'pipe' : 'ignore', 'pipe', 'pipe'],
    });
    const out = [];
    const err = [];
    let outBytes = 0;
    child.stdout.on('data', (c) => {
      outBytes += c.length;
      if (!opts.discardStdout) out.push(c);
    });
    child.stderr.on('data', (c) => err.push(c));
    if (opts.input !== undefined) {
      child.stdin.on('error', () => undefined);
      child.stdin.end(opts.input);
    }
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 120_000);
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      const r = {
        code,
        signal,
        stdout: Buffer.concat(out).toString(),
        stdoutBytes: outBytes,
        stderr: Buffer.concat(err).toString(),
        ms: now() - t0,
      };
      if (opts.check && code !== 0) {
        reject(new Error(`${cmd} ${args.join(' ')} exited with ${code ?? signal}: ${r.stderr.trim().slice(-2000)}`));
      } else resolve(r);
    });
  });
}

export const runChecked = (cmd, args, opts = {}) => run(cmd, args, { ...opts, check: true });
export const cairnCli = (args, opts = {}) => run(process.execPath, [CAIRN, ...args], opts);

/** LIFO cleanup actions, run once, on success, failure or a signal. */
export class Cleanup {
  constructor() {
    this.actions = [];
    this.ran = false;
  }
  add(name, fn) {
    const a = { name, fn, done: false };
    this.actions.push(a);
    return async () => {
      if (a.done) return;
      a.done = true;
      await fn();
    };
  }
  async run() {
    this.ran = true;
    while (this.actions.length > 0) {
      const a = this.actions.pop();
      if (a.done) continue;
      a.done = true;
      try {
        await a.fn();
      } catch (e) {
        progress('cleanup', `${a.name}: ${e instanceof Error ? e.message : String(e)}`);
      }
    }
  }
}

/** Mount points (decoded) and types from /proc/mounts. */
export function procMounts() {
  const text = readFileSync('/proc/mounts', 'utf8');
  return text
    .split('\n')
    .filter(Boolean)
    .map((l) => {
      const [src, mnt, type] = l.split(' ');
      return { src, mnt: mnt.replace(/\\([0-7]{3})/g, (_, o) => String.fromCharCode(parseInt(o, 8))), type };
    });
}

export function mountedAt(path) {
  return procMounts().filter((m) => m.mnt === path);
}

/** Detaches whatever is mounted at `path`, top first (lazy: a hung FUSE server cannot block it). */
export async function forceUnmount(path) {
  for (let i = 0; i < 4; i++) {
    const ms = mountedAt(path);
    if (ms.length === 0) return;
    const top = ms[ms.length - 1];
    if (top.type.startsWith('fuse')) await run('fusermount', ['-uz', path], { timeoutMs: 10_000 });
    else await run('umount', ['-l', path], { timeoutMs: 10_000 });
  }
}

/** Whether `pid` is alive. */
export function alive(pid) {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Waits for `pid` to exit; SIGTERM then SIGKILL past the deadlines. */
export async function waitExit(pid, ms = 10_000) {
  const until = now() + ms;
  while (alive(pid) && now() < until) await sleep(20);
  if (!alive(pid)) return;
  process.kill(pid, 'SIGTERM');
  const until2 = now() + 3000;
  while (alive(pid) && now() < until2) await sleep(20);
  if (alive(pid)) process.kill(pid, 'SIGKILL');
}

let controlMod;
/** The pid of the daemon answering on `stateDir`, or undefined. */
export async function daemonPid(stateDir) {
  controlMod ??= await import(join(DIST, 'daemon/control.js'));
  try {
    const r = await controlMod.callControl(join(stateDir, 'daemon.sock'), { op: 'ping' }, 3000);
    return r.pid;
  } catch {
    return undefined;
  }
}

/**
 * `cairn mount ... --json` in a child; registers the unmount with `cleanup`. Returns the
 * mount's info, the CLI's wall time and `unmount()` (CLI unmount, then, when `daemonExits`,
 * waits for the daemon to exit, as it does after its last mount when `cairn mount` started it).
 */
export async function cairnMount(cleanup, { url, ref, mnt, stateDir, args = [], env, daemonExits = true }) {
  let pid;
  const undo = cleanup.add(`unmount ${mnt}`, async () => {
    pid ??= await daemonPid(stateDir);
    await cairnCli(['unmount', mnt, '--state-dir', stateDir], { timeoutMs: 30_000 });
    await forceUnmount(mnt);
    if (pid !== undefined && daemonExits) await waitExit(pid, 10_000);
  });
  const r = await cairnCli(['mount', url, ref, mnt, '--state-dir', stateDir, '--json', ...args], {
    timeoutMs: 60_000,
    ...(env ? { env } : {}),
  });
  if (r.code !== 0) {
    await undo();
    throw new Error(`cairn mount ${ref} at ${mnt} failed (${r.code}): ${r.stderr.trim()}`);
  }
  const info = JSON.parse(r.stdout);
  return {
    info,
    cliMs: r.ms,
    async daemon() {
      pid ??= await daemonPid(stateDir);
      return pid;
    },
    unmount: undo,
  };
}

/** `cairn stats MNT --json`. */
export async function cairnStats(mnt, stateDir) {
  const r = await cairnCli(['stats', mnt, '--state-dir', stateDir, '--json'], { timeoutMs: 30_000, check: true });
  return JSON.parse(r.stdout);
}

/** Starts `cairn registry serve` on a loopback port over `root`; resolves its URL. */
export async function startRegistry(cleanup, root, logFile) {
  const child = spawn(
    process.execPath,
    [CAIRN, 'registry', 'serve', '--root', root, '--listen', '127.0.0.1:0', '--log-level', 'info'],
    { cwd: REPO, env: childEnv(), stdio: ['ignore', 'ignore', 'pipe'] },
  );
  cleanup.add(`registry server ${child.pid}`, async () => {
    child.kill('SIGTERM');
    await waitExit(child.pid, 5000);
  });
  let log = '';
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`registry server did not start: ${log}`)), 20_000);
    child.stderr.setEncoding('utf8').on('data', (c) => {
      log += c;
      if (logFile) writeFileSync(logFile, log);
      const m = /"msg":"listening","url":"(http:\/\/127\.0\.0\.1:\d+)"/.exec(log);
      if (m) {
        clearTimeout(timer);
        resolve({ url: m[1], pid: child.pid });
      }
    });
    child.on('exit', (code) => reject(new Error(`registry server exited with ${code}: ${log}`)));
  });
}

/** A free loopback TCP port. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

/** Writes dirty pages back and empties the page, dentry and inode caches. */
export async function dropCaches() {
  await runChecked('sync', []);
  writeFileSync('/proc/sys/vm/drop_caches', '3');
}

/** The 1, 5 and 15 minute load averages, as /proc/loadavg gives them. */
export function loadAverage() {
  return readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');
}

/** Resident set size of `pid` in bytes (VmRSS). */
export function rssOf(pid) {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) * 1024 : NaN;
}

// ---- statistics -------------------------------------------------------------

export function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const n = s.length;
  if (n === 0) return NaN;
  return n % 2 ? s[(n - 1) / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
}

/** median, min, max, spread = (max - min) / median in %, n, and the samples. */
export function summary(xs) {
  const med = median(xs);
  const min = Math.min(...xs);
  const max = Math.max(...xs);
  return { median: med, min, max, spreadPct: med ? (100 * (max - min)) / med : NaN, n: xs.length, samples: xs };
}

/** The q-quantile (0..1) of `xs`, linear between order statistics. */
export function quantile(xs, q) {
  const s = [...xs].sort((a, b) => a - b);
  if (s.length === 0) return NaN;
  const i = (s.length - 1) * q;
  const lo = Math.floor(i);
  return s[lo] + (s[Math.min(lo + 1, s.length - 1)] - s[lo]) * (i - lo);
}

/** Least-squares line y = a·x + b through `points` ([[x, y], ...]) and its R². */
export function linearFit(points) {
  const n = points.length;
  const mx = points.reduce((t, p) => t + p[0], 0) / n;
  const my = points.reduce((t, p) => t + p[1], 0) / n;
  let sxx = 0;
  let sxy = 0;
  let syy = 0;
  for (const [x, y] of points) {
    sxx += (x - mx) ** 2;
    sxy += (x - mx) * (y - my);
    syy += (y - my) ** 2;
  }
  const a = sxy / sxx;
  const b = my - a * mx;
  const sse = points.reduce((t, [x, y]) => t + (y - (a * x + b)) ** 2, 0);
  return { a, b, r2: syy > 0 ? 1 - sse / syy : 1, n };
}

export { prng } from './prng.js';

// ---- machine ----------------------------------------------------------------

function tryExec(cmd, args) {
  try {
    return execFileSync(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] })
      .toString()
      .trim();
  } catch (e) {
    return (e.stdout?.toString() || e.stderr?.toString() || '').trim() || undefined;
  }
}

export function machineInfo(workDir) {
  const commit = tryExec('git', ['-C', REPO, 'rev-parse', '--short', 'HEAD']);
  const dirty = tryExec('git', ['-C', REPO, 'status', '--porcelain', '--', 'src']);
  const fs = tryExec('findmnt', ['-n', '-o', 'FSTYPE,SOURCE', '-T', workDir])?.replace(/\s+/g, ' ');
  return {
    cpu: cpus()[0]?.model,
    cores: cpus().length,
    memGiB: +(totalmem() / 2 ** 30).toFixed(1),
    kernel: tryExec('uname', ['-r']),
    node: process.version,
    fusermount: tryExec('fusermount', ['-V']),
    workDir,
    workFs: fs,
    commit,
    srcDirty: Boolean(dirty),
    date: new Date().toISOString(),
  };
}

// ---- setup shared by the benches ----------------------------------------------------------

function newestMtime(dir) {
  let newest = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) newest = Math.max(newest, newestMtime(p));
    else if (e.name.endsWith('.ts')) newest = Math.max(newest, statSync(p).mtimeMs);
  }
  return newest;
}

/**
 * Builds dist/ when it is missing or older than src/, then copies dist/, bin/ and package.json
 * into `work`/cairn (node_modules linked) and points every later cairn process at that copy,
 * so that a rebuild of dist/ by someone else during a run cannot mix two builds. Resolves the
 * sha256 (12 hex digits) of the copied .js files.
 */
export async function snapshotBuild(work) {
  const distMain = join(REPO, 'dist/cli/main.js');
  if (!existsSync(distMain) || statSync(distMain).mtimeMs < newestMtime(join(REPO, 'src'))) {
    progress('setup', 'dist/ is older than src/: npx tsc -p tsconfig.build.json');
    await runChecked('npx', ['tsc', '-p', 'tsconfig.build.json'], { timeoutMs: 300_000 });
  }
  const snapshot = join(work, 'cairn');
  mkdirSync(snapshot);
  await runChecked('cp', ['-a', join(REPO, 'dist'), join(REPO, 'bin'), join(REPO, 'package.json'), snapshot]);
  symlinkSync(join(REPO, 'node_modules'), join(snapshot, 'node_modules'));
  const hash = (
    await runChecked('sh', ['-c', 'cd dist && find . -type f -name "*.js" | sort | xargs cat | sha256sum'], {
      cwd: snapshot,
    })
  ).stdout.slice(0, 12);
  setCairnRoot(snapshot);
  progress('setup', `running cairn from a snapshot of dist/ (sha256 of its .js files ${hash}) at ${snapshot}`);
  return hash;
}

/** Removes a work tree, first detaching anything still mounted under it; never crosses into a mount. */
export async function removeTree(dir) {
  const under = procMounts()
    .filter((m) => m.mnt === dir || m.mnt.startsWith(`${dir}/`))
    .map((m) => m.mnt)
    .sort((a, b) => b.length - a.length);
  for (const m of under) await forceUnmount(m);
  const left = procMounts().filter((m) => m.mnt === dir || m.mnt.startsWith(`${dir}/`));
  if (left.length > 0) {
    progress('cleanup', `not removing ${dir}: still mounted: ${left.map((m) => m.mnt).join(', ')}`);
    return;
  }
  await run('rm', ['-rf', '--one-file-system', dir], { timeoutMs: 300_000 });
}

/**
 * Starts a cairn daemon of our own (`cairn daemon`, no idle exit) on `stateDir` and registers
 * its stop with `cleanup`; resolves { pid, stop } once it answers on its control socket.
 */
export async function startDaemon(cleanup, stateDir, extra = []) {
  await mkdir(stateDir, { recursive: true, mode: 0o700 });
  const child = spawn(process.execPath, [CAIRN, 'daemon', '--state-dir', stateDir, '--log-level', 'warn', ...extra], {
    cwd: REPO,
    env: childEnv(),
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  const stop = cleanup.add(`daemon ${child.pid}`, async () => {
    child.kill('SIGTERM'); // it unmounts what it serves, then exits
    await waitExit(child.pid, 15_000);
  });
  for (let i = 0; i < 200; i++) {
    if ((await daemonPid(stateDir)) === child.pid) return { pid: child.pid, stop };
    await sleep(50);
  }
  await stop();
  throw new Error(`cairn daemon on ${stateDir} did not answer`);
}

/** Stops the process on the first SIGINT/SIGTERM/SIGHUP after running `cleanup`. */
export function cleanupOnSignals(cleanup) {
  let stopping = false;
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
    process.on(sig, () => {
      if (stopping) return;
      stopping = true;
      progress('signal', `${sig}: cleaning up`);
      void cleanup.run().finally(() => process.exit(130));
    });
  }
}
