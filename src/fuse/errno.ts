import { CairnError, ErrorCode } from '../model/errors.js';

/** Linux errno values (negative, as FUSE wants them). */
export const Errno = {
  EPERM: -1,
  ENOENT: -2,
  EIO: -5,
  EBADF: -9,
  EACCES: -13,
  EEXIST: -17,
  ENOTDIR: -20,
  EISDIR: -21,
  EINVAL: -22,
  EROFS: -30,
  ERANGE: -34,
  ENODATA: -61,
  ETIMEDOUT: -110,
} as const;

/**
 * The one place where cairn errors become errno at the FUSE edge. Anything a
 * remote read can fail with (deadline, registry down, bad bytes) is EIO: a
 * program sees an I/O error, never a hang and never wrong data.
 */
const ERRNO: Record<ErrorCode, number> = {
  [ErrorCode.NOT_FOUND]: Errno.ENOENT,
  [ErrorCode.INVALID_INPUT]: Errno.EINVAL,
  [ErrorCode.INVALID_OPTION]: Errno.EINVAL,
  [ErrorCode.NOT_A_DIRECTORY]: Errno.ENOTDIR,
  [ErrorCode.IS_A_DIRECTORY]: Errno.EISDIR,
  [ErrorCode.RANGE]: Errno.EINVAL,
  [ErrorCode.UNSAFE_ENTRY]: Errno.EIO,
  [ErrorCode.UNSUPPORTED]: Errno.EIO,
  [ErrorCode.DIGEST_MISMATCH]: Errno.EIO,
  [ErrorCode.TIMEOUT]: Errno.EIO,
  [ErrorCode.UNAVAILABLE]: Errno.EIO,
  [ErrorCode.ABORTED]: Errno.EIO,
  [ErrorCode.STORAGE]: Errno.EIO,
  [ErrorCode.UNAUTHORIZED]: Errno.EIO,
  [ErrorCode.FORBIDDEN]: Errno.EIO,
  [ErrorCode.TOO_LARGE]: Errno.EIO,
  [ErrorCode.ALREADY_EXISTS]: Errno.EEXIST,
  [ErrorCode.FAILED_PRECONDITION]: Errno.EIO,
  [ErrorCode.INTERNAL]: Errno.EIO,
};

export function errnoOf(err: unknown): number {
  if (err instanceof CairnError) return ERRNO[err.code];
  return Errno.EIO;
}
