#!/usr/bin/env node
// Start-up cost of `cairn mount` / `cairn unmount` (the CLI and the daemon it spawns), apart
// from the daemon's mount work: a small synthetic image (default 1000 entries) so that the
// fixed costs dominate. Compares one or more builds, interleaved run by run:
//
//   node bench/mount/startup.js [--runs 9] [--entries 1000] [--builds DIR,DIR...]
//
// A build DIR holds dist/, bin/ and package.json (default: this repository); each is
// snapshotted first (so a rebuild during the run cannot mix builds). Per build and run:
//   cold   `cairn mount` with a fresh --state-dir (it spawns the daemon): CLI ms, first byte
//          (CLI + a child `head -c1`), `cairn unmount` ms (the daemon then exits);
//   warm   the same against a `cairn daemon` of that build started beforehand (not timed);
//   plus `node -e 0` and `cairn --version`.
// Prints medians (min–max) and /proc/loadavg before and after. Needs root (FUSE).
import { mkdtempSync } from 'node:fs';
import { mkdir, rm } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { option } from '../lib/args.js';
import {
  CAIRN,
  Cleanup,
  cleanupOnSignals,
  daemonPid,
  forceUnmount,
  loadAverage,
  now,
  removeTree,
  run,
  runChecked,
  setCairnRoot,
  snapshotBuild,
  startDaemon,
  startRegistry,
  summary,
  waitExit,
} from '../lib/bench.js';
import { syntheticLayers, writeLayout } from './synth.js';

const RUNS = Number(option('--runs', '9'));
const ENTRIES = Number(option('--entries', '1000'));
const builds = option('--builds', '')
  .split(',')
  .filter((b) => b !== '')
  .map((b) => resolve(b));

if (process.getuid?.() !== 0) {
  process.stderr.write('startup bench: needs root (FUSE)\n');
  process.exit(77);
}

const cleanup = new Cleanup();
cleanupOnSignals(cleanup);
const work = mkdtempSync('/var/tmp/cairn-bench-startup-');
const shm = mkdtempSync('/dev/shm/cairn-bench-startup-');
cleanup.add('remove work dirs', async () => {
  await removeTree(work);
  await removeTree(shm);
});
const log = (s) => process.stderr.write(`[startup] ${s}\n`);

try {
  // Snapshots: the repository's own build (snapshotBuild), or copies of the given builds.
  const roots = [];
  if (builds.length === 0) {
    await snapshotBuild(work);
    roots.push({ name: 'this', root: CAIRN.replace(/\/bin\/cairn\.js$/, '') });
  } else {
    for (const [i, b] of builds.entries()) {
      const snap = join(work, `build-${i}`);
      await mkdir(snap);
      await runChecked('cp', ['-a', join(b, 'dist'), join(b, 'bin'), join(b, 'package.json'), snap]);
      await runChecked('ln', ['-s', join(b, 'node_modules'), join(snap, 'node_modules')]);
      roots.push({ name: b, root: snap });
    }
  }
  setCairnRoot(roots[0].root); // the registry server, and daemonPid's control client
  const dist = join(roots[0].root, 'dist');
  const { buildTar } = await import(join(dist, 'tar/writer.js'));
  const { importImage } = await import(join(dist, 'registry/importer.js'));
  const { RegistryStore } = await import(join(dist, 'registry/store.js'));
  const regRoot = join(shm, 'registry');
  const store = await RegistryStore.open(regRoot);
  const s = syntheticLayers(ENTRIES, { buildTar, seed: ENTRIES });
  const ref = `synth/e${ENTRIES}:1`;
  try {
    const layout = join(shm, 'layout');
    await writeLayout(dist, layout, ref, s.tars);
    await importImage(store, `${layout}:${ref}`, ref);
  } finally {
    store.close();
  }
  const reg = await startRegistry(cleanup, regRoot, join(work, 'registry.log'));
  log(`registry at ${reg.url}, image ${ref} (${ENTRIES} entries), probe ${s.probe}`);

  const cli = (root, args, opts) => run(process.execPath, [join(root, 'bin/cairn.js'), ...args], opts);
  const samples = roots.map(() => ({
    node: [],
    version: [],
    coldMount: [],
    coldFirstByte: [],
    coldUnmount: [],
    warmMount: [],
    warmFirstByte: [],
    warmUnmount: [],
  }));
  const warm = [];
  const first = roots[0].root;
  for (const [i, b] of roots.entries()) {
    // startDaemon runs the CAIRN of bench.js: point it at this build for the call.
    setCairnRoot(b.root);
    const stateDir = join(work, `state-warm-${i}`);
    warm.push({ stateDir, ...(await startDaemon(cleanup, stateDir, ['--log-level', 'warn'])) });
  }
  setCairnRoot(first);
  const loadBefore = loadAverage();

  /** One mount + first byte + unmount; returns its figures. */
  const once = async (root, stateDir, mnt, cold) => {
    await mkdir(mnt, { recursive: true });
    const t0 = now();
    const m = await cli(root, ['mount', reg.url, ref, mnt, '--state-dir', stateDir, '--json'], { timeoutMs: 60_000 });
    if (m.code !== 0) throw new Error(`cairn mount: ${m.code} ${m.stderr}`);
    const pid = cold ? await daemonPid(stateDir) : undefined;
    const h = await run('head', ['-c1', join(mnt, s.probe)], { timeoutMs: 30_000 });
    const firstByte = now() - t0;
    if (h.code !== 0 || h.stdoutBytes !== 1) throw new Error(`head -c1 ${s.probe}: ${h.code} ${h.stderr}`);
    const u = await cli(root, ['unmount', mnt, '--state-dir', stateDir], { timeoutMs: 30_000 });
    if (u.code !== 0) throw new Error(`cairn unmount: ${u.code} ${u.stderr}`);
    await forceUnmount(mnt);
    if (pid !== undefined) await waitExit(pid, 10_000);
    await rm(mnt, { recursive: true, force: true });
    return { mount: m.ms, firstByte, unmount: u.ms };
  };

  for (let r = 0; r < RUNS; r++) {
    const order = roots.map((_, i) => (i + r) % roots.length);
    for (const i of order) {
      const root = roots[i].root;
      const x = samples[i];
      x.node.push((await runChecked(process.execPath, ['-e', '0'])).ms);
      x.version.push((await runChecked(process.execPath, [join(root, 'bin/cairn.js'), '--version'])).ms);
      for (const mode of r % 2 ? ['warm', 'cold'] : ['cold', 'warm']) {
        const cold = mode === 'cold';
        const stateDir = cold ? join(work, `state-${i}-${r}`) : warm[i].stateDir;
        const f = await once(root, stateDir, join(work, `mnt-${i}-${mode}-${r}`), cold);
        x[`${mode}Mount`].push(f.mount);
        x[`${mode}FirstByte`].push(f.firstByte);
        x[`${mode}Unmount`].push(f.unmount);
      }
    }
    log(`run ${r + 1}/${RUNS} done`);
  }
  const loadAfter = loadAverage();

  const fmt = (xs) => {
    const t = summary(xs);
    return `${t.median.toFixed(0)} (${t.min.toFixed(0)}–${t.max.toFixed(0)})`;
  };
  const rows = [
    ['node -e 0', 'node'],
    ['cairn --version', 'version'],
    ['cold: cairn mount', 'coldMount'],
    ['cold: first byte', 'coldFirstByte'],
    ['cold: cairn unmount', 'coldUnmount'],
    ['warm: cairn mount', 'warmMount'],
    ['warm: first byte', 'warmFirstByte'],
    ['warm: cairn unmount', 'warmUnmount'],
  ];
  const lines = [
    `cairn start-up, ${ENTRIES} entries, ${RUNS} runs interleaved, median (min–max) ms`,
    `load before ${loadBefore}, after ${loadAfter}`,
    `| | ${roots.map((b) => b.name).join(' | ')} |`,
    `| --- | ${roots.map(() => '---').join(' | ')} |`,
    ...rows.map(([label, key]) => `| ${label} | ${samples.map((x) => fmt(x[key])).join(' | ')} |`),
  ];
  process.stdout.write(`${lines.join('\n')}\n`);
} finally {
  await cleanup.run();
}
