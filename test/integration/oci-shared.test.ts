/**
 * The /v2 API where several server processes share one store
 * (`registry serve --workers N`): an upload's requests may reach any of them
 * and an upload outlives its server; and a push is reconstructed online when
 * the store's reconstruct.json enables it, as an import is.
 */
import { readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { sha256, type Digest } from '../../src/model/digest.js';
import { writeOciLayout, type ImageInput } from '../../src/image/layout-writer.js';
import { dir, file, layer } from '../fixtures/layers.js';
import { fetchRaw, pseudoRandom, startRegistry } from '../fixtures/registry.js';
import { testTempDir } from '../fixtures/tmp.js';
import { AUTH, errorCode, patchUpload, pushBlob, pushWrittenImage, testOciOptions } from '../fixtures/oci.js';
import { collectGarbage } from '../../src/registry/gc.js';

describe('/v2 uploads shared by server processes', () => {
  it('chunks of one upload go to different servers on one root; the upload survives a server restart', async () => {
    const root = await testTempDir('cairn-oci-shared-');
    const oci = testOciOptions();
    const a = await startRegistry(root, { oci });
    const b = await startRegistry(root, { oci });
    const data = pseudoRandom(90_000, 'shared-upload');
    const d = sha256(data);
    const start = await fetchRaw(a.url, '/v2/lib/x/blobs/uploads/', { method: 'POST', headers: AUTH });
    expect(start.status).toBe(202);
    const loc = start.headers.location as string;
    expect((await patchUpload(b.url, loc, data, 0, 30_000)).status).toBe(202);
    // The status comes from the files, whichever server asks.
    const status = await fetchRaw(a.url, loc, { headers: AUTH });
    expect(status.status).toBe(204);
    expect(status.headers.range).toBe('0-29999');
    // A chunk that does not follow what another server stored is refused with where the upload stands.
    const gap = await patchUpload(a.url, loc, data, 40_000, 50_000);
    expect(gap.status).toBe(416);
    expect(gap.headers.range).toBe('0-29999');
    expect((await patchUpload(a.url, loc, data, 30_000, 60_000)).status).toBe(202);
    // Another repository does not see the upload.
    expect((await fetchRaw(b.url, loc.replace('/lib/x/', '/lib/y/'), { headers: AUTH })).status).toBe(404);
    await a.close();
    const c = await startRegistry(root, { oci });
    expect((await fetchRaw(c.url, loc, { headers: AUTH })).headers.range).toBe('0-59999');
    expect((await patchUpload(c.url, loc, data, 60_000, 90_000)).status).toBe(202);
    // Finished by a server that wrote only the last chunk: it hashes the whole file, and it matches.
    const done = await fetchRaw(b.url, `${loc}?digest=${d}`, { method: 'PUT', headers: AUTH });
    expect(done.status, done.text()).toBe(201);
    expect(sha256((await fetchRaw(c.url, `/v2/lib/x/blobs/${d}`)).body)).toBe(d);
    expect(await readdir(join(root, 'oci', 'uploads'))).toEqual([]);
  });

  it('a wrong digest is caught when another server wrote the data, and the upload is gone', async () => {
    const root = await testTempDir('cairn-oci-shared-');
    const oci = testOciOptions();
    const a = await startRegistry(root, { oci });
    const b = await startRegistry(root, { oci });
    const data = pseudoRandom(10_000, 'shared-bad');
    const loc = (await fetchRaw(a.url, '/v2/r/blobs/uploads/', { method: 'POST', headers: AUTH })).headers
      .location as string;
    expect((await patchUpload(a.url, loc, data, 0, 10_000)).status).toBe(202);
    const wrong = sha256(Buffer.from('something else'));
    const put = await fetchRaw(b.url, `${loc}?digest=${wrong}`, { method: 'PUT', headers: AUTH });
    expect(put.status).toBe(400);
    expect(errorCode(put)).toBe('DIGEST_INVALID');
    expect(put.text()).toContain(sha256(data));
    expect((await fetchRaw(a.url, loc, { headers: AUTH })).status).toBe(404);
    expect((await fetchRaw(a.url, `/v2/r/blobs/${wrong}`)).status).toBe(404);
  });

  it('an abandoned upload expires through any server, not at start: a restart keeps uploads under way', async () => {
    const root = await testTempDir('cairn-oci-shared-');
    const oci = testOciOptions({ uploadTtlSeconds: 1 });
    const a = await startRegistry(root, { oci });
    const loc = (await fetchRaw(a.url, '/v2/r/blobs/uploads/', { method: 'POST', headers: AUTH })).headers
      .location as string;
    const b = await startRegistry(root, { oci });
    expect((await fetchRaw(b.url, loc, { headers: AUTH })).status).toBe(204);
    expect((await b.server.oci.sweep(Date.now())).expiredUploads).toBe(0);
    expect((await b.server.oci.sweep(Date.now() + 5000)).expiredUploads).toBe(1);
    expect((await fetchRaw(a.url, loc, { headers: AUTH })).status).toBe(404);
  });
});

describe('registry gc and /v2 leftovers', () => {
  it('removes uploaded blobs no manifest names and abandoned uploads, past the grace period only', async () => {
    const root = await testTempDir('cairn-oci-gc-');
    const reg = await startRegistry(root, { oci: testOciOptions({ keepLayerBlobs: true }) });
    const out = join(await testTempDir('cairn-oci-gc-layout-'), 'layout');
    const [one] = (await writeOciLayout(out, images())).images;
    if (!one) throw new Error('fixture image missing');
    await pushWrittenImage(reg.url, out, one, 'app/web', 'v1');
    const stray = pseudoRandom(5_000, 'stray-blob');
    expect((await pushBlob(reg.url, 'app/web', stray)).status).toBe(201);
    const loc = (await fetchRaw(reg.url, '/v2/app/web/blobs/uploads/', { method: 'POST', headers: AUTH })).headers
      .location as string;
    // Within the grace period nothing goes: a push under way uploads its blobs before its manifest.
    const young = await collectGarbage(reg.store, { graceMs: 3_600_000 });
    expect(young).toMatchObject({ removedUploadedBlobs: 0, expiredUploads: 0 });
    expect((await fetchRaw(reg.url, `/v2/app/web/blobs/${sha256(stray)}`)).status).toBe(200);
    const dry = await collectGarbage(reg.store, { graceMs: 0, dryRun: true });
    expect(dry).toMatchObject({ removedUploadedBlobs: 1, removedUploadedBytes: stray.byteLength, expiredUploads: 0 });
    expect((await fetchRaw(reg.url, `/v2/app/web/blobs/${sha256(stray)}`)).status).toBe(200);
    await new Promise((r) => setTimeout(r, 5));
    const done = await collectGarbage(reg.store, { graceMs: 0 });
    expect(done).toMatchObject({ removedUploadedBlobs: 1, expiredUploads: 1 });
    expect((await fetchRaw(reg.url, `/v2/app/web/blobs/${sha256(stray)}`)).status).toBe(404);
    expect((await fetchRaw(reg.url, loc, { headers: AUTH })).status).toBe(404);
    // What the pushed manifest names (kept whole with keepLayerBlobs) is still served, byte for byte.
    for (const d of [one.configDigest, ...one.layers.map((l) => l.digest)]) {
      const blob = await fetchRaw(reg.url, `/v2/app/web/blobs/${d}`);
      expect(blob.status, d).toBe(200);
      expect(sha256(blob.body)).toBe(d);
    }
    const pulled = await fetchRaw(reg.url, `/v2/app/web/manifests/${one.manifestDigest}`);
    expect(pulled.body.equals(one.manifestBytes)).toBe(true);
  });
});

const SHARED = pseudoRandom(200_000, 'shared-base');

function images(): ImageInput[] {
  const base = [dir('etc/'), file('etc/os-release', 'ID=fixture\n'), file('usr/lib/libbig.so', SHARED)];
  return [
    { ref: 'v1', layers: [layer(base), layer([file('app/one.txt', 'one\n')])], config: { Cmd: ['/one'] } },
    // The same base files, but pushed in one layer with the application: a near-duplicate layer.
    { ref: 'v2', layers: [layer([...base, file('app/two.txt', 'two\n')])], config: { Cmd: ['/two'] } },
  ];
}

/** A registry on a fresh root (with `reconstruct.json` when given) and the two images pushed as v1 and v2. */
async function pushBoth(name: string, reconstruct?: object) {
  const root = await testTempDir(`cairn-oci-${name}-`);
  if (reconstruct) await writeFile(join(root, 'reconstruct.json'), JSON.stringify(reconstruct));
  const reg = await startRegistry(root, { oci: testOciOptions() });
  const out = join(await testTempDir(`cairn-oci-${name}-layout-`), 'layout');
  const [one, two] = (await writeOciLayout(out, images())).images;
  if (!one || !two) throw new Error('fixture images missing');
  await pushWrittenImage(reg.url, out, one, 'app/web', 'v1');
  const put = await pushWrittenImage(reg.url, out, two, 'app/web', 'v2');
  return { reg, one, two, put };
}

describe('/v2 push with online reconstruction', () => {
  it('reconstruct.json enabled: a pushed image is regrouped onto the layers its repository has', async () => {
    const { reg, one, two, put } = await pushBoth('recon', { enabled: true });
    expect(put.headers['docker-content-digest']).toBe(two.manifestDigest);
    // The file store's tag (what `cairn mount` resolves) moved to a reconstruction reusing v1's base layer.
    const tag = reg.store.meta.tags('app/web').find((t) => t.tag === 'v2');
    expect(tag?.image).toMatch(/^sha256:/);
    expect(tag?.image).not.toBe(two.manifestDigest);
    const rebuilt = reg.store.meta.image(tag?.image as Digest);
    const baseDiffId = one.layers[0]?.diffId;
    expect(rebuilt?.layers.map((l) => l.diffId)).toContain(baseDiffId);
    // The pushed image stays addressable by its digest; the tag pulls the reconstruction through /v2,
    // its layers rebuilt uncompressed: the reused base is v1's own layer.
    expect((await fetchRaw(reg.url, `/v2/app/web/manifests/${two.manifestDigest}`)).status).toBe(200);
    const m = await fetchRaw(reg.url, '/v2/app/web/manifests/v2');
    expect(m.status).toBe(200);
    const served = m.json<{ layers: { digest: string }[]; annotations?: Record<string, string> }>();
    expect(served.annotations?.['dev.cairn.reconstructed-from']).toBe(two.manifestDigest);
    const layers = served.layers;
    expect(layers.map((l) => l.digest)).toEqual(rebuilt?.layers.map((l) => l.diffId));
    for (const l of layers) {
      const blob = await fetchRaw(reg.url, `/v2/app/web/blobs/${l.digest}`);
      expect(blob.status).toBe(200);
      expect(sha256(blob.body)).toBe(l.digest);
    }
  });

  it('a manifest DELETE leaves the image to gc, which removes it and the contents only it used', async () => {
    const { reg, two } = await pushBoth('delete');
    const onlyTwo = sha256(Buffer.from('two\n'));
    const shared = sha256(SHARED);
    const before = reg.store.meta.totals();
    const del = await fetchRaw(reg.url, `/v2/app/web/manifests/${two.manifestDigest}`, {
      method: 'DELETE',
      headers: AUTH,
    });
    expect(del.status).toBe(202);
    const first = await collectGarbage(reg.store, { graceMs: 0 });
    expect(first.removedImages).toBe(1);
    expect(reg.store.meta.image(two.manifestDigest)).toBeUndefined();
    expect(reg.store.meta.hasFile(onlyTwo)).toBe(false);
    expect(reg.store.meta.totals().images).toBe(before.images - 1);
    // Its contents outlive this run by a grace period (an import may be counting on them), then go.
    expect(await reg.store.blobs.has(onlyTwo)).toBe(true);
    await new Promise((r) => setTimeout(r, 20));
    const second = await collectGarbage(reg.store, { graceMs: 10 });
    expect(second.removedImages).toBe(0);
    expect(await reg.store.blobs.has(onlyTwo)).toBe(false);
    // What v1 shares with the deleted image stays, and v1 still pulls whole.
    expect(await reg.store.blobs.has(shared)).toBe(true);
    const m = await fetchRaw(reg.url, '/v2/app/web/manifests/v1');
    expect(m.status).toBe(200);
    for (const l of m.json<{ layers: { digest: string }[] }>().layers) {
      const blob = await fetchRaw(reg.url, `/v2/app/web/blobs/${l.digest}`);
      expect(sha256(blob.body)).toBe(l.digest);
    }
    expect((await fetchRaw(reg.url, '/v2/app/web/manifests/v2')).status).toBe(404);
  });

  it('disabled (no reconstruct.json): the tag names the pushed image', async () => {
    const { reg, two } = await pushBoth('plain');
    expect(reg.store.meta.tags('app/web').find((t) => t.tag === 'v2')?.image).toBe(two.manifestDigest);
  });
});
