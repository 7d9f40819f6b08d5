import type { Command } from 'commander';
import { output } from '../output.js';

export function registerSample(program: Command): void {
  program
    .command('sample')
    .description("Build the sample image (from Debian's busybox-static) as an OCI layout")
    .argument('<dir>', 'directory to write the OCI layout to')
    .option('--json', 'machine-readable output')
    .action(async (dir: string, opts: { json?: boolean }) => {
      const { buildSampleImage } = await import('../../image/sample.js');
      const r = await buildSampleImage(dir);
      output(opts.json, r, () => `wrote sample image to ${dir} (ref sample/busybox:latest)`);
    });
}
