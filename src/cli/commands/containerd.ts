import type { Command } from 'commander';
import { resolve } from 'node:path';
import { CairnError, ErrorCode } from '../../model/errors.js';
import { intOption, output } from '../output.js';

interface PullCliOptions {
  address: string;
  namespace: string;
  registry: string;
  snapshotter: string;
  timeoutMs: string;
  json?: boolean;
}

export function registerContainerd(program: Command): void {
  const containerd = program.command('containerd').description("Drive containerd's API with cairn's lazy layers");
  containerd
    .command('pull')
    .description(
      "Pull an image of a cairn registry into containerd without downloading a layer: manifest and config into containerd's content store, each layer a lazy snapshot of cairn's snapshotter",
    )
    .argument('<ref>', 'image reference ([HOST/]REPO:TAG or REPO@DIGEST): the name containerd gets')
    .requiredOption('--address <socket>', "containerd's socket")
    .requiredOption('--registry <url>', "cairn's registry holding the image (the snapshotter's --registry)")
    .option('--namespace <ns>', "containerd's namespace", 'default')
    .option('--snapshotter <name>', "cairn's snapshotter as containerd names it ([proxy_plugins.NAME])", 'cairn')
    .option('--timeout-ms <ms>', 'deadline of one registry request or containerd call', '60000')
    .option('--json', 'machine-readable output')
    .action(async (ref: string, o: PullCliOptions) => {
      const timeoutMs = intOption(o.timeoutMs, '--timeout-ms');
      if (timeoutMs === 0) throw new CairnError(ErrorCode.INVALID_OPTION, '--timeout-ms: must be positive');
      try {
        const u = new URL(o.registry);
        if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new Error('not http');
      } catch {
        throw new CairnError(
          ErrorCode.INVALID_OPTION,
          `--registry: ${JSON.stringify(o.registry)} is not an http(s) URL`,
        );
      }
      if (o.snapshotter === '') throw new CairnError(ErrorCode.INVALID_OPTION, '--snapshotter: must not be empty');
      const { ContainerdClient } = await import('../../containerd/client.js');
      const { pullLazily } = await import('../../containerd/pull.js');
      const client = new ContainerdClient({
        address: resolve(o.address),
        namespace: o.namespace,
        callTimeoutMs: timeoutMs,
      });
      try {
        const r = await pullLazily(client, {
          ref,
          registry: o.registry,
          snapshotter: o.snapshotter,
          deadlineMs: timeoutMs,
        });
        output(
          o.json,
          r,
          () =>
            `pulled ${r.name} (${r.digest}) in ${r.seconds.toFixed(3)} s: ${r.layers} layers, ${r.lazy} mounted lazily, ${r.present} already there; ${r.contentBytes} bytes of manifest and config, no layer downloaded`,
        );
      } finally {
        client.close();
      }
    });
}
