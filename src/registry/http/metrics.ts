import { Registry, collectDefaultMetrics } from 'prom-client';
import { FastCounter, type CounterSeries } from '../../metrics/fast-counter.js';
import { FastHistogram, type HistogramSeries } from '../../metrics/fast-histogram.js';

/**
 * The registry server's Prometheus metrics, on a registry of their own. The
 * per-request ones are FastCounter/FastHistogram: prom-client's own hash the
 * label object on every observation, a cost paid per request on the 4 KiB path.
 */
export class RegistryMetrics {
  readonly registry = new Registry();
  readonly requests = new FastCounter(
    'cairn_registry_http_requests_total',
    'HTTP requests served, by route, method and status',
    ['route', 'method', 'status'],
  );
  readonly duration = new FastHistogram(
    'cairn_registry_http_request_duration_seconds',
    'Time to the end of the response, by route',
    ['route'],
    [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
  );
  private readonly bytesTotal = new FastCounter<never>(
    'cairn_registry_file_bytes_sent_total',
    'File content bytes sent',
    [],
  );
  /** File content bytes sent (the unlabelled series, shown as 0 before the first byte). */
  readonly bytesSent: CounterSeries = this.bytesTotal.series({});

  private readonly requestSeries = new Map<string, CounterSeries>();
  private readonly durationSeries = new Map<string, HistogramSeries>();

  constructor() {
    collectDefaultMetrics({ register: this.registry, prefix: 'cairn_registry_' });
    this.registry.registerMetric(this.requests.asMetric());
    this.registry.registerMetric(this.duration.asMetric());
    this.registry.registerMetric(this.bytesTotal.asMetric());
  }

  /** The hot path's series, made on first use (an unused series would show as a 0 sample). */
  private readonly fileOk: Partial<Record<'GET' | 'HEAD', CounterSeries>> = {};
  private fileDuration: HistogramSeries | undefined;

  /** `record('file', method, 200, seconds)` for the hot path, with its series at hand. */
  recordFileOk(method: 'GET' | 'HEAD', seconds: number): void {
    (this.fileOk[method] ??= this.requests.series({ route: 'file', method, status: '200' })).inc();
    (this.fileDuration ??= this.duration.series({ route: 'file' })).observe(seconds);
  }

  /** Counts one finished (or aborted) request. */
  record(route: string, method: string, status: number, seconds: number): void {
    const key = `${route} ${method} ${status}`;
    let counter = this.requestSeries.get(key);
    if (!counter) {
      counter = this.requests.series({ route, method, status: String(status) });
      // Methods come from clients: bound the map so junk methods cannot grow it.
      if (this.requestSeries.size < 1024) this.requestSeries.set(key, counter);
    }
    counter.inc();
    let hist = this.durationSeries.get(route);
    if (!hist) {
      hist = this.duration.series({ route });
      this.durationSeries.set(route, hist);
    }
    hist.observe(seconds);
  }
}
