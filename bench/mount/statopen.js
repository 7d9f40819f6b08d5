#!/usr/bin/env node
// A child of the read bench: lstat, open (read-only) and close each file of a list under ROOT,
// in list order, and print {"files", "seconds"} as JSON. Synchronous calls on purpose: one
// request at a time, as a program walking a tree does. Runs as its own process, never in the
// process that serves a FUSE mount.
//
//   node bench/mount/statopen.js ROOT LISTFILE
import { closeSync, lstatSync, openSync, readFileSync } from 'node:fs';

const [root, list] = process.argv.slice(2);
const paths = readFileSync(list, 'utf8')
  .split('\n')
  .filter(Boolean)
  .map((p) => `${root}/${p}`);
const t0 = process.hrtime.bigint();
for (const p of paths) {
  lstatSync(p);
  closeSync(openSync(p, 'r'));
}
const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
process.stdout.write(`${JSON.stringify({ files: paths.length, seconds })}\n`);
