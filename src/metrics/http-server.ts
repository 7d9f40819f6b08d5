import { createServer, type Server } from 'node:http';
import { CairnError, ErrorCode } from '../model/errors.js';

/** What the listener serves: Prometheus text and its content type (an FsMetrics, a prom-client Registry...). */
export interface MetricsSource {
  text(): Promise<string>;
  readonly contentType: string;
}

export interface MetricsServer {
  /** e.g. `http://127.0.0.1:9464/metrics` (the port the system gave, when 0 was asked). */
  readonly url: string;
  readonly host: string;
  readonly port: number;
  /** Stops listening; safe to call twice. */
  close(): Promise<void>;
}

/**
 * Serves `GET /metrics` (and HEAD) with the source's Prometheus text; 404
 * elsewhere, 405 for other methods. Rejects with UNAVAILABLE naming the
 * address when it cannot listen (in use, not a local address).
 */
export async function serveMetrics(source: MetricsSource, host: string, port: number): Promise<MetricsServer> {
  const server: Server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (path !== '/metrics') {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found: metrics are at /metrics\n');
      return;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD', 'content-type': 'text/plain' }).end('method not allowed\n');
      return;
    }
    source.text().then(
      (text) => {
        res.writeHead(200, { 'content-type': source.contentType });
        res.end(req.method === 'HEAD' ? undefined : text);
      },
      (err: unknown) => {
        res.writeHead(500, { 'content-type': 'text/plain' });
        res.end(`metrics failed: ${err instanceof Error ? err.message : String(err)}\n`);
      },
    );
  });
  server.keepAliveTimeout = 5000;
  const addr = await new Promise<{ address: string; port: number }>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) =>
      reject(
        new CairnError(ErrorCode.UNAVAILABLE, `--metrics ${host}:${port}: cannot listen: ${err.code ?? err.message}`),
      ),
    );
    server.listen(port, host, () => {
      const a = server.address();
      if (a && typeof a === 'object') resolve(a);
      else reject(new CairnError(ErrorCode.INTERNAL, `--metrics ${host}:${port}: the server has no address`));
    });
  });
  const shown = addr.address.includes(':') ? `[${addr.address}]` : addr.address;
  let closing: Promise<void> | undefined;
  return {
    url: `http://${shown}:${addr.port}/metrics`,
    host: addr.address,
    port: addr.port,
    close() {
      closing ??= new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
      return closing;
    },
  };
}
