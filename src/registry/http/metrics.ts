import { Counter, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

type Child<T> = T extends { labels(...args: never[]): infer C } ? C : never;

/** The registry server's Prometheus metrics, on a registry of their own. */
export class RegistryMetrics {
  readonly registry = new Registry();
  readonly requests = new Counter({
    name: 'cairn_registry_http_requests_total',
    help: 'HTTP requests served, by route, method and status',
    labelNames: ['route', 'method', 'status'] as const,
    registers: [this.registry],
  });
  readonly duration = new Histogram({
    name: 'cairn_registry_http_request_duration_seconds',
    help: 'Time to the end of the response, by route',
    labelNames: ['route'] as const,
    buckets: [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [this.registry],
  });
  readonly bytesSent = new Counter({
    name: 'cairn_registry_file_bytes_sent_total',
    help: 'File content bytes sent',
    registers: [this.registry],
  });

  /**
   * Label children by route/method/status, kept so a request does not pay for
   * prom-client resolving its labels again (it hashes them on every call).
   */
  private readonly requestChildren = new Map<string, Child<typeof this.requests>>();
  private readonly durationChildren = new Map<string, Child<typeof this.duration>>();

  /** Counts one finished (or aborted) request. */
  record(route: string, method: string, status: number, seconds: number): void {
    const key = `${route} ${method} ${status}`;
    let counter = this.requestChildren.get(key);
    if (!counter) {
      counter = this.requests.labels({ route, method, status: String(status) });
      // Methods come from clients: bound the map so junk methods cannot grow it.
      if (this.requestChildren.size < 1024) this.requestChildren.set(key, counter);
    }
    counter.inc();
    let hist = this.durationChildren.get(route);
    if (!hist) {
      hist = this.duration.labels({ route });
      this.durationChildren.set(route, hist);
    }
    hist.observe(seconds);
  }

  constructor() {
    collectDefaultMetrics({ register: this.registry, prefix: 'cairn_registry_' });
  }
}
