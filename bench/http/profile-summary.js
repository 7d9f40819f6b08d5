#!/usr/bin/env node
// Summarizes a V8 .cpuprofile (from `node --cpu-prof`): self time by function
// and by script, and the share of idle/GC/program time.
//
//   node bench/http/profile-summary.js FILE.cpuprofile [--top 30]

import { readFileSync } from 'node:fs';

const file = process.argv[2];
if (!file) {
  process.stderr.write('usage: node bench/http/profile-summary.js FILE.cpuprofile [--top N]\n');
  process.exit(2);
}
const topIdx = process.argv.indexOf('--top');
const top = topIdx > 0 ? Number(process.argv[topIdx + 1]) : 30;
const prof = JSON.parse(readFileSync(file, 'utf8'));

/** @type {Map<number, any>} */
const nodes = new Map(prof.nodes.map((n) => [n.id, n]));
const self = new Map();
const dt = prof.timeDeltas;
for (let i = 0; i < prof.samples.length; i++) {
  const id = prof.samples[i];
  self.set(id, (self.get(id) ?? 0) + (dt[i] ?? 0));
}
const total = [...self.values()].reduce((a, b) => a + b, 0);

const byFn = new Map();
const byScript = new Map();
for (const [id, us] of self) {
  const cf = nodes.get(id).callFrame;
  const script = cf.url ? cf.url.replace(/^file:\/\//, '').replace(/^.*node_modules\//, 'node_modules/') : '(native)';
  const key = `${cf.functionName || '(anonymous)'}  ${script}:${cf.lineNumber + 1}`;
  byFn.set(key, (byFn.get(key) ?? 0) + us);
  const skey = cf.url ? script : cf.functionName || '(native)';
  byScript.set(skey, (byScript.get(skey) ?? 0) + us);
}
const pct = (us) => `${((100 * us) / total).toFixed(1).padStart(5)}%`;
process.stdout.write(`total sampled ${(total / 1e6).toFixed(2)} s\n\n== self time by function ==\n`);
for (const [k, us] of [...byFn].sort((a, b) => b[1] - a[1]).slice(0, top)) process.stdout.write(`${pct(us)}  ${k}\n`);
process.stdout.write('\n== self time by script ==\n');
for (const [k, us] of [...byScript].sort((a, b) => b[1] - a[1]).slice(0, top))
  process.stdout.write(`${pct(us)}  ${k}\n`);

// Inclusive time of selected frames (by function name substring).
const children = new Map(prof.nodes.map((n) => [n.id, n.children ?? []]));
const incl = new Map();
function walk(id) {
  let t = self.get(id) ?? 0;
  for (const c of children.get(id)) t += walk(c);
  incl.set(id, t);
  return t;
}
walk(prof.nodes[0].id);
const inclByFn = new Map();
for (const [id, us] of incl) {
  const cf = nodes.get(id).callFrame;
  const key = `${cf.functionName || '(anonymous)'}  ${(cf.url || '').replace(/^.*\//, '')}:${cf.lineNumber + 1}`;
  inclByFn.set(key, (inclByFn.get(key) ?? 0) + us);
}
process.stdout.write('\n== inclusive time by function (may double-count recursion) ==\n');
for (const [k, us] of [...inclByFn].sort((a, b) => b[1] - a[1]).slice(0, top))
  process.stdout.write(`${pct(us)}  ${k}\n`);
