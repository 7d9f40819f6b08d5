import type { Command } from 'commander';
import { resolve } from 'node:path';
import { createLogger } from '../../util/log.js';
import { logLevelOf } from './mount.js';

interface SnapshotterCliOptions {
  socket: string;
  root: string;
  registry?: string;
  logLevel: string;
}

export function registerSnapshotter(program: Command): void {
  program
    .command('snapshotter')
    .description(
      'Serve containerd\'s Snapshots gRPC service (for [proxy_plugins.cairn] type = "snapshot") until SIGINT/SIGTERM',
    )
    .requiredOption('--socket <path>', 'unix socket to serve on (containerd proxy plugin address)')
    .requiredOption('--root <dir>', 'snapshot metadata (metadata.db) and directories (snapshots/ID)')
    .option('--registry <url>', 'cairn registry for lazily mounted layers')
    .option('--log-level <level>', 'debug|info|warn|error|silent', 'info')
    .action(async (o: SnapshotterCliOptions) => {
      const log = createLogger({ level: logLevelOf(o.logLevel), component: 'snapshotter' });
      const { Snapshotter } = await import('../../snapshotter/snapshotter.js');
      const { SnapshotterServer } = await import('../../snapshotter/server.js');
      const snapshotter = new Snapshotter({ rootDir: resolve(o.root) });
      const server = new SnapshotterServer({ snapshotter, socketPath: resolve(o.socket), log });
      try {
        await server.listen();
      } catch (err) {
        snapshotter.close();
        throw err;
      }
      log.info('serving', { socket: resolve(o.socket), root: resolve(o.root) });
      await new Promise<void>((done) => {
        const stop = (signal: string) => {
          log.info('stopping', { signal });
          done();
        };
        process.once('SIGINT', () => stop('SIGINT'));
        process.once('SIGTERM', () => stop('SIGTERM'));
      });
      await server.close();
      snapshotter.close();
    });
}
