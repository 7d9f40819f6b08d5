/**
 * cairn's one error model. Every failure that crosses a module boundary is a
 * CairnError with a stable code; each edge (CLI exit, HTTP status, FUSE errno,
 * gRPC status) translates codes in exactly one place.
 */
export const ErrorCode = {
  /** Input that is not what it claims to be (bad tar, bad JSON, bad digest string). */
  INVALID_INPUT: 'CAIRN_ERR_INVALID_INPUT',
  /** Content whose digest does not match the digest it was announced with. */
  DIGEST_MISMATCH: 'CAIRN_ERR_DIGEST_MISMATCH',
  /** A layer entry that would escape the root or break the layer's structure. */
  UNSAFE_ENTRY: 'CAIRN_ERR_UNSAFE_ENTRY',
  /** A media type cairn does not handle. */
  UNSUPPORTED: 'CAIRN_ERR_UNSUPPORTED',
  /** A repository, tag, image, recipe or blob that does not exist. */
  NOT_FOUND: 'CAIRN_ERR_NOT_FOUND',
  /** An option or configuration value that is out of range or malformed. */
  INVALID_OPTION: 'CAIRN_ERR_INVALID_OPTION',
  /** A remote peer that did not answer in time. */
  TIMEOUT: 'CAIRN_ERR_TIMEOUT',
  /** A remote peer that failed or is unreachable. */
  UNAVAILABLE: 'CAIRN_ERR_UNAVAILABLE',
  /** The operation was cancelled through its AbortSignal. */
  ABORTED: 'CAIRN_ERR_ABORTED',
  /** The local store failed (disk full, permissions, corrupt database). */
  STORAGE: 'CAIRN_ERR_STORAGE',
  /** A path used as a directory that is not one (ENOTDIR at the FUSE edge). */
  NOT_A_DIRECTORY: 'CAIRN_ERR_NOT_A_DIRECTORY',
  /** A directory used where a file is needed (EISDIR at the FUSE edge). */
  IS_A_DIRECTORY: 'CAIRN_ERR_IS_A_DIRECTORY',
  /** A request for a byte range outside the object. */
  RANGE: 'CAIRN_ERR_RANGE',
  /** A request without valid credentials where credentials are required. */
  UNAUTHORIZED: 'CAIRN_ERR_UNAUTHORIZED',
  /** Credentials that are valid but do not allow the operation. */
  FORBIDDEN: 'CAIRN_ERR_FORBIDDEN',
  /** A body or object larger than a configured limit. */
  TOO_LARGE: 'CAIRN_ERR_TOO_LARGE',
  /** An object created under a name that is already taken (a snapshot key). */
  ALREADY_EXISTS: 'CAIRN_ERR_ALREADY_EXISTS',
  /** An operation the object's state does not allow (removing a snapshot with children). */
  FAILED_PRECONDITION: 'CAIRN_ERR_FAILED_PRECONDITION',
  /** A bug: an invariant that should hold did not. */
  INTERNAL: 'CAIRN_ERR_INTERNAL',
} as const;

export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

export class CairnError extends Error {
  readonly code: ErrorCode;

  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'CairnError';
    this.code = code;
  }
}

export function isCairnError(err: unknown, code?: ErrorCode): err is CairnError {
  return err instanceof CairnError && (code === undefined || err.code === code);
}

/** Wraps any thrown value into a CairnError, keeping CairnErrors as they are. */
export function toCairnError(err: unknown, fallback: ErrorCode, context: string): CairnError {
  if (err instanceof CairnError) return err;
  const sys = err as NodeJS.ErrnoException | undefined;
  if (sys && typeof sys.code === 'string' && ['ENOSPC', 'EDQUOT', 'EROFS', 'EIO', 'EACCES'].includes(sys.code)) {
    return new CairnError(ErrorCode.STORAGE, `${context}: ${sys.message}`, { cause: err });
  }
  if (sys && sys.name === 'AbortError') {
    return new CairnError(ErrorCode.ABORTED, `${context}: aborted`, { cause: err });
  }
  const message = err instanceof Error ? err.message : String(err);
  return new CairnError(fallback, `${context}: ${message}`, { cause: err });
}
