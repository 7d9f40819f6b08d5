import type { Metric, MetricObjectWithValues, MetricValue } from 'prom-client';

/** What cairn's own hot-path metrics share so that a prom-client Registry can hold them. */
export interface OwnMetric<V extends MetricValue<string>> {
  readonly name: string;
  readonly help: string;
  readonly type: 'counter' | 'histogram';
  readonly aggregator: 'sum';
  get(): Promise<MetricObjectWithValues<V>>;
  reset(): void;
}

/** The object prom-client's `get()` returns, for a metric of ours with these values. */
export function metricObject<V extends MetricValue<string>>(
  m: OwnMetric<V>,
  values: V[],
): Promise<MetricObjectWithValues<V>> {
  // prom-client's declared MetricType is an enum; at run time (and in the text) the type is this string.
  return Promise.resolve({
    name: m.name,
    help: m.help,
    type: m.type,
    aggregator: m.aggregator,
    values,
  } as unknown as MetricObjectWithValues<V>);
}

/** A metric of ours as a prom-client Metric, for `Registry.registerMetric` (it calls get and reset, reads the name). */
export function asPromMetric<V extends MetricValue<string>>(m: OwnMetric<V>): Metric {
  return m as unknown as Metric;
}
