import { Counter, Gauge, type Registry } from 'prom-client';

/** Label values and the value of one series. */
export type PulledValue = [labels: Record<string, string>, value: number];

/**
 * A counter or gauge whose values are read, at scrape time, from counts kept
 * elsewhere (a cache's or the fetcher's own statistics): nothing is counted
 * twice, and nothing costs anything between scrapes.
 */
export function pulledMetric(
  registry: Registry,
  kind: 'counter' | 'gauge',
  name: string,
  help: string,
  labelNames: readonly string[],
  values: () => PulledValue[],
): void {
  const common = { name, help, labelNames: [...labelNames], registers: [registry] };
  if (kind === 'counter') {
    new Counter({
      ...common,
      collect() {
        this.reset();
        for (const [labels, v] of values()) this.inc(labels, v);
      },
    });
  } else {
    new Gauge({
      ...common,
      collect() {
        this.reset();
        for (const [labels, v] of values()) this.set(labels, v);
      },
    });
  }
}
