/**
 * The snapshotter's lazy layers are mounts of cairn's mount daemon, a process of
 * its own: a container reading through them keeps its files when `cairn
 * snapshotter` is killed and restarted. The snapshotter starts the daemon when
 * none answers on the state directory's control socket, and never stops it.
 */
import { spawn } from 'node:child_process';
import { mkdir, open } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { callControl, controlSocketPath } from '../daemon/control.js';
import type { MountInfo } from '../daemon/mounts.js';
import { detach, isStaleFuseMount } from '../daemon/stale.js';
import { CairnError, ErrorCode, isCairnError } from '../model/errors.js';
import type { Logger } from '../util/log.js';

/** What one lazy snapshot mounts: a prefix of an image in a cairn registry. */
export interface LazySource {
  registry: string;
  repository: string;
  /** The image's manifest digest: a lazy snapshot never follows a tag that moves. */
  digest: string;
  /** The number of layers mounted, bottom up. */
  layers: number;
}

export interface LazyMountsOptions {
  /** The mount daemon's state directory (control socket, log). */
  stateDir: string;
  log: Logger;
  /** Deadline of one control call (a mount fetches the image's recipes). */
  callTimeoutMs?: number;
  /** How long a daemon started here may take to answer. */
  startTimeoutMs?: number;
}

/** What the snapshotter needs of the mount daemon (LazyMounts; a stand-in in tests). */
export interface LazyMounter {
  mount(src: LazySource, mountpoint: string): Promise<MountInfo>;
  unmount(mountpoint: string): Promise<void>;
  /** The mountpoints served now. */
  mounted(): Promise<Set<string>>;
}

const CAIRN_BIN = fileURLToPath(new URL('../../bin/cairn.js', import.meta.url));

export class LazyMounts implements LazyMounter {
  private readonly socket: string;
  private readonly callTimeoutMs: number;
  private readonly startTimeoutMs: number;
  private starting: Promise<void> | undefined;

  constructor(private readonly opts: LazyMountsOptions) {
    if (typeof opts.stateDir !== 'string' || opts.stateDir === '') {
      throw new CairnError(ErrorCode.INVALID_OPTION, 'LazyMounts: stateDir must be a non-empty path');
    }
    this.socket = controlSocketPath(opts.stateDir);
    this.callTimeoutMs = opts.callTimeoutMs ?? 60_000;
    this.startTimeoutMs = opts.startTimeoutMs ?? 20_000;
  }

  private async ping(): Promise<boolean> {
    try {
      await callControl(this.socket, { op: 'ping' }, 2000);
      return true;
    } catch (err) {
      if (isCairnError(err, ErrorCode.UNAVAILABLE)) return false;
      throw err;
    }
  }

  /** Makes sure a daemon answers, starting one (detached, long-lived) when none does. */
  async ensureDaemon(): Promise<void> {
    if (await this.ping()) return;
    this.starting ??= this.start().finally(() => (this.starting = undefined));
    await this.starting;
  }

  private async start(): Promise<void> {
    if (await this.ping()) return;
    await mkdir(this.opts.stateDir, { recursive: true, mode: 0o700 });
    const logFile = await open(join(this.opts.stateDir, 'daemon.log'), 'a');
    const child = spawn(process.execPath, [CAIRN_BIN, 'daemon', '--state-dir', this.opts.stateDir], {
      detached: true,
      stdio: ['ignore', logFile.fd, logFile.fd],
    });
    await logFile.close();
    child.unref();
    this.opts.log.info('started the mount daemon', { pid: child.pid, stateDir: this.opts.stateDir });
    const end = Date.now() + this.startTimeoutMs;
    while (!(await this.ping())) {
      if (child.exitCode !== null)
        throw new CairnError(
          ErrorCode.UNAVAILABLE,
          `the mount daemon exited at start (${child.exitCode}): see ${join(this.opts.stateDir, 'daemon.log')}`,
        );
      if (Date.now() > end)
        throw new CairnError(
          ErrorCode.TIMEOUT,
          `the mount daemon did not answer within ${this.startTimeoutMs} ms: see ${join(this.opts.stateDir, 'daemon.log')}`,
        );
      await sleep(50);
    }
  }

  async mount(src: LazySource, mountpoint: string): Promise<MountInfo> {
    await this.ensureDaemon();
    // A FUSE mount whose daemon died (killed with its mounts) is in the way: clear it.
    if (await isStaleFuseMount(mountpoint)) await detach(mountpoint);
    return (await callControl(
      this.socket,
      {
        op: 'mount',
        registry: src.registry,
        repository: src.repository,
        reference: src.digest,
        mountpoint,
        lookup: 'flat',
        layers: src.layers,
      },
      this.callTimeoutMs,
    )) as MountInfo;
  }

  /** Unmounts; a mount the daemon does not know (or no daemon) is detached if something is still there. */
  async unmount(mountpoint: string): Promise<void> {
    try {
      await callControl(this.socket, { op: 'unmount', mountpoint }, this.callTimeoutMs);
      return;
    } catch (err) {
      if (!isCairnError(err, ErrorCode.NOT_FOUND) && !isCairnError(err, ErrorCode.UNAVAILABLE)) throw err;
    }
    await detach(mountpoint);
  }

  /** The mountpoints the daemon serves ([] when no daemon runs). */
  async mounted(): Promise<Set<string>> {
    try {
      const list = (await callControl(this.socket, { op: 'list' }, this.callTimeoutMs)) as MountInfo[];
      return new Set(list.map((m) => m.mountpoint));
    } catch (err) {
      if (isCairnError(err, ErrorCode.UNAVAILABLE)) return new Set();
      throw err;
    }
  }
}
