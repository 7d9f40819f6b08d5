import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { chmod, mkdir, rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { CairnError, ErrorCode, isCairnError } from '../model/errors.js';

/**
 * The daemon's control channel: newline-delimited JSON over a Unix socket that
 * only root can open (mode 0600 in a 0700 directory). One request, one answer.
 */
export interface ControlRequest {
  op: string;
  [key: string]: unknown;
}

export type ControlAnswer = { ok: true; result: unknown } | { ok: false; error: { code: string; message: string } };

export type ControlHandler = (req: ControlRequest) => Promise<unknown>;

/** Where a daemon with state directory `stateDir` listens. */
export function controlSocketPath(stateDir: string): string {
  return join(stateDir, 'daemon.sock');
}

const MAX_REQUEST_BYTES = 1024 * 1024;

export async function serveControl(path: string, handler: ControlHandler): Promise<Server> {
  await mkdir(dirname(path), { recursive: true, mode: 0o700 });
  await rm(path, { force: true });
  const server = createServer((sock) => handleConnection(sock, handler));
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(path, () => {
      server.off('error', reject);
      resolve();
    });
  });
  await chmod(path, 0o600);
  return server;
}

function handleConnection(sock: Socket, handler: ControlHandler): void {
  let buf = '';
  sock.setEncoding('utf8');
  sock.on('error', () => sock.destroy());
  sock.on('data', (chunk: string) => {
    buf += chunk;
    if (buf.length > MAX_REQUEST_BYTES) {
      sock.end(
        `${JSON.stringify({ ok: false, error: { code: ErrorCode.INVALID_INPUT, message: 'request too large' } })}\n`,
      );
      return;
    }
    const nl = buf.indexOf('\n');
    if (nl < 0) return;
    const line = buf.slice(0, nl);
    buf = '';
    let req: ControlRequest;
    try {
      req = JSON.parse(line) as ControlRequest;
      if (typeof req.op !== 'string') throw new Error('no op');
    } catch {
      sock.end(
        `${JSON.stringify({ ok: false, error: { code: ErrorCode.INVALID_INPUT, message: 'request is not {"op": ...} JSON' } })}\n`,
      );
      return;
    }
    void answerOf(handler(req)).then((answer) => sock.end(`${JSON.stringify(answer)}\n`));
  });
}

/** The answer to a request, once its handling settles (errors keep their CairnError code). */
export function answerOf(handling: Promise<unknown>): Promise<ControlAnswer> {
  return handling.then(
    (result) => ({ ok: true, result: result ?? null }),
    (err: unknown) => ({
      ok: false,
      error: isCairnError(err)
        ? { code: err.code, message: err.message }
        : { code: ErrorCode.INTERNAL, message: err instanceof Error ? err.message : String(err) },
    }),
  );
}

/** The CairnError a failed answer stands for. */
export function errorOf(answer: { error: { code: string; message: string } }): CairnError {
  const code = (Object.values(ErrorCode) as string[]).includes(answer.error.code)
    ? (answer.error.code as ErrorCode)
    : ErrorCode.INTERNAL;
  return new CairnError(code, answer.error.message);
}

/** Sends one request to the daemon; UNAVAILABLE when no daemon listens. */
export function callControl(path: string, req: ControlRequest, timeoutMs = 120_000): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const sock = createConnection(path);
    let buf = '';
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new CairnError(ErrorCode.TIMEOUT, `daemon at ${path} did not answer within ${timeoutMs} ms`));
    }, timeoutMs);
    sock.setEncoding('utf8');
    sock.on('connect', () => sock.write(`${JSON.stringify(req)}\n`));
    sock.on('data', (c: string) => (buf += c));
    sock.on('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      const down = err.code === 'ENOENT' || err.code === 'ECONNREFUSED';
      reject(new CairnError(down ? ErrorCode.UNAVAILABLE : ErrorCode.INTERNAL, `daemon at ${path}: ${err.message}`));
    });
    sock.on('end', () => {
      clearTimeout(timer);
      let answer: ControlAnswer;
      try {
        answer = JSON.parse(buf) as ControlAnswer;
      } catch {
        reject(new CairnError(ErrorCode.INTERNAL, `daemon at ${path}: malformed answer`));
        return;
      }
      if (answer.ok) resolve(answer.result);
      else reject(errorOf(answer));
    });
  });
}
