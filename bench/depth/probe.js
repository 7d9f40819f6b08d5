#!/usr/bin/env node
// The depth bench's prober, a child process: reads one JSON request per line on stdin,
// {"paths": [...]}, opens (read-only) and closes each path in order with synchronous calls
// (one request at a time, as a program does), and answers one JSON line on stdout:
// {"ms": total} or {"error": "..."}. It lives as long as its stdin, so that the time it
// reports is the opens' and not a process start-up; it never serves a FUSE mount.
import { closeSync, openSync } from 'node:fs';
import { createInterface } from 'node:readline';

for await (const line of createInterface({ input: process.stdin })) {
  if (!line) continue;
  let reply;
  try {
    const { paths } = JSON.parse(line);
    const t0 = process.hrtime.bigint();
    for (const p of paths) closeSync(openSync(p, 'r'));
    reply = { ms: Number(process.hrtime.bigint() - t0) / 1e6 };
  } catch (e) {
    reply = { error: e instanceof Error ? e.message : String(e) };
  }
  process.stdout.write(`${JSON.stringify(reply)}\n`);
}
