import { describe, expect, it } from 'vitest';
import { CairnError, ErrorCode } from '../../src/model/errors.js';
import { sha256, type Digest } from '../../src/model/digest.js';
import { MediaType } from '../../src/model/oci.js';
import { about, ociErrorOf } from '../../src/registry/oci/errors.js';
import { parseOciOptions, parseUserList, DEFAULT_OCI_OPTIONS } from '../../src/registry/oci/options.js';
import { accepts, uncompressedManifest } from '../../src/registry/oci/served-manifest.js';
import { resolveServeConfig } from '../../src/registry/config.js';

describe('oci options', () => {
  it('fills defaults and refuses bad values, naming the option', () => {
    expect(parseOciOptions(undefined)).toEqual(DEFAULT_OCI_OPTIONS);
    expect(() => parseOciOptions({ maxBlobBytes: -1 })).toThrow(/oci\.maxBlobBytes/);
    expect(() => parseOciOptions({ nope: 1 })).toThrow(/unknown key "nope"/);
    expect(() => parseOciOptions({ auth: { users: {} } })).toThrow(/oci\.auth\.users: names no user/);
    expect(() => parseOciOptions({ auth: { users: { a: 'b' }, scheme: 'digest' } })).toThrow(/oci\.auth\.scheme/);
    expect(() => parseOciOptions({ keepLayerBlobs: 'yes' })).toThrow(/keepLayerBlobs/);
    const o = parseOciOptions({ auth: { users: { a: 'pw' } } });
    expect(o.auth).toEqual({ scheme: 'basic', users: { a: 'pw' }, protectReads: false, tokenTtlSeconds: 300 });
  });

  it('takes users from CAIRN_OCI_USERS over the file', () => {
    expect(parseUserList('a:b,c:d:e', 'X')).toEqual({ a: 'b', c: 'd:e' });
    expect(() => parseUserList('nocolon', 'CAIRN_OCI_USERS')).toThrow(/CAIRN_OCI_USERS/);
    const cfg = resolveServeConfig({ root: '/r' }, { CAIRN_OCI_USERS: 'ci:pw', CAIRN_OCI_AUTH_SCHEME: 'bearer' });
    expect(cfg.oci.auth?.users).toEqual({ ci: 'pw' });
    expect(cfg.oci.auth?.scheme).toBe('bearer');
  });
});

describe('oci error mapping', () => {
  it('maps one cairn code to the spec code of what the request was about', () => {
    const nf = new CairnError(ErrorCode.NOT_FOUND, 'x');
    expect(ociErrorOf(nf, 'blob')).toMatchObject({ status: 404, code: 'BLOB_UNKNOWN' });
    expect(ociErrorOf(nf, 'manifest')).toMatchObject({ status: 404, code: 'MANIFEST_UNKNOWN' });
    expect(ociErrorOf(nf, 'manifest-put')).toMatchObject({ status: 404, code: 'MANIFEST_BLOB_UNKNOWN' });
    expect(ociErrorOf(nf, 'upload')).toMatchObject({ status: 404, code: 'BLOB_UPLOAD_UNKNOWN' });
    expect(ociErrorOf(new CairnError(ErrorCode.DIGEST_MISMATCH, 'x'), 'upload').code).toBe('DIGEST_INVALID');
    expect(ociErrorOf(new CairnError(ErrorCode.UNAUTHORIZED, 'x'), 'blob').status).toBe(401);
    expect(ociErrorOf(new Error('boom'), 'blob')).toEqual({ status: 500, code: 'UNKNOWN', message: 'internal error' });
    // A mark from `about` wins over the route's subject, for sync and async failures.
    let marked: unknown;
    try {
      about('name', () => {
        throw new CairnError(ErrorCode.INVALID_INPUT, 'bad name');
      });
    } catch (err) {
      marked = err;
    }
    expect(ociErrorOf(marked, 'blob').code).toBe('NAME_INVALID');
  });

  it('marks async failures too', async () => {
    const err = await about('digest', () => Promise.reject(new CairnError(ErrorCode.INVALID_INPUT, 'bad'))).catch(
      (e: unknown) => e,
    );
    expect(ociErrorOf(err, 'upload').code).toBe('DIGEST_INVALID');
  });
});

describe('served manifests', () => {
  const pushed = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: MediaType.DOCKER_MANIFEST,
      config: { mediaType: MediaType.DOCKER_CONFIG, digest: sha256('c'), size: 1 },
      layers: [{ mediaType: MediaType.DOCKER_LAYER_GZIP, digest: sha256('gz'), size: 10, annotations: { a: 'b' } }],
    }),
  );
  const layers = [{ diffId: sha256('tar') as Digest, tarBytes: 2048 }];

  it('names the uncompressed tars, the same way every time', () => {
    const a = uncompressedManifest(pushed, layers);
    const b = uncompressedManifest(Buffer.from(pushed), layers);
    expect(a.digest).toBe(b.digest);
    expect(a.digest).toBe(sha256(a.data));
    const doc = JSON.parse(a.data.toString()) as { layers: unknown[]; config: { digest: string } };
    expect(doc.layers).toEqual([
      { mediaType: MediaType.DOCKER_LAYER, digest: sha256('tar'), size: 2048, annotations: { a: 'b' } },
    ]);
    expect(doc.config.digest).toBe(sha256('c'));
    // Already uncompressed: served verbatim.
    const again = uncompressedManifest(a.data, layers);
    expect(again.data).toBe(a.data);
  });

  it('honours Accept', () => {
    expect(accepts(undefined, MediaType.OCI_MANIFEST)).toBe(true);
    expect(accepts(`${MediaType.DOCKER_MANIFEST};q=0.9, ${MediaType.OCI_MANIFEST}`, MediaType.OCI_MANIFEST)).toBe(true);
    expect(accepts(MediaType.DOCKER_MANIFEST, MediaType.OCI_MANIFEST)).toBe(false);
    expect(accepts('*/*', MediaType.OCI_INDEX)).toBe(true);
  });
});
