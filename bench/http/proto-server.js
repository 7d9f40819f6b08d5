#!/usr/bin/env node
// A copy of the file route of src/registry/http/server.ts (plain JS) with
// switchable changes, to measure what would make it faster. Used by
// `node bench/http/run.js --proto VARIANT,...`; not part of cairn.
//
//   node bench/http/proto-server.js --root REGISTRY_ROOT --port N --variant TOKENS
//
// TOKENS joined by '+':
//   copy        the current server as is: route loop, prom-client metrics per request,
//               open + fstat + read + close per request, pipeline(createReadStream 1 MiB)
//   nometrics   no prom-client counter/histogram per request
//   cheapmetrics  same metrics, but prom-client label children cached (no label hashing per request)
//   fdcache     keep open handles and sizes of recently used blobs (LRU, 512 entries,
//               closed after 30 s unused): one fs call (read) per small request
//   syncsmall   small files read with fs.readSync on the cached fd (no thread-pool hop)
//   memcache    small files' bytes kept in an LRU (64 MiB): no fs call at all when hot
//   workersN    N processes (node:cluster) sharing the listening socket
//   hwmK        read-stream highWaterMark of K KiB for large files (default 1024)
//   readloop    large files: own loop of fh.read into 2 reusable buffers + res.write/drain
//   syncall     small files: openSync + fstatSync + readSync + closeSync on the event loop
//   bare        floor of node:http: small blobs preloaded at start, no routing/metrics/fs
//   pool16      UV_THREADPOOL_SIZE=16 (set before the first fs call)

import cluster from 'node:cluster';
import { createServer } from 'node:http';
import { open } from 'node:fs/promises';
import { closeSync, fstatSync, openSync, readdirSync, readFileSync, readSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { performance } from 'node:perf_hooks';
import { Counter, Histogram, Registry } from 'prom-client';

const args = Object.fromEntries(
  process.argv.slice(2).reduce((acc, a, i, all) => (a.startsWith('--') ? [...acc, [a.slice(2), all[i + 1]]] : acc), []),
);
const root = args.root;
const port = Number(args.port);
const tokens = new Set(String(args.variant ?? 'copy').split('+'));
if (!root || !port) {
  process.stderr.write('usage: proto-server.js --root DIR --port N --variant TOKENS\n');
  process.exit(2);
}
const has = (t) => tokens.has(t);
const numToken = (prefix) => {
  for (const t of tokens)
    if (t.startsWith(prefix) && /^\d+$/.test(t.slice(prefix.length))) return Number(t.slice(prefix.length));
  return undefined;
};
const workers = numToken('workers') ?? 1;
const hwm = (numToken('hwm') ?? 1024) * 1024;
if (has('pool16')) process.env.UV_THREADPOOL_SIZE = '16';

if (workers > 1 && cluster.isPrimary) {
  for (let i = 0; i < workers; i++) cluster.fork();
  const stop = () => {
    for (const w of Object.values(cluster.workers ?? {})) w?.kill('SIGTERM');
    process.exit(0);
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
} else {
  serve();
}

function serve() {
  const IMMUTABLE = 'public, max-age=31536000, immutable';
  const SMALL = 256 * 1024;
  const blobDir = join(root, 'blobs', 'sha256');
  const DIGEST = /^sha256:[0-9a-f]{64}$/;

  const registry = new Registry();
  const requests = new Counter({
    name: 'req_total',
    help: 'h',
    labelNames: ['route', 'method', 'status'],
    registers: [registry],
  });
  const duration = new Histogram({
    name: 'dur_seconds',
    help: 'h',
    labelNames: ['route'],
    buckets: [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [registry],
  });
  const bytesSent = new Counter({ name: 'bytes_total', help: 'h', registers: [registry] });
  const metrics = !has('nometrics');
  const counterChildren = new Map();
  const durationChildren = new Map();

  /** LRU of open handles: digest -> { fh, size, last } */
  const fds = new Map();
  const FD_MAX = 512;
  if (has('fdcache')) {
    setInterval(() => {
      const old = performance.now() - 30_000;
      for (const [k, v] of fds) {
        if (v.last < old && v.users === 0) {
          fds.delete(k);
          void v.fh.close();
        }
      }
    }, 5000).unref();
  }
  async function acquire(digest, path) {
    if (!has('fdcache')) {
      const fh = await open(path, 'r');
      const size = (await fh.stat()).size;
      return { fh, size, release: () => fh.close(), owned: true };
    }
    let e = fds.get(digest);
    if (e) {
      fds.delete(digest);
      fds.set(digest, e); // most recent last
    } else {
      const fh = await open(path, 'r');
      const size = (await fh.stat()).size;
      const again = fds.get(digest);
      if (again) {
        void fh.close();
        e = again;
      } else {
        e = { fh, size, last: 0, users: 0 };
        fds.set(digest, e);
        for (const [k, v] of fds) {
          if (fds.size <= FD_MAX) break;
          if (v.users === 0) {
            fds.delete(k);
            void v.fh.close();
          }
        }
      }
    }
    e.users++;
    e.last = performance.now();
    const entry = e;
    return {
      fh: entry.fh,
      size: entry.size,
      release: async () => {
        entry.users--;
      },
      owned: false,
    };
  }

  /** LRU of small contents: digest -> Buffer */
  const mem = new Map();
  let memBytes = 0;
  const MEM_MAX = 64 * 1024 * 1024;

  const routes = [
    {
      name: 'health',
      pattern: /^\/(?:healthz|api\/v1\/health)$/,
      handler: (_q, s) => sendJson(s, 200, { status: 'ok' }),
    },
    { name: 'metrics', pattern: /^\/metrics$/, handler: async (_q, s) => s.end(await registry.metrics()) },
    { name: 'repositories', pattern: /^\/api\/v1\/repositories$/, handler: notFound },
    { name: 'tags', pattern: /^\/api\/v1\/repositories\/([a-z0-9][a-z0-9._/-]*)\/tags$/, handler: notFound },
    {
      name: 'image',
      pattern: /^\/api\/v1\/repositories\/([a-z0-9][a-z0-9._/-]*)\/images\/([^/]+)$/,
      handler: notFound,
    },
    { name: 'image-digest', pattern: /^\/api\/v1\/images\/([^/]+)$/, handler: notFound },
    { name: 'recipe', pattern: /^\/api\/v1\/recipes\/([^/]+)$/, handler: notFound },
    { name: 'file', pattern: /^\/api\/v1\/files\/([^/]+)$/, handler: file },
  ];

  function sendJson(res, status, body) {
    const data = Buffer.from(JSON.stringify(body));
    res.writeHead(status, { 'content-type': 'application/json', 'content-length': data.byteLength });
    res.end(data);
  }
  function notFound(_q, s) {
    sendJson(s, 404, { error: 'not found' });
  }

  async function handle(req, res) {
    const started = performance.now();
    const path = (req.url ?? '/').split('?')[0];
    let route;
    let params = [];
    for (const r of routes) {
      const m = r.pattern.exec(path);
      if (m) {
        route = r;
        params = m.slice(1);
        break;
      }
    }
    const name = route?.name ?? 'unknown';
    if (metrics && has('cheapmetrics')) {
      res.once('finish', () => {
        // Label children looked up once per label set, not hashed per request.
        const key = `${name}|${req.method}|${res.statusCode}`;
        let c = counterChildren.get(key);
        if (!c) counterChildren.set(key, (c = requests.labels(name, req.method ?? '', String(res.statusCode))));
        c.inc();
        let d = durationChildren.get(name);
        if (!d) durationChildren.set(name, (d = duration.labels(name)));
        d.observe((performance.now() - started) / 1000);
      });
    } else if (metrics) {
      res.once('finish', () => {
        requests.inc({ route: name, method: req.method ?? '', status: String(res.statusCode) });
        duration.observe({ route: name }, (performance.now() - started) / 1000);
      });
    }
    try {
      if (!route) return notFound(req, res);
      await route.handler(req, res, params);
    } catch (err) {
      if (res.headersSent) res.destroy();
      else sendJson(res, err?.code === 'ENOENT' ? 404 : 500, { error: String(err?.message ?? err) });
    }
  }

  async function file(req, res, [raw = '']) {
    const digest = decodeURIComponent(raw);
    if (!DIGEST.test(digest)) return sendJson(res, 400, { error: 'bad digest' });
    const hex = digest.slice(7);
    const etag = `"${digest}"`;
    const headers = {
      'content-type': 'application/octet-stream',
      'cache-control': IMMUTABLE,
      etag,
      'accept-ranges': 'bytes',
    };
    // (Range handling of the real server omitted: the bench sends none.)
    if (has('memcache')) {
      const buf = mem.get(digest);
      if (buf) {
        mem.delete(digest);
        mem.set(digest, buf);
        headers['content-length'] = buf.length;
        res.writeHead(200, headers);
        res.end(req.method === 'HEAD' ? undefined : buf);
        if (metrics) bytesSent.inc(buf.length);
        return;
      }
    }
    if (has('syncall')) {
      // Every fs call synchronous on the event loop: no thread-pool hop at all.
      const fd = openSync(join(blobDir, hex.slice(0, 2), hex), 'r');
      try {
        const size = fstatSync(fd).size;
        if (size <= SMALL) {
          const buf = Buffer.allocUnsafe(size);
          if (readSync(fd, buf, 0, size, 0) !== size) throw new Error('short read');
          headers['content-length'] = size;
          res.writeHead(200, headers);
          res.end(req.method === 'HEAD' ? undefined : buf);
          if (metrics) bytesSent.inc(size);
          return;
        }
      } finally {
        closeSync(fd);
      }
    }
    const h = await acquire(digest, join(blobDir, hex.slice(0, 2), hex));
    let handedOff = false;
    try {
      if (req.headers['if-none-match'] === etag) {
        res.writeHead(304, headers);
        res.end();
        return;
      }
      const length = h.size;
      headers['content-length'] = length;
      res.writeHead(200, headers);
      if (req.method === 'HEAD' || length === 0) {
        res.end();
        return;
      }
      if (length <= SMALL) {
        const buf = Buffer.allocUnsafe(length);
        let n;
        if (has('syncsmall')) n = readSync(h.fh.fd, buf, 0, length, 0);
        else n = (await h.fh.read(buf, 0, length, 0)).bytesRead;
        if (n !== length) throw new Error('short read');
        if (has('memcache')) {
          mem.set(digest, buf);
          memBytes += length;
          for (const [k, v] of mem) {
            if (memBytes <= MEM_MAX) break;
            mem.delete(k);
            memBytes -= v.length;
          }
        }
        res.end(buf);
      } else if (has('readloop')) {
        await readLoop(h.fh, res, 0, length);
      } else if (h.owned) {
        handedOff = true;
        await pipeline(h.fh.createReadStream({ start: 0, end: length - 1, highWaterMark: hwm }), res);
      } else {
        // A shared handle must not be closed by the stream.
        await pipeline(h.fh.createReadStream({ start: 0, end: length - 1, highWaterMark: hwm, autoClose: false }), res);
      }
      if (metrics) bytesSent.inc(length);
    } finally {
      if (!handedOff) await h.release();
    }
  }

  /** Reads into two alternating buffers, writing one while the next is read. */
  async function readLoop(fh, res, start, length) {
    const bufs = [Buffer.allocUnsafe(hwm), Buffer.allocUnsafe(hwm)];
    let pos = start;
    const end = start + length;
    let i = 0;
    let pending = fh.read(bufs[0], 0, Math.min(hwm, end - pos), pos);
    while (pos < end) {
      const { bytesRead } = await pending;
      if (bytesRead <= 0) throw new Error('short read');
      const chunk = bufs[i].subarray(0, bytesRead);
      pos += bytesRead;
      i ^= 1;
      if (pos < end) pending = fh.read(bufs[i], 0, Math.min(hwm, end - pos), pos);
      // The next read may only reuse a buffer once its write has been flushed.
      const flushed = new Promise((resolve, reject) => {
        const ok = res.write(chunk, (err) => (err ? reject(err) : resolve()));
        void ok;
      });
      await flushed;
      if (res.destroyed) throw new Error('client went away');
    }
    res.end();
  }

  if (has('bare')) {
    // Floor of node:http: every small blob preloaded, no routing, no metrics, no fs.
    for (const shard of readdirSync(blobDir)) {
      for (const name of readdirSync(join(blobDir, shard))) {
        const p = join(blobDir, shard, name);
        if (statSync(p).size <= SMALL) mem.set(`sha256:${name}`, readFileSync(p));
      }
    }
  }
  const bareHandler = (req, res) => {
    const buf = mem.get(req.url.slice(14));
    if (!buf) return void handle(req, res);
    res.writeHead(200, {
      'content-type': 'application/octet-stream',
      'cache-control': IMMUTABLE,
      etag: `"${req.url.slice(14)}"`,
      'accept-ranges': 'bytes',
      'content-length': buf.length,
    });
    res.end(buf);
  };
  const server = createServer(
    { keepAliveTimeout: 30_000 },
    has('bare') ? bareHandler : (req, res) => void handle(req, res),
  );
  server.listen(port, '127.0.0.1');
  process.on('SIGTERM', () => process.exit(0));
  process.on('SIGINT', () => process.exit(0));
}
