import { describe, expect, it } from 'vitest';
import { FsMetrics } from '../../src/metrics/fs-metrics.js';
import { parsePrometheusText } from '../fixtures/registry.js';

describe('FsMetrics', () => {
  it('labels lookups by depth, fits latency against depth per mount and overall, and exposes parseable text', async () => {
    const m = new FsMetrics();
    for (let d = 1; d <= 5; d++) {
      for (let i = 0; i < d; i++) m.lookup('/mnt/a', 'getattr', d, 0.001 * d + 0.0005);
    }
    m.lookup('/mnt/b', 'open', 2, 0.003);
    m.lookup('/mnt/b', 'open', undefined, 0.0001);
    m.lookup('/mnt/b', 'getattr', 70, 0.05);
    m.read('network', 4096, 0.01);
    m.read('memory', 100, 0.00001);
    m.error('read');

    const a = m.depthFit('/mnt/a');
    expect(a.n).toBe(15);
    expect(a.a).toBeCloseTo(0.001, 9);
    expect(a.b).toBeCloseTo(0.0005, 9);
    expect(m.depthFit().n).toBe(17); // not-found lookups carry no depth and stay out of the fit

    const expo = parsePrometheusText(await m.text());
    const count = (labels: Record<string, string>): number | undefined =>
      expo.samples.find(
        (s) =>
          s.name === 'cairn_fs_operation_duration_seconds_count' &&
          Object.entries(labels).every(([k, v]) => s.labels[k] === v),
      )?.value;
    expect(count({ operation: 'getattr', depth: '3', source: 'metadata' })).toBe(3);
    expect(count({ operation: 'getattr', depth: '64+' })).toBe(1);
    expect(count({ operation: 'open', depth: 'none' })).toBe(1);
    expect(count({ operation: 'read', source: 'network' })).toBe(1);
    const gauge = (name: string, mount: string): number | undefined =>
      expo.samples.find((s) => s.name === name && s.labels.mount === mount)?.value;
    expect(gauge('cairn_lookup_depth_fit_samples', '/mnt/a')).toBe(15);
    expect(gauge('cairn_lookup_depth_fit_samples', '*')).toBe(17);
    expect(gauge('cairn_lookup_depth_slope_seconds', '/mnt/a')).toBeCloseTo(0.001, 9);
    expect(expo.samples.find((s) => s.name === 'cairn_fs_bytes_served_total')?.value).toBe(4196);
    expect(expo.samples.find((s) => s.name === 'cairn_fs_errors_total' && s.labels.operation === 'read')?.value).toBe(
      1,
    );

    m.forget('/mnt/a');
    expect(m.depthFit().n).toBe(2);
    expect(gauge('cairn_lookup_depth_fit_samples', '/mnt/a')).toBe(15);
    const after = parsePrometheusText(await m.text());
    expect(after.samples.some((s) => s.labels.mount === '/mnt/a')).toBe(false);
  });
});
