/**
 * Keep-alive HTTP GETs to one origin on node:http (node:https for https URLs).
 * cairn's clients need little more than a pool of connections and an
 * AbortSignal per request; node:http does that and is part of Node's start-up
 * snapshot, where loading undici cost a daemon about 230 ms of CPU before its
 * first mount (bench/results/mount).
 */
import http, { type IncomingHttpHeaders, type IncomingMessage } from 'node:http';
import { CairnError, ErrorCode } from '../model/errors.js';
import { caWithExtra } from './extra-ca.js';

export interface HttpResponse {
  statusCode: number;
  headers: IncomingHttpHeaders;
  /** The body as a stream; destroy it to give up on the rest (the connection is then closed). */
  body: IncomingMessage;
}

export interface HttpPoolOptions {
  /** Most connections open to the origin at once (more requests queue). */
  connections: number;
  /**
   * A request whose socket stays silent this long fails (a backstop: callers
   * bound their requests with their own timers and signals).
   */
  idleTimeoutMs: number;
}

/** The `code` of the error of a request that hit the pool's idle backstop. */
export const IDLE_TIMEOUT_CODE = 'CAIRN_HTTP_IDLE_TIMEOUT';

interface Client {
  request: typeof http.request;
  agent: http.Agent;
}

export class HttpPool {
  private readonly client: Promise<Client>;
  private closed = false;

  constructor(
    readonly origin: URL,
    private readonly opts: HttpPoolOptions,
  ) {
    if (!Number.isSafeInteger(opts.connections) || opts.connections < 1) {
      throw new CairnError(ErrorCode.INVALID_OPTION, 'HttpPool: option connections must be a positive integer');
    }
    if (!Number.isSafeInteger(opts.idleTimeoutMs) || opts.idleTimeoutMs < 1) {
      throw new CairnError(ErrorCode.INVALID_OPTION, 'HttpPool: option idleTimeoutMs must be a positive integer');
    }
    const agentOpts = { keepAlive: true, maxSockets: opts.connections };
    // node:https (and TLS with it) is loaded only for an https registry.
    this.client =
      origin.protocol === 'https:'
        ? Promise.all([import('node:https'), caWithExtra()]).then(([m, ca]) => ({
            request: m.request,
            agent: new m.Agent({ ...agentOpts, ...(ca ? { ca } : {}) }),
          }))
        : Promise.resolve({ request: http.request, agent: new http.Agent(agentOpts) });
  }

  /** GETs `path` (or sends `body` with `method`); resolves once the status and headers are in. */
  async request(req: {
    path: string;
    headers?: Record<string, string>;
    signal?: AbortSignal;
    method?: 'GET' | 'POST';
    body?: Buffer;
  }): Promise<HttpResponse> {
    const { request, agent } = await this.client;
    if (this.closed) throw new Error('the HTTP pool is closed');
    return new Promise<HttpResponse>((resolve, reject) => {
      const r = request(
        {
          protocol: this.origin.protocol,
          hostname: this.origin.hostname,
          port: this.origin.port,
          path: req.path,
          method: req.method ?? 'GET',
          headers: req.body ? { ...req.headers, 'content-length': String(req.body.byteLength) } : req.headers,
          agent,
          timeout: this.opts.idleTimeoutMs,
          ...(req.signal ? { signal: req.signal } : {}),
        },
        (res) => resolve({ statusCode: res.statusCode ?? 0, headers: res.headers, body: res }),
      );
      r.on('timeout', () => {
        const err = new Error(`no bytes for ${this.opts.idleTimeoutMs} ms`) as NodeJS.ErrnoException;
        err.code = IDLE_TIMEOUT_CODE;
        r.destroy(err);
      });
      r.on('error', reject);
      r.end(req.body);
    });
  }

  /** Closes every connection, in use or idle (requests in flight fail); safe to call twice. */
  async close(): Promise<void> {
    this.closed = true;
    (await this.client).agent.destroy();
  }
}

/** Reads a whole body. */
export async function readBody(body: AsyncIterable<Buffer>): Promise<Buffer> {
  const parts: Buffer[] = [];
  let total = 0;
  for await (const piece of body) {
    parts.push(piece);
    total += piece.length;
  }
  return parts.length === 1 ? (parts[0] as Buffer) : Buffer.concat(parts, total);
}
