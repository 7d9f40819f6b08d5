import { CairnError, ErrorCode } from '../model/errors.js';

/** Exit codes of the CLI: the one place CLI failures are translated. */
const EXIT: Record<ErrorCode, number> = {
  [ErrorCode.INVALID_INPUT]: 65,
  [ErrorCode.DIGEST_MISMATCH]: 65,
  [ErrorCode.UNSAFE_ENTRY]: 65,
  [ErrorCode.UNSUPPORTED]: 65,
  [ErrorCode.NOT_FOUND]: 66,
  [ErrorCode.INVALID_OPTION]: 64,
  [ErrorCode.TIMEOUT]: 69,
  [ErrorCode.UNAVAILABLE]: 69,
  [ErrorCode.ABORTED]: 130,
  [ErrorCode.STORAGE]: 74,
  [ErrorCode.NOT_A_DIRECTORY]: 65,
  [ErrorCode.IS_A_DIRECTORY]: 65,
  [ErrorCode.RANGE]: 65,
  [ErrorCode.UNAUTHORIZED]: 77,
  [ErrorCode.FORBIDDEN]: 77,
  [ErrorCode.TOO_LARGE]: 65,
  [ErrorCode.ALREADY_EXISTS]: 65,
  [ErrorCode.FAILED_PRECONDITION]: 65,
  [ErrorCode.INTERNAL]: 70,
};

export function exitCodeOf(err: unknown): number {
  return err instanceof CairnError ? EXIT[err.code] : 1;
}

export function oneLine(err: unknown): string {
  const msg = err instanceof Error ? err.message : String(err);
  return msg.replace(/\s*\n\s*/g, ' ');
}
