import { Command, CommanderError } from 'commander';
import { exitCodeOf, oneLine } from './errors.js';

type Register = (program: Command) => void;

/** The command modules, in the order `cairn --help` lists them, each with the commands it defines. */
const MODULES: { commands: string[]; load: () => Promise<Register> }[] = [
  { commands: ['import'], load: async () => (await import('./commands/import.js')).registerImport },
  { commands: ['registry'], load: async () => (await import('./commands/registry.js')).registerRegistry },
  { commands: ['sample'], load: async () => (await import('./commands/sample.js')).registerSample },
  {
    commands: ['mount', 'unmount', 'stats', 'daemon'],
    load: async () => (await import('./commands/mount.js')).registerMount,
  },
  { commands: ['reconstruct'], load: async () => (await import('./commands/reconstruct.js')).registerReconstruct },
  { commands: ['snapshotter'], load: async () => (await import('./commands/snapshotter.js')).registerSnapshotter },
  { commands: ['containerd'], load: async () => (await import('./commands/containerd.js')).registerContainerd },
];

/**
 * The CLI with the commands `argv` may run: only the named command's module
 * when argv names one (a `cairn mount` need not load the others), every
 * command otherwise (help, version, an unknown command and its suggestion).
 */
export async function buildProgram(argv: string[] = []): Promise<Command> {
  const named = MODULES.find((m) => m.commands.includes(argv[2] ?? ''));
  const registers = await Promise.all((named ? [named] : MODULES).map((m) => m.load()));
  const program = new Command('cairn')
    .description('A deduplicating container registry and a lazy layer filesystem')
    .version('0.1.0')
    .exitOverride()
    // Usage errors follow the CLI's rule: one line, prefixed "cairn:".
    .configureOutput({
      outputError: (text, write) => write(`cairn: ${text.replace(/^error: /, '').trim()} (see --help)\n`),
    });
  for (const register of registers) register(program);
  return program;
}

/** Entry point: runs the CLI and sets the exit code; failures print one line naming the input. */
export async function main(argv: string[]): Promise<void> {
  const program = await buildProgram(argv);
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
