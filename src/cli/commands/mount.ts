import type { Command } from 'commander';
import { spawn } from 'node:child_process';
import { mkdir, open } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CairnError, ErrorCode, isCairnError } from '../../model/errors.js';
import { callControl, controlSocketPath } from '../../daemon/control.js';
import type { ContentStackOptions } from '../../daemon/content-stack.js';
import { detach, isStaleFuseMount, mountedType, overlayLowerDirs } from '../../daemon/stale.js';
import type { MountInfo } from '../../daemon/mounts.js';
import { parseRepoTag } from '../../model/reference.js';
import { createLogger, isLogLevel, type LogLevel } from '../../util/log.js';
import { bytesOption, intOption, output } from '../output.js';
import { formatBytes } from '../progress.js';

const DEFAULT_STATE_DIR = '/run/cairn';

interface DaemonCliOptions {
  stateDir: string;
  cacheDir?: string;
  memoryCache: string;
  diskCache: string;
  readDeadlineMs: string;
  logLevel: string;
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
    .option('--log-level <level>', 'debug|info|warn|error|silent', 'info');
}

async function runDaemonHere(o: DaemonCliOptions, exitWhenIdle: boolean): Promise<void> {
  const opts = contentOptions(o);
  const log = createLogger({ level: logLevelOf(o.logLevel), component: 'daemon' });
  // Loaded here, not at start-up: a CLI call that only talks to a running daemon stays light.
  const { buildContentStack } = await import('../../daemon/content-stack.js');
  const { runDaemon } = await import('../../daemon/daemon.js');
  const content = await buildContentStack(opts, log);
  await runDaemon(content, { stateDir: resolve(o.stateDir), readDeadlineMs: opts.readDeadlineMs, log, exitWhenIdle });
}

/** Starts a detached daemon unless one answers on the state dir's socket. */
async function ensureDaemon(o: DaemonCliOptions): Promise<void> {
  const socket = controlSocketPath(resolve(o.stateDir));
  try {
    await callControl(socket, { op: 'ping' }, 5000);
    return;
  } catch (err) {
    if (!isCairnError(err, ErrorCode.UNAVAILABLE)) throw err;
  }
  contentOptions(o); // validate before starting anything
  await mkdir(resolve(o.stateDir), { recursive: true, mode: 0o700 });
  const logFile = await open(join(resolve(o.stateDir), 'daemon.log'), 'a');
  const bin = fileURLToPath(new URL('../../../bin/cairn.js', import.meta.url));
  const args = [bin, 'daemon', '--exit-when-idle', '--state-dir', o.stateDir, '--memory-cache', o.memoryCache];
  args.push('--disk-cache', o.diskCache, '--read-deadline-ms', o.readDeadlineMs, '--log-level', o.logLevel);
  if (o.cacheDir) args.push('--cache-dir', o.cacheDir);
  const child = spawn(process.execPath, args, { detached: true, stdio: ['ignore', logFile.fd, logFile.fd] });
  child.unref();
  await logFile.close();
  const deadline = Date.now() + 15_000;
  for (;;) {
    try {
      await callControl(socket, { op: 'ping' }, 2000);
      return;
    } catch (err) {
      if (Date.now() > deadline) {
        throw new CairnError(ErrorCode.UNAVAILABLE, `the daemon did not start; see ${join(o.stateDir, 'daemon.log')}`, {
          cause: err,
        });
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  }
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
      .option('--prefetch', 'fetch in the background what earlier mounts of this image read (behind demand reads)')
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
      await ensureDaemon(o);
      const info = (await callControl(socket, req)) as MountInfo;
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
    .description('Show what a mount has read and fetched, and the cache figures')
    .argument('<mountpoint>')
    .option('--state-dir <dir>', 'daemon state directory', DEFAULT_STATE_DIR)
    .option('--json', 'machine-readable output')
    .action(async (mountpoint: string, o: { stateDir: string; json?: boolean }) => {
      const s = (await callControl(controlSocketPath(resolve(o.stateDir)), {
        op: 'stats',
        mountpoint: resolve(mountpoint),
      })) as Record<string, unknown> & { imageBytes: number; bytesFetched: number; bytesServed: number };
      output(o.json, s, () =>
        [
          `${String(s.image)} at ${String(s.mountpoint)}`,
          `image bytes    ${formatBytes(s.imageBytes)}`,
          `bytes served   ${formatBytes(s.bytesServed)}`,
          `bytes fetched  ${formatBytes(s.bytesFetched)} (${((100 * s.bytesFetched) / Math.max(1, s.imageBytes)).toFixed(1)} % of the image)`,
          `cache          ${JSON.stringify(s.cache)}`,
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
