import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import { DepthFit, type DepthFitResult } from './depth-fit.js';

/** Where a read's content came from. */
export type ContentSource = 'memory' | 'disk' | 'network';

/** FUSE operations measured by depth (name lookups) or by source (reads). */
export type FsOperation = 'lookup' | 'getattr' | 'open' | 'read' | 'readdir' | 'readlink' | 'getxattr' | 'listxattr';

const LATENCY_BUCKETS = [
  1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1,
  2.5, 5, 10,
];

/**
 * The daemon's live measurements, in Prometheus form (prom-client) and as a
 * running depth-vs-latency fit per mount and for the whole daemon.
 *
 * Depth labels are bounded: depths above 64 are reported as "64+" so a deep
 * image cannot blow up the label space.
 */
export class FsMetrics {
  readonly registry = new Registry();
  readonly operationDuration = new Histogram({
    name: 'cairn_fs_operation_duration_seconds',
    help: 'Time cairn spent on a FUSE operation, by operation, the layer depth the path resolved at (1 = top) and where content came from',
    labelNames: ['operation', 'depth', 'source'] as const,
    buckets: LATENCY_BUCKETS,
    registers: [this.registry],
  });
  readonly bytesServed = new Counter({
    name: 'cairn_fs_bytes_served_total',
    help: 'Content bytes returned to readers',
    registers: [this.registry],
  });
  readonly errors = new Counter({
    name: 'cairn_fs_errors_total',
    help: 'FUSE operations that failed, by operation',
    labelNames: ['operation'] as const,
    registers: [this.registry],
  });
  private readonly fitGauges = {
    a: new Gauge({
      name: 'cairn_lookup_depth_slope_seconds',
      help: 'Fitted lookup latency per layer of depth (a in L = a*D + b)',
      labelNames: ['mount'] as const,
      registers: [this.registry],
    }),
    b: new Gauge({
      name: 'cairn_lookup_depth_intercept_seconds',
      help: 'Fitted lookup latency intercept (b in L = a*D + b)',
      labelNames: ['mount'] as const,
      registers: [this.registry],
    }),
    r2: new Gauge({
      name: 'cairn_lookup_depth_fit_r2',
      help: 'R squared of the depth-latency fit',
      labelNames: ['mount'] as const,
      registers: [this.registry],
    }),
    n: new Gauge({
      name: 'cairn_lookup_depth_fit_samples',
      help: 'Lookups the depth-latency fit is over',
      labelNames: ['mount'] as const,
      registers: [this.registry],
    }),
  };
  private readonly fits = new Map<string, DepthFit>();

  private fitOf(mount: string): DepthFit {
    let f = this.fits.get(mount);
    if (!f) {
      f = new DepthFit();
      this.fits.set(mount, f);
    }
    return f;
  }

  static depthLabel(depth: number | undefined): string {
    if (depth === undefined) return 'none';
    return depth > 64 ? '64+' : String(depth);
  }

  /** A path lookup (by any operation) resolved at `depth` (undefined: not found) in `seconds`. */
  lookup(mount: string, operation: FsOperation, depth: number | undefined, seconds: number): void {
    this.operationDuration.observe({ operation, depth: FsMetrics.depthLabel(depth), source: 'metadata' }, seconds);
    if (depth !== undefined) this.fitOf(mount).add(depth, seconds);
  }

  read(source: ContentSource, bytes: number, seconds: number): void {
    this.operationDuration.observe({ operation: 'read', depth: 'none', source }, seconds);
    this.bytesServed.inc(bytes);
  }

  error(operation: FsOperation): void {
    this.errors.inc({ operation });
  }

  /** The fit of one mount, or of every mount together when `mount` is omitted. */
  depthFit(mount?: string): DepthFitResult {
    if (mount !== undefined) return this.fitOf(mount).result();
    const all = new DepthFit();
    for (const f of this.fits.values()) all.merge(f);
    return all.result();
  }

  forget(mount: string): void {
    this.fits.delete(mount);
    for (const g of Object.values(this.fitGauges)) g.remove({ mount });
  }

  /** Prometheus text; the fit gauges are computed here, at scrape time, not on every lookup. */
  async text(): Promise<string> {
    for (const [mount, f] of [...this.fits, ['*', undefined] as const]) {
      const r = f ? f.result() : this.depthFit();
      this.fitGauges.a.set({ mount }, r.a);
      this.fitGauges.b.set({ mount }, r.b);
      this.fitGauges.r2.set({ mount }, r.r2);
      this.fitGauges.n.set({ mount }, r.n);
    }
    return this.registry.metrics();
  }
}
