import type { Command } from 'commander';
import { spawn } from 'node:child_process';
import { mkdir, open, readFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CairnError, ErrorCode, isCairnError } from '../../model/errors.js';
import type { Socket } from 'node:net';
import {
  callControl,
  controlSocketPath,
  errorOf,
  type ControlAnswer,
  type ControlRequest,
} from '../../daemon/control.js';
import type { Handoff } from '../../daemon/spawned.js';
import type { ContentStackOptions } from '../../daemon/content-stack.js';
import type { MountInfo } from '../../daemon/mounts.js';
import { parseRepoTag } from '../../model/reference.js';
import { parseListen } from '../../util/listen.js';
import { EXTRA_CA_CERTS_ENV } from '../../fetch/extra-ca.js';
import { createLogger, isLogLevel, type LogLevel } from '../../util/log.js';
import { bytesOption, intOption, output } from '../output.js';
import { formatBytes } from '../progress.js';
import type { CostModel } from '../../metrics/cost-model.js';
import type { DepthFitResult } from '../../metrics/depth-fit.js';

const DEFAULT_STATE_DIR = '/run/cairn';

interface DaemonCliOptions {
  stateDir: string;
  cacheDir?: string;
  memoryCache: string;
  diskCache: string;
  readDeadlineMs: string;
  logLevel: string;
  metrics?: string;
}

/** `--metrics HOST:PORT`, validated (port 0: any free port). */
function metricsOption(o: DaemonCliOptions): { host: string; port: number } | undefined {
  return o.metrics === undefined ? undefined : parseListen(o.metrics, '--metrics');
}

function contentOptions(o: DaemonCliOptions): ContentStackOptions & { readDeadlineMs: number } {
  const readDeadlineMs = intOption(o.readDeadlineMs, '--read-deadline-ms');
  if (readDeadlineMs === 0) throw new CairnError(ErrorCode.INVALID_OPTION, '--read-deadline-ms: must be positive');
  return {
    memoryBytes: bytesOption(o.memoryCache, '--memory-cache'),
    ...(o.cacheDir ? { diskDir: resolve(o.cacheDir), diskBytes: bytesOption(o.diskCache, '--disk-cache') } : {}),
    readDeadlineMs,
  };
}

export function logLevelOf(v: string): LogLevel {
  if (!isLogLevel(v))
    throw new CairnError(
      ErrorCode.INVALID_OPTION,
      `--log-level: ${JSON.stringify(v)} is not debug|info|warn|error|silent`,
    );
  return v;
}

function addDaemonOptions(cmd: Command): Command {
  return cmd
    .option('--state-dir <dir>', 'daemon state: control socket (root only), logs', DEFAULT_STATE_DIR)
    .option('--cache-dir <dir>', 'disk cache directory (omit for diskless: nothing is written to local disk)')
    .option('--memory-cache <size>', 'memory cache budget', '256M')
    .option('--disk-cache <size>', 'disk cache budget', '10G')
    .option('--read-deadline-ms <ms>', 'deadline of one read, fetch included; past it the read fails with EIO', '10000')
    .option('--log-level <level>', 'debug|info|warn|error|silent', 'info')
    .option('--metrics <host:port>', 'serve Prometheus text on http://HOST:PORT/metrics (port 0: any free port)');
}

async function runDaemonHere(o: DaemonCliOptions, exitWhenIdle: boolean): Promise<void> {
  const opts = contentOptions(o);
  const metrics = metricsOption(o);
  const log = createLogger({ level: logLevelOf(o.logLevel), component: 'daemon' });
  // Loaded here, not at start-up: a CLI call that only talks to a running daemon stays light.
  const { buildContentStack } = await import('../../daemon/content-stack.js');
  const { runDaemon } = await import('../../daemon/daemon.js');
  const content = await buildContentStack(opts, log);
  await runDaemon(content, {
    stateDir: resolve(o.stateDir),
    readDeadlineMs: opts.readDeadlineMs,
    log,
    exitWhenIdle,
    ...(metrics ? { metrics } : {}),
  });
  exitStoppedDaemon();
}

/**
 * Ends the process of a daemon that has stopped. A FUSE mount that could not be
 * unmounted (detached by someone else: fusermount fails, so fuse-native never
 * ends its session thread) would otherwise keep the process alive forever.
 */
export function exitStoppedDaemon(): void {
  process.exit(process.exitCode ?? 0);
}

/**
 * The environment of a daemon the CLI starts: NODE_EXTRA_CA_CERTS travels as
 * CAIRN_EXTRA_CA_CERTS, which the daemon reads only when it first talks to an
 * https registry, since Node would parse the file before the daemon's first
 * line of code (~70 ms with a system CA bundle) though most registries it is
 * started for are plain http.
 */
function daemonEnv(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  const { NODE_EXTRA_CA_CERTS: extra, ...rest } = env;
  return extra ? { ...rest, [EXTRA_CA_CERTS_ENV]: extra } : rest;
}

/** Reads the daemon's one-line answer from the handoff pipe; rejects with the daemon's last log line if it exits first. */
function handoffAnswer(pipe: Socket, stateDir: string): Promise<unknown> {
  return new Promise((resolveAnswer, reject) => {
    let buf = '';
    pipe.setEncoding('utf8');
    pipe.on('data', (c: string) => (buf += c));
    pipe.on('error', () => undefined); // 'close' follows and says what matters
    pipe.on('close', () => {
      const line = buf.slice(0, buf.indexOf('\n'));
      let answer: ControlAnswer;
      try {
        answer = JSON.parse(line) as ControlAnswer;
      } catch {
        // A daemon that failed at start (a --metrics address in use...) says why in its log: show it now.
        void lastLogError(stateDir).then((why) =>
          reject(new CairnError(ErrorCode.UNAVAILABLE, `the daemon exited at start: ${why}`)),
        );
        return;
      }
      if (answer.ok) resolveAnswer(answer.result);
      else reject(errorOf(answer));
    });
  });
}

/**
 * Sends `req` to the daemon of the state dir, starting one when none answers.
 * A daemon started here gets the request with its options on fd 3 and starts
 * mounting as soon as its modules are loaded: no polling for its socket.
 */
async function callOrStartDaemon(o: DaemonCliOptions, req: ControlRequest): Promise<unknown> {
  const stateDir = resolve(o.stateDir);
  const socket = controlSocketPath(stateDir);
  const metrics = metricsOption(o); // validate before talking to anything
  const content = contentOptions(o);
  const logLevel = logLevelOf(o.logLevel);
  try {
    const result = await callControl(socket, req);
    if (metrics) {
      const running = (await callControl(socket, { op: 'ping' }, 5000)) as { metricsUrl?: string };
      warnIfOtherMetrics(metrics, running.metricsUrl);
    }
    return result;
  } catch (err) {
    // UNAVAILABLE = nothing listens there (the request was not delivered).
    if (!isCairnError(err, ErrorCode.UNAVAILABLE)) throw err;
  }
  const handoff: Handoff = { stateDir, content, logLevel, request: req, ...(metrics ? { metrics } : {}) };
  await mkdir(stateDir, { recursive: true, mode: 0o700 });
  const logFile = await open(join(stateDir, 'daemon.log'), 'a');
  const entry = fileURLToPath(new URL('../../daemon/spawned.js', import.meta.url));
  const child = spawn(process.execPath, [entry, '--state-dir', stateDir], {
    detached: true,
    stdio: ['ignore', logFile.fd, logFile.fd, 'pipe'],
    env: daemonEnv(process.env),
  });
  await logFile.close();
  const pipe = child.stdio[3] as Socket;
  pipe.write(`${JSON.stringify(handoff)}\n`);
  try {
    return await handoffAnswer(pipe, stateDir);
  } finally {
    pipe.destroy();
    child.unref();
  }
}

/** The last line of the daemon's log, with what it says (the CLI's own error line, or a JSON log line's msg). */
async function lastLogError(stateDir: string): Promise<string> {
  const file = join(resolve(stateDir), 'daemon.log');
  const text = await readFile(file, 'utf8').catch(() => '');
  const last = text.trimEnd().split('\n').pop() ?? '';
  return last.replace(/^cairn: /, '') || `see ${file}`;
}

/** `cairn mount --metrics` reaching a daemon that already runs: its listener is what it is; say so when it differs. */
function warnIfOtherMetrics(asked: { host: string; port: number }, running: string | undefined): void {
  const at = running ? new URL(running) : undefined;
  const same = at && (asked.port === 0 || Number(at.port) === asked.port);
  if (!same) {
    process.stderr.write(
      `cairn: warning: --metrics ${asked.host}:${asked.port} ignored: the daemon already runs, ${running ? `serving metrics at ${running}` : 'without --metrics'}\n`,
    );
  }
}

interface MountStats {
  image: string;
  mountpoint: string;
  imageBytes: number;
  bytesFetched: number;
  bytesServed: number;
  cache: unknown;
  depthFit: DepthFitResult;
  daemonDepthFit: DepthFitResult;
  metricsUrl?: string;
}

/** `L = a·D + b`: a and b in µs, R², samples. */
function formatFit(f: DepthFitResult): string {
  if (f.n === 0) return 'no lookups yet';
  const us = (x: number): string => (x * 1e6).toFixed(3);
  return `L = ${us(f.a)} µs × depth + ${us(f.b)} µs, R² ${f.r2.toFixed(3)}, ${f.n} lookups`;
}

export function registerMount(program: Command): void {
  addDaemonOptions(
    program
      .command('mount')
      .description('Mount an image from a cairn registry lazily (FUSE); contents are fetched on first read')
      .argument('<registry-url>', 'the registry, e.g. http://127.0.0.1:5000')
      .argument('<image>', 'REPO:TAG or REPO@sha256:...')
      .argument('<mountpoint>', 'an existing directory')
      .option('--lookup <mode>', 'flat (merged index) or stacked (walk layers top-down, as overlayfs)', 'flat')
      .option('--writable', 'kernel overlayfs on top of the lazy view, with --upper holding the changes')
      .option('--upper <dir>', 'with --writable: directory (may be on tmpfs) for upper/ and work/')
      .option(
        '--prefetch',
        "fetch in the background what earlier mounts of this image read, here and (the registry's read profile) on other nodes",
      )
      .option('--no-share-reads', "do not add this mount's start-up reads to the registry's read profile of the image")
      .option('--time-opens', 'route opens to cairn so --metrics times them by depth (a round trip per open)')
      .option('--foreground', 'serve in this process until SIGINT/SIGTERM instead of in the background daemon')
      .option('--json', 'machine-readable output'),
  ).action(
    async (
      url: string,
      imageArg: string,
      mountpoint: string,
      o: DaemonCliOptions & {
        lookup: string;
        writable?: boolean;
        upper?: string;
        foreground?: boolean;
        prefetch?: boolean;
        shareReads: boolean;
        timeOpens?: boolean;
        json?: boolean;
      },
    ) => {
      if (o.lookup !== 'flat' && o.lookup !== 'stacked') {
        throw new CairnError(ErrorCode.INVALID_OPTION, `--lookup: ${JSON.stringify(o.lookup)} is not flat or stacked`);
      }
      if (o.writable && !o.upper) throw new CairnError(ErrorCode.INVALID_OPTION, '--writable needs --upper DIR');
      if (o.upper && !o.writable) throw new CairnError(ErrorCode.INVALID_OPTION, '--upper goes with --writable');
      const at = imageArg.indexOf('@sha256:');
      const { repository, tag } =
        at > 0 ? { repository: imageArg.slice(0, at), tag: imageArg.slice(at + 1) } : parseRepoTag(imageArg, 'image');
      const req = {
        op: 'mount',
        registry: url,
        repository,
        reference: tag,
        mountpoint: resolve(mountpoint),
        lookup: o.lookup,
        ...(o.upper ? { upper: resolve(o.upper) } : {}),
        ...(o.prefetch ? { prefetch: true } : {}),
        ...(o.shareReads === false ? { shareReads: false } : {}),
        ...(o.timeOpens ? { timeOpens: true } : {}),
      };
      const socket = controlSocketPath(resolve(o.stateDir));
      if (o.foreground) {
        const daemon = runDaemonHere(o, true);
        for (let i = 0; ; i++) {
          try {
            await callControl(socket, { op: 'ping' }, 2000);
            break;
          } catch (err) {
            if (i > 100) throw err;
            await new Promise((r) => setTimeout(r, 50));
          }
        }
        const info = (await callControl(socket, req)) as MountInfo;
        output(
          o.json,
          info,
          () =>
            `mounted ${info.image} at ${info.mountpoint} (${info.layers} layers, ready in ${info.readySeconds.toFixed(3)} s); Ctrl-C unmounts`,
        );
        await daemon;
        return;
      }
      const info = (await callOrStartDaemon(o, req)) as MountInfo;
      output(
        o.json,
        info,
        () =>
          `mounted ${info.image} (${info.digest}) at ${info.mountpoint}: ${info.layers} layers, ${info.lookup} lookup, ready in ${info.readySeconds.toFixed(3)} s`,
      );
    },
  );

  program
    .command('unmount')
    .description('Unmount a cairn mount (and its overlay), or clear a stale one left by a killed daemon')
    .argument('<mountpoint>')
    .option('--state-dir <dir>', 'daemon state directory', DEFAULT_STATE_DIR)
    .option('--json', 'machine-readable output')
    .action(async (mountpoint: string, o: { stateDir: string; json?: boolean }) => {
      const mnt = resolve(mountpoint);
      try {
        await callControl(controlSocketPath(resolve(o.stateDir)), { op: 'unmount', mountpoint: mnt });
        output(o.json, { mountpoint: mnt, unmounted: true }, () => `unmounted ${mnt}`);
        return;
      } catch (err) {
        if (!isCairnError(err, ErrorCode.UNAVAILABLE) && !isCairnError(err, ErrorCode.NOT_FOUND)) throw err;
      }
      // No daemon serves it: clear what a killed daemon left (an overlay, a FUSE mount without its server).
      const { detach, isStaleFuseMount, mountedType, overlayLowerDirs } = await import('../../daemon/stale.js');
      const type = await mountedType(mnt);
      if (type === 'overlay' || (await isStaleFuseMount(mnt))) {
        // A writable mount's lazy view is the overlay's lower directory (in the state dir): clear it too.
        const lowers = type === 'overlay' ? await overlayLowerDirs(mnt) : [];
        await detach(mnt);
        if (await isStaleFuseMount(mnt)) await detach(mnt);
        for (const lower of lowers) if (await isStaleFuseMount(lower)) await detach(lower);
        output(o.json, { mountpoint: mnt, unmounted: true, stale: true }, () => `cleared stale mount ${mnt}`);
        return;
      }
      throw new CairnError(ErrorCode.NOT_FOUND, `${mnt}: not a cairn mount`);
    });

  program
    .command('stats')
    .description('Show what a mount has read and fetched, the cache figures and the lookup-latency fit against depth')
    .argument('<mountpoint>')
    .option('--state-dir <dir>', 'daemon state directory', DEFAULT_STATE_DIR)
    .option('--export-cost-model <file>', "write the mount's fit (a, b) as the cost model the reconstruction reads")
    .option('--json', 'machine-readable output')
    .action(async (mountpoint: string, o: { stateDir: string; exportCostModel?: string; json?: boolean }) => {
      const socket = controlSocketPath(resolve(o.stateDir));
      const s = (await callControl(socket, { op: 'stats', mountpoint: resolve(mountpoint) })) as MountStats;
      let exported: { file: string; costModel: CostModel } | undefined;
      if (o.exportCostModel !== undefined) {
        const file = resolve(o.exportCostModel);
        const costModel = (await callControl(socket, {
          op: 'cost-model',
          mountpoint: resolve(mountpoint),
        })) as CostModel;
        const { writeCostModel } = await import('../../metrics/cost-model.js');
        await writeCostModel(file, costModel);
        exported = { file, costModel };
      }
      output(o.json, exported ? { ...s, exportedCostModel: exported } : s, () =>
        [
          `${String(s.image)} at ${String(s.mountpoint)}`,
          `image bytes    ${formatBytes(s.imageBytes)}`,
          `bytes served   ${formatBytes(s.bytesServed)}`,
          `bytes fetched  ${formatBytes(s.bytesFetched)} (${((100 * s.bytesFetched) / Math.max(1, s.imageBytes)).toFixed(1)} % of the image)`,
          `cache          ${JSON.stringify(s.cache)}`,
          `depth fit      ${formatFit(s.depthFit)} (this mount)`,
          `               ${formatFit(s.daemonDepthFit)} (the daemon)`,
          ...(s.metricsUrl ? [`metrics        ${s.metricsUrl}`] : []),
          ...(exported
            ? [
                `cost model     written to ${exported.file}` +
                  (exported.costModel.fittedA !== undefined
                    ? ` (the fitted slope ${exported.costModel.fittedA.toExponential(3)} s/layer was negative: written as 0)`
                    : ''),
              ]
            : []),
        ].join('\n'),
      );
    });

  addDaemonOptions(
    program
      .command('daemon')
      .description('Run the mount daemon in the foreground (cairn mount starts one when none runs)')
      .option('--exit-when-idle', 'exit after the last unmount'),
  ).action(async (o: DaemonCliOptions & { exitWhenIdle?: boolean }) => {
    await runDaemonHere(o, o.exitWhenIdle ?? false);
  });
}
