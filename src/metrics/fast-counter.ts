import { asPromMetric, metricObject } from './metric-object.js';
import type { Metric, MetricObjectWithValues, MetricValue } from 'prom-client';

/** One combination of label values of a FastCounter. */
export class CounterSeries {
  value = 0;

  constructor(readonly labels: Readonly<Record<string, string>>) {}

  inc(by = 1): void {
    this.value += by;
  }
}

/**
 * A Prometheus counter for per-request hot paths, registered in a prom-client
 * Registry like any of its metrics. prom-client's Counter hashes the label
 * object on every `inc`, even through a child from `labels()`; this one hands
 * out series once and an increment is one addition. Its exposition is the one
 * prom-client's Counter produces, and it sums across cluster workers.
 */
export class FastCounter<L extends string> {
  readonly type = 'counter';
  readonly aggregator = 'sum';
  private readonly all = new Map<string, CounterSeries>();

  constructor(
    readonly name: string,
    readonly help: string,
    private readonly labelNames: readonly L[],
  ) {}

  /** The series of these label values (created on first use); keep it and increment it. */
  series(labels: Record<L, string>): CounterSeries {
    const key = this.labelNames.map((n) => labels[n]).join('\u0000');
    let s = this.all.get(key);
    if (!s) {
      s = new CounterSeries({ ...labels });
      this.all.set(key, s);
    }
    return s;
  }

  reset(): void {
    this.all.clear();
  }

  get(): Promise<MetricObjectWithValues<MetricValue<string>>> {
    const values: MetricValue<string>[] = [...this.all.values()].map((s) => ({ labels: s.labels, value: s.value }));
    return metricObject(this, values);
  }

  /** As a prom-client Metric, for `Registry.registerMetric`. */
  asMetric(): Metric {
    return asPromMetric(this);
  }
}
