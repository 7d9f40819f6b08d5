/**
 * The /v2 API over a real server on a loopback port: uploads of every kind,
 * blobs with ranges, manifests ingested into the file store and served with
 * their layers rebuilt from recipes, tags, catalog and deletion.
 */
import { existsSync } from 'node:fs';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { sha256, type Digest } from '../../src/model/digest.js';
import { MediaType } from '../../src/model/oci.js';
import { writeOciLayout, type ImageInput } from '../../src/image/layout-writer.js';
import { dir, file, layer, symlink, whiteout } from '../fixtures/layers.js';
import { fetchRaw, importFixtureImage, pseudoRandom, startRegistry } from '../fixtures/registry.js';
import { testTempDir } from '../fixtures/tmp.js';
import {
  AUTH,
  errorCode,
  patchUpload,
  pushBlob,
  pushWrittenImage,
  putManifest,
  testOciOptions,
} from '../fixtures/oci.js';

const BIG = pseudoRandom(300_000, 'oci-big');

function image(tag: string): ImageInput {
  return {
    ref: tag,
    layers: [
      layer([dir('etc/'), file('etc/os-release', 'ID=fixture\n'), file('big.bin', BIG), symlink('lib', 'usr/lib')]),
      layer([file(`app/${tag}.txt`, `tag ${tag}\n`), whiteout('big.bin')], 'none'),
    ],
    config: { Cmd: ['/bin/sh'] },
  };
}

async function layout(tag: string) {
  const out = join(await testTempDir('cairn-oci-layout-'), 'layout');
  const w = await writeOciLayout(out, [image(tag)]);
  return { dir: out, image: w.images[0] as NonNullable<(typeof w.images)[0]> };
}

async function serve(extra: Record<string, unknown> = {}) {
  return startRegistry(await testTempDir('cairn-oci-root-'), { oci: testOciOptions(extra) });
}

describe('/v2 base and auth challenge', () => {
  it('answers 401 with a Basic challenge without credentials, 200 with them', async () => {
    const reg = await serve();
    const anon = await fetchRaw(reg.url, '/v2/');
    expect(anon.status).toBe(401);
    expect(anon.headers['www-authenticate']).toBe('Basic realm="cairn"');
    expect(errorCode(anon)).toBe('UNAUTHORIZED');
    const ok = await fetchRaw(reg.url, '/v2/', { headers: AUTH });
    expect(ok.status).toBe(200);
    expect(ok.headers['docker-distribution-api-version']).toBe('registry/2.0');
  });
});

describe('/v2 blob uploads', () => {
  it('monolithic POST ?digest= stores the blob; HEAD, GET and ranges serve it', async () => {
    const reg = await serve();
    const data = pseudoRandom(70_000, 'mono');
    const d = sha256(data);
    const r = await pushBlob(reg.url, 'a/b', data);
    expect(r.status).toBe(201);
    expect(r.headers.location).toBe(`/v2/a/b/blobs/${d}`);
    expect(r.headers['docker-content-digest']).toBe(d);
    const head = await fetchRaw(reg.url, `/v2/a/b/blobs/${d}`, { method: 'HEAD' });
    expect(head.status).toBe(200);
    expect(head.headers['content-length']).toBe('70000');
    expect(head.headers['docker-content-digest']).toBe(d);
    const get = await fetchRaw(reg.url, `/v2/a/b/blobs/${d}`);
    expect(sha256(get.body)).toBe(d);
    const part = await fetchRaw(reg.url, `/v2/a/b/blobs/${d}`, { headers: { range: 'bytes=100-199' } });
    expect(part.status).toBe(206);
    expect(part.headers['content-range']).toBe('bytes 100-199/70000');
    expect(part.body.equals(data.subarray(100, 200))).toBe(true);
    // Blobs are content-addressed and shared: another repository sees it too, an unknown digest is BLOB_UNKNOWN.
    const missing = await fetchRaw(reg.url, `/v2/a/b/blobs/${sha256('nope')}`);
    expect(missing.status).toBe(404);
    expect(errorCode(missing)).toBe('BLOB_UNKNOWN');
  });

  it('POST, chunked PATCH with Content-Range, status GET, then PUT ?digest=', async () => {
    const reg = await serve();
    const data = pseudoRandom(50_000, 'chunked');
    const d = sha256(data);
    const start = await fetchRaw(reg.url, '/v2/lib/x/blobs/uploads/', { method: 'POST', headers: AUTH });
    expect(start.status).toBe(202);
    const loc = start.headers.location as string;
    expect(loc).toMatch(/^\/v2\/lib\/x\/blobs\/uploads\/[0-9a-f-]{36}$/);
    const patch = (from: number, to: number) => patchUpload(reg.url, loc, data, from, to);
    const p1 = await patch(0, 20_000);
    expect(p1.status).toBe(202);
    expect(p1.headers.range).toBe('0-19999');
    // A chunk that does not start where the upload stands is refused with where it stands.
    const gap = await patch(25_000, 30_000);
    expect(gap.status).toBe(416);
    expect(gap.headers.range).toBe('0-19999');
    const status = await fetchRaw(reg.url, loc, { headers: AUTH });
    expect(status.status).toBe(204);
    expect(status.headers.range).toBe('0-19999');
    expect((await patch(20_000, 50_000)).status).toBe(202);
    const done = await fetchRaw(reg.url, `${loc}?digest=${d}`, { method: 'PUT', headers: AUTH });
    expect(done.status).toBe(201);
    expect(done.headers['docker-content-digest']).toBe(d);
    expect(sha256((await fetchRaw(reg.url, `/v2/lib/x/blobs/${d}`)).body)).toBe(d);
    // The upload is over: its URL no longer answers.
    const after = await fetchRaw(reg.url, loc, { headers: AUTH });
    expect(after.status).toBe(404);
    expect(errorCode(after)).toBe('BLOB_UPLOAD_UNKNOWN');
  });

  it('PUT with the last chunk as body; DELETE cancels; uploads expire', async () => {
    const reg = await serve({ uploadTtlSeconds: 1 });
    const data = Buffer.from('last chunk in the PUT');
    const s1 = await fetchRaw(reg.url, '/v2/r/blobs/uploads/', { method: 'POST', headers: AUTH });
    const put = await fetchRaw(reg.url, `${s1.headers.location as string}?digest=${sha256(data)}`, {
      method: 'PUT',
      headers: { ...AUTH, 'content-length': String(data.byteLength) },
      body: data,
    });
    expect(put.status).toBe(201);

    const s2 = await fetchRaw(reg.url, '/v2/r/blobs/uploads/', { method: 'POST', headers: AUTH });
    const del = await fetchRaw(reg.url, s2.headers.location as string, { method: 'DELETE', headers: AUTH });
    expect(del.status).toBe(204);
    expect((await fetchRaw(reg.url, s2.headers.location as string, { headers: AUTH })).status).toBe(404);

    const s3 = await fetchRaw(reg.url, '/v2/r/blobs/uploads/', { method: 'POST', headers: AUTH });
    const uploadsDir = join(reg.store.root, 'oci', 'uploads');
    const s3Id = String(s3.headers['docker-upload-uuid']);
    // An upload is its data and a small JSON file naming its repository.
    expect((await readdir(uploadsDir)).sort()).toEqual([s3Id, `${s3Id}.json`]);
    const swept = await reg.server.oci.sweep(Date.now() + 5000);
    expect(swept.expiredUploads).toBe(1);
    expect(await readdir(uploadsDir)).toHaveLength(0);
    expect((await fetchRaw(reg.url, s3.headers.location as string, { headers: AUTH })).status).toBe(404);
  });

  it('cross-repository mount: 201 for a blob the registry has, a new upload otherwise', async () => {
    const reg = await serve();
    const data = Buffer.from('mount me');
    await pushBlob(reg.url, 'src/repo', data);
    const m = await fetchRaw(reg.url, `/v2/dst/repo/blobs/uploads/?mount=${sha256(data)}&from=src/repo`, {
      method: 'POST',
      headers: AUTH,
    });
    expect(m.status).toBe(201);
    expect(m.headers.location).toBe(`/v2/dst/repo/blobs/${sha256(data)}`);
    const miss = await fetchRaw(reg.url, `/v2/dst/repo/blobs/uploads/?mount=${sha256('absent')}&from=src/repo`, {
      method: 'POST',
      headers: AUTH,
    });
    expect(miss.status).toBe(202);
    expect(miss.headers.location).toMatch(/\/blobs\/uploads\//);
  });
});

describe('/v2 manifests', () => {
  it('a pushed image is ingested; its layers are served rebuilt with their diffIDs', async () => {
    const reg = await serve();
    const { dir: ld, image: img } = await layout('v1');
    const put = await pushWrittenImage(reg.url, ld, img, 'app/web', 'v1');
    expect(put.headers['docker-content-digest']).toBe(img.manifestDigest);
    // Ingested into the file store exactly as an import: an image with recipes, files stored by digest.
    const row = reg.store.meta.image(img.manifestDigest);
    expect(row?.layers.map((l) => l.diffId)).toEqual(img.layers.map((l) => l.diffId));
    expect(await reg.store.blobs.has(sha256(BIG))).toBe(true);
    expect(reg.store.meta.tags('app/web').map((t) => t.tag)).toEqual(['v1']);
    // The compressed layer (gzip) is dropped; the uncompressed one is its own diffID, so it is not held either.
    expect(existsSync(reg.server.oci.held.path(img.layers[0]?.digest as Digest))).toBe(false);

    const got = await fetchRaw(reg.url, '/v2/app/web/manifests/v1', {
      headers: { accept: `${MediaType.OCI_MANIFEST}, ${MediaType.DOCKER_MANIFEST}` },
    });
    expect(got.status).toBe(200);
    expect(got.headers['content-type']).toBe(MediaType.OCI_MANIFEST);
    expect(got.headers['docker-content-digest']).toBe(sha256(got.body));
    const served = got.json<{
      config: { digest: string };
      layers: { digest: string; size: number; mediaType: string }[];
    }>();
    expect(served.config.digest).toBe(img.configDigest);
    expect(served.layers.map((l) => l.digest)).toEqual(img.layers.map((l) => l.diffId));
    expect(served.layers.every((l) => l.mediaType === MediaType.OCI_LAYER)).toBe(true);
    // Every layer comes back byte-identical to the original tar, whole and by range, from the bounded cache.
    for (const l of served.layers) {
      const head = await fetchRaw(reg.url, `/v2/app/web/blobs/${l.digest}`, { method: 'HEAD' });
      expect(Number(head.headers['content-length'])).toBe(l.size);
      const body = (await fetchRaw(reg.url, `/v2/app/web/blobs/${l.digest}`)).body;
      expect(sha256(body)).toBe(l.digest);
      const part = await fetchRaw(reg.url, `/v2/app/web/blobs/${l.digest}`, { headers: { range: 'bytes=512-1535' } });
      expect(part.status).toBe(206);
      expect(part.body.equals(body.subarray(512, 1536))).toBe(true);
    }
    const config = await fetchRaw(reg.url, `/v2/app/web/blobs/${img.configDigest}`);
    expect(config.body.equals(img.configBytes)).toBe(true);
    // By the served digest and by the pushed digest (the pushed bytes, verbatim).
    const byServed = await fetchRaw(reg.url, `/v2/app/web/manifests/${sha256(got.body)}`);
    expect(byServed.body.equals(got.body)).toBe(true);
    const byPushed = await fetchRaw(reg.url, `/v2/app/web/manifests/${img.manifestDigest}`);
    expect(byPushed.body.equals(img.manifestBytes)).toBe(true);
  });

  it('keepLayerBlobs serves the pushed manifest verbatim with its compressed blobs', async () => {
    const reg = await serve({ keepLayerBlobs: true });
    const { dir: ld, image: img } = await layout('kept');
    await pushWrittenImage(reg.url, ld, img, 'keep/me', 'kept');
    const got = await fetchRaw(reg.url, '/v2/keep/me/manifests/kept');
    expect(got.body.equals(img.manifestBytes)).toBe(true);
    const l0 = img.layers[0] as { digest: Digest };
    expect(sha256((await fetchRaw(reg.url, `/v2/keep/me/blobs/${l0.digest}`)).body)).toBe(l0.digest);
  });

  it('Accept negotiation: a manifest type the client does not accept is MANIFEST_UNKNOWN', async () => {
    const reg = await serve();
    const { dir: ld, image: img } = await layout('neg');
    await pushWrittenImage(reg.url, ld, img, 'n/eg', 'neg');
    const r = await fetchRaw(reg.url, '/v2/n/eg/manifests/neg', { headers: { accept: MediaType.DOCKER_MANIFEST } });
    expect(r.status).toBe(404);
    expect(errorCode(r)).toBe('MANIFEST_UNKNOWN');
  });

  it('an image index names the manifests served for its children', async () => {
    const reg = await serve();
    const { dir: ld, image: img } = await layout('multi');
    await pushWrittenImage(reg.url, ld, img, 'multi/arch', img.manifestDigest);
    expect(reg.store.meta.tags('multi/arch')).toEqual([]);
    const index = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: MediaType.OCI_INDEX,
        manifests: [
          {
            mediaType: MediaType.OCI_MANIFEST,
            digest: img.manifestDigest,
            size: img.manifestBytes.byteLength,
            platform: { os: 'linux', architecture: 'amd64' },
          },
        ],
      }),
    );
    const put = await putManifest(reg.url, 'multi/arch', 'latest', index, MediaType.OCI_INDEX);
    expect(put.status, put.text()).toBe(201);
    const got = await fetchRaw(reg.url, '/v2/multi/arch/manifests/latest');
    expect(got.headers['content-type']).toBe(MediaType.OCI_INDEX);
    const child = got.json<{ manifests: { digest: string; size: number }[] }>().manifests[0] as {
      digest: string;
      size: number;
    };
    const childBody = await fetchRaw(reg.url, `/v2/multi/arch/manifests/${child.digest}`);
    expect(childBody.status).toBe(200);
    expect(sha256(childBody.body)).toBe(child.digest);
    expect(childBody.body.byteLength).toBe(child.size);
  });

  it('tags list paginates with n, last and Link; catalog; DELETE of a tag and of a manifest', async () => {
    const reg = await serve();
    const { dir: ld, image: img } = await layout('t');
    for (const tag of ['a', 'b', 'c']) await pushWrittenImage(reg.url, ld, img, 'p/q', tag);
    const all = await fetchRaw(reg.url, '/v2/p/q/tags/list');
    expect(all.json()).toEqual({ name: 'p/q', tags: ['a', 'b', 'c'] });
    const page1 = await fetchRaw(reg.url, '/v2/p/q/tags/list?n=2');
    expect(page1.json()).toEqual({ name: 'p/q', tags: ['a', 'b'] });
    expect(page1.headers.link).toBe('</v2/p/q/tags/list?n=2&last=b>; rel="next"');
    const page2 = await fetchRaw(reg.url, '/v2/p/q/tags/list?n=2&last=b');
    expect(page2.json()).toEqual({ name: 'p/q', tags: ['c'] });
    expect(page2.headers.link).toBeUndefined();
    expect((await fetchRaw(reg.url, '/v2/_catalog')).json()).toEqual({ repositories: ['p/q'] });
    const unknown = await fetchRaw(reg.url, '/v2/no/such/tags/list');
    expect(errorCode(unknown)).toBe('NAME_UNKNOWN');

    expect((await fetchRaw(reg.url, '/v2/p/q/manifests/a', { method: 'DELETE', headers: AUTH })).status).toBe(202);
    expect((await fetchRaw(reg.url, '/v2/p/q/tags/list')).json()).toEqual({ name: 'p/q', tags: ['b', 'c'] });
    const served = sha256((await fetchRaw(reg.url, '/v2/p/q/manifests/b')).body);
    expect((await fetchRaw(reg.url, `/v2/p/q/manifests/${served}`, { method: 'DELETE', headers: AUTH })).status).toBe(
      202,
    );
    expect(errorCode(await fetchRaw(reg.url, '/v2/p/q/manifests/b'))).toBe('MANIFEST_UNKNOWN');
    expect(errorCode(await fetchRaw(reg.url, `/v2/p/q/manifests/${served}`))).toBe('MANIFEST_UNKNOWN');
  });

  it('an image imported with `cairn import` is pulled through /v2 too', async () => {
    const reg = await serve();
    const [fx] = await importFixtureImage(reg.store, { image: image('imp'), target: 'imported/img:1' });
    const got = await fetchRaw(reg.url, '/v2/imported/img/manifests/1');
    expect(got.status).toBe(200);
    const layers = got.json<{ layers: { digest: string }[] }>().layers.map((l) => l.digest);
    expect(layers).toEqual(fx?.written.layers.map((l) => l.diffId));
    for (const d of layers) expect(sha256((await fetchRaw(reg.url, `/v2/imported/img/blobs/${d}`)).body)).toBe(d);
    const byDigest = await fetchRaw(reg.url, `/v2/imported/img/manifests/${sha256(got.body)}`);
    expect(byDigest.status).toBe(200);
  });
});
