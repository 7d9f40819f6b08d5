/**
 * Running the `cairn` CLI as a user does: `node bin/cairn.js ...` in a child
 * process, with an environment free of the caller's CAIRN_* variables.
 */
import { execFileSync, spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO_DIR = fileURLToPath(new URL('../..', import.meta.url));
export const CAIRN_BIN = join(REPO_DIR, 'bin', 'cairn.js');
const DIST_MAIN = join(REPO_DIR, 'dist', 'cli', 'main.js');

function newestMtime(dir: string): number {
  let newest = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) newest = Math.max(newest, newestMtime(p));
    else if (e.name.endsWith('.ts')) newest = Math.max(newest, statSync(p).mtimeMs);
  }
  return newest;
}

/**
 * Compiles src/ into dist/ when dist/cli/main.js is missing or older than a
 * source file (CI runs `npm run build` first, so there this does nothing).
 * tsc emits even when it reports type errors; those are printed, not fatal,
 * as long as the CLI entry point exists afterwards.
 */
export function ensureBuilt(): void {
  const fresh = existsSync(DIST_MAIN) && statSync(DIST_MAIN).mtimeMs >= newestMtime(join(REPO_DIR, 'src'));
  if (fresh) return;
  try {
    execFileSync('npx', ['tsc', '-p', 'tsconfig.build.json'], { cwd: REPO_DIR, stdio: 'pipe' });
  } catch (err) {
    const out = (err as { stdout?: Buffer }).stdout?.toString() ?? String(err);
    if (!existsSync(DIST_MAIN)) throw new Error(`building the CLI failed:\n${out}`);
    console.warn(`tsc -p tsconfig.build.json reported errors (testing what it emitted):\n${out}`);
  }
}

export type Env = Record<string, string | undefined>;

/** The test process's environment without CAIRN_* settings, plus `extra`. */
export function cliEnv(extra: Env = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('CAIRN_')) env[k] = v;
  for (const [k, v] of Object.entries(extra)) {
    if (v === undefined) delete env[k];
    else env[k] = v;
  }
  return env;
}

export interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export interface CliOptions {
  env?: Env;
  cwd?: string;
  /** Kill the child after this long (default 30 s). */
  timeoutMs?: number;
}

/** A running CLI child with its output collected as it comes. */
export interface CliChild {
  child: ChildProcessWithoutNullStreams;
  stdout(): string;
  stderr(): string;
  /** Resolves when the child has exited and its output is complete. */
  exited: Promise<CliResult>;
}

export function spawnCairn(args: string[], opts: CliOptions = {}): CliChild {
  const child = spawn(process.execPath, [CAIRN_BIN, ...args], {
    cwd: opts.cwd ?? REPO_DIR,
    env: cliEnv(opts.env),
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  child.stdin.end();
  let out = '';
  let err = '';
  child.stdout.setEncoding('utf8').on('data', (c: string) => (out += c));
  child.stderr.setEncoding('utf8').on('data', (c: string) => (err += c));
  const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 30_000);
  const exited = new Promise<CliResult>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout: out, stderr: err });
    });
  });
  return { child, stdout: () => out, stderr: () => err, exited };
}

/** Runs `cairn ARGS...` to completion. */
export function cairn(args: string[], opts: CliOptions = {}): Promise<CliResult> {
  return spawnCairn(args, opts).exited;
}

/** Runs `cairn ARGS... --json` and parses stdout, failing with stderr when the command fails. */
export async function cairnJson<T>(args: string[], opts: CliOptions = {}): Promise<T> {
  const r = await cairn([...args, '--json'], opts);
  if (r.code !== 0) throw new Error(`cairn ${args.join(' ')} exited with ${r.code ?? r.signal}: ${r.stderr}`);
  return JSON.parse(r.stdout) as T;
}

export interface LogLine {
  level: string;
  msg: string;
  [field: string]: unknown;
}

/** The JSON log lines a child has written to stderr so far (other lines are skipped). */
export function logLines(stderr: string): LogLine[] {
  const out: LogLine[] = [];
  for (const line of stderr.split('\n')) {
    if (!line.startsWith('{')) continue;
    try {
      out.push(JSON.parse(line) as LogLine);
    } catch {
      // a partial line
    }
  }
  return out;
}

/** Waits for `registry serve` to log `listening`, returning that log line (with `url` and `root`). */
export async function waitForListening(c: CliChild, timeoutMs = 15_000): Promise<LogLine & { url: string }> {
  const deadline = Date.now() + timeoutMs;
  let exited: CliResult | undefined;
  void c.exited.then((r) => (exited = r));
  for (;;) {
    const line = logLines(c.stderr()).find((l) => l.msg === 'listening');
    if (line && typeof line.url === 'string') return line as LogLine & { url: string };
    if (exited) throw new Error(`registry serve exited with ${exited.code ?? exited.signal}: ${exited.stderr}`);
    if (Date.now() > deadline) {
      c.child.kill('SIGKILL');
      throw new Error(`registry serve did not log "listening" in ${timeoutMs} ms: ${c.stderr()}`);
    }
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Ends a long-running CLI child (a `registry serve`) with SIGTERM and waits for it; nothing if it has exited. */
export async function stopCli(c: CliChild | undefined): Promise<void> {
  if (!c || c.child.exitCode !== null) return;
  c.child.kill('SIGTERM');
  await c.exited;
}
