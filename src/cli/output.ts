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
