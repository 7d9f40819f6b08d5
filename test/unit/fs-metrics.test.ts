import { describe, expect, it } from 'vitest';
import { Histogram, Registry } from 'prom-client';
import { FastHistogram } from '../../src/metrics/fast-histogram.js';
import { FsMetrics, MountMetrics } from '../../src/metrics/fs-metrics.js';
import { CairnError, ErrorCode } from '../../src/model/errors.js';
import { parsePrometheusText } from '../fixtures/registry.js';

describe('FsMetrics', () => {
  it('labels lookups by depth, fits latency against depth per mount and for the daemon, and exposes parseable text', async () => {
    const m = new FsMetrics();
    const a = new MountMetrics('/mnt/a', m);
    const b = new MountMetrics('/mnt/b', m);
    m.track(a);
    m.track(b);
    for (let d = 1; d <= 5; d++) {
      for (let i = 0; i < d; i++) a.lookup('getattr', d, 0.001 * d + 0.0005);
    }
    b.lookup('readlink', 2, 0.003);
    b.lookup('readlink', undefined, 0.0001, new CairnError(ErrorCode.NOT_FOUND, 'x: no such file'));
    b.lookup('getattr', 70, 0.05);
    b.lookup('readdir', 3, 0.2); // listing costs with the directory's size: not in the fit
    b.lookup('readlink', 1, 0.00001, new CairnError(ErrorCode.INVALID_INPUT, 'x: not a symlink'));
    b.read({ depth: 2, source: 'network', bytes: 4096, seconds: 0.01 });
    b.read({ depth: 2, source: 'memory', bytes: 100, seconds: 0.00001 });
    b.read({
      depth: 4,
      bytes: 0,
      seconds: 10,
      error: new CairnError(ErrorCode.TIMEOUT, 'too late'),
      deadlineMissed: true,
    });

    const fa = a.fit.result();
    expect(fa.n).toBe(15);
    expect(fa.a).toBeCloseTo(0.001, 9);
    expect(fa.b).toBeCloseTo(0.0005, 9);
    // Not-found lookups carry no depth, readdir is not a lookup's cost: both stay out of the fits.
    expect(b.fit.result().n).toBe(3);
    expect(m.fit.result().n).toBe(18);

    const expo = parsePrometheusText(await m.text());
    const count = (labels: Record<string, string>): number | undefined =>
      expo.samples.find(
        (s) =>
          s.name === 'cairn_fs_operation_duration_seconds_count' &&
          Object.entries(labels).every(([k, v]) => s.labels[k] === v),
      )?.value;
    expect(count({ operation: 'getattr', depth: '3', source: 'metadata' })).toBe(3);
    expect(count({ operation: 'getattr', depth: '64+' })).toBe(1);
    expect(count({ operation: 'readlink', depth: 'none' })).toBe(1);
    expect(count({ operation: 'readdir', depth: '3' })).toBe(1);
    expect(count({ operation: 'read', depth: '2', source: 'network' })).toBe(1);
    expect(count({ operation: 'read', depth: '2', source: 'memory' })).toBe(1);
    expect(count({ operation: 'read', depth: '4', source: 'none' })).toBe(1);
    const gauge = (name: string, mount: string): number | undefined =>
      expo.samples.find((s) => s.name === name && s.labels.mount === mount)?.value;
    expect(gauge('cairn_lookup_depth_fit_samples', '/mnt/a')).toBe(15);
    expect(gauge('cairn_lookup_depth_fit_samples', '*')).toBe(18);
    expect(gauge('cairn_lookup_depth_slope_seconds', '/mnt/a')).toBeCloseTo(0.001, 9);
    const one = (name: string): number | undefined => expo.samples.find((s) => s.name === name)?.value;
    expect(one('cairn_fs_bytes_served_total')).toBe(4196);
    expect(one('cairn_fs_read_deadlines_missed_total')).toBe(1);
    const errors = expo.samples.filter((s) => s.name === 'cairn_fs_errors_total');
    // The missing name is not an error; the read past its deadline and the readlink of a file are.
    expect(errors.map((s) => [s.labels.operation, s.labels.code, s.value]).sort()).toEqual([
      ['read', ErrorCode.TIMEOUT, 1],
      ['readlink', ErrorCode.INVALID_INPUT, 1],
    ]);

    // An unmounted mount's gauges go; its samples stay in the daemon's fit.
    m.forget('/mnt/a');
    const after = parsePrometheusText(await m.text());
    expect(after.samples.some((s) => s.labels.mount === '/mnt/a')).toBe(false);
    expect(
      after.samples.find((s) => s.name === 'cairn_lookup_depth_fit_samples' && s.labels.mount === '*')?.value,
    ).toBe(18);
  });
});

describe('FastHistogram', () => {
  it("writes the same exposition as prom-client's Histogram for the same observations", async () => {
    const buckets = [0.001, 0.01, 0.1, 1];
    const ours = new Registry();
    const theirs = new Registry();
    const fast = new FastHistogram('h_seconds', 'help text', ['op', 'depth'] as const, buckets);
    ours.registerMetric(fast.asMetric());
    const slow = new Histogram({
      name: 'h_seconds',
      help: 'help text',
      labelNames: ['op', 'depth'],
      buckets,
      registers: [theirs],
    });
    const values = [0, 0.0005, 0.001, 0.0011, 0.05, 0.1, 0.5, 1, 3, 1e9];
    values.forEach((v, i) => {
      const labels = { op: i % 2 ? 'readlink' : 'getattr', depth: String(1 + (i % 3)) };
      fast.series(labels).observe(v);
      slow.observe(labels, v);
    });
    const sorted = (t: string): string[] => t.split('\n').filter(Boolean).sort();
    expect(sorted(await ours.metrics())).toEqual(sorted(await theirs.metrics()));
    const text = await ours.metrics();
    expect(() => parsePrometheusText(text)).not.toThrow();
  });

  it('refuses empty or repeated buckets', () => {
    expect(() => new FastHistogram('x', 'x', [], [])).toThrow(/buckets/);
    expect(() => new FastHistogram('x', 'x', [], [1, 1])).toThrow(/buckets/);
    expect(() => new FastHistogram('x', 'x', [], [1, Infinity])).toThrow(/buckets/);
  });
});
