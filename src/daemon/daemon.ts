import type { Server } from 'node:net';
import { rm } from 'node:fs/promises';
import { CairnError, ErrorCode } from '../model/errors.js';
import { answerOf, controlSocketPath, serveControl, type ControlAnswer, type ControlRequest } from './control.js';

export { controlSocketPath };
import { MountManager, type ContentStack, type MountRequest } from './mounts.js';
import type { Logger } from '../util/log.js';
import type { LookupMode } from '../union/view.js';
import { FsMetrics } from '../metrics/fs-metrics.js';
import { serveMetrics, type MetricsServer } from '../metrics/http-server.js';

/**
 * How long after it listens a daemon with --metrics builds its registry when no
 * scrape has yet: late enough not to slow its first mount and first reads
 * (loading prom-client blocks the event loop for ~80 ms), early enough that the
 * process metrics (GC, event-loop lag) cover nearly all of its life.
 */
const METRICS_LOAD_DELAY_MS = 1000;

export interface DaemonOptions {
  stateDir: string;
  readDeadlineMs: number;
  log: Logger;
  /** Exit once the last mount is gone (the default for a daemon started by `cairn mount`). */
  exitWhenIdle: boolean;
  /** Serve Prometheus text on http://HOST:PORT/metrics (port 0: any free port, logged and shown by stats). */
  metrics?: { host: string; port: number };
  /**
   * A request to handle as soon as the control socket listens, answered through
   * `answer` (a daemon started by `cairn mount` gets its mount this way, with no
   * wait for the socket and no second connection).
   */
  first?: { request: ControlRequest; answer: (a: ControlAnswer) => void };
}

function str(req: ControlRequest, key: string): string {
  const v = req[key];
  if (typeof v !== 'string' || v === '')
    throw new CairnError(ErrorCode.INVALID_INPUT, `control request ${req.op}: ${key} must be a string`);
  return v;
}

/**
 * cairn's daemon: one process serving many mounts through one content stack,
 * driven over its control socket. Resolves when it has stopped (signal,
 * shutdown request, or idle after its last unmount).
 */
export async function runDaemon(content: ContentStack, opts: DaemonOptions): Promise<void> {
  // The registry (prom-client) is built only for a daemon that serves --metrics.
  const fsMetrics = new FsMetrics(async (registry) => {
    const [{ collectDefaultMetrics }, { registerContentMetrics }] = await Promise.all([
      import('prom-client'),
      import('./content-metrics.js'),
    ]);
    collectDefaultMetrics({ register: registry, prefix: 'cairn_daemon_' });
    registerContentMetrics(
      registry,
      () => content.stats(),
      () => mounts.size,
    );
  });
  const mounts = new MountManager(content, { ...opts, metrics: fsMetrics });
  // Before the control socket: a daemon that answers a ping serves its metrics already.
  let metricsServer: MetricsServer | undefined;
  if (opts.metrics) {
    try {
      metricsServer = await serveMetrics(fsMetrics, opts.metrics.host, opts.metrics.port);
    } catch (err) {
      await content.close();
      throw err;
    }
  }
  const metricsUrl = metricsServer ? { metricsUrl: metricsServer.url } : {};
  if (metricsServer) setTimeout(() => void fsMetrics.registry(), METRICS_LOAD_DELAY_MS).unref();
  let mountsInFlight = 0;
  let stopping: Promise<void> | undefined;
  let done!: () => void;
  const finished = new Promise<void>((r) => (done = r));
  const stop = (why: string): Promise<void> => {
    stopping ??= (async () => {
      opts.log.info('stopping', { why });
      await mounts.closeAll();
      await content.close();
      await metricsServer?.close();
      await new Promise<void>((r) => server.close(() => r()));
      await rm(controlSocketPath(opts.stateDir), { force: true });
      done();
    })();
    return stopping;
  };
  const handler = async (req: ControlRequest): Promise<unknown> => {
    switch (req.op) {
      case 'ping':
        return { pid: process.pid, mounts: mounts.size, ...metricsUrl };
      case 'mount': {
        const m: MountRequest = {
          registry: str(req, 'registry'),
          repository: str(req, 'repository'),
          reference: str(req, 'reference'),
          mountpoint: str(req, 'mountpoint'),
          lookup: (req.lookup === 'stacked' ? 'stacked' : 'flat') as LookupMode,
        };
        if (typeof req.upper === 'string') m.upper = req.upper;
        if (req.prefetch === true) m.prefetch = true;
        if (req.shareReads === false) m.shareReads = false;
        if (req.timeOpens === true) m.timeOpens = true;
        if (req.layers !== undefined) {
          if (typeof req.layers !== 'number' || !Number.isSafeInteger(req.layers) || req.layers < 1) {
            throw new CairnError(ErrorCode.INVALID_INPUT, 'control request mount: layers must be a positive integer');
          }
          m.layers = req.layers;
        }
        mountsInFlight++;
        try {
          return await mounts.mount(m);
        } finally {
          mountsInFlight--;
          // A daemon started for a mount that failed has nothing to serve: it must not linger.
          if (opts.exitWhenIdle && mounts.size === 0 && mountsInFlight === 0) {
            setImmediate(() => void stop('no mounts'));
          }
        }
      }
      case 'unmount': {
        await mounts.unmount(str(req, 'mountpoint'));
        if (opts.exitWhenIdle && mounts.size === 0) setImmediate(() => void stop('last mount gone'));
        return null;
      }
      case 'stats':
        return { ...mounts.stats(str(req, 'mountpoint')), ...metricsUrl };
      case 'cost-model':
        return mounts.costModel(str(req, 'mountpoint'));
      case 'list':
        return mounts.list();
      case 'shutdown':
        setImmediate(() => void stop('shutdown requested'));
        return null;
      default:
        throw new CairnError(ErrorCode.INVALID_INPUT, `control request: unknown op ${JSON.stringify(req.op)}`);
    }
  };
  // Requests arrive only once this has resolved, so `stop` never sees `server` uninitialized.
  const server: Server = await serveControl(controlSocketPath(opts.stateDir), handler);
  const onSignal = (sig: string) => () => void stop(sig);
  process.once('SIGINT', onSignal('SIGINT'));
  process.once('SIGTERM', onSignal('SIGTERM'));
  opts.log.info('daemon ready', { pid: process.pid, socket: controlSocketPath(opts.stateDir), ...metricsUrl });
  if (opts.first) void answerOf(handler(opts.first.request)).then(opts.first.answer);
  await finished;
}
