import type { Command } from 'commander';
import { join, resolve } from 'node:path';
import { CairnError, ErrorCode } from '../../model/errors.js';
import { parseListen } from '../../util/listen.js';
import { createLogger } from '../../util/log.js';
import { logLevelOf } from './mount.js';

interface SnapshotterCliOptions {
  socket: string;
  root: string;
  registry?: string;
  daemonStateDir?: string;
  metrics?: string;
  logLevel: string;
}

/** `--registry URL`: an http(s) URL (cairn's registry, whose /api/v1 describes the images). */
function registryOption(v: string | undefined): string | undefined {
  if (v === undefined) return undefined;
  let url: URL;
  try {
    url = new URL(v);
  } catch {
    throw new CairnError(ErrorCode.INVALID_OPTION, `--registry: ${JSON.stringify(v)} is not a URL`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:')
    throw new CairnError(ErrorCode.INVALID_OPTION, `--registry: ${v} must be an http or https URL`);
  return v.replace(/\/+$/, '');
}

export function registerSnapshotter(program: Command): void {
  program
    .command('snapshotter')
    .description(
      'Serve containerd\'s Snapshots gRPC service (for [proxy_plugins.cairn] type = "snapshot") until SIGINT/SIGTERM',
    )
    .requiredOption('--socket <path>', 'unix socket to serve on (containerd proxy plugin address)')
    .requiredOption('--root <dir>', 'snapshot metadata (metadata.db) and directories (snapshots/ID)')
    .option(
      '--registry <url>',
      "cairn registry whose layers Prepare mounts lazily (containerd's remote-snapshot labels)",
    )
    .option(
      '--daemon-state-dir <dir>',
      'state directory of the mount daemon serving the lazy layers (started when none runs; it outlives the snapshotter)',
    )
    .option('--metrics <host:port>', 'serve Prometheus text on http://HOST:PORT/metrics (lazy and fallback Prepares)')
    .option('--log-level <level>', 'debug|info|warn|error|silent', 'info')
    .action(async (o: SnapshotterCliOptions) => {
      const log = createLogger({ level: logLevelOf(o.logLevel), component: 'snapshotter' });
      const registry = registryOption(o.registry);
      const metricsAt = o.metrics === undefined ? undefined : parseListen(o.metrics, '--metrics');
      const root = resolve(o.root);
      const { Snapshotter } = await import('../../snapshotter/snapshotter.js');
      const { SnapshotterServer } = await import('../../snapshotter/server.js');
      const { LazyMounts } = await import('../../snapshotter/lazy-mounts.js');
      const { RemotePreparer } = await import('../../snapshotter/remote-prepare.js');
      const { serveMetrics } = await import('../../metrics/http-server.js');
      const mounts = new LazyMounts({ stateDir: resolve(o.daemonStateDir ?? join(root, 'daemon')), log });
      const snapshotter = new Snapshotter({ rootDir: root, unmountLazy: (mp) => mounts.unmount(mp) });
      const remote = new RemotePreparer({ snapshotter, mounts, log, ...(registry ? { registry } : {}) });
      const server = new SnapshotterServer({ snapshotter, socketPath: resolve(o.socket), log, remote });
      let metrics: Awaited<ReturnType<typeof serveMetrics>> | undefined;
      try {
        // Lazy snapshots whose mount is gone (the daemon was stopped) are mounted before containerd asks.
        await remote.restore();
        if (metricsAt) {
          const reg = remote.metrics;
          metrics = await serveMetrics(
            { text: () => reg.metrics(), contentType: reg.contentType },
            metricsAt.host,
            metricsAt.port,
          );
        }
        await server.listen();
      } catch (err) {
        await metrics?.close();
        snapshotter.close();
        throw err;
      }
      log.info('serving', {
        socket: resolve(o.socket),
        root,
        registry: registry ?? null,
        ...(metrics ? { metricsUrl: metrics.url } : {}),
      });
      await new Promise<void>((done) => {
        const stop = (signal: string) => {
          log.info('stopping', { signal, prepares: remote.counts() });
          done();
        };
        process.once('SIGINT', () => stop('SIGINT'));
        process.once('SIGTERM', () => stop('SIGTERM'));
      });
      await server.close();
      await metrics?.close();
      await remote.close();
      snapshotter.close();
    });
}
