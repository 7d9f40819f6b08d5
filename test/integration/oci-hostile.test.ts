/**
 * Hostile requests to /v2: each gets the specification's error and leaves the
 * store exactly as it was (same files, same rows in every table).
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { beforeEach, describe, expect, it } from 'vitest';
import { hexOf, sha256, type Digest } from '../../src/model/digest.js';
import { MediaType } from '../../src/model/oci.js';
import { writeOciLayout, type WrittenImage } from '../../src/image/layout-writer.js';
import { file, layer } from '../fixtures/layers.js';
import { fetchRaw, startRegistry, type RunningRegistry } from '../fixtures/registry.js';
import { testTempDir } from '../fixtures/tmp.js';
import {
  AUTH,
  errorCode,
  pushBlob,
  pushWrittenImage,
  putManifest,
  storeSnapshot,
  testOciOptions,
  USER,
} from '../fixtures/oci.js';

let reg: RunningRegistry;
let layoutDir: string;
let img: WrittenImage;

beforeEach(async () => {
  reg = await startRegistry(await testTempDir('cairn-oci-hostile-'), {
    oci: testOciOptions({ maxBlobBytes: 100_000, maxManifestBytes: 8192 }),
  });
  layoutDir = join(await testTempDir('cairn-oci-hostile-layout-'), 'layout');
  const w = await writeOciLayout(layoutDir, [
    { ref: 'x', layers: [layer([file('etc/hostname', 'cairn\n'), file('data', 'payload')])] },
  ]);
  img = w.images[0] as WrittenImage;
  // Something already stored, which no refused request may touch.
  await pushWrittenImage(reg.url, layoutDir, img, 'good/repo', 'v1');
});

/** Runs `fn` and asserts that the store has not changed. */
async function storesNothing(fn: () => Promise<void>): Promise<void> {
  const before = await storeSnapshot(reg.store);
  await fn();
  expect(await storeSnapshot(reg.store)).toEqual(before);
}

describe('/v2 hostile requests store nothing', () => {
  it('a blob whose bytes do not match its digest: DIGEST_INVALID', async () => {
    await storesNothing(async () => {
      const r = await pushBlob(reg.url, 'good/repo', Buffer.from('these bytes'), sha256('other bytes'));
      expect(r.status).toBe(400);
      expect(errorCode(r)).toBe('DIGEST_INVALID');
      const bad = await pushBlob(reg.url, 'good/repo', Buffer.from('x'), 'sha256:zz');
      expect(bad.status).toBe(400);
      expect(errorCode(bad)).toBe('DIGEST_INVALID');
    });
  });

  it('a chunked upload finished with the wrong digest: DIGEST_INVALID, upload gone', async () => {
    await storesNothing(async () => {
      const s = await fetchRaw(reg.url, '/v2/good/repo/blobs/uploads/', { method: 'POST', headers: AUTH });
      const loc = s.headers.location as string;
      await fetchRaw(reg.url, loc, { method: 'PATCH', headers: AUTH, body: Buffer.from('abc') });
      const r = await fetchRaw(reg.url, `${loc}?digest=${sha256('abd')}`, { method: 'PUT', headers: AUTH });
      expect(errorCode(r)).toBe('DIGEST_INVALID');
      expect(errorCode(await fetchRaw(reg.url, loc, { headers: AUTH }))).toBe('BLOB_UPLOAD_UNKNOWN');
    });
  });

  it('a manifest naming a blob the registry does not have: MANIFEST_BLOB_UNKNOWN', async () => {
    const m = JSON.parse(img.manifestBytes.toString('utf8')) as { layers: { digest: string }[] };
    (m.layers[0] as { digest: string }).digest = sha256('never pushed');
    await storesNothing(async () => {
      const r = await putManifest(reg.url, 'good/repo', 'v2', Buffer.from(JSON.stringify(m)), MediaType.OCI_MANIFEST);
      expect(r.status).toBe(404);
      expect(errorCode(r)).toBe('MANIFEST_BLOB_UNKNOWN');
    });
  });

  it('a manifest PUT by a digest its body does not hash to: DIGEST_INVALID', async () => {
    await storesNothing(async () => {
      const r = await putManifest(reg.url, 'good/repo', sha256('x'), img.manifestBytes, MediaType.OCI_MANIFEST);
      expect(r.status).toBe(400);
      expect(errorCode(r)).toBe('DIGEST_INVALID');
    });
  });

  it('a manifest that is not JSON or not a manifest: MANIFEST_INVALID', async () => {
    await storesNothing(async () => {
      for (const body of ['{not json', '{"schemaVersion":1}', '{"schemaVersion":2,"mediaType":"text/plain"}']) {
        const r = await putManifest(reg.url, 'good/repo', 'bad', Buffer.from(body), MediaType.OCI_MANIFEST);
        expect(r.status, body).toBe(400);
        expect(errorCode(r), body).toBe('MANIFEST_INVALID');
      }
    });
  });

  it('a layer whose content does not match the config diffID: refused, nothing ingested', async () => {
    // A config whose diff_id lies about the (present, well-formed) layer.
    const config = JSON.parse(img.configBytes.toString('utf8')) as { rootfs: { diff_ids: string[] } };
    config.rootfs.diff_ids = [sha256('another tar')];
    const configBytes = Buffer.from(JSON.stringify(config));
    const manifest = JSON.parse(img.manifestBytes.toString('utf8')) as {
      config: { digest: string; size: number };
    };
    manifest.config = { ...manifest.config, digest: sha256(configBytes), size: configBytes.byteLength };
    expect((await pushBlob(reg.url, 'good/repo', configBytes)).status).toBe(201);
    // The first push's compressed layer was dropped after its ingest: push it again.
    const layerBlob = await readFile(join(layoutDir, 'blobs', 'sha256', hexOf(img.layers[0]?.digest as Digest)));
    expect((await pushBlob(reg.url, 'good/repo', layerBlob)).status).toBe(201);
    await storesNothing(async () => {
      const r = await putManifest(
        reg.url,
        'good/repo',
        'lying',
        Buffer.from(JSON.stringify(manifest)),
        MediaType.OCI_MANIFEST,
      );
      expect(r.status).toBe(400);
      expect(errorCode(r)).toBe('DIGEST_INVALID');
    });
  });

  it('oversized bodies: a manifest over the limit and a blob over the limit (413)', async () => {
    await storesNothing(async () => {
      const big = Buffer.alloc(10_000, 0x20);
      const m = await putManifest(reg.url, 'good/repo', 'huge', big, MediaType.OCI_MANIFEST);
      expect(m.status).toBe(413);
      expect(errorCode(m)).toBe('MANIFEST_INVALID');
      const b = await pushBlob(reg.url, 'good/repo', Buffer.alloc(150_000, 1));
      expect(b.status).toBe(413);
      expect(errorCode(b)).toBe('SIZE_INVALID');
      // Chunked past the limit, without a declared length.
      const s = await fetchRaw(reg.url, '/v2/good/repo/blobs/uploads/', { method: 'POST', headers: AUTH });
      const p = await fetchRaw(reg.url, s.headers.location as string, {
        method: 'PATCH',
        headers: { ...AUTH, 'transfer-encoding': 'chunked' },
        body: Buffer.alloc(120_000, 2),
      });
      expect(p.status).toBe(413);
      await fetchRaw(reg.url, s.headers.location as string, { method: 'DELETE', headers: AUTH });
    });
  });

  it('path tricks in repository names: NAME_INVALID or no route, never a file outside', async () => {
    await storesNothing(async () => {
      for (const path of [
        '/v2/../api/v1/repositories/blobs/uploads/',
        '/v2/good/../repo/blobs/uploads/',
        '/v2/good/%2e%2e/repo/blobs/uploads/',
        '/v2/Good/Repo/blobs/uploads/',
        '/v2/good//repo/blobs/uploads/',
        '/v2/-good/blobs/uploads/',
        `/v2/${'a'.repeat(300)}/blobs/uploads/`,
      ]) {
        const r = await fetchRaw(reg.url, path, { method: 'POST', headers: AUTH });
        expect(r.status, path).toBe(400);
        expect(errorCode(r), path).toBe('NAME_INVALID');
      }
      const tag = await fetchRaw(reg.url, '/v2/good/repo/manifests/..%2f..%2fetc', { headers: AUTH });
      expect(tag.status).toBe(400);
      const digest = await fetchRaw(reg.url, '/v2/good/repo/blobs/sha256:..%2f..%2fregistry.db', { headers: AUTH });
      expect(errorCode(digest)).toBe('DIGEST_INVALID');
    });
  });

  it('writes without credentials or with wrong ones: UNAUTHORIZED with a challenge', async () => {
    await storesNothing(async () => {
      const bad = { authorization: `Basic ${Buffer.from(`${USER}:wrong`).toString('base64')}` };
      for (const headers of [{}, bad]) {
        const post = await pushBlob(reg.url, 'good/repo', Buffer.from('x'), sha256('x'), headers);
        expect(post.status).toBe(401);
        expect(errorCode(post)).toBe('UNAUTHORIZED');
        expect(post.headers['www-authenticate']).toBe('Basic realm="cairn"');
        const m = await putManifest(reg.url, 'good/repo', 'v9', img.manifestBytes, MediaType.OCI_MANIFEST, headers);
        expect(m.status).toBe(401);
        const del = await fetchRaw(reg.url, '/v2/good/repo/manifests/v1', { method: 'DELETE', headers });
        expect(del.status).toBe(401);
      }
      // Reads are open by default.
      expect((await fetchRaw(reg.url, '/v2/good/repo/manifests/v1')).status).toBe(200);
    });
  });
});

describe('/v2 auth configurations', () => {
  it('no users configured: pushes are DENIED, reads open', async () => {
    const open = await startRegistry(await testTempDir('cairn-oci-noauth-'));
    const r = await pushBlob(open.url, 'a/b', Buffer.from('x'), sha256('x'), {});
    expect(r.status).toBe(403);
    expect(errorCode(r)).toBe('DENIED');
    expect((await fetchRaw(open.url, '/v2/')).status).toBe(200);
  });

  it('protected reads need credentials', async () => {
    const prot = await startRegistry(await testTempDir('cairn-oci-prot-'), {
      oci: testOciOptions({}, { protectReads: true }),
    });
    const r = await fetchRaw(prot.url, '/v2/_catalog');
    expect(r.status).toBe(401);
    expect((await fetchRaw(prot.url, '/v2/_catalog', { headers: AUTH })).status).toBe(200);
  });

  it('bearer: the challenge names the token endpoint; a user token pushes, an anonymous one only pulls', async () => {
    const b = await startRegistry(await testTempDir('cairn-oci-bearer-'), {
      oci: testOciOptions({}, { scheme: 'bearer' }),
    });
    const ping = await fetchRaw(b.url, '/v2/');
    expect(ping.status).toBe(401);
    const challenge = ping.headers['www-authenticate'] as string;
    expect(challenge).toBe(`Bearer realm="http://127.0.0.1:${b.port}/auth/token",service="cairn"`);
    const tok = await fetchRaw(b.url, '/auth/token?service=cairn&scope=repository:a/b:pull,push', { headers: AUTH });
    expect(tok.status).toBe(200);
    const token = tok.json<{ token: string }>().token;
    const push = await pushBlob(b.url, 'a/b', Buffer.from('x'), sha256('x'), { authorization: `Bearer ${token}` });
    expect(push.status).toBe(201);
    const anon = (await fetchRaw(b.url, '/auth/token?service=cairn')).json<{ token: string }>().token;
    const denied = await pushBlob(b.url, 'a/b', Buffer.from('y'), sha256('y'), { authorization: `Bearer ${anon}` });
    expect(denied.status).toBe(401);
    expect(denied.headers['www-authenticate']).toContain('scope="repository:a/b:pull,push"');
    const pull = await fetchRaw(b.url, `/v2/a/b/blobs/${sha256('x')}`, {
      headers: { authorization: `Bearer ${anon}` },
    });
    expect(pull.status).toBe(200);
    const forged = await pushBlob(b.url, 'a/b', Buffer.from('z'), sha256('z'), {
      authorization: `Bearer ${token.slice(0, -2)}xx`,
    });
    expect(forged.status).toBe(401);
    const wrong = await fetchRaw(b.url, '/auth/token', {
      headers: { authorization: `Basic ${Buffer.from('alice:nope').toString('base64')}` },
    });
    expect(wrong.status).toBe(401);
  });
});
