// The conventional path the cold-start bench compares cairn with: pull an image from a plain
// HTTP server holding an OCI layout (index.json, manifest, config, every layer blob, the
// blobs downloaded in parallel and checked against their digests), then unpack the layers in
// order into a root filesystem with GNU tar and apply the OCI whiteouts (`.wh.NAME` deletes
// NAME of lower layers, `.wh..wh..opq` hides everything lower layers put in its directory).
import { createHash } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, readdir, rm, writeFile } from 'node:fs/promises';
import { get } from 'node:http';
import { basename, dirname, join } from 'node:path';
import { now, run } from '../lib/bench.js';

function fetchBuffer(url) {
  return new Promise((resolve, reject) => {
    get(url, (res) => {
      if (res.statusCode !== 200) {
        res.resume();
        reject(new Error(`GET ${url}: HTTP ${res.statusCode}`));
        return;
      }
      const parts = [];
      res.on('data', (c) => parts.push(c));
      res.on('end', () => resolve(Buffer.concat(parts)));
      res.on('error', reject);
    }).on('error', reject);
  });
}

/** Streams `url` into `file`, hashing on the way; resolves the byte count. Rejects on a digest mismatch. */
function download(url, file, digest) {
  return new Promise((resolve, reject) => {
    get(url, (res) => {
      if (res.statusCode !== 200) {
        res.resume();
        reject(new Error(`GET ${url}: HTTP ${res.statusCode}`));
        return;
      }
      const hash = createHash('sha256');
      const out = createWriteStream(file);
      let bytes = 0;
      res.on('data', (c) => {
        hash.update(c);
        bytes += c.length;
      });
      res.pipe(out);
      out.on('finish', () => {
        const got = `sha256:${hash.digest('hex')}`;
        if (got !== digest) reject(new Error(`${url}: digest ${got}, expected ${digest}`));
        else resolve(bytes);
      });
      out.on('error', reject);
      res.on('error', reject);
    }).on('error', reject);
  });
}

const verified = (buf, digest, what) => {
  const got = `sha256:${createHash('sha256').update(buf).digest('hex')}`;
  if (got !== digest) throw new Error(`${what}: digest ${got}, expected ${digest}`);
  return JSON.parse(buf.toString());
};

/** Removes everything under `abs` (relative path `rel`) that this layer did not put there. */
async function clearExcept(abs, rel, keep) {
  for (const e of await readdir(abs, { withFileTypes: true })) {
    const r = rel ? `${rel}/${e.name}` : e.name;
    if (!keep.has(r)) await rm(join(abs, e.name), { recursive: true, force: true });
    else if (e.isDirectory()) await clearExcept(join(abs, e.name), r, keep);
  }
}

/** Applies the whiteouts of one layer just extracted over the lower ones; `names` as tar listed them. */
export async function applyWhiteouts(rootfs, names) {
  const paths = new Set(names.map((n) => n.replace(/^\.\//, '').replace(/\/+$/, '')).filter(Boolean));
  let whiteouts = 0;
  for (const p of paths) {
    const b = basename(p);
    if (!b.startsWith('.wh.')) continue;
    whiteouts++;
    const d = dirname(p) === '.' ? '' : dirname(p);
    if (b === '.wh..wh..opq') await clearExcept(join(rootfs, d), d, paths);
    else await rm(join(rootfs, d, b.slice(4)), { recursive: true, force: true });
    await rm(join(rootfs, p), { force: true });
  }
  return whiteouts;
}

const TAR_DECOMPRESS = {
  'application/vnd.oci.image.layer.v1.tar+gzip': ['-z'],
  'application/vnd.docker.image.rootfs.diff.tar.gzip': ['-z'],
  'application/vnd.oci.image.layer.v1.tar+zstd': ['--zstd'],
  'application/vnd.oci.image.layer.v1.tar': [],
};

/**
 * Pulls `ref` from the OCI layout served at `base` into a fresh OCI layout at `layout`
 * (index.json with this one ref, manifest, config, every layer blob; blobs fetched in
 * parallel and each checked against its digest). Resolves the manifest and byte count.
 */
export async function pull(base, ref, layout) {
  const blobs = join(layout, 'blobs/sha256');
  await mkdir(blobs, { recursive: true });
  const blobUrl = (d) => `${base}/blobs/sha256/${d.slice(7)}`;
  const index = JSON.parse((await fetchBuffer(`${base}/index.json`)).toString());
  const desc = index.manifests.find((m) => m.annotations?.['org.opencontainers.image.ref.name'] === ref);
  if (!desc) throw new Error(`${ref}: not in ${base}/index.json`);
  const manifestBytes = await fetchBuffer(blobUrl(desc.digest));
  const manifest = verified(manifestBytes, desc.digest, `${ref} manifest`);
  const [configBytes, sizes] = await Promise.all([
    fetchBuffer(blobUrl(manifest.config.digest)),
    Promise.all(manifest.layers.map((l) => download(blobUrl(l.digest), join(blobs, l.digest.slice(7)), l.digest))),
  ]);
  verified(configBytes, manifest.config.digest, `${ref} config`);
  await writeFile(join(blobs, desc.digest.slice(7)), manifestBytes);
  await writeFile(join(blobs, manifest.config.digest.slice(7)), configBytes);
  await writeFile(join(layout, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
  await writeFile(join(layout, 'index.json'), JSON.stringify({ schemaVersion: 2, manifests: [desc] }));
  return { manifest, bytes: sizes.reduce((a, b) => a + b, 0) + manifestBytes.length + configBytes.length };
}

/** Unpacks the layers of `manifest` from `layout` into `rootfs` with GNU tar, applying whiteouts. */
export async function unpackTar(layout, manifest, rootfs) {
  await mkdir(rootfs, { recursive: true });
  let whiteouts = 0;
  for (const l of manifest.layers) {
    const flags = TAR_DECOMPRESS[l.mediaType];
    if (!flags) throw new Error(`layer media type ${l.mediaType}`);
    const r = await run(
      'tar',
      [
        '-x',
        '-v',
        ...flags,
        '-f',
        join(layout, 'blobs/sha256', l.digest.slice(7)),
        '-C',
        rootfs,
        '--numeric-owner',
        '-p',
        '--xattrs',
        '--xattrs-include=*',
        '--quoting-style=literal',
      ],
      { timeoutMs: 300_000, check: true },
    );
    whiteouts += await applyWhiteouts(rootfs, r.stdout.split('\n'));
  }
  return { whiteouts };
}

/** Unpacks with `umoci raw unpack` (gzip and uncompressed layers only in umoci 0.4.7). */
export async function unpackUmoci(layout, ref, rootfs) {
  await run('umoci', ['raw', 'unpack', '--image', `${layout}:${ref}`, rootfs], { timeoutMs: 300_000, check: true });
}

/** Pull, then unpack with tar; phase times in ms. */
export async function pullAndUnpack(base, ref, dir, unpacker = 'tar') {
  const t0 = now();
  const layout = join(dir, 'layout');
  const rootfs = join(dir, 'rootfs');
  const p = await pull(base, ref, layout);
  const t1 = now();
  const u = unpacker === 'umoci' ? await unpackUmoci(layout, ref, rootfs) : await unpackTar(layout, p.manifest, rootfs);
  const t2 = now();
  return {
    rootfs,
    downloadMs: t1 - t0,
    unpackMs: t2 - t1,
    downloadedBytes: p.bytes,
    layers: p.manifest.layers.length,
    whiteouts: u?.whiteouts,
  };
}
