import { describe, expect, it } from 'vitest';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { costModelOf, parseCostModel, writeCostModel } from '../../src/metrics/cost-model.js';
import { DepthFit } from '../../src/metrics/depth-fit.js';
import { isCairnError, ErrorCode } from '../../src/model/errors.js';
import { testTempDir } from '../fixtures/tmp.js';

function fitOf(samples: [number, number][]): DepthFit {
  const f = new DepthFit();
  for (const [d, s] of samples) f.add(d, s);
  return f;
}

describe('cost model', () => {
  it('is the fit, in the shared format, and reads back as written', async () => {
    const f = fitOf([1, 2, 4, 8, 16, 30].map((d) => [d, 0.001526 * d + 0.03087]));
    const at = new Date('2026-11-23T12:00:00.000Z');
    const m = costModelOf(f, 'mount /mnt/x (image sha256:abc)', at);
    expect(m).toMatchObject({
      kind: 'cairn.cost-model',
      version: 1,
      n: 6,
      unit: 'seconds per lookup',
      source: 'mount /mnt/x (image sha256:abc)',
      measuredAt: '2026-11-23T12:00:00.000Z',
    });
    expect(m.a).toBeCloseTo(0.001526, 12);
    expect(m.b).toBeCloseTo(0.03087, 12);
    expect(m.r2).toBeCloseTo(1, 9);
    expect(m.fittedA).toBeUndefined();

    const dir = await testTempDir('cairn-cost-model-');
    const file = join(dir, 'model.json');
    await writeFile(file, 'old');
    await writeCostModel(file, m);
    expect(await readdir(dir)).toEqual(['model.json']);
    const back = parseCostModel(await readFile(file, 'utf8'), file);
    expect(back).toMatchObject({ a: m.a, b: m.b, r2: m.r2, n: 6, source: m.source, notes: [] });
  });

  it('refuses fits that give no slope: too few samples, or one depth only', () => {
    const refused = (f: DepthFit, pattern: RegExp): void => {
      let err: unknown;
      try {
        costModelOf(f, 'mount /m');
      } catch (e) {
        err = e;
      }
      expect(isCairnError(err, ErrorCode.INVALID_INPUT), String(err)).toBe(true);
      expect((err as Error).message).toMatch(pattern);
    };
    refused(new DepthFit(), /^mount \/m: cannot fit .* from 0 lookups at no depth/);
    refused(
      fitOf([
        [1, 0.1],
        [2, 0.2],
      ]),
      /from 2 lookups at depths: it needs at least 3 lookups at two or more depths/,
    );
    refused(fitOf(Array.from({ length: 50 }, () => [3, 0.001])), /from 50 lookups at only depth 3/);
  });

  it('writes a negative fitted slope as 0 and keeps the fitted value (readers refuse a < 0)', () => {
    const m = costModelOf(
      fitOf([
        [1, 0.003],
        [2, 0.002],
        [3, 0.001],
      ]),
      'daemon',
    );
    expect(m.a).toBe(0);
    expect(m.fittedA).toBeCloseTo(-0.001, 12);
    expect(m.b).toBeCloseTo(0.004, 12);
  });

  it('readers check kind, version, a and b, naming the file and the field; clamp a negative b with a note', () => {
    const good = { kind: 'cairn.cost-model', version: 1, a: 0.001, b: 0.01, r2: 0.9, n: 10, extra: 'ignored' };
    const read = (doc: unknown): ReturnType<typeof parseCostModel> => parseCostModel(JSON.stringify(doc), 'f.json');
    expect(read(good)).toMatchObject({ a: 0.001, b: 0.01, notes: [] });
    expect(read({ ...good, b: -0.5 })).toMatchObject({
      b: 0,
      notes: ['cost model f.json: negative intercept b = -0.5 clamped at 0'],
    });
    expect(() => parseCostModel('{', 'f.json')).toThrow(/^cost model f\.json: not JSON/);
    expect(() => read([])).toThrow(/cost model f\.json: not a JSON object/);
    expect(() => read({ ...good, kind: 'other' })).toThrow(/f\.json: field kind is "other"/);
    expect(() => read({ ...good, version: 2 })).toThrow(/f\.json: field version is 2/);
    expect(() => read({ ...good, a: -1 })).toThrow(/f\.json: field a is -1: a slope must be >= 0/);
    expect(() => read({ ...good, a: 'x' })).toThrow(/f\.json: field a is "x", not a finite number/);
    expect(() => read({ ...good, b: null })).toThrow(/f\.json: field b is null, not a finite number/);
  });

  it('a file in a directory that does not exist is refused naming it', async () => {
    const dir = await testTempDir('cairn-cost-model-');
    const m = costModelOf(
      fitOf([
        [1, 1],
        [2, 2],
        [3, 3],
      ]),
      'daemon',
    );
    await expect(writeCostModel(join(dir, 'no/such/model.json'), m)).rejects.toThrow(
      `cost model ${join(dir, 'no/such/model.json')}: cannot write it: directory ${join(dir, 'no/such')} does not exist`,
    );
  });
});
