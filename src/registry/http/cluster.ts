import cluster, { type Worker } from 'node:cluster';
import { randomUUID } from 'node:crypto';
import { AggregatorRegistry, type Registry } from 'prom-client';
import { CairnError, ErrorCode } from '../../model/errors.js';
import type { Logger } from '../../util/log.js';

/**
 * Several server processes on one listening socket (node:cluster), as nginx
 * runs worker processes: one Node process saturates one core on small-file
 * GETs, and everything a worker needs is on disk (the content store, SQLite
 * in WAL mode), so workers share nothing in memory but the socket.
 *
 * Metrics stay whole: a worker asked for /metrics asks the primary, which
 * collects every worker's registry (prom-client's AggregatorRegistry) and
 * sums them.
 */

const METRICS_REQ = 'cairn:metrics-req';
const METRICS_RES = 'cairn:metrics-res';
const METRICS_TIMEOUT_MS = 5000;
/** A worker dying this many times within RESTART_WINDOW_MS stops the whole server. */
const MAX_RESTARTS = 5;
const RESTART_WINDOW_MS = 60_000;

interface MetricsRequest {
  type: typeof METRICS_REQ;
  id: string;
}
interface MetricsResponse {
  type: typeof METRICS_RES;
  id: string;
  text?: string;
  contentType?: string;
  error?: string;
}

function isMessage<T extends { type: string }>(m: unknown, type: T['type']): m is T {
  return typeof m === 'object' && m !== null && (m as { type?: unknown }).type === type;
}

export function isClusterWorker(): boolean {
  return cluster.isWorker;
}

/**
 * Runs the primary: forks `workers` processes (each re-runs this command and
 * serves), restarts one that dies unexpectedly, answers their metrics
 * requests, and on SIGINT/SIGTERM disconnects them and resolves once all
 * have exited. `onListening` gets the address once every worker listens.
 */
export async function runClusterPrimary(opts: {
  workers: number;
  log: Logger;
  onListening: (address: { host: string; port: number }) => void;
}): Promise<void> {
  const { log } = opts;
  const aggregator = new AggregatorRegistry();
  let stopping = false;
  const restarts: number[] = [];
  const listening = new Set<number>();
  let announced = false;

  const fork = (): Worker => {
    const w = cluster.fork();
    w.on('message', (m: unknown) => {
      if (!isMessage<MetricsRequest>(m, METRICS_REQ)) return;
      aggregator.clusterMetrics().then(
        (text) => w.send({ type: METRICS_RES, id: m.id, text, contentType: aggregator.contentType }),
        (err: unknown) => w.send({ type: METRICS_RES, id: m.id, error: String(err) }),
      );
    });
    return w;
  };

  cluster.on('listening', (w, address) => {
    listening.add(w.id);
    if (!announced && listening.size >= opts.workers) {
      announced = true;
      opts.onListening({ host: address.address ?? '127.0.0.1', port: address.port });
    }
  });

  return new Promise<void>((resolve, reject) => {
    const alive = (): number => Object.keys(cluster.workers ?? {}).length;
    cluster.on('exit', (w, code, signal) => {
      listening.delete(w.id);
      if (stopping) {
        if (alive() === 0) resolve();
        return;
      }
      const now = Date.now();
      restarts.push(now);
      while (restarts.length > 0 && (restarts[0] as number) < now - RESTART_WINDOW_MS) restarts.shift();
      if (restarts.length > MAX_RESTARTS) {
        log.error('workers keep dying; stopping', { code, signal, restarts: restarts.length });
        stopping = true;
        for (const other of Object.values(cluster.workers ?? {})) other?.kill();
        reject(new CairnError(ErrorCode.INTERNAL, `registry workers died ${restarts.length} times within a minute`));
        return;
      }
      log.error('worker died; starting another', { pid: w.process.pid, code, signal });
      fork();
    });
    const stop = (signal: string): void => {
      if (stopping) return;
      stopping = true;
      log.info('stopping', { signal, workers: alive() });
      if (alive() === 0) resolve();
      // disconnect() lets each worker finish its open requests, then exit.
      for (const w of Object.values(cluster.workers ?? {})) w?.disconnect();
    };
    process.once('SIGINT', () => stop('SIGINT'));
    process.once('SIGTERM', () => stop('SIGTERM'));
    for (let i = 0; i < opts.workers; i++) fork();
  });
}

/**
 * In a worker: makes `registry` the one the primary aggregates, and returns
 * the function the server's /metrics route calls to get the whole cluster's
 * text from the primary.
 */
export function workerMetrics(registry: Registry): () => Promise<{ text: string; contentType: string }> {
  AggregatorRegistry.setRegistries([registry]);
  // Constructing one is what makes prom-client answer the primary's collection requests.
  new AggregatorRegistry();
  const pending = new Map<string, (r: MetricsResponse) => void>();
  process.on('message', (m: unknown) => {
    if (isMessage<MetricsResponse>(m, METRICS_RES)) pending.get(m.id)?.(m);
  });
  return () =>
    new Promise((resolve, reject) => {
      const id = randomUUID();
      const timer = setTimeout(() => {
        pending.delete(id);
        reject(
          new CairnError(ErrorCode.UNAVAILABLE, `metrics: no answer from the primary within ${METRICS_TIMEOUT_MS} ms`),
        );
      }, METRICS_TIMEOUT_MS);
      pending.set(id, (r) => {
        clearTimeout(timer);
        pending.delete(id);
        if (r.text !== undefined) resolve({ text: r.text, contentType: r.contentType ?? 'text/plain' });
        else reject(new CairnError(ErrorCode.INTERNAL, `metrics: ${r.error ?? 'no text'}`));
      });
      process.send?.({ type: METRICS_REQ, id } satisfies MetricsRequest);
    });
}
