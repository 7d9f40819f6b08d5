import type { Command } from 'commander';
import { formatBytes, Progress, rate } from '../progress.js';
import { output } from '../output.js';

export function registerImport(program: Command): void {
  program
    .command('import')
    .description('Import an image (OCI layout, OCI archive or docker-save tarball) into the registry store')
    .argument('<source>', 'OCI layout dir, OCI archive or docker archive; SOURCE:REF picks one of several images')
    .argument('<target>', 'REPO:TAG to store it as')
    .requiredOption('--root <dir>', 'registry store directory', process.env.CAIRN_ROOT)
    .option('--platform <os/arch>', 'platform to pick from a multi-platform index', 'linux/amd64')
    .option('--reconstruct', 'reconstruct the image against its repository once stored (overrides reconstruct.json)')
    .option('--no-reconstruct', 'do not reconstruct, whatever <root>/reconstruct.json says')
    .option('--json', 'machine-readable output')
    .addHelpText('after', '\nExample:\n  cairn import ./layout:app:1 app:1 --root /var/lib/cairn')
    .action(
      async (
        source: string,
        target: string,
        opts: { root: string; platform: string; json?: boolean; reconstruct?: boolean },
      ) => {
        // Heavy modules (SQLite, zlib, fzstd) load with the command that needs them, not at CLI start-up.
        const { RegistryStore } = await import('../../registry/store.js');
        const { importImage } = await import('../../registry/importer.js');
        const store = await RegistryStore.open(opts.root);
        // Online reconstruction: <root>/reconstruct.json (enabled, algorithm, alpha, beta, costModel), or --reconstruct.
        const { loadReconstructConfig } = await import('../../registry/reconstruct.js');
        const rc = await loadReconstructConfig(opts.root);
        const reconstruct = (opts.reconstruct ?? rc.enabled) ? rc : undefined;
        const progress = Progress.for(opts);
        try {
          const r = await importImage(store, source, target, {
            platform: opts.platform,
            ...(reconstruct ? { reconstruct } : {}),
            onWarning: (m) => process.stderr.write(`cairn import: warning: ${m}\n`),
            onProgress: (p) =>
              progress.update(
                (s) =>
                  `importing layer ${p.layer}/${p.layers}: ${p.files} files, ${formatBytes(p.bytes)}, ${rate(p.bytes, s)}`,
              ),
          });
          progress.done();
          output(opts.json, r, () =>
            [
              `imported ${r.repository}:${r.tag} ${r.digest} (${r.platform})`,
              `  ${r.layers.length} layers (${r.layers.filter((l) => l.newRecipe).length} new), ${r.entries} entries, ${r.files} files`,
              `  ${r.newFiles} new contents (${formatBytes(r.newBytes)}) of ${formatBytes(r.tarBytes)} of layer data in ${r.seconds.toFixed(2)} s (${rate(r.tarBytes, r.seconds)})`,
              ...(r.reconstruction
                ? [
                    `  reconstructed (${r.reconstruction.algorithm}): ${r.reconstruction.valid ? 'valid' : `rejected (${r.reconstruction.rejected})`}, ${r.reconstruction.layersBefore} -> ${r.reconstruction.layersAfter} layers (${r.reconstruction.reusedLayers} reused)${r.reconstruction.image ? `, ${r.repository}:${r.tag} -> ${r.reconstruction.image}` : ', layers kept'}`,
                  ]
                : []),
            ].join('\n'),
          );
        } finally {
          progress.done();
          store.close();
        }
      },
    );
}
