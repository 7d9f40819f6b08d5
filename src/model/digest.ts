import { createHash } from 'node:crypto';
import { CairnError, ErrorCode } from './errors.js';

/** A content digest in OCI form, `sha256:` followed by 64 lowercase hex digits. */
export type Digest = `sha256:${string}`;

const DIGEST_RE = /^sha256:[0-9a-f]{64}$/;

export function isDigest(value: unknown): value is Digest {
  return typeof value === 'string' && DIGEST_RE.test(value);
}

/** Validates a digest string; `what` names the input in the error. */
export function parseDigest(value: unknown, what: string): Digest {
  if (isDigest(value)) return value;
  const shown = typeof value === 'string' ? JSON.stringify(value.slice(0, 100)) : typeof value;
  throw new CairnError(ErrorCode.INVALID_INPUT, `${what}: ${shown} is not a sha256 digest (sha256:<64 hex>)`);
}

export function hexOf(digest: Digest): string {
  return digest.slice(7);
}

export function sha256(data: Uint8Array | string): Digest {
  return `sha256:${createHash('sha256').update(data).digest('hex')}`;
}

/** Incremental hasher that also counts bytes. */
export class DigestBuilder {
  private readonly hash = createHash('sha256');
  private result: Digest | undefined;
  bytes = 0;

  update(chunk: Uint8Array): void {
    this.hash.update(chunk);
    this.bytes += chunk.byteLength;
  }

  /** The digest of everything so far; after the first call no more updates are taken. */
  digest(): Digest {
    this.result ??= `sha256:${this.hash.digest('hex')}`;
    return this.result;
  }
}
