import { CairnError, ErrorCode } from '../../model/errors.js';

export type AuthScheme = 'basic' | 'bearer';

export interface OciAuthOptions {
  /** How clients present credentials: HTTP Basic on every request, or Bearer tokens from `/auth/token`. */
  scheme: AuthScheme;
  /** user name → password. Only these users may push (and read, when reads are protected). */
  users: Record<string, string>;
  /** Whether reads (pull, tags list, catalog) need credentials too. */
  protectReads: boolean;
  /** Lifetime of a bearer token. */
  tokenTtlSeconds: number;
}

export interface OciOptions {
  /** Credentials; undefined: nobody may push and reads are open. */
  auth: OciAuthOptions | undefined;
  /** Largest blob an upload may reach. */
  maxBlobBytes: number;
  /** Largest manifest body accepted. */
  maxManifestBytes: number;
  /** An upload nobody has touched for this long is deleted. */
  uploadTtlSeconds: number;
  /** Keep the compressed layer blobs as pushed (and serve the pushed manifest verbatim). */
  keepLayerBlobs: boolean;
  /** Compressed layer blobs of an ingested image are deleted this long after the ingest. */
  layerBlobGraceSeconds: number;
  /** Bound on the cache of regenerated layer tars on disk. */
  generatedCacheBytes: number;
}

export const DEFAULT_OCI_OPTIONS: OciOptions = {
  auth: undefined,
  maxBlobBytes: 10 * 1024 ** 3,
  maxManifestBytes: 4 * 1024 * 1024,
  uploadTtlSeconds: 3600,
  keepLayerBlobs: false,
  layerBlobGraceSeconds: 600,
  generatedCacheBytes: 2 * 1024 ** 3,
};

const KEYS = Object.keys(DEFAULT_OCI_OPTIONS);
const AUTH_KEYS = ['scheme', 'users', 'protectReads', 'tokenTtlSeconds'];

function bad(what: string, problem: string): never {
  throw new CairnError(ErrorCode.INVALID_OPTION, `${what}: ${problem}`);
}

function nonNegativeInt(v: unknown, what: string): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0)
    bad(what, `${JSON.stringify(v)} is not an integer ≥ 0`);
  return v;
}

/** Parses `user:password,user2:password2` (the CAIRN_OCI_USERS form). */
export function parseUserList(value: string, what: string): Record<string, string> {
  const users: Record<string, string> = {};
  for (const item of value.split(',')) {
    const i = item.indexOf(':');
    if (i <= 0 || i === item.length - 1) bad(what, `${JSON.stringify(item)} is not user:password`);
    users[item.slice(0, i)] = item.slice(i + 1);
  }
  return users;
}

function parseAuth(v: unknown, what: string): OciAuthOptions | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'object' || Array.isArray(v)) bad(what, 'must be an object');
  const a = v as Record<string, unknown>;
  for (const k of Object.keys(a))
    if (!AUTH_KEYS.includes(k)) bad(what, `unknown key ${JSON.stringify(k)} (known: ${AUTH_KEYS.join(', ')})`);
  const scheme = a.scheme ?? 'basic';
  if (scheme !== 'basic' && scheme !== 'bearer') bad(`${what}.scheme`, `${JSON.stringify(scheme)} is not basic|bearer`);
  const users = a.users;
  if (!users || typeof users !== 'object' || Array.isArray(users))
    bad(`${what}.users`, 'must map user names to passwords');
  const entries = Object.entries(users as Record<string, unknown>);
  if (entries.length === 0) bad(`${what}.users`, 'names no user');
  for (const [name, pw] of entries) {
    if (name === '' || name.includes(':')) bad(`${what}.users`, `${JSON.stringify(name)} is not a user name`);
    if (typeof pw !== 'string' || pw === '') bad(`${what}.users.${name}`, 'password must be a non-empty string');
  }
  if (a.protectReads !== undefined && typeof a.protectReads !== 'boolean')
    bad(`${what}.protectReads`, 'must be a boolean');
  return {
    scheme,
    users: users as Record<string, string>,
    protectReads: (a.protectReads as boolean | undefined) ?? false,
    tokenTtlSeconds:
      a.tokenTtlSeconds === undefined ? 300 : nonNegativeInt(a.tokenTtlSeconds, `${what}.tokenTtlSeconds`),
  };
}

/** Validates the `oci` section of the registry config, filling defaults; messages name the option. */
export function parseOciOptions(v: unknown, what = 'oci'): OciOptions {
  if (v === undefined || v === null) return { ...DEFAULT_OCI_OPTIONS };
  if (typeof v !== 'object' || Array.isArray(v)) bad(what, 'must be an object');
  const o = v as Record<string, unknown>;
  for (const k of Object.keys(o))
    if (!KEYS.includes(k)) bad(what, `unknown key ${JSON.stringify(k)} (known: ${KEYS.join(', ')})`);
  const num = (k: keyof OciOptions): number =>
    o[k] === undefined ? (DEFAULT_OCI_OPTIONS[k] as number) : nonNegativeInt(o[k], `${what}.${k}`);
  if (o.keepLayerBlobs !== undefined && typeof o.keepLayerBlobs !== 'boolean')
    bad(`${what}.keepLayerBlobs`, 'must be a boolean');
  const out: OciOptions = {
    auth: parseAuth(o.auth, `${what}.auth`),
    maxBlobBytes: num('maxBlobBytes'),
    maxManifestBytes: num('maxManifestBytes'),
    uploadTtlSeconds: num('uploadTtlSeconds'),
    keepLayerBlobs: (o.keepLayerBlobs as boolean | undefined) ?? false,
    layerBlobGraceSeconds: num('layerBlobGraceSeconds'),
    generatedCacheBytes: num('generatedCacheBytes'),
  };
  if (out.maxManifestBytes < 1024) bad(`${what}.maxManifestBytes`, 'must be at least 1024');
  return out;
}
