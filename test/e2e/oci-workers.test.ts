/**
 * `cairn registry serve --workers 2` as a user runs it, with skopeo: a push
 * whose requests land on either worker (an upload started on one and finished
 * on the other) is stored whole, and copies back with the same layers.
 */
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { DEFAULT_BUSYBOX, SAMPLE_REF } from '../../src/image/sample.js';
import { testTempDir } from '../fixtures/tmp.js';
import { runAsync, skipWithout } from '../fixtures/tools.js';
import { cairn, cairnJson, ensureBuilt, spawnCairn, stopCli, waitForListening, type CliChild } from './cli-harness.js';

const CREDS = 'pusher:push-secret';
let server: CliChild | undefined;

beforeAll(() => {
  ensureBuilt();
});

afterEach(async () => {
  await stopCli(server);
  server = undefined;
});

describe('registry serve --workers 2 with a real client', () => {
  it('skopeo pushes the sample image and copies it back; the store holds it once', async (ctx) => {
    skipWithout(ctx, 'skopeo');
    if (!existsSync(DEFAULT_BUSYBOX)) ctx.skip(`${DEFAULT_BUSYBOX} is missing (apt-get install busybox-static)`);
    const work = await testTempDir('cairn-oci-workers-');
    const layout = join(work, 'layout');
    expect((await cairn(['sample', layout])).code).toBe(0);
    const root = join(work, 'root');
    server = spawnCairn(['registry', 'serve', '--root', root, '--listen', '127.0.0.1:0', '--workers', '2'], {
      env: { CAIRN_OCI_USERS: CREDS },
      timeoutMs: 120_000,
    });
    const { url } = await waitForListening(server);
    const dest = `docker://${new URL(url).host}/sample/busybox:latest`;
    await runAsync('skopeo', [
      'copy',
      '--dest-tls-verify=false',
      '--dest-creds',
      CREDS,
      `oci:${layout}:${SAMPLE_REF}`,
      dest,
    ]);
    const back = join(work, 'back');
    await runAsync('skopeo', ['copy', '--src-tls-verify=false', dest, `oci:${back}:back`]);
    // skopeo checked every blob against its digest; the layers came back as the tars that went in.
    const pushedIndex = JSON.parse(await readFile(join(layout, 'index.json'), 'utf8')) as {
      manifests: { digest: string }[];
    };
    expect(pushedIndex.manifests.length).toBeGreaterThan(0);
    const inspect = JSON.parse(await runAsync('skopeo', ['inspect', '--tls-verify=false', `oci:${back}:back`])) as {
      Layers: string[];
    };
    const original = JSON.parse(
      await runAsync('skopeo', ['inspect', '--tls-verify=false', `oci:${layout}:${SAMPLE_REF}`]),
    ) as { Layers: string[] };
    expect(inspect.Layers).toHaveLength(original.Layers.length);
    await stopCli(server);
    const ls = await cairnJson<{ repository: string; tags: string }[]>(['registry', 'ls', '--root', root]);
    expect(ls.filter((i) => i.repository === 'sample/busybox')).toHaveLength(1);
    const stats = await cairnJson<{ images: number }>(['registry', 'stats', '--root', root]);
    expect(stats.images).toBe(1);
  });
});
