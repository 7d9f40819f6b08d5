import type { Registry } from 'prom-client';
import type { ContentTier } from '../fetch/blob-source.js';
import { isCairnError, ErrorCode } from '../model/errors.js';
import { DepthFit, type DepthFitResult } from './depth-fit.js';
import { FastCounter } from './fast-counter.js';
import { FastHistogram, type HistogramSeries } from './fast-histogram.js';

/** Metrics added to the registry when it is built (the daemon's content and process figures). */
export type RegistryExtension = (registry: Registry) => void | Promise<void>;

/** Where a read's content came from. */
export type ContentSource = ContentTier;

/**
 * FUSE operations measured. With libfuse's high-level (path) API the kernel's
 * LOOKUP of a name arrives as `getattr` of its path; `lookup` is kept for a
 * low-level adapter that sees lookups as such.
 */
export type FsOperation = 'lookup' | 'getattr' | 'open' | 'read' | 'readdir' | 'readlink' | 'getxattr' | 'listxattr';

/**
 * Operations whose time is (nearly all) the resolution of a name, and so feed
 * the depth fit. readdir is left out: listing a directory costs with its size,
 * not with the depth its name resolved at.
 */
const FITTED = new Set<FsOperation>(['lookup', 'getattr', 'open', 'readlink', 'getxattr', 'listxattr']);

const LATENCY_BUCKETS = [
  1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1,
  2.5, 5, 10,
];

/** Depths above this are labelled `64+`, so a deep image cannot blow up the label space. */
const MAX_DEPTH_LABEL = 64;
/** Index of a depth in the per-depth series arrays: 0 = none (not found), 1..64, 65 = 64+. */
function depthIndex(depth: number | undefined): number {
  if (depth === undefined) return 0;
  return depth > MAX_DEPTH_LABEL ? MAX_DEPTH_LABEL + 1 : Math.max(1, Math.floor(depth));
}

/** The label of the whole daemon in the fit gauges' `mount` label. */
export const DAEMON_FIT_LABEL = '*';

/** What a read did, as FsMetrics counts it. */
export interface ReadObservation {
  /** Depth of the layer the file resolved in (1 = top). */
  depth: number;
  /** The furthest tier that answered; undefined: none said (labelled `none`). */
  source?: ContentSource;
  bytes: number;
  seconds: number;
  error?: unknown;
  deadlineMissed?: boolean;
}

/**
 * The measurements of one mount: its depth fit, feeding the daemon's
 * histograms and fit too. What an ImageFs observer calls, on every operation:
 * no allocation, no label hashing.
 */
export class MountMetrics {
  readonly fit = new DepthFit();

  constructor(
    readonly mount: string,
    private readonly daemon: FsMetrics,
  ) {}

  /** A path operation resolved at `depth` (undefined: the name does not exist) in `seconds`. */
  lookup(op: FsOperation, depth: number | undefined, seconds: number, error?: unknown): void {
    this.daemon.observeLookup(op, depth, seconds);
    if (depth !== undefined && FITTED.has(op)) {
      this.fit.add(depth, seconds);
      this.daemon.fit.add(depth, seconds);
    }
    // A name that does not exist is an answer, not a failure (it shows as depth "none").
    if (error !== undefined && !isCairnError(error, ErrorCode.NOT_FOUND)) this.daemon.error(op, error);
  }

  read(r: ReadObservation): void {
    this.daemon.observeRead(r);
  }
}

/**
 * The daemon's live measurements, in Prometheus form (a prom-client registry)
 * and as running depth-vs-latency fits per mount and for the whole daemon.
 * The operations are counted by cairn's own metrics (no prom-client on the hot
 * path); the registry that exposes them is built on first use, since loading
 * prom-client costs a daemon about 80 ms of CPU that a mount need not wait for.
 */
export class FsMetrics {
  readonly operationDuration = new FastHistogram(
    'cairn_fs_operation_duration_seconds',
    'Time cairn spent on a FUSE operation, by operation, the layer depth the path resolved at (1 = top; none = no such name) and where content came from (metadata for operations on names)',
    ['operation', 'depth', 'source'] as const,
    LATENCY_BUCKETS,
  );
  /** The whole daemon's fit: every lookup of every mount, unmounted ones included. */
  readonly fit = new DepthFit();
  private readonly mounts = new Map<string, MountMetrics>();
  private readonly totals = { bytesServed: 0, deadlinesMissed: 0 };
  private readonly lookupSeries = new Map<FsOperation, HistogramSeries[]>();
  private readonly readSeries = new Map<string, HistogramSeries[]>();
  private readonly errors = new FastCounter(
    'cairn_fs_errors_total',
    'FUSE operations that failed (a name that does not exist is not counted), by operation and error code',
    ['operation', 'code'] as const,
  );
  private building: Promise<Registry> | undefined;
  private built: Registry | undefined;

  /** `extend` adds metrics of the caller's to the registry, once, when it is built. */
  constructor(private readonly extend?: RegistryExtension) {}

  /** The prom-client registry of these metrics (built, and prom-client loaded, on the first call). */
  registry(): Promise<Registry> {
    this.building ??= this.build();
    return this.building;
  }

  private async build(): Promise<Registry> {
    const [{ Registry }, { pulledMetric }] = await Promise.all([import('prom-client'), import('./pulled.js')]);
    const registry = new Registry();
    registry.registerMetric(this.errors.asMetric());
    registry.registerMetric(this.operationDuration.asMetric());
    const totals = this.totals;
    pulledMetric(registry, 'counter', 'cairn_fs_bytes_served_total', 'Content bytes returned to readers', [], () => [
      [{}, totals.bytesServed],
    ]);
    pulledMetric(
      registry,
      'counter',
      'cairn_fs_read_deadlines_missed_total',
      'Reads that failed because their deadline (--read-deadline-ms) passed',
      [],
      () => [[{}, totals.deadlinesMissed]],
    );
    const fits = (): [string, DepthFitResult][] => [
      [DAEMON_FIT_LABEL, this.fit.result()],
      ...[...this.mounts.values()].map((m): [string, DepthFitResult] => [m.mount, m.fit.result()]),
    ];
    const fitGauge = (name: string, help: string, field: keyof DepthFitResult): void =>
      pulledMetric(registry, 'gauge', name, `${help} (mount "${DAEMON_FIT_LABEL}" = the whole daemon)`, ['mount'], () =>
        fits().map(([mount, r]) => [{ mount }, r[field]]),
      );
    fitGauge('cairn_lookup_depth_slope_seconds', 'Fitted lookup latency per layer of depth (a in L = a*D + b)', 'a');
    fitGauge('cairn_lookup_depth_intercept_seconds', 'Fitted lookup latency at depth 0 (b in L = a*D + b)', 'b');
    fitGauge('cairn_lookup_depth_fit_r2', 'Coefficient of determination of the depth-latency fit', 'r2');
    fitGauge('cairn_lookup_depth_fit_samples', 'Lookups the depth-latency fit is over', 'n');
    await this.extend?.(registry);
    this.built = registry;
    return registry;
  }

  static depthLabel(depth: number | undefined): string {
    const i = depthIndex(depth);
    return i === 0 ? 'none' : i > MAX_DEPTH_LABEL ? `${MAX_DEPTH_LABEL}+` : String(i);
  }

  /** Shows a mount's fit in the gauges (MountMetrics record from their creation; tracking is for display). */
  track(m: MountMetrics): void {
    this.mounts.set(m.mount, m);
  }

  /** Drops a mount's fit (its samples stay in the daemon's). */
  forget(mount: string): void {
    this.mounts.delete(mount);
  }

  /** For MountMetrics. */
  observeLookup(op: FsOperation, depth: number | undefined, seconds: number): void {
    let byDepth = this.lookupSeries.get(op);
    if (!byDepth) {
      byDepth = [];
      this.lookupSeries.set(op, byDepth);
    }
    const i = depthIndex(depth);
    let s = byDepth[i];
    if (!s) {
      s = this.operationDuration.series({ operation: op, depth: FsMetrics.depthLabel(depth), source: 'metadata' });
      byDepth[i] = s;
    }
    s.observe(seconds);
  }

  /** For MountMetrics. */
  observeRead(r: ReadObservation): void {
    const source = r.source ?? 'none';
    let byDepth = this.readSeries.get(source);
    if (!byDepth) {
      byDepth = [];
      this.readSeries.set(source, byDepth);
    }
    const i = depthIndex(r.depth);
    let s = byDepth[i];
    if (!s) {
      s = this.operationDuration.series({ operation: 'read', depth: FsMetrics.depthLabel(r.depth), source });
      byDepth[i] = s;
    }
    s.observe(r.seconds);
    this.totals.bytesServed += r.bytes;
    if (r.deadlineMissed) this.totals.deadlinesMissed++;
    if (r.error !== undefined) this.error('read', r.error);
  }

  error(operation: FsOperation, err: unknown): void {
    this.errors.series({ operation, code: isCairnError(err) ? err.code : ErrorCode.INTERNAL }).inc();
  }

  /** The exposition's content type (prom-client's default until the registry is built: text() builds it). */
  get contentType(): string {
    return this.built?.contentType ?? 'text/plain; version=0.0.4; charset=utf-8';
  }

  /** Prometheus text exposition of everything in the registry. */
  async text(): Promise<string> {
    return (await this.registry()).metrics();
  }
}
