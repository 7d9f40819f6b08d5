/**
 * The objective of Li et al.: minimize α·C_o + β·C_s.
 *
 * - C_o = a·N(N+1)/2 + b·N, the operation cost of an image of N layers in
 *   seconds: b per layer, plus a per layer of depth a lookup goes through
 *   (a and b are fitted by `cairn stats --export-cost-model`; the paper's
 *   a = 0.001526, b = 0.03087 otherwise).
 * - C_s = the bytes of the image's layers that are new to the registry,
 *   counted in MB (10^6 bytes) so that with α = β = 1 one extra layer on a
 *   5-layer image (≈ 0.04 s) is worth about 40 kB of storage. The paper
 *   leaves the unit open; this choice is documented in src/reconstruct/README.md.
 */
import { CairnError, ErrorCode } from '../model/errors.js';

export const PAPER_COST_MODEL = { a: 0.001526, b: 0.03087 } as const;

export interface CostParams {
  alpha: number;
  beta: number;
  a: number;
  b: number;
}

export const DEFAULT_COST: CostParams = { alpha: 1, beta: 1, ...PAPER_COST_MODEL };

export const BYTES_PER_COST_UNIT = 1e6;

export function operationCost(layers: number, p: Pick<CostParams, 'a' | 'b'>): number {
  return (p.a * layers * (layers + 1)) / 2 + p.b * layers;
}

export function weightedCost(layers: number, newBytes: number, p: CostParams): number {
  return p.alpha * operationCost(layers, p) + p.beta * (newBytes / BYTES_PER_COST_UNIT);
}

/** Validates cost parameters; `what` names where they came from. */
export function checkCostParams(p: CostParams, what = 'cost'): CostParams {
  for (const k of ['alpha', 'beta', 'a', 'b'] as const) {
    const v = p[k];
    if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) {
      throw new CairnError(ErrorCode.INVALID_OPTION, `${what}: ${k} must be a finite number >= 0, got ${String(v)}`);
    }
  }
  return p;
}

export interface CostModelFile {
  a: number;
  b: number;
  /** Set when the file's intercept was negative and clamped at 0. */
  clampedB?: boolean;
}

/**
 * Reads the JSON of a cost-model file (`kind: "cairn.cost-model"`, version 1,
 * a and b finite, a >= 0; a negative b is clamped at 0 and flagged). Unknown
 * fields are ignored. `file` names the input in errors.
 */
export function parseCostModel(text: string, file: string): CostModelFile {
  let obj: unknown;
  try {
    obj = JSON.parse(text);
  } catch (err) {
    throw new CairnError(ErrorCode.INVALID_INPUT, `cost model ${file}: not JSON (${(err as Error).message})`);
  }
  const o = obj as Record<string, unknown> | null;
  if (!o || typeof o !== 'object' || Array.isArray(o)) {
    throw new CairnError(ErrorCode.INVALID_INPUT, `cost model ${file}: expected a JSON object`);
  }
  if (o.kind !== 'cairn.cost-model') {
    throw new CairnError(
      ErrorCode.INVALID_INPUT,
      `cost model ${file}: field "kind" is ${JSON.stringify(o.kind)}, expected "cairn.cost-model"`,
    );
  }
  if (o.version !== 1) {
    throw new CairnError(
      ErrorCode.INVALID_INPUT,
      `cost model ${file}: field "version" is ${JSON.stringify(o.version)}, this cairn reads 1`,
    );
  }
  const num = (k: 'a' | 'b'): number => {
    const v = o[k];
    if (typeof v !== 'number' || !Number.isFinite(v)) {
      throw new CairnError(
        ErrorCode.INVALID_INPUT,
        `cost model ${file}: field "${k}" is ${JSON.stringify(v)}, expected a finite number`,
      );
    }
    return v;
  };
  const a = num('a');
  const b = num('b');
  if (a < 0) {
    throw new CairnError(ErrorCode.INVALID_INPUT, `cost model ${file}: field "a" is ${a}, expected a number >= 0`);
  }
  return b < 0 ? { a, b: 0, clampedB: true } : { a, b };
}
