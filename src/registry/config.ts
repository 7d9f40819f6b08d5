import { readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { CairnError, ErrorCode } from '../model/errors.js';
import { isLogLevel, type LogLevel } from '../util/log.js';
import { parseListen } from '../util/listen.js';
import { parseOciOptions, parseUserList, type OciOptions } from './oci/options.js';

export interface ServeConfig {
  root: string;
  host: string;
  port: number;
  logLevel: LogLevel;
  /** Server processes sharing the listening socket (node:cluster); 1 serves from this process. */
  workers: number;
  /** The /v2 API: auth, limits, layer blob policy. */
  oci: OciOptions;
}

/** Upper bound of --workers: more processes than this only add memory. */
const MAX_WORKERS = 64;

/** Parses `--workers`: a positive integer, or `auto` (one per available CPU). */
export function parseWorkers(value: string, what = '--workers'): number {
  if (value === 'auto') return Math.min(MAX_WORKERS, availableParallelism());
  const n = Number(value);
  if (!/^\d+$/.test(value) || !Number.isSafeInteger(n) || n < 1 || n > MAX_WORKERS)
    throw new CairnError(
      ErrorCode.INVALID_OPTION,
      `${what}: ${JSON.stringify(value)} is not auto or an integer from 1 to ${MAX_WORKERS}`,
    );
  return n;
}

const DEFAULT_LISTEN = '127.0.0.1:5000';
const CONFIG_KEYS = ['root', 'listen', 'logLevel', 'workers', 'oci'];

// In util/ so that the CLI's mount path parses --metrics without loading the serve configuration.
export { parseListen };

/**
 * The `oci` section of the config file, with the environment over it:
 * CAIRN_OCI_USERS (`user:password,…`, replaces the file's users),
 * CAIRN_OCI_AUTH_SCHEME (basic|bearer), CAIRN_OCI_PROTECT_READS (1|0).
 */
function ociConfig(section: unknown, env: NodeJS.ProcessEnv, file: string | undefined): OciOptions {
  const base = (section && typeof section === 'object' ? { ...(section as Record<string, unknown>) } : section) as
    Record<string, unknown> | undefined;
  const auth = { ...((base?.auth as Record<string, unknown> | undefined) ?? {}) };
  if (env.CAIRN_OCI_USERS) auth.users = parseUserList(env.CAIRN_OCI_USERS, 'CAIRN_OCI_USERS');
  if (env.CAIRN_OCI_AUTH_SCHEME) auth.scheme = env.CAIRN_OCI_AUTH_SCHEME;
  if (env.CAIRN_OCI_PROTECT_READS) auth.protectReads = env.CAIRN_OCI_PROTECT_READS === '1';
  const merged = Object.keys(auth).length > 0 ? { ...(base ?? {}), auth } : base;
  return parseOciOptions(merged, file ? `--config ${file}: oci` : 'oci');
}

/**
 * Resolves the serve configuration: command-line options over environment
 * (CAIRN_ROOT, CAIRN_LISTEN, CAIRN_LOG_LEVEL, CAIRN_WORKERS) over a JSON config file over defaults.
 */
export function resolveServeConfig(
  cli: { root?: string; listen?: string; logLevel?: string; workers?: string; config?: string },
  env: NodeJS.ProcessEnv = process.env,
): ServeConfig {
  let file: Record<string, unknown> = {};
  if (cli.config) {
    try {
      file = JSON.parse(readFileSync(cli.config, 'utf8')) as Record<string, unknown>;
    } catch (err) {
      throw new CairnError(ErrorCode.INVALID_OPTION, `--config ${cli.config}: ${(err as Error).message}`);
    }
    for (const key of Object.keys(file)) {
      if (!CONFIG_KEYS.includes(key)) {
        throw new CairnError(
          ErrorCode.INVALID_OPTION,
          `--config ${cli.config}: unknown key ${JSON.stringify(key)} (known: ${CONFIG_KEYS.join(', ')})`,
        );
      }
    }
  }
  const pick = (c: string | undefined, e: string | undefined, f: unknown): string | undefined =>
    c ?? e ?? (typeof f === 'string' ? f : undefined);
  const root = pick(cli.root, env.CAIRN_ROOT, file.root);
  if (!root)
    throw new CairnError(
      ErrorCode.INVALID_OPTION,
      '--root: a registry directory is required (or CAIRN_ROOT, or "root" in --config)',
    );
  const listen = parseListen(pick(cli.listen, env.CAIRN_LISTEN, file.listen) ?? DEFAULT_LISTEN);
  const logLevel = pick(cli.logLevel, env.CAIRN_LOG_LEVEL, file.logLevel) ?? 'info';
  if (!isLogLevel(logLevel))
    throw new CairnError(
      ErrorCode.INVALID_OPTION,
      `--log-level: ${JSON.stringify(logLevel)} is not debug|info|warn|error|silent`,
    );
  const fileWorkers = typeof file.workers === 'number' ? String(file.workers) : file.workers;
  const workers = parseWorkers(
    pick(cli.workers, env.CAIRN_WORKERS, fileWorkers) ?? '1',
    cli.workers !== undefined
      ? '--workers'
      : env.CAIRN_WORKERS !== undefined
        ? 'CAIRN_WORKERS'
        : `--config ${cli.config ?? ''}: workers`,
  );
  return { root, ...listen, logLevel, workers, oci: ociConfig(file.oci, env, cli.config) };
}
