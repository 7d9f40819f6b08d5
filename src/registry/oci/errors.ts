import { CairnError, ErrorCode } from '../../model/errors.js';

/** What a failing /v2 request was about: the same cairn code means different spec codes for each. */
export type Subject = 'base' | 'name' | 'blob' | 'upload' | 'manifest' | 'manifest-put' | 'digest' | 'tags';

export interface OciErrorReply {
  status: number;
  code: string;
  message: string;
}

const subjects = new WeakMap<object, Subject>();

/** Marks an error as being about `subject` (e.g. a malformed digest parameter inside an upload). */
export function about<T>(subject: Subject, fn: () => T): T {
  const mark = (err: unknown): never => {
    if (err instanceof CairnError && !subjects.has(err)) subjects.set(err, subject);
    throw err;
  };
  try {
    const out = fn();
    // An async fn's failure arrives as a rejection: mark it there.
    return (out instanceof Promise ? out.catch(mark) : out) as T;
  } catch (err) {
    return mark(err);
  }
}

const NOT_FOUND: Record<Subject, string> = {
  base: 'NAME_UNKNOWN',
  name: 'NAME_UNKNOWN',
  blob: 'BLOB_UNKNOWN',
  upload: 'BLOB_UPLOAD_UNKNOWN',
  manifest: 'MANIFEST_UNKNOWN',
  'manifest-put': 'MANIFEST_BLOB_UNKNOWN',
  digest: 'BLOB_UNKNOWN',
  tags: 'NAME_UNKNOWN',
};

const INVALID: Record<Subject, string> = {
  base: 'UNSUPPORTED',
  name: 'NAME_INVALID',
  blob: 'DIGEST_INVALID',
  upload: 'BLOB_UPLOAD_INVALID',
  manifest: 'MANIFEST_INVALID',
  'manifest-put': 'MANIFEST_INVALID',
  digest: 'DIGEST_INVALID',
  tags: 'UNSUPPORTED',
};

/**
 * The one place cairn errors become OCI distribution errors (status and the
 * spec's error code). The subject comes from the error's mark, else the route.
 */
export function ociErrorOf(err: unknown, routeSubject: Subject): OciErrorReply {
  if (!(err instanceof CairnError)) return { status: 500, code: 'UNKNOWN', message: 'internal error' };
  const subject = subjects.get(err) ?? routeSubject;
  const r = (status: number, code: string): OciErrorReply => ({ status, code, message: err.message });
  switch (err.code) {
    case ErrorCode.NOT_FOUND:
      return r(404, NOT_FOUND[subject]);
    case ErrorCode.DIGEST_MISMATCH:
      return r(400, 'DIGEST_INVALID');
    case ErrorCode.INVALID_INPUT:
    case ErrorCode.UNSAFE_ENTRY:
    case ErrorCode.INVALID_OPTION:
      return r(400, INVALID[subject]);
    case ErrorCode.UNSUPPORTED:
      return subject === 'manifest-put' ? r(400, 'MANIFEST_INVALID') : r(415, 'UNSUPPORTED');
    case ErrorCode.RANGE:
      return r(416, 'BLOB_UPLOAD_INVALID');
    case ErrorCode.TOO_LARGE:
      return r(413, subject === 'manifest-put' ? 'MANIFEST_INVALID' : 'SIZE_INVALID');
    case ErrorCode.UNAUTHORIZED:
      return r(401, 'UNAUTHORIZED');
    case ErrorCode.FORBIDDEN:
      return r(403, 'DENIED');
    case ErrorCode.TIMEOUT:
    case ErrorCode.UNAVAILABLE:
      return r(503, 'UNAVAILABLE');
    case ErrorCode.ABORTED:
      return r(499, 'UNKNOWN');
    default:
      return { status: 500, code: 'UNKNOWN', message: err.message };
  }
}

/** The spec's error body. */
export function ociErrorBody(reply: OciErrorReply): { errors: { code: string; message: string; detail?: unknown }[] } {
  return { errors: [{ code: reply.code, message: reply.message }] };
}
