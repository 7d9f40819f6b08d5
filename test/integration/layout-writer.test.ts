import { lstat, readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { decompress as zstdDecompress } from 'fzstd';
import { describe, expect, it } from 'vitest';
import { hexOf, sha256 } from '../../src/model/digest.js';
import {
  MediaType,
  parseConfig,
  parseManifest,
  REF_NAME_ANNOTATION,
  type ImageIndex,
  type ImageManifest,
} from '../../src/model/oci.js';
import {
  compressLayer,
  writeDockerArchive,
  writeImages,
  writeOciArchive,
  writeOciLayout,
  type ImageInput,
  type WrittenImages,
} from '../../src/image/layout-writer.js';
import { dir, file, hardlink, layer, symlink } from '../fixtures/layers.js';
import { readTarBuffer } from '../fixtures/tar-read.js';
import { testTempDir } from '../fixtures/tmp.js';
import { runCommand, skipWithout } from '../fixtures/tools.js';

const baseLayer = layer(
  [
    dir('etc'),
    file('etc/os-release', 'ID=test\n'),
    dir('bin'),
    file('bin/tool', '#!/bin/sh\necho tool\n', { mode: 0o755 }),
  ],
  'gzip',
);
const appLayer = layer(
  [
    dir('app'),
    file('app/x.txt', 'x'.repeat(3000), { xattrs: { 'user.bin': Buffer.from([0, 255, 10]) } }),
    hardlink('app/y.txt', 'app/x.txt'),
  ],
  'none',
);
const zstdLayer = layer([dir('usr'), dir('usr/bin'), symlink('usr/bin/sh', '/bin/busybox')], 'zstd');

function images(): ImageInput[] {
  return [
    {
      ref: 'app:1',
      layers: [baseLayer, appLayer],
      config: { Cmd: ['/bin/tool'], Env: ['PATH=/bin'] },
      annotations: { 'org.opencontainers.image.title': 'app' },
    },
    { ref: 'tools:2', platform: { os: 'linux', architecture: 'arm64', variant: 'v8' }, layers: [zstdLayer] },
  ];
}

async function filesUnder(root: string): Promise<Map<string, Buffer>> {
  const out = new Map<string, Buffer>();
  const walk = async (d: string): Promise<void> => {
    for (const e of await readdir(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (e.isDirectory()) await walk(p);
      else out.set(relative(root, p), await readFile(p));
    }
  };
  await walk(root);
  return out;
}

function decompressed(blob: Buffer, mediaType: string): Buffer {
  if (mediaType.endsWith('+gzip') || mediaType.endsWith('.tar.gzip')) return gunzipSync(blob);
  if (mediaType.endsWith('+zstd')) return Buffer.from(zstdDecompress(blob));
  return blob;
}

/** Checks an OCI layout directory against what the writer says it wrote, from the bytes on disk. */
async function checkOciLayout(root: string, written: WrittenImages): Promise<void> {
  const files = await filesUnder(root);
  expect(JSON.parse((files.get('oci-layout') as Buffer).toString())).toEqual({ imageLayoutVersion: '1.0.0' });
  expect(files.get('index.json')?.equals(written.topLevel)).toBe(true);
  // Every blob is named by its digest.
  for (const [path, data] of files) {
    if (path.startsWith('blobs/')) expect(path).toBe(`blobs/sha256/${hexOf(sha256(data))}`);
  }
  const blob = (digest: string): Buffer => {
    const data = files.get(`blobs/sha256/${digest.slice(7)}`);
    if (!data) throw new Error(`blob ${digest} missing`);
    return data;
  };
  const referenced = new Set<string>();
  for (const image of written.images) {
    const manifestBytes = blob(image.manifestDigest);
    referenced.add(image.manifestDigest);
    expect(manifestBytes.equals(image.manifestBytes)).toBe(true);
    const parsed = parseManifest(manifestBytes, 'manifest');
    if (parsed.kind !== 'manifest') throw new Error('not a manifest');
    const m = parsed.manifest;
    expect(m.mediaType).toBe(MediaType.OCI_MANIFEST);
    expect(m.config).toEqual({
      mediaType: MediaType.OCI_CONFIG,
      digest: image.configDigest,
      size: image.configBytes.length,
    });
    referenced.add(image.configDigest);
    const configBytes = blob(image.configDigest);
    expect(configBytes.equals(image.configBytes)).toBe(true);
    const config = parseConfig(configBytes, 'config');
    expect(config.os).toBe(image.platform.os);
    expect(config.architecture).toBe(image.platform.architecture);
    expect(config.variant).toBe(image.platform.variant);
    expect(config.rootfs?.diff_ids).toEqual(image.layers.map((l) => l.diffId));
    const rawConfig = JSON.parse(configBytes.toString()) as { history: unknown[] };
    expect(rawConfig.history).toHaveLength(image.layers.length);
    expect(m.layers).toHaveLength(image.layers.length);
    m.layers.forEach((d, i) => {
      const l = image.layers[i];
      if (!l) throw new Error('layer missing');
      expect(d).toEqual({ mediaType: l.mediaType, digest: l.digest, size: l.size });
      const data = blob(d.digest);
      referenced.add(d.digest);
      expect(data.length).toBe(d.size);
      expect(sha256(decompressed(data, d.mediaType))).toBe(l.diffId);
    });
  }
  for (const ix of written.indexes) referenced.add(ix.digest);
  const blobs = [...files.keys()].filter((p) => p.startsWith('blobs/')).map((p) => `sha256:${p.slice(13)}`);
  expect(new Set(blobs)).toEqual(referenced);
}

describe('OCI image layout writer', () => {
  it('writes a layout whose JSON, digests and layers parse back', async () => {
    const root = join(await testTempDir(), 'layout');
    const input = images();
    const written = await writeOciLayout(root, input);
    await checkOciLayout(root, written);

    const parsed = parseManifest(written.topLevel, 'index.json');
    if (parsed.kind !== 'index') throw new Error('index.json is not an index');
    expect(parsed.index.manifests.map((d) => d.annotations?.[REF_NAME_ANNOTATION])).toEqual(['app:1', 'tools:2']);
    const [app, tools] = written.images;
    if (!app || !tools) throw new Error('images missing');
    expect(parsed.index.manifests.map((d) => d.digest)).toEqual([app.manifestDigest, tools.manifestDigest]);
    expect(app.layers.map((l) => [l.mediaType, l.compression])).toEqual([
      [MediaType.OCI_LAYER_GZIP, 'gzip'],
      [MediaType.OCI_LAYER, 'none'],
    ]);
    expect(tools.layers.map((l) => l.mediaType)).toEqual([MediaType.OCI_LAYER_ZSTD]);
    expect(app.layers.map((l) => l.diffId)).toEqual([sha256(baseLayer.tar), sha256(appLayer.tar)]);
    expect(app.layers[1]?.digest).toBe(sha256(appLayer.tar));
    expect(app.manifest.annotations).toEqual({ 'org.opencontainers.image.title': 'app' });
    expect(tools.platform).toEqual({ os: 'linux', architecture: 'arm64', variant: 'v8' });
    const config = JSON.parse(app.configBytes.toString()) as Record<string, unknown>;
    expect(config.config).toEqual({ Cmd: ['/bin/tool'], Env: ['PATH=/bin'] });
    expect(config.created).toBe('1970-01-01T00:00:00Z');
    expect(config.rootfs).toEqual({ type: 'layers', diff_ids: app.layers.map((l) => l.diffId) });
  });

  it('is deterministic', async () => {
    const tmp = await testTempDir();
    await writeOciLayout(join(tmp, 'a'), images());
    await writeOciLayout(join(tmp, 'b'), images());
    expect(await filesUnder(join(tmp, 'b'))).toEqual(await filesUnder(join(tmp, 'a')));
    await writeOciArchive(join(tmp, 'a.tar'), images());
    await writeOciArchive(join(tmp, 'b.tar'), images());
    expect((await readFile(join(tmp, 'a.tar'))).equals(await readFile(join(tmp, 'b.tar')))).toBe(true);
    expect(compressLayer(baseLayer.tar, 'gzip').equals(compressLayer(baseLayer.tar, 'gzip'))).toBe(true);
  });

  it('writes a multi-platform image as a nested image index', async () => {
    const root = join(await testTempDir(), 'multi');
    const written = await writeOciLayout(root, [
      { ref: 'multi:1', platform: { os: 'linux', architecture: 'amd64' }, layers: [baseLayer] },
      { ref: 'multi:1', platform: { os: 'linux', architecture: 'arm64', variant: 'v8' }, layers: [appLayer] },
      { ref: 'single:1', layers: [baseLayer] },
    ]);
    await checkOciLayout(root, written);
    const top = JSON.parse(written.topLevel.toString()) as ImageIndex;
    expect(top.manifests.map((d) => [d.mediaType, d.annotations?.[REF_NAME_ANNOTATION]])).toEqual([
      [MediaType.OCI_INDEX, 'multi:1'],
      [MediaType.OCI_MANIFEST, 'single:1'],
    ]);
    const ix = written.indexes[0];
    if (!ix) throw new Error('no index written');
    expect(top.manifests[0]?.digest).toBe(ix.digest);
    const stored = await readFile(join(root, 'blobs/sha256', hexOf(ix.digest)));
    const parsed = parseManifest(stored, 'index');
    if (parsed.kind !== 'index') throw new Error('not an index');
    expect(parsed.index.manifests.map((d) => [d.digest, d.platform])).toEqual([
      [written.images[0]?.manifestDigest, { os: 'linux', architecture: 'amd64' }],
      [written.images[1]?.manifestDigest, { os: 'linux', architecture: 'arm64', variant: 'v8' }],
    ]);
  });

  it('writes a multi-platform image flat in index.json when asked', async () => {
    const root = join(await testTempDir(), 'flat');
    const written = await writeOciLayout(
      root,
      [
        { ref: 'multi:1', platform: { os: 'linux', architecture: 'amd64' }, layers: [baseLayer] },
        { ref: 'multi:1', platform: { os: 'linux', architecture: 'arm64' }, layers: [appLayer] },
      ],
      { multiPlatform: 'flat' },
    );
    await checkOciLayout(root, written);
    expect(written.indexes).toEqual([]);
    const top = JSON.parse(written.topLevel.toString()) as ImageIndex;
    expect(top.manifests.map((d) => [d.annotations?.[REF_NAME_ANNOTATION], d.platform?.architecture])).toEqual([
      ['multi:1', 'amd64'],
      ['multi:1', 'arm64'],
    ]);
  });

  it('refuses two images of one ref and platform', async () => {
    const root = join(await testTempDir(), 'dup');
    await expect(
      writeOciLayout(root, [
        { ref: 'a:1', layers: [baseLayer] },
        { ref: 'a:1', layers: [appLayer] },
      ]),
    ).rejects.toThrow(/two images for platform linux\/amd64/);
    await expect(writeOciLayout(root, [])).rejects.toThrow(/no images/);
  });

  it('replaces a previous output but refuses to delete anything else', async () => {
    const tmp = await testTempDir();
    const root = join(tmp, 'layout');
    await writeOciLayout(root, [{ ref: 'a:1', layers: [baseLayer] }]);
    const second = await writeOciLayout(root, [{ ref: 'b:1', layers: [appLayer] }]);
    await checkOciLayout(root, second);
    await writeFile(join(tmp, 'precious.txt'), 'keep');
    await expect(writeOciLayout(tmp, [{ layers: [baseLayer] }])).rejects.toThrow(/refusing to replace/);
    await expect(writeOciArchive(root, [{ layers: [baseLayer] }])).rejects.toThrow(/is a directory/);
    expect(await readFile(join(tmp, 'precious.txt'), 'utf8')).toBe('keep');
  });

  it('writes an OCI archive holding the same files as the layout', async () => {
    const tmp = await testTempDir();
    const layoutWritten = await writeOciLayout(join(tmp, 'layout'), images());
    const archiveWritten = await writeOciArchive(join(tmp, 'image.tar'), images());
    expect(archiveWritten.images.map((i) => i.manifestDigest)).toEqual(
      layoutWritten.images.map((i) => i.manifestDigest),
    );
    const entries = await readTarBuffer(await readFile(join(tmp, 'image.tar')));
    const names = entries.map((e) => e.header.name);
    expect(names).toEqual([...names].sort());
    expect(names.slice(0, 2)).toEqual(['blobs/', 'blobs/sha256/']);
    const members = new Map(entries.filter((e) => e.header.type === 'file').map((e) => [e.header.name, e.data]));
    expect(members).toEqual(await filesUnder(join(tmp, 'layout')));
    for (const e of entries) expect(e.header.mtime).toBe(0);
  });
});

describe('docker archive writer', () => {
  it('writes manifest.json, the config and layer.tar files', async () => {
    const tmp = await testTempDir();
    const out = join(tmp, 'docker.tar');
    const written = await writeDockerArchive(out, [
      { ref: 'app:1', layers: [baseLayer, appLayer], config: { Cmd: ['/bin/tool'] } },
      { ref: 'registry.example/team/other:2', layers: [baseLayer, zstdLayer] },
    ]);
    const entries = await readTarBuffer(await readFile(out));
    const members = new Map(entries.filter((e) => e.header.type === 'file').map((e) => [e.header.name, e.data]));
    const manifest = JSON.parse((members.get('manifest.json') as Buffer).toString()) as {
      Config: string;
      RepoTags: string[];
      Layers: string[];
    }[];
    expect(manifest.map((m) => m.RepoTags)).toEqual([['app:1'], ['registry.example/team/other:2']]);
    const [app, other] = written.images;
    if (!app || !other) throw new Error('images missing');
    expect(manifest[0]?.Config).toBe(`${hexOf(app.configDigest)}.json`);
    expect(members.get(`${hexOf(app.configDigest)}.json`)?.equals(app.configBytes)).toBe(true);
    expect(parseConfig(app.configBytes, 'config').rootfs?.diff_ids).toEqual([
      sha256(baseLayer.tar),
      sha256(appLayer.tar),
    ]);
    // Layers are stored uncompressed, as `docker save` does, at <id>/layer.tar.
    expect(manifest[0]?.Layers).toEqual(app.layers.map((l) => l.path));
    for (const l of app.layers) {
      expect(l.path).toMatch(/^[0-9a-f]{64}\/layer\.tar$/);
      const data = members.get(l.path as string) as Buffer;
      expect(sha256(data)).toBe(l.diffId);
      expect(l.digest).toBe(l.diffId);
      expect(l.mediaType).toBe(MediaType.DOCKER_LAYER);
    }
    // A shared base layer is stored once.
    expect(other.layers[0]?.path).toBe(app.layers[0]?.path);
    expect(entries.filter((e) => e.header.name === app.layers[0]?.path)).toHaveLength(1);
    expect(JSON.parse((members.get('repositories') as Buffer).toString())).toEqual({
      app: { '1': app.layers[1]?.path?.slice(0, 64) },
      'registry.example/team/other': { '2': other.layers[1]?.path?.slice(0, 64) },
    });
    const dm = app.manifest as ImageManifest;
    expect(dm.mediaType).toBe(MediaType.DOCKER_MANIFEST);
    expect(app.manifestDigest).toBe(sha256(JSON.stringify(dm)));
  });

  it('keeps compressed layers when asked', async () => {
    const out = join(await testTempDir(), 'docker.tar');
    const written = await writeDockerArchive(out, [{ ref: 'app:1', layers: [baseLayer, zstdLayer] }], {
      dockerLayers: 'as-given',
    });
    const [img] = written.images;
    expect(img?.layers.map((l) => l.mediaType)).toEqual([MediaType.DOCKER_LAYER_GZIP, MediaType.OCI_LAYER_ZSTD]);
    const entries = await readTarBuffer(await readFile(out));
    for (const l of img?.layers ?? []) {
      const data = entries.find((e) => e.header.name === l.path)?.data as Buffer;
      expect(sha256(data)).toBe(l.digest);
      expect(sha256(decompressed(data, l.mediaType))).toBe(l.diffId);
    }
    await expect(
      writeDockerArchive(out, [
        { ref: 'a:1', layers: [baseLayer] },
        { ref: 'a:1', layers: [baseLayer] },
      ]),
    ).rejects.toThrow(/one image per ref/);
  });
});

describe('skopeo reads what the writer wrote', () => {
  const inspect = (ref: string, ...flags: string[]): Record<string, unknown> =>
    JSON.parse(runCommand('skopeo', ['inspect', ...flags, ref]).toString()) as Record<string, unknown>;

  it('inspects and copies the OCI layout, archive and docker archive', async (ctx) => {
    skipWithout(ctx, 'skopeo');
    const tmp = await testTempDir();
    const layout = await writeOciLayout(join(tmp, 'layout'), images());
    const [app, tools] = layout.images;
    if (!app || !tools) throw new Error('images missing');
    const appInfo = inspect(`oci:${tmp}/layout:app:1`);
    expect(appInfo.Digest).toBe(app.manifestDigest);
    expect(appInfo.Layers).toEqual(app.layers.map((l) => l.digest));
    expect(appInfo.Architecture).toBe('amd64');
    const toolsInfo = inspect(`oci:${tmp}/layout:tools:2`);
    expect(toolsInfo.Digest).toBe(tools.manifestDigest);
    expect(inspect(`oci:${tmp}/layout:tools:2`, '--config')).toMatchObject({ architecture: 'arm64', variant: 'v8' });
    expect(inspect(`oci:${tmp}/layout:app:1`, '--config').rootfs).toEqual({
      type: 'layers',
      diff_ids: app.layers.map((l) => l.diffId),
    });
    // skopeo copy reads every blob and checks its digest and size.
    runCommand('skopeo', ['copy', '-q', `oci:${tmp}/layout:app:1`, `dir:${tmp}/copy`]);
    expect((await stat(join(tmp, 'copy', 'manifest.json'))).size).toBe(app.manifestBytes.length);

    const archive = await writeOciArchive(join(tmp, 'image.tar'), images());
    expect(inspect(`oci-archive:${tmp}/image.tar:tools:2`).Digest).toBe(archive.images[1]?.manifestDigest);

    const docker = await writeDockerArchive(join(tmp, 'docker.tar'), images());
    const dockerInfo = inspect(`docker-archive:${tmp}/docker.tar:app:1`);
    expect(dockerInfo.Layers).toEqual(docker.images[0]?.layers.map((l) => l.digest));
    runCommand('skopeo', ['copy', '-q', `docker-archive:${tmp}/docker.tar:app:1`, `oci:${tmp}/from-docker:app`]);
  });

  it('picks platforms out of a multi-platform image', async (ctx) => {
    skipWithout(ctx, 'skopeo');
    const tmp = await testTempDir();
    const written = await writeImages(
      join(tmp, 'multi'),
      [
        { ref: 'multi', platform: { os: 'linux', architecture: 'amd64' }, layers: [baseLayer] },
        { ref: 'multi', platform: { os: 'linux', architecture: 'arm64', variant: 'v8' }, layers: [appLayer] },
      ],
      { format: 'oci-layout' },
    );
    const raw = JSON.parse(
      runCommand('skopeo', ['inspect', '--raw', `oci:${tmp}/multi:multi`]).toString(),
    ) as ImageIndex;
    expect(raw.mediaType).toBe(MediaType.OCI_INDEX);
    expect(raw.manifests.map((d) => d.digest)).toEqual(written.images.map((i) => i.manifestDigest));
    // skopeo reports the digest of what the ref names (the index); the layers show which image it picked.
    const arm = inspect(`oci:${tmp}/multi:multi`, '--override-arch', 'arm64', '--override-variant', 'v8');
    expect(arm.Digest).toBe(written.indexes[0]?.digest);
    expect(arm.Layers).toEqual(written.images[1]?.layers.map((l) => l.digest));
    const amd = inspect(`oci:${tmp}/multi:multi`, '--override-arch', 'amd64');
    expect(amd.Layers).toEqual(written.images[0]?.layers.map((l) => l.digest));
  });
});

describe('umoci reads what the writer wrote', () => {
  it('lists refs and unpacks an image', async (ctx) => {
    skipWithout(ctx, 'umoci');
    const tmp = await testTempDir();
    await writeOciLayout(join(tmp, 'layout'), images());
    const refs = runCommand('umoci', ['ls', '--layout', join(tmp, 'layout')])
      .toString()
      .trim()
      .split('\n');
    expect(refs.sort()).toEqual(['app:1', 'tools:2']);
    const rootless = process.getuid?.() !== 0 ? ['--rootless'] : [];
    runCommand('umoci', ['unpack', ...rootless, '--image', `${join(tmp, 'layout')}:app:1`, join(tmp, 'bundle')]);
    const rootfs = join(tmp, 'bundle', 'rootfs');
    expect(await readFile(join(rootfs, 'etc/os-release'), 'utf8')).toBe('ID=test\n');
    expect((await stat(join(rootfs, 'bin/tool'))).mode & 0o777).toBe(0o755);
    expect((await stat(join(rootfs, 'app/y.txt'))).ino).toBe((await stat(join(rootfs, 'app/x.txt'))).ino);
    expect((await lstat(join(rootfs, 'etc'))).isDirectory()).toBe(true);
  });
});
