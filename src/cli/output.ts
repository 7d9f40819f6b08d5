import { CairnError, ErrorCode } from '../model/errors.js';

/** Prints a result as JSON or as text. */
export function output(json: boolean | undefined, value: unknown, text: () => string): void {
  process.stdout.write(json ? `${JSON.stringify(value, null, 2)}\n` : `${text()}\n`);
}

export function intOption(value: string, name: string): number {
  const n = Number(value);
  if (!Number.isSafeInteger(n) || n < 0) {
    throw new CairnError(ErrorCode.INVALID_OPTION, `${name}: ${JSON.stringify(value)} is not a non-negative integer`);
  }
  return n;
}

const UNITS: Record<string, number> = { '': 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3, t: 1024 ** 4 };

/** Parses a byte size such as `512M`, `2G`, `1048576` (binary units; an optional trailing `B` or `iB`). */
export function bytesOption(value: string, name: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?$/i.exec(value.trim());
  const n = m ? Math.floor(Number(m[1]) * (UNITS[(m[2] ?? '').toLowerCase()] ?? NaN)) : NaN;
  if (!Number.isSafeInteger(n) || n < 0) {
    throw new CairnError(ErrorCode.INVALID_OPTION, `${name}: ${JSON.stringify(value)} is not a size (e.g. 512M, 2G)`);
  }
  return n;
}
