#!/usr/bin/env node
// What `cairn mount --time-opens` costs: warm open+close of N small files on a mount that lets
// libfuse answer opens (the default) against one that routes them to cairn to time them.
// Both mounts are served by one daemon, from one registry; reps interleaved; medians.
//
//   node bench/mount/open-cost.js [--files 2000] [--reps 7]
import { execFile, spawnSync } from 'node:child_process';
import { promisify } from 'node:util';
import { closeSync, mkdirSync, openSync, rmSync } from 'node:fs';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { writeOciLayout } from '../../dist/image/layout-writer.js';
import { importImage } from '../../dist/registry/importer.js';
import { RegistryStore } from '../../dist/registry/store.js';
import { RegistryHttpServer } from '../../dist/registry/http/server.js';
import { createLogger } from '../../dist/util/log.js';
import { buildTar } from '../../dist/tar/writer.js';

const arg = (name, def) => {
  const i = process.argv.indexOf(name);
  return i >= 0 ? Number(process.argv[i + 1]) : def;
};
const FILES = arg('--files', 2000);
const REPS = arg('--reps', 7);
const CLI = fileURLToPath(new URL('../../bin/cairn.js', import.meta.url));
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

const work = await mkdtemp(join(tmpdir(), 'cairn-open-cost-'));
const state = join(work, 'state');
const mounts = [join(work, 'plain'), join(work, 'timed')];
// Asynchronous: this process serves the registry the daemon reads from.
const cairn = (...args) => promisify(execFile)(process.execPath, [CLI, ...args, '--state-dir', state]);
const entry = (name, type, content) => ({
  header: { name, type, mode: type === 'dir' ? 0o755 : 0o644, uid: 0, gid: 0, mtime: 1_700_000_000 },
  ...(content ? { content } : {}),
});
let server;
let store;
try {
  const files = [entry('f', 'dir')];
  for (let i = 0; i < FILES; i++) files.push(entry(`f/${i}`, 'file', Buffer.from(`file ${i}\n`)));
  const layout = join(work, 'layout');
  await writeOciLayout(layout, [{ ref: 'x', layers: [{ tar: buildTar(files), compression: 'none' }], config: {} }]);
  store = await RegistryStore.open(join(work, 'root'));
  await importImage(store, `${layout}:x`, 'bench/open:1');
  server = new RegistryHttpServer(store, createLogger({ level: 'error', component: 'bench' }));
  const { port } = await server.listen('127.0.0.1', 0);
  for (const m of mounts) mkdirSync(m);
  await cairn('mount', `http://127.0.0.1:${port}`, 'bench/open:1', mounts[0]);
  await cairn('mount', `http://127.0.0.1:${port}`, 'bench/open:1', mounts[1], '--time-opens');
  const pass = (m) => {
    const t = performance.now();
    for (let i = 0; i < FILES; i++) closeSync(openSync(join(m, 'f', String(i)), 'r'));
    return performance.now() - t;
  };
  for (const m of mounts) pass(m); // names and attributes into the kernel's caches
  const ms = [[], []];
  for (let r = 0; r < REPS; r++) for (const k of r % 2 ? [1, 0] : [0, 1]) ms[k].push(pass(mounts[k]));
  const [plain, timed] = ms.map(median);
  const us = (x) => ((x * 1000) / FILES).toFixed(1);
  process.stdout.write(
    `warm open+close of ${FILES} files, median of ${REPS} (load ${(await import('node:os')).loadavg()[0].toFixed(2)}):\n` +
      `  default (libfuse answers opens): ${plain.toFixed(1)} ms = ${us(plain)} us/open\n` +
      `  --time-opens (cairn times them): ${timed.toFixed(1)} ms = ${us(timed)} us/open\n` +
      `  ratio ${(timed / plain).toFixed(2)}x, +${us(timed - plain)} us per open\n`,
  );
} finally {
  for (const m of mounts) spawnSync(process.execPath, [CLI, 'unmount', m, '--state-dir', state]);
  await server?.close();
  store?.close();
  rmSync(work, { recursive: true, force: true });
}
