import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import { CairnError, ErrorCode } from '../../model/errors.js';
import type { OciAuthOptions } from './options.js';

export type Access = 'pull' | 'push';

/** Who a request is: a configured user, or nobody. */
interface Identity {
  user: string | undefined;
  /** What a bearer token allows (a Basic user may do everything). */
  push: boolean;
}

const SERVICE = 'cairn';
export const TOKEN_PATH = '/auth/token';

function equal(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.byteLength === y.byteLength && timingSafeEqual(x, y);
}

function basicCredentials(header: string | undefined): { user: string; password: string } | undefined {
  const m = /^Basic\s+([A-Za-z0-9+/=]+)\s*$/i.exec(header ?? '');
  if (!m) return undefined;
  const text = Buffer.from(m[1] as string, 'base64').toString('utf8');
  const i = text.indexOf(':');
  if (i < 0) return undefined;
  return { user: text.slice(0, i), password: text.slice(i + 1) };
}

/**
 * Access control of the /v2 API. Without configured users nobody may push
 * and reads are open. With users, a push needs their credentials (HTTP Basic,
 * or a Bearer token from the token endpoint, per `scheme`), and so does a
 * read when `protectReads` is set. Tokens are HMAC-signed with a key made at
 * start, so they end with the process.
 */
export class Authenticator {
  private readonly key = randomBytes(32);

  constructor(private readonly opts: OciAuthOptions | undefined) {}

  private userValid(user: string, password: string): boolean {
    const want = this.opts?.users[user];
    return want !== undefined && equal(want, password);
  }

  private identify(req: IncomingMessage): Identity | 'invalid' | undefined {
    const header = req.headers.authorization;
    if (!header) return undefined;
    const basic = basicCredentials(header);
    if (basic) {
      // An empty user name is how some clients say "anonymous" after a Basic challenge.
      if (basic.user === '' && basic.password === '') return undefined;
      return this.userValid(basic.user, basic.password) ? { user: basic.user, push: true } : 'invalid';
    }
    const bearer = /^Bearer\s+(\S+)\s*$/i.exec(header);
    if (bearer && this.opts?.scheme === 'bearer') return this.verifyToken(bearer[1] as string) ?? 'invalid';
    return 'invalid';
  }

  /** Throws UNAUTHORIZED (or FORBIDDEN) unless the request may do `need`. */
  check(req: IncomingMessage, need: Access): void {
    if (!this.opts) {
      if (need === 'push')
        throw new CairnError(ErrorCode.FORBIDDEN, 'pushing is disabled: the registry has no oci.auth users configured');
      return;
    }
    const who = this.identify(req);
    if (who === 'invalid') throw new CairnError(ErrorCode.UNAUTHORIZED, 'the credentials are not valid');
    if (need === 'pull' && !this.opts.protectReads) return;
    if (!who)
      throw new CairnError(ErrorCode.UNAUTHORIZED, `${need === 'push' ? 'pushing' : 'reading'} needs credentials`);
    if (need === 'push' && !who.push) throw new CairnError(ErrorCode.UNAUTHORIZED, 'the token does not allow pushing');
  }

  /**
   * The base endpoint answers 401 to a request without credentials whenever
   * users are configured: clients remember the challenge from here and only
   * then send credentials with their pushes.
   */
  checkBase(req: IncomingMessage): void {
    if (!this.opts) return;
    const who = this.identify(req);
    if (who === 'invalid') throw new CairnError(ErrorCode.UNAUTHORIZED, 'the credentials are not valid');
    if (!who && (this.opts.protectReads || req.headers.authorization === undefined))
      throw new CairnError(ErrorCode.UNAUTHORIZED, 'authentication required');
  }

  /** The WWW-Authenticate value for a 401, or undefined when no auth is configured. */
  challenge(req: IncomingMessage, repository: string | undefined, need: Access): string | undefined {
    if (!this.opts) return undefined;
    if (this.opts.scheme === 'basic') return `Basic realm="${SERVICE}"`;
    const host = /^[A-Za-z0-9.:[\]-]+$/.test(req.headers.host ?? '') ? (req.headers.host as string) : 'localhost';
    const scope = repository ? `,scope="repository:${repository}:${need === 'push' ? 'pull,push' : 'pull'}"` : '';
    return `Bearer realm="http://${host}${TOKEN_PATH}",service="${SERVICE}"${scope}`;
  }

  /**
   * The token endpoint (GET with Basic credentials, or the OAuth2 password
   * grant as a POST form). Anonymous callers get a pull-only token when reads are open.
   */
  issueToken(req: IncomingMessage, form: URLSearchParams | undefined): Record<string, unknown> {
    if (!this.opts || this.opts.scheme !== 'bearer')
      throw new CairnError(ErrorCode.NOT_FOUND, 'this registry does not issue tokens (auth scheme is not bearer)');
    let user: string | undefined;
    const creds = form
      ? form.get('grant_type') === 'password'
        ? { user: form.get('username') ?? '', password: form.get('password') ?? '' }
        : undefined
      : basicCredentials(req.headers.authorization);
    if (form && !creds)
      throw new CairnError(ErrorCode.INVALID_INPUT, 'token request: only grant_type=password is supported');
    if (creds && (creds.user !== '' || creds.password !== '')) {
      if (!this.userValid(creds.user, creds.password))
        throw new CairnError(ErrorCode.UNAUTHORIZED, 'the credentials are not valid');
      user = creds.user;
    } else if (this.opts.protectReads) {
      throw new CairnError(ErrorCode.UNAUTHORIZED, 'a token needs credentials');
    }
    const ttl = this.opts.tokenTtlSeconds;
    const claims = { sub: user ?? '', push: user !== undefined, exp: Math.floor(Date.now() / 1000) + ttl };
    const body = Buffer.from(JSON.stringify(claims)).toString('base64url');
    const token = `${body}.${createHmac('sha256', this.key).update(body).digest('base64url')}`;
    return { token, access_token: token, expires_in: ttl, issued_at: new Date().toISOString() };
  }

  private verifyToken(token: string): Identity | undefined {
    const [body, sig] = token.split('.');
    if (!body || !sig) return undefined;
    if (!equal(createHmac('sha256', this.key).update(body).digest('base64url'), sig)) return undefined;
    try {
      const c = JSON.parse(Buffer.from(body, 'base64url').toString('utf8')) as {
        sub?: string;
        push?: boolean;
        exp?: number;
      };
      if (typeof c.exp !== 'number' || c.exp < Date.now() / 1000) return undefined;
      return { user: c.sub || undefined, push: c.push === true };
    } catch {
      return undefined;
    }
  }
}
