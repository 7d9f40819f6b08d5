#!/usr/bin/env node
// A child of the read/throughput bench: for each file of a list under ROOT, in list order,
// lstat + open (read-only) + close (mode `statopen`, the default), or lstat + open + read to the
// end + close (mode `read`); prints {"files", "bytes", "seconds"} as JSON. Synchronous calls on
// purpose: one request at a time, as a program walking a tree does. Runs as its own process,
// never in the process that serves a FUSE mount.
//
//   node bench/mount/statopen.js ROOT LISTFILE [statopen|read]
import { closeSync, lstatSync, openSync, readFileSync, readSync } from 'node:fs';

const [root, list, mode = 'statopen'] = process.argv.slice(2);
if (mode !== 'statopen' && mode !== 'read') {
  process.stderr.write(`statopen.js: unknown mode ${JSON.stringify(mode)} (statopen or read)\n`);
  process.exit(64);
}
const paths = readFileSync(list, 'utf8')
  .split('\n')
  .filter(Boolean)
  .map((p) => `${root}/${p}`);
const buf = Buffer.allocUnsafe(1 << 20);
let bytes = 0;
const t0 = process.hrtime.bigint();
for (const p of paths) {
  lstatSync(p);
  const fd = openSync(p, 'r');
  if (mode === 'read') {
    for (let n; (n = readSync(fd, buf, 0, buf.length, null)) > 0;) bytes += n;
  }
  closeSync(fd);
}
const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
process.stdout.write(`${JSON.stringify({ files: paths.length, bytes, seconds })}\n`);
