import type { Command } from 'commander';
import { CairnError, ErrorCode } from '../../model/errors.js';
import { output } from '../output.js';
import { formatBytes, Progress } from '../progress.js';

interface Opts {
  root: string;
  repo?: string;
  algo: string;
  alpha?: string;
  beta?: string;
  costModel?: string;
  dryRun?: boolean;
  json?: boolean;
}

function numberOption(value: string | undefined, name: string): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (value.trim() === '' || !Number.isFinite(n) || n < 0) {
    throw new CairnError(ErrorCode.INVALID_OPTION, `${name}: ${JSON.stringify(value)} is not a number >= 0`);
  }
  return n;
}

export function registerReconstruct(program: Command): void {
  program
    .command('reconstruct')
    .description(
      'Regroup the files of stored images into layers the registry already has (SOIRA, GOIRA, OFPL), checking each result against the original',
    )
    .requiredOption('--root <dir>', 'registry store directory', process.env.CAIRN_ROOT)
    .option('--repo <repository>', 'only the images of this repository (default: every repository)')
    .requiredOption(
      '--algo <algorithm>',
      'soira (online, per image) | goira (offline, all at once) | ofpl (one file per layer)',
    )
    .option('--alpha <a>', 'weight of the operation cost C_o (default 1)')
    .option('--beta <b>', 'weight of the storage cost C_s in MB (default 1)')
    .option('--cost-model <file>', "a and b from `cairn stats --export-cost-model` output (default: the paper's)")
    .option('--dry-run', 'plan and check, write nothing')
    .option('--json', 'machine-readable output')
    .addHelpText(
      'after',
      '\nThe tagged images are reconstructed; each original stays addressable by digest and its tags move to the\n' +
        'reconstructed image. A plan whose merged view differs from the original is rejected (valid: false).\n' +
        '\nExample:\n  cairn reconstruct --root /var/lib/cairn --repo lang/python --algo soira --json',
    )
    .action(async (opts: Opts) => {
      if (!['soira', 'goira', 'ofpl'].includes(opts.algo)) {
        throw new CairnError(ErrorCode.INVALID_OPTION, `--algo: ${JSON.stringify(opts.algo)} is not soira|goira|ofpl`);
      }
      const algorithm = opts.algo as 'soira' | 'goira' | 'ofpl';
      const [{ RegistryStore }, rec] = await Promise.all([
        import('../../registry/store.js'),
        import('../../registry/reconstruct.js'),
      ]);
      const cost = await rec.costFrom(
        {
          alpha: numberOption(opts.alpha, '--alpha'),
          beta: numberOption(opts.beta, '--beta'),
          costModel: opts.costModel,
        },
        'reconstruct',
      );
      if (cost.clampedB) process.stderr.write(`cairn: ${opts.costModel}: negative b clamped at 0\n`);
      const store = await RegistryStore.open(opts.root);
      const progress = Progress.for(opts);
      try {
        const repos = opts.repo ? [opts.repo] : store.meta.repositories();
        if (opts.repo && !store.meta.hasRepository(opts.repo)) {
          throw new CairnError(
            ErrorCode.NOT_FOUND,
            `--repo: repository ${JSON.stringify(opts.repo)} is not in ${opts.root}`,
          );
        }
        // Each tagged image, by its original when the tag points to an earlier reconstruction:
        // an original is regrouped again, never a reconstruction of it.
        const targets: { repository: string; digest: `sha256:${string}`; tags: string[] }[] = [];
        for (const repository of repos) {
          const byImage = new Map<string, { repository: string; digest: `sha256:${string}`; tags: string[] }>();
          for (const t of store.meta.tags(repository)) {
            const digest = store.meta.originalOf(t.image) ?? t.image;
            const target = byImage.get(digest) ?? { repository, digest, tags: [] };
            target.tags.push(t.tag);
            byImage.set(digest, target);
          }
          targets.push(...byImage.values());
        }
        const beforeStore = store.meta.totals();
        const beforeTagged = store.meta.taggedLayerTotals();
        const settings = { algorithm, ...cost };
        progress.update(() => `reconstructing ${targets.length} images (${algorithm})`);
        const images =
          algorithm === 'goira'
            ? await rec.reconstructStoredImages(store, targets, settings, { dryRun: opts.dryRun ?? false })
            : [];
        if (algorithm !== 'goira') {
          for (const [n, t] of targets.entries()) {
            progress.update(
              (sec) => `reconstructing ${n + 1}/${targets.length} (${t.repository}), ${sec.toFixed(0)} s`,
            );
            images.push(await rec.reconstructStoredImage(store, { ...t, settings, dryRun: opts.dryRun ?? false }));
          }
        }
        // Layer-level figures of the tagged images after (projected on a dry run): the plan's layers
        // where a plan was accepted, the stored ones elsewhere.
        const projected = new Map<string, number>();
        for (const r of images) {
          const img = store.meta.image(r.original);
          const useplan = r.valid && (r.image !== undefined || opts.dryRun);
          if (useplan) for (const l of r.layers) projected.set(l.recipe, l.bytes);
          else for (const l of img?.layers ?? []) projected.set(l.recipe, l.fileBytes);
        }
        progress.done();
        const afterStore = store.meta.totals();
        const result = {
          algorithm,
          dryRun: opts.dryRun ?? false,
          cost: { ...cost.cost, source: cost.costSource },
          before: {
            storedBytes: beforeStore.storedBytes,
            layers: beforeStore.layers,
            taggedLayers: beforeTagged.layers,
            taggedLayerBytes: beforeTagged.layerBytes,
          },
          after: {
            storedBytes: afterStore.storedBytes,
            layers: afterStore.layers,
            taggedLayers: projected.size,
            taggedLayerBytes: [...projected.values()].reduce((a, b) => a + b, 0),
          },
          valid: images.every((i) => i.valid),
          images,
        };
        output(opts.json, result, () =>
          [
            ...images.map(
              (i) =>
                `${i.repository}@${i.original.slice(0, 19)}: ${i.valid ? 'valid' : `rejected (${i.rejected})`}, ${i.layersBefore} -> ${i.layersAfter} layers (${i.reusedLayers} reused), new bytes ${formatBytes(i.newBytesBefore)} -> ${formatBytes(i.newBytesAfter)}, ${i.seconds.toFixed(3)} s${i.image ? ` -> ${i.image.slice(0, 19)}` : ''}`,
            ),
            `tagged images: ${result.before.taggedLayers} -> ${result.after.taggedLayers} unique layers, ${formatBytes(result.before.taggedLayerBytes)} -> ${formatBytes(result.after.taggedLayerBytes)} of layer data${result.dryRun ? ' (dry run: projected)' : ''}`,
            `store: ${formatBytes(result.before.storedBytes)} -> ${formatBytes(result.after.storedBytes)} of contents, ${result.before.layers} -> ${result.after.layers} recipes`,
          ].join('\n'),
        );
        if (!result.valid) process.exitCode = 65;
      } finally {
        progress.done();
        store.close();
      }
    });
}
