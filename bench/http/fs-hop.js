#!/usr/bin/env node
// What one libuv thread-pool round trip costs on this machine, next to the same
// syscall made synchronously. cairn's file route makes four per request
// (open, fstat, read, close through node:fs/promises).
//
//   node bench/http/fs-hop.js FILE [N]

import { closeSync, fstatSync, openSync, read, readSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { performance } from 'node:perf_hooks';

const file = process.argv[2];
const N = Number(process.argv[3] ?? 20000);
if (!file) {
  process.stderr.write('usage: node bench/http/fs-hop.js FILE [N]\n');
  process.exit(2);
}
const buf = Buffer.alloc(4096);

async function measure(name, fn) {
  for (let i = 0; i < 500; i++) await fn(); // warm-up
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  for (let i = 0; i < N; i++) await fn();
  const wall = ((performance.now() - t0) * 1000) / N;
  const c = process.cpuUsage(cpu0);
  process.stdout.write(
    `${name.padEnd(44)} ${wall.toFixed(1).padStart(7)} µs wall  ${((c.user + c.system) / N).toFixed(1).padStart(7)} µs CPU (all threads)\n`,
  );
}

const fh = await open(file, 'r');
await measure('fs/promises fh.read (1 pool hop)', () => fh.read(buf, 0, 4096, 0));
await measure('fs.read callback (1 pool hop)', () => new Promise((r) => read(fh.fd, buf, 0, 4096, 0, r)));
await measure('fs.readSync (no hop)', () => readSync(fh.fd, buf, 0, 4096, 0));
await measure('open+stat+read+close, fs/promises (4 hops)', async () => {
  const h = await open(file, 'r');
  await h.stat();
  await h.read(buf, 0, 4096, 0);
  await h.close();
});
await measure('open+stat+read+close, sync (0 hops)', () => {
  const fd = openSync(file, 'r');
  fstatSync(fd);
  readSync(fd, buf, 0, 4096, 0);
  closeSync(fd);
});
await fh.close();
