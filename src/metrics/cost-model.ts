/**
 * The cost-model file: the measured lookup cost per layer of depth (a) and at
 * depth zero (b), written by `cairn stats --export-cost-model` and read by the
 * reconstruction (C_o = a·N(N+1)/2 + b·N). The format is a shared contract:
 *
 *   { "kind": "cairn.cost-model", "version": 1, "a": …, "b": …, "r2": …, "n": …,
 *     "unit": "seconds per lookup", "source": "mount /mnt/x (image sha256:…)" | "daemon",
 *     "measuredAt": "2026-11-23T12:00:00.000Z" }
 *
 * Readers check kind, version, and that a and b are finite with a >= 0; a
 * negative b (the fit's intercept may be) is clamped at 0 with a note. Unknown
 * fields are ignored.
 */
import { open, rename, rm } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { dirname, basename, join } from 'node:path';
import { CairnError, ErrorCode } from '../model/errors.js';
import type { DepthFit } from './depth-fit.js';

export const COST_MODEL_KIND = 'cairn.cost-model';
export const COST_MODEL_VERSION = 1;
export const COST_MODEL_UNIT = 'seconds per lookup';
/** Fewer samples than this leave no residual to judge the fit by. */
export const MIN_FIT_SAMPLES = 3;

export interface CostModel {
  kind: typeof COST_MODEL_KIND;
  version: typeof COST_MODEL_VERSION;
  /** Seconds added per layer of depth to one name lookup. */
  a: number;
  /** Seconds of one lookup at depth zero. */
  b: number;
  r2: number;
  n: number;
  unit: typeof COST_MODEL_UNIT;
  source: string;
  measuredAt: string;
  /** Written only when the fitted slope was negative (noise around a flat cost): the value before it was clamped to 0. */
  fittedA?: number;
}

/**
 * The cost model of a fit, measured now. Rejects (INVALID_INPUT, naming
 * `source`) a fit that cannot give a slope: fewer than MIN_FIT_SAMPLES
 * samples, or samples at fewer than two distinct depths. A negative fitted
 * slope (readers refuse a < 0) is written as 0, its value kept in `fittedA`.
 */
export function costModelOf(fit: DepthFit, source: string, now: Date = new Date()): CostModel {
  const r = fit.result();
  const range = fit.depthRange();
  if (r.n < MIN_FIT_SAMPLES || !range || range.min === range.max) {
    const depths = !range ? 'no depth' : range.min === range.max ? `only depth ${range.min}` : 'depths';
    throw new CairnError(
      ErrorCode.INVALID_INPUT,
      `${source}: cannot fit lookup latency against depth from ${r.n} lookup${r.n === 1 ? '' : 's'} at ${depths}: ` +
        `it needs at least ${MIN_FIT_SAMPLES} lookups at two or more depths (look up names in several layers first)`,
    );
  }
  return {
    kind: COST_MODEL_KIND,
    version: COST_MODEL_VERSION,
    a: Math.max(0, r.a),
    b: r.b,
    r2: r.r2,
    n: r.n,
    unit: COST_MODEL_UNIT,
    source,
    measuredAt: now.toISOString(),
    ...(r.a < 0 ? { fittedA: r.a } : {}),
  };
}

/** A cost model as a reader takes it: b clamped at 0, with notes saying what was changed. */
export interface ReadCostModel {
  a: number;
  b: number;
  r2?: number;
  n?: number;
  source?: string;
  measuredAt?: string;
  notes: string[];
}

/** Validates a cost-model file's text as the contract says; errors name `file` and the field. */
export function parseCostModel(text: string, file: string): ReadCostModel {
  const bad = (what: string): CairnError => new CairnError(ErrorCode.INVALID_INPUT, `cost model ${file}: ${what}`);
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    throw bad(`not JSON (${(err as Error).message})`);
  }
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) throw bad('not a JSON object');
  const o = doc as Record<string, unknown>;
  if (o.kind !== COST_MODEL_KIND) throw bad(`field kind is ${JSON.stringify(o.kind)}, not "${COST_MODEL_KIND}"`);
  if (o.version !== COST_MODEL_VERSION) throw bad(`field version is ${JSON.stringify(o.version)}, not 1`);
  const finite = (k: string): number => {
    const v = o[k];
    if (typeof v !== 'number' || !Number.isFinite(v))
      throw bad(`field ${k} is ${JSON.stringify(v)}, not a finite number`);
    return v;
  };
  const a = finite('a');
  if (a < 0) throw bad(`field a is ${a}: a slope must be >= 0`);
  let b = finite('b');
  const notes: string[] = [];
  if (b < 0) {
    notes.push(`cost model ${file}: negative intercept b = ${b} clamped at 0`);
    b = 0;
  }
  const num = (k: string): number | undefined => (typeof o[k] === 'number' ? o[k] : undefined);
  const str = (k: string): string | undefined => (typeof o[k] === 'string' ? o[k] : undefined);
  const out: ReadCostModel = { a, b, notes };
  const r2 = num('r2');
  const n = num('n');
  const source = str('source');
  const measuredAt = str('measuredAt');
  if (r2 !== undefined) out.r2 = r2;
  if (n !== undefined) out.n = n;
  if (source !== undefined) out.source = source;
  if (measuredAt !== undefined) out.measuredAt = measuredAt;
  return out;
}

/**
 * Writes a cost model to `file`: a temp file beside it, flushed, then renamed
 * over it, so a reader sees the old file or the new one, never half of one.
 */
export async function writeCostModel(file: string, model: CostModel): Promise<void> {
  const tmp = join(dirname(file), `.${basename(file)}.${process.pid}-${randomBytes(6).toString('hex')}.tmp`);
  try {
    const fh = await open(tmp, 'wx', 0o644);
    try {
      await fh.writeFile(`${JSON.stringify(model, null, 2)}\n`);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, file);
  } catch (err) {
    await rm(tmp, { force: true }).catch(() => undefined);
    const e = err as NodeJS.ErrnoException;
    const code = e.code === 'ENOENT' ? ErrorCode.NOT_FOUND : ErrorCode.STORAGE;
    const why = e.code === 'ENOENT' ? `directory ${dirname(file)} does not exist` : e.message;
    throw new CairnError(code, `cost model ${file}: cannot write it: ${why}`, { cause: err });
  }
}
