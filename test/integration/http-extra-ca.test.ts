import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { get, createServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { EXTRA_CA_CERTS_ENV } from '../../src/fetch/extra-ca.js';
import { HttpPool, readBody } from '../../src/fetch/http-pool.js';
import { testTempDir } from '../fixtures/tmp.js';

describe('HttpPool with CAIRN_EXTRA_CA_CERTS', () => {
  it('trusts the extra CAs for https origins, as NODE_EXTRA_CA_CERTS would', async () => {
    const dir = await testTempDir();
    const key = join(dir, 'key.pem');
    const cert = join(dir, 'cert.pem');
    execFileSync(
      'openssl',
      [
        'req',
        '-x509',
        '-newkey',
        'rsa:2048',
        '-nodes',
        '-days',
        '1',
        '-subj',
        '/CN=127.0.0.1',
        '-addext',
        'subjectAltName=IP:127.0.0.1',
        '-keyout',
        key,
        '-out',
        cert,
      ],
      { stdio: 'ignore' },
    );
    const server = createServer({ key: readFileSync(key), cert: readFileSync(cert) }, (_req, res) => res.end('ok'));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const origin = `https://127.0.0.1:${(server.address() as AddressInfo).port}`;
    const before = process.env[EXTRA_CA_CERTS_ENV];
    process.env[EXTRA_CA_CERTS_ENV] = cert;
    try {
      // Node's own trust does not know the self-signed certificate.
      const plain = await new Promise<string>((resolve) =>
        get(`${origin}/`, () => resolve('trusted')).on('error', (e: NodeJS.ErrnoException) => resolve(String(e.code))),
      );
      expect(plain).toBe('DEPTH_ZERO_SELF_SIGNED_CERT');
      const pool = new HttpPool(new URL(origin), { connections: 1, idleTimeoutMs: 5000 });
      try {
        const res = await pool.request({ path: '/' });
        expect(res.statusCode).toBe(200);
        expect((await readBody(res.body)).toString()).toBe('ok');
      } finally {
        await pool.close();
      }
    } finally {
      if (before === undefined) delete process.env[EXTRA_CA_CERTS_ENV];
      else process.env[EXTRA_CA_CERTS_ENV] = before;
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
    }
  });
});
