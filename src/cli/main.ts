import { Command, CommanderError } from 'commander';
import { exitCodeOf, oneLine } from './errors.js';
import { registerImport } from './commands/import.js';
import { registerRegistry } from './commands/registry.js';
import { registerSample } from './commands/sample.js';
import { registerMount } from './commands/mount.js';
import { registerReconstruct } from './commands/reconstruct.js';
import { registerSnapshotter } from './commands/snapshotter.js';
import { registerContainerd } from './commands/containerd.js';

export function buildProgram(): Command {
  const program = new Command('cairn')
    .description('A deduplicating container registry and a lazy layer filesystem')
    .version('0.1.0')
    .exitOverride()
    // Usage errors follow the CLI's rule: one line, prefixed "cairn:".
    .configureOutput({
      outputError: (text, write) => write(`cairn: ${text.replace(/^error: /, '').trim()} (see --help)\n`),
    });
  registerImport(program);
  registerRegistry(program);
  registerSample(program);
  registerMount(program);
  registerReconstruct(program);
  registerSnapshotter(program);
  registerContainerd(program);
  return program;
}

/** Entry point: runs the CLI and sets the exit code; failures print one line naming the input. */
export async function main(argv: string[]): Promise<void> {
  const program = buildProgram();
  try {
    await program.parseAsync(argv);
  } catch (err) {
    if (err instanceof CommanderError) {
      // Help and version exit 0; usage errors were already printed by commander.
      process.exitCode = err.exitCode === 0 ? 0 : 64;
      return;
    }
    process.stderr.write(`cairn: ${oneLine(err)}\n`);
    if (process.env.CAIRN_DEBUG && err instanceof Error) process.stderr.write(`${err.stack}\n`);
    process.exitCode = exitCodeOf(err);
  }
}
