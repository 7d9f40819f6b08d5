import type { Command } from 'commander';

/** The registry's modules, loaded when a registry command runs (not at CLI start-up). */
async function registryModules() {
  const [{ RegistryStore }, { registryStats }, { collectGarbage }, { RegistryHttpServer }, { RegistryMetrics }] =
    await Promise.all([
      import('../../registry/store.js'),
      import('../../registry/stats.js'),
      import('../../registry/gc.js'),
      import('../../registry/http/server.js'),
      import('../../registry/http/metrics.js'),
    ]);
  return { RegistryStore, registryStats, collectGarbage, RegistryHttpServer, RegistryMetrics };
}
import { createLogger } from '../../util/log.js';
import { formatBytes } from '../progress.js';
import { intOption, output } from '../output.js';

export function registerRegistry(program: Command): void {
  const registry = program.command('registry').description('Run and inspect the deduplicating registry');

  registry
    .command('serve')
    .description(
      'Serve the registry over HTTP (OCI distribution API under /v2, native API under /api/v1, /healthz, /metrics)',
    )
    .option('--root <dir>', 'registry store directory (env CAIRN_ROOT)')
    .option('--listen <host:port>', 'address to listen on (env CAIRN_LISTEN)', undefined)
    .option('--config <file>', 'JSON config file with root, listen, logLevel, oci (auth, limits; see README)')
    .option('--log-level <level>', 'debug|info|warn|error|silent (env CAIRN_LOG_LEVEL)')
    .option('--workers <n>', 'server processes sharing the socket: a number or auto, one per CPU (env CAIRN_WORKERS)')
    .option(
      '--no-read-profiles',
      "refuse daemons' read profiles (POST /api/v1/images/D/profile); kept ones are still served",
    )
    .action(
      async (opts: {
        root?: string;
        listen?: string;
        config?: string;
        logLevel?: string;
        workers?: string;
        readProfiles: boolean;
      }) => {
        const { resolveServeConfig } = await import('../../registry/config.js');
        const cfg = resolveServeConfig(opts);
        const cluster = cfg.workers > 1 ? await import('../../registry/http/cluster.js') : undefined;
        const worker = cluster?.isClusterWorker() ?? false;
        const log = createLogger({
          level: cfg.logLevel,
          component: worker ? `registry-worker-${process.pid}` : 'registry',
        });
        const announce = (addr: { host: string; port: number }): void =>
          log.info('listening', {
            url: `http://${addr.host.includes(':') ? `[${addr.host}]` : addr.host}:${addr.port}`,
            root: cfg.root,
            workers: cfg.workers,
          });
        if (cluster && !worker) {
          await cluster.runClusterPrimary({ workers: cfg.workers, log, onListening: announce });
          return;
        }
        const m = await registryModules();
        const store = await m.RegistryStore.open(cfg.root);
        const metrics = new m.RegistryMetrics();
        const server = new m.RegistryHttpServer(store, log, {
          metrics,
          metricsText: cluster?.workerMetrics(metrics.registry),
          oci: cfg.oci,
          acceptReadProfiles: opts.readProfiles,
        });
        const addr = await server.listen(cfg.host, cfg.port);
        if (!worker) announce(addr);
        await new Promise<void>((resolve) => {
          const stop = (why: Record<string, string>): void => {
            log.info('stopping', why);
            void server.close().then(() => {
              store.close();
              resolve();
            });
          };
          process.once('SIGINT', () => stop({ signal: 'SIGINT' }));
          process.once('SIGTERM', () => stop({ signal: 'SIGTERM' }));
          // A worker is told to stop by the primary disconnecting it.
          if (worker) process.once('disconnect', () => stop({ reason: 'disconnected by the primary' }));
        });
      },
    );

  registry
    .command('stats')
    .description('Print storage and dedup figures of a registry store')
    .requiredOption('--root <dir>', 'registry store directory', process.env.CAIRN_ROOT)
    .option('--json', 'machine-readable output')
    .action(async (opts: { root: string; json?: boolean }) => {
      const m = await registryModules();
      const store = await m.RegistryStore.open(opts.root);
      try {
        const s = await m.registryStats(store);
        output(opts.json, s, () =>
          [
            `images        ${s.images} in ${s.repositories} repositories (${s.tags} tags)`,
            `layers        ${s.layers} unique, ${s.entries} entries, ${s.files} regular files`,
            `file bytes    ${formatBytes(s.fileBytes)} over unique layers`,
            `stored bytes  ${formatBytes(s.storedBytes)} in ${s.uniqueFiles} distinct contents`,
            `dedup saving  ${s.dedupSavingPercent.toFixed(1)} %`,
            `metadata      ${formatBytes(s.metadataBytes)} (recipes ${formatBytes(s.recipeBytes)}, tar skeletons ${formatBytes(s.skeletonBytes)})`,
          ].join('\n'),
        );
      } finally {
        store.close();
      }
    });

  registry
    .command('ls')
    .description('List the images of a registry store')
    .requiredOption('--root <dir>', 'registry store directory', process.env.CAIRN_ROOT)
    .option('--json', 'machine-readable output')
    .action(async (opts: { root: string; json?: boolean }) => {
      const m = await registryModules();
      const store = await m.RegistryStore.open(opts.root);
      try {
        const images = store.meta.allImages();
        output(opts.json, images, () => images.map((i) => `${i.repository}\t${i.tags || '-'}\t${i.digest}`).join('\n'));
      } finally {
        store.close();
      }
    });

  registry
    .command('gc')
    .description('Remove stored contents no image references (left by failed or killed imports)')
    .requiredOption('--root <dir>', 'registry store directory', process.env.CAIRN_ROOT)
    .option('--grace-seconds <n>', 'keep objects younger than this (an import may be writing them)', '3600')
    .option('--dry-run', 'only report what would be removed')
    .option('--json', 'machine-readable output')
    .action(async (opts: { root: string; graceSeconds: string; dryRun?: boolean; json?: boolean }) => {
      const m = await registryModules();
      const graceMs = intOption(opts.graceSeconds, '--grace-seconds') * 1000;
      const store = await m.RegistryStore.open(opts.root);
      try {
        const r = await m.collectGarbage(store, { graceMs, dryRun: opts.dryRun ?? false });
        output(
          opts.json,
          r,
          () =>
            `${opts.dryRun ? 'would remove' : 'removed'} ${r.removedBlobs} blobs (${formatBytes(r.removedBytes)}) and ${r.removedTemp} temp files, ${r.removedUploadedBlobs} uploaded blobs no manifest names (${formatBytes(r.removedUploadedBytes)}), ${r.expiredUploads} abandoned uploads, ${r.removedImages} images no repository holds, ${r.removedViews} built views no image uses; ${r.scanned} blobs scanned`,
        );
      } finally {
        store.close();
      }
    });
}
