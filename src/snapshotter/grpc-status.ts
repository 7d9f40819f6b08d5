/**
 * The one place where cairn errors become gRPC status codes at the snapshotter
 * edge. containerd's proxy turns these back into its errdefs (NotFound,
 * AlreadyExists, FailedPrecondition, InvalidArgument...), which drive its logic:
 * ALREADY_EXISTS on Prepare is how a remote snapshotter says "already there".
 */
import { status, type ServiceError, Metadata } from '@grpc/grpc-js';
import { CairnError, ErrorCode, toCairnError } from '../model/errors.js';

const STATUS: Record<ErrorCode, status> = {
  [ErrorCode.INVALID_INPUT]: status.INVALID_ARGUMENT,
  [ErrorCode.DIGEST_MISMATCH]: status.DATA_LOSS,
  [ErrorCode.UNSAFE_ENTRY]: status.INVALID_ARGUMENT,
  [ErrorCode.UNSUPPORTED]: status.UNIMPLEMENTED,
  [ErrorCode.NOT_FOUND]: status.NOT_FOUND,
  [ErrorCode.INVALID_OPTION]: status.INVALID_ARGUMENT,
  [ErrorCode.TIMEOUT]: status.DEADLINE_EXCEEDED,
  [ErrorCode.UNAVAILABLE]: status.UNAVAILABLE,
  [ErrorCode.ABORTED]: status.CANCELLED,
  [ErrorCode.STORAGE]: status.INTERNAL,
  [ErrorCode.NOT_A_DIRECTORY]: status.INVALID_ARGUMENT,
  [ErrorCode.IS_A_DIRECTORY]: status.INVALID_ARGUMENT,
  [ErrorCode.RANGE]: status.OUT_OF_RANGE,
  [ErrorCode.ALREADY_EXISTS]: status.ALREADY_EXISTS,
  [ErrorCode.FAILED_PRECONDITION]: status.FAILED_PRECONDITION,
  [ErrorCode.UNAUTHORIZED]: status.UNAUTHENTICATED,
  [ErrorCode.FORBIDDEN]: status.PERMISSION_DENIED,
  [ErrorCode.TOO_LARGE]: status.RESOURCE_EXHAUSTED,
  [ErrorCode.INTERNAL]: status.INTERNAL,
};

export function grpcStatusOf(err: unknown): status {
  return err instanceof CairnError ? STATUS[err.code] : status.INTERNAL;
}

/** A gRPC error for a failed call; the message keeps the cairn code for the logs. */
export function toServiceError(err: unknown, context: string): Partial<ServiceError> {
  const e = toCairnError(err, ErrorCode.INTERNAL, context);
  const metadata = new Metadata();
  metadata.set('cairn-error-code', e.code);
  return { code: STATUS[e.code], details: `${e.message} (${e.code})`, metadata };
}

const CODE_OF: Partial<Record<status, ErrorCode>> = {
  [status.INVALID_ARGUMENT]: ErrorCode.INVALID_INPUT,
  [status.NOT_FOUND]: ErrorCode.NOT_FOUND,
  [status.ALREADY_EXISTS]: ErrorCode.ALREADY_EXISTS,
  [status.FAILED_PRECONDITION]: ErrorCode.FAILED_PRECONDITION,
  [status.DEADLINE_EXCEEDED]: ErrorCode.TIMEOUT,
  [status.UNAVAILABLE]: ErrorCode.UNAVAILABLE,
  [status.CANCELLED]: ErrorCode.ABORTED,
  [status.UNIMPLEMENTED]: ErrorCode.UNSUPPORTED,
  [status.UNAUTHENTICATED]: ErrorCode.UNAUTHORIZED,
  [status.PERMISSION_DENIED]: ErrorCode.FORBIDDEN,
  [status.RESOURCE_EXHAUSTED]: ErrorCode.TOO_LARGE,
  [status.OUT_OF_RANGE]: ErrorCode.RANGE,
  [status.DATA_LOSS]: ErrorCode.DIGEST_MISMATCH,
};

/** The other direction, for cairn as a gRPC client (of containerd): a failed call's status as a CairnError. */
export function fromServiceError(err: unknown, context: string): CairnError {
  const e = err as Partial<ServiceError> | undefined;
  if (e && typeof e.code === 'number') {
    return new CairnError(CODE_OF[e.code as status] ?? ErrorCode.INTERNAL, `${context}: ${e.details ?? e.message}`, {
      cause: err,
    });
  }
  return toCairnError(err, ErrorCode.UNAVAILABLE, context);
}
