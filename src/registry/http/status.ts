import { CairnError, ErrorCode } from '../../model/errors.js';

/** The one place registry errors become HTTP statuses. */
const STATUS: Record<ErrorCode, number> = {
  [ErrorCode.INVALID_INPUT]: 400,
  [ErrorCode.DIGEST_MISMATCH]: 400,
  [ErrorCode.UNSAFE_ENTRY]: 400,
  [ErrorCode.UNSUPPORTED]: 415,
  [ErrorCode.NOT_FOUND]: 404,
  [ErrorCode.INVALID_OPTION]: 400,
  [ErrorCode.TIMEOUT]: 504,
  [ErrorCode.UNAVAILABLE]: 503,
  [ErrorCode.ABORTED]: 499,
  [ErrorCode.STORAGE]: 500,
  [ErrorCode.NOT_A_DIRECTORY]: 400,
  [ErrorCode.IS_A_DIRECTORY]: 400,
  [ErrorCode.RANGE]: 416,
  [ErrorCode.UNAUTHORIZED]: 401,
  [ErrorCode.FORBIDDEN]: 403,
  [ErrorCode.TOO_LARGE]: 413,
  [ErrorCode.ALREADY_EXISTS]: 409,
  [ErrorCode.FAILED_PRECONDITION]: 409,
  [ErrorCode.INTERNAL]: 500,
};

export function httpStatusOf(err: unknown): number {
  return err instanceof CairnError ? STATUS[err.code] : 500;
}

export function errorBody(err: unknown): { error: { code: string; message: string } } {
  if (err instanceof CairnError) return { error: { code: err.code, message: err.message } };
  return { error: { code: ErrorCode.INTERNAL, message: 'internal error' } };
}
