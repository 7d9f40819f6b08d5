import { describe, expect, it } from 'vitest';
import { DepthFit } from '../../src/metrics/depth-fit.js';

describe('DepthFit', () => {
  it("recovers the line of exact samples (the paper's a and b) with R² = 1", () => {
    const f = new DepthFit();
    for (let d = 1; d <= 30; d++) f.add(d, 0.001526 * d + 0.03087);
    const r = f.result();
    expect(r.n).toBe(30);
    expect(r.a).toBeCloseTo(0.001526, 9);
    expect(r.b).toBeCloseTo(0.03087, 9);
    expect(r.r2).toBeCloseTo(1, 9);
  });

  it('matches a batch least-squares fit on noisy samples', () => {
    const xs: number[] = [];
    const ys: number[] = [];
    let seed = 7;
    const rnd = (): number => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
    const f = new DepthFit();
    for (let i = 0; i < 500; i++) {
      const d = 1 + Math.floor(rnd() * 30);
      const y = 2e-4 * d + 1e-3 + (rnd() - 0.5) * 1e-3;
      xs.push(d);
      ys.push(y);
      f.add(d, y);
    }
    const mx = xs.reduce((s, x) => s + x, 0) / xs.length;
    const my = ys.reduce((s, y) => s + y, 0) / ys.length;
    let sxy = 0;
    let sxx = 0;
    let syy = 0;
    xs.forEach((x, i) => {
      sxy += (x - mx) * (ys[i]! - my);
      sxx += (x - mx) ** 2;
      syy += (ys[i]! - my) ** 2;
    });
    const r = f.result();
    expect(r.a).toBeCloseTo(sxy / sxx, 12);
    expect(r.b).toBeCloseTo(my - (sxy / sxx) * mx, 12);
    expect(r.r2).toBeCloseTo((sxy * sxy) / (sxx * syy), 9);
    expect(r.r2).toBeGreaterThan(0.5);
    expect(r.r2).toBeLessThan(1);
  });

  it('reports no slope for samples at a single depth, and nothing for no samples', () => {
    expect(new DepthFit().result()).toEqual({ a: 0, b: 0, r2: 0, n: 0 });
    const f = new DepthFit();
    f.add(3, 0.002);
    f.add(3, 0.004);
    expect(f.result()).toEqual({ a: 0, b: 0.003, r2: 0, n: 2 });
  });

  it('merges per-mount fits into one equal to fitting all samples together', () => {
    const all = new DepthFit();
    const one = new DepthFit();
    const two = new DepthFit();
    for (let d = 1; d <= 10; d++) {
      const y = 0.01 * d + (d % 3) * 1e-4;
      all.add(d, y);
      (d % 2 ? one : two).add(d, y);
    }
    one.merge(two);
    const [m, a] = [one.result(), all.result()];
    expect(m.n).toBe(a.n);
    expect(m.a).toBeCloseTo(a.a, 12);
    expect(m.b).toBeCloseTo(a.b, 12);
    expect(m.r2).toBeCloseTo(a.r2, 12);
  });
});

describe('DepthFit.depthRange', () => {
  it('is the smallest and largest depth sampled, across merges', () => {
    const a = new DepthFit();
    expect(a.depthRange()).toBeUndefined();
    a.add(3, 0.1);
    a.add(5, 0.1);
    const b = new DepthFit();
    b.add(2, 0.1);
    a.merge(b);
    expect(a.depthRange()).toEqual({ min: 2, max: 5 });
    const empty = new DepthFit();
    empty.merge(new DepthFit());
    expect(empty.depthRange()).toBeUndefined();
  });
});
