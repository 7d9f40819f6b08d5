import { describe, expect, it } from 'vitest';
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { join } from 'node:path';
import { createHash, randomBytes } from 'node:crypto';
import { importImage } from '../../src/registry/importer.js';
import { RegistryStore } from '../../src/registry/store.js';
import { registryStats } from '../../src/registry/stats.js';
import { collectGarbage } from '../../src/registry/gc.js';
import { rebuildLayerTar } from '../../src/registry/layer-rebuild.js';
import { decodeRecipe } from '../../src/model/recipe.js';
import { CHUNK_BYTES, unpackChunks } from '../../src/model/chunks.js';
import { CairnError, ErrorCode } from '../../src/model/errors.js';
import type { Entry } from '../../src/model/entry.js';
import type { Digest } from '../../src/model/digest.js';
import { writeImages, writeOciLayout, type ImageFormat, type ImageInput } from '../../src/image/layout-writer.js';
import {
  blockDev,
  charDev,
  dir,
  fifo,
  file,
  hardlink,
  layer,
  layerTar,
  opaque,
  symlink,
  whiteout,
} from '../fixtures/layers.js';
import * as hostile from '../fixtures/hostile.js';
import { testTempDir } from '../fixtures/tmp.js';
import { listTarIndependently } from '../fixtures/independent-tar.js';

const run = promisify(execFile);
const CAP = Buffer.from([0x01, 0x00, 0x00, 0x02, 0x00, 0x20, 0x00, 0x00, 0xff, 0x00, 0x80]);

/** A base layer and an app layer covering every entry type and marker. */
function richImage(ref = 'rich:1'): ImageInput {
  const base = layerTar([
    dir('bin'),
    file('bin/tool', 'binary tool\n', { mode: 0o4755, xattrs: { 'security.capability': CAP, 'user.note': 'hi' } }),
    hardlink('bin/tool-link', 'bin/tool'),
    symlink('bin/sh', '/bin/tool'),
    symlink('bin/rel', '../etc/passwd'),
    dir('dev'),
    charDev('dev/null', 1, 3, { mode: 0o666 }),
    blockDev('dev/sda', 8, 0, { mode: 0o660, gid: 6 }),
    fifo('dev/pipe'),
    dir('etc', { mode: 0o755 }),
    file('etc/passwd', 'root:x:0:0::/root:/bin/sh\n'),
    file('etc/motd', 'welcome\n'),
    dir('var/cache/app', { mode: 0o700, uid: 1000, gid: 1000, uname: 'app', gname: 'app' }),
    file('var/cache/app/old', 'old cache\n', { uid: 1000 }),
    file(`deep/${'x'.repeat(120)}/${'long-name-'.repeat(12)}.txt`, 'long path\n'),
    file('empty', ''),
  ]);
  const app = layerTar([
    dir('etc'),
    file('etc/passwd', 'root:x:0:0::/root:/bin/sh\napp:x:1000:1000::/app:/bin/sh\n'),
    whiteout('etc/motd'),
    dir('var/cache/app', { mode: 0o755 }),
    opaque('var/cache/app'),
    file('var/cache/app/new', 'new cache\n', { mtime: 1_700_000_123.5 }),
    file('app/big.bin', Buffer.alloc(3 * 1024 * 1024 + 17, 7)),
    file('app/copy-of-passwd', 'root:x:0:0::/root:/bin/sh\n'),
  ]);
  return {
    ref,
    layers: [
      { tar: base, compression: 'gzip' },
      { tar: app, compression: 'zstd' },
    ],
    config: { Cmd: ['/bin/sh'] },
  };
}

async function freshStore(): Promise<RegistryStore> {
  return RegistryStore.open(join(await testTempDir(), 'registry'));
}

async function collect(stream: AsyncIterable<Buffer>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of stream) parts.push(c);
  return Buffer.concat(parts);
}

/** What a store holds, for "nothing changed" assertions. */
async function snapshot(store: RegistryStore): Promise<unknown> {
  const blobs: string[] = [];
  for await (const d of store.blobs.list()) blobs.push(d);
  const referenced = store.meta.referencedFiles();
  return {
    totals: store.meta.totals(),
    images: store.meta.allImages(),
    tags: store.meta.repositories().map((r) => store.meta.tags(r)),
    referencedBlobs: blobs.filter((b) => referenced.has(b)),
  };
}

/** Maps cairn's entry back to the tar member python sees, for comparison. */
function asTarMember(e: Entry, rawName: string): Record<string, unknown> {
  const out: Record<string, unknown> = {
    name: rawName,
    type: e.type === 'whiteout' || e.type === 'opaque' ? 'file' : e.type,
    mode: e.mode,
    uid: e.uid,
    gid: e.gid,
    mtime: e.mtime,
    size: e.size,
  };
  if (e.digest) out.sha256 = e.digest;
  if (e.xattrs) out.xattrs = e.xattrs;
  if (e.devMajor !== undefined) out.devmajor = e.devMajor;
  if (e.devMinor !== undefined) out.devminor = e.devMinor;
  return out;
}

describe('import', () => {
  const formats: ImageFormat[] = ['oci-layout', 'oci-archive', 'docker-archive'];
  for (const format of formats) {
    it(`imports a ${format} and rebuilds every layer byte for byte from the store`, async () => {
      const dirPath = await testTempDir();
      const src = join(dirPath, format === 'oci-layout' ? 'layout' : 'image.tar');
      const written = await writeImages(src, [richImage()], { format });
      const store = await freshStore();
      const r = await importImage(store, `${src}:rich:1`, 'lib/rich:1');
      const img = written.images[0]!;
      expect(r.layers.map((l) => l.diffId)).toEqual(img.layers.map((l) => l.diffId));
      if (format !== 'docker-archive') expect(r.digest).toBe(img.manifestDigest);

      const row = store.meta.imageByReference('lib/rich', '1')!;
      expect(row.layers).toHaveLength(2);
      for (const [i, l] of row.layers.entries()) {
        const recipe = decodeRecipe(store.meta.recipe(l.recipe)!, { gzipped: true, expected: l.recipe });
        const rebuilt = await collect(rebuildLayerTar(store.meta.skeleton(l.skeleton)!, recipe, store.blobs));
        const digest = `sha256:${createHash('sha256').update(rebuilt).digest('hex')}`;
        expect(digest, `layer ${i} rebuilt`).toBe(img.layers[i]!.diffId);
        // Entry metadata and contents checked against Python's tarfile reading the original tar.
        const original = listTarIndependently(richImage().layers[i]!.tar);
        expect(recipe.entries).toHaveLength(original.length);
        recipe.entries.forEach((e, j) => {
          const o = original[j]!;
          const want: Record<string, unknown> = {
            name: o.name.replace(/\/$/, ''),
            type: o.type,
            mode: o.mode,
            uid: o.uid,
            gid: o.gid,
            mtime: o.mtime,
            size: o.size,
          };
          if (o.sha256 && !/(^|\/)\.wh\./.test(o.name)) want.sha256 = o.sha256; // markers carry no content
          if (o.xattrs) want.xattrs = o.xattrs;
          if (o.devmajor !== undefined) want.devmajor = o.devmajor;
          if (o.devminor !== undefined) want.devminor = o.devminor;
          expect(asTarMember(e, o.name.replace(/\/$/, '')), `entry ${o.name}`).toEqual(want);
          if (e.type === 'symlink') expect(e.linkTarget).toBe(o.linkname);
          if (e.type === 'hardlink') expect(e.linkTarget).toBe(o.linkname);
          if (e.type === 'file') expect(store.blobs.path(e.digest!)).toBeTruthy();
        });
      }
    });
  }

  it('records markers as markers, binary xattrs intact, devices with numbers', async () => {
    const src = join(await testTempDir(), 'layout');
    await writeOciLayout(src, [richImage()]);
    const store = await freshStore();
    await importImage(store, `${src}:rich:1`, 'lib/rich:1');
    const row = store.meta.imageByReference('lib/rich', '1')!;
    const [base, app] = row.layers.map((l) => decodeRecipe(store.meta.recipe(l.recipe)!, { gzipped: true }).entries);
    const byPath = (es: Entry[] | undefined, p: string, t?: string): Entry | undefined =>
      es?.find((e) => e.path === p && (!t || e.type === t));
    expect(Buffer.from(byPath(base, 'bin/tool')!.xattrs!['security.capability']!, 'base64')).toEqual(CAP);
    expect(byPath(base, 'bin/tool')!.mode).toBe(0o4755);
    expect(byPath(base, 'bin/tool-link')).toMatchObject({ type: 'hardlink', linkTarget: 'bin/tool' });
    expect(byPath(base, 'dev/sda')).toMatchObject({ type: 'block', devMajor: 8, devMinor: 0, gid: 6 });
    expect(byPath(base, 'var/cache/app')).toMatchObject({ uname: 'app', uid: 1000 });
    expect(byPath(app, 'etc/motd', 'whiteout')).toBeDefined();
    expect(byPath(app, 'var/cache/app', 'opaque')).toBeDefined();
    expect(app?.some((e) => e.path.includes('.wh.'))).toBe(false);
    expect(byPath(app, 'var/cache/app/new')!.mtime).toBe(1_700_000_123.5);
  });

  it('records per-chunk digests of large contents, so lazy readers can verify by range', async () => {
    const src = join(await testTempDir(), 'layout');
    const big = Buffer.alloc(3 * CHUNK_BYTES + 17);
    for (let i = 0; i < big.length; i += 4096) big[i] = (i / 4096) & 0xff;
    const streamed = Buffer.alloc(5 * CHUNK_BYTES, 3); // over the parser's in-memory limit: written as a stream
    await writeOciLayout(src, [
      { ref: 'big:1', layers: [layer([file('big', big), file('streamed', streamed), file('small', 'x')])] },
    ]);
    const store = await freshStore();
    await importImage(store, `${src}:big:1`, 'lib/big:1');
    for (const content of [big, streamed]) {
      const f = store.meta.file(`sha256:${createHash('sha256').update(content).digest('hex')}`)!;
      const chunks = unpackChunks(f.chunks!);
      expect(chunks).toHaveLength(Math.ceil(content.length / CHUNK_BYTES));
      chunks.forEach((d, i) => {
        const piece = content.subarray(i * CHUNK_BYTES, (i + 1) * CHUNK_BYTES);
        expect(d).toBe(`sha256:${createHash('sha256').update(piece).digest('hex')}`);
      });
    }
    expect(store.meta.file(`sha256:${createHash('sha256').update('x').digest('hex')}`)!.chunks).toBeUndefined();
  });

  it('stores nothing new when the same image is imported twice, and shared files once', async () => {
    const src = join(await testTempDir(), 'layout');
    const shared = file('usr/lib/libshared.so', Buffer.alloc(200_000, 1));
    const images: ImageInput[] = [
      richImage('a:1'),
      { ref: 'b:1', layers: [layer([dir('usr/lib'), shared, file('b.txt', 'b')])] },
      { ref: 'c:1', layers: [layer([dir('usr/lib'), shared, file('c.txt', 'c')], 'none')] },
    ];
    await writeOciLayout(src, images);
    const store = await freshStore();
    const first = await importImage(store, `${src}:a:1`, 'lib/a:1');
    expect(first.newFiles).toBeGreaterThan(0);
    const before = await snapshot(store);
    const again = await importImage(store, `${src}:a:1`, 'lib/a:1');
    expect(again.newFiles).toBe(0);
    expect(again.layers.every((l) => !l.newRecipe)).toBe(true);
    expect(await snapshot(store)).toEqual(before);

    await importImage(store, `${src}:b:1`, 'lib/b:1');
    await importImage(store, `${src}:c:1`, 'lib/c:1');
    const s = await registryStats(store);
    expect(s.images).toBe(3);
    expect(s.layers).toBe(4);
    // libshared.so (200000 bytes) is in two layers and stored once.
    expect(s.fileBytes - s.storedBytes).toBeGreaterThanOrEqual(200_000);
    const copies = store.meta.db.prepare('SELECT refcount FROM files WHERE size = 200000').get() as {
      refcount: number;
    };
    expect(copies.refcount).toBe(2);
  });

  it('picks an image by --platform from a multi-platform index, nested or flat', async () => {
    for (const multiPlatform of ['nested', 'flat'] as const) {
      const src = join(await testTempDir(), 'layout');
      const arm = { os: 'linux', architecture: 'arm64', variant: 'v8' };
      await writeOciLayout(
        src,
        [
          { ref: 'multi:1', layers: [layer([file('arch', 'amd64')])] },
          { ref: 'multi:1', platform: arm, layers: [layer([file('arch', 'arm64')])] },
        ],
        { multiPlatform },
      );
      const store = await freshStore();
      const r = await importImage(store, `${src}:multi:1`, 'lib/multi:arm', { platform: 'linux/arm64' });
      expect(r.platform).toBe('linux/arm64/v8');
      const amd = await importImage(store, `${src}:multi:1`, 'lib/multi:amd');
      expect(amd.platform).toBe('linux/amd64');
      await expect(importImage(store, `${src}:multi:1`, 'lib/multi:x', { platform: 'linux/s390x' })).rejects.toThrow(
        /platform linux\/s390x|no image/,
      );
    }
  });

  it('asks for SOURCE:REF when a layout holds several images, naming the refs', async () => {
    const src = join(await testTempDir(), 'layout');
    await writeOciLayout(src, [richImage('one:1'), richImage('two:1')]);
    const store = await freshStore();
    await expect(importImage(store, src, 'lib/x:1')).rejects.toThrow(/holds 2 images.*one:1, two:1/);
    await expect(importImage(store, `${src}:three:1`, 'lib/x:1')).rejects.toThrow(/no image named "three:1"/);
  });
});

describe('import of hostile or broken input', () => {
  interface Case {
    name: string;
    build: (dir: string) => Promise<string>;
    code: string;
    message: RegExp;
  }
  const oneLayer =
    (tar: Buffer, compression: 'none' | 'gzip' | 'zstd' = 'none') =>
    async (d: string) => {
      const src = join(d, 'layout');
      await writeOciLayout(src, [{ ref: 'bad:1', layers: [{ tar, compression }] }]);
      return `${src}:bad:1`;
    };
  /** Writes a valid image, then replaces the bytes of its single layer blob (digest left as the manifest says). */
  const replacedBlob = (blob: Buffer, compression: 'gzip' | 'zstd') => async (d: string) => {
    const src = join(d, 'layout');
    const w = await writeOciLayout(src, [{ ref: 'bad:1', layers: [{ tar: hostile.payloadTar(), compression }] }]);
    const l = w.images[0]!.layers[0]!;
    await writeFile(join(src, 'blobs', 'sha256', l.digest.slice(7)), blob);
    return `${src}:bad:1`;
  };
  const cases: Case[] = [
    {
      name: "a '..' path",
      build: oneLayer(hostile.dotDotPathTar()),
      code: ErrorCode.UNSAFE_ENTRY,
      message: /'\.\.' component/,
    },
    {
      name: "a nested '..' path",
      build: oneLayer(hostile.nestedDotDotPathTar()),
      code: ErrorCode.UNSAFE_ENTRY,
      message: /'\.\.' component/,
    },
    {
      name: 'an absolute path',
      build: oneLayer(hostile.absolutePathTar()),
      code: ErrorCode.UNSAFE_ENTRY,
      message: /absolute path "\/etc\/passwd"/,
    },
    {
      name: 'a hardlink to a path not earlier in the layer',
      build: oneLayer(hostile.danglingHardlinkTar()),
      code: ErrorCode.UNSAFE_ENTRY,
      message: /hardlink to \/missing\.txt, which is not an earlier/,
    },
    {
      name: 'a path both file and directory',
      build: oneLayer(hostile.fileAndDirTar()),
      code: ErrorCode.UNSAFE_ENTRY,
      message: /both a file and a directory/,
    },
    {
      name: 'a truncated gzip stream',
      build: replacedBlob(hostile.truncatedGzip(), 'gzip'),
      code: ErrorCode.INVALID_INPUT,
      message: /gzip stream is corrupt or truncated/,
    },
    {
      name: 'a truncated zstd stream',
      build: replacedBlob(hostile.truncatedZstd(), 'zstd'),
      code: ErrorCode.INVALID_INPUT,
      message: /zstd stream is corrupt or truncated/,
    },
    {
      name: 'a header claiming more bytes than follow',
      build: oneLayer(hostile.truncatedDataTar()),
      code: ErrorCode.INVALID_INPUT,
      message: /truncated at byte/,
    },
    {
      name: 'an oversized PAX header',
      build: oneLayer(hostile.oversizedPaxTar()),
      code: ErrorCode.INVALID_INPUT,
      message: /PAX header of \d+ bytes exceeds/,
    },
    {
      name: 'a tar with a bad header checksum',
      build: oneLayer(hostile.badChecksumTar()),
      code: ErrorCode.INVALID_INPUT,
      message: /bad checksum/,
    },
    {
      name: 'a layer whose digest does not match the manifest',
      build: async (d) => {
        const src = join(d, 'layout');
        const w = await writeOciLayout(src, [
          { ref: 'bad:1', layers: [{ tar: hostile.payloadTar(), compression: 'none' }] },
        ]);
        const l = w.images[0]!.layers[0]!;
        const path = join(src, 'blobs', 'sha256', l.digest.slice(7));
        const bytes = await readFile(path);
        bytes[bytes.length - 1] = 1; // in the end-of-archive padding: the tar still parses, the digest changes
        await writeFile(path, bytes);
        return `${src}:bad:1`;
      },
      code: ErrorCode.DIGEST_MISMATCH,
      message: /layer 0 \(sha256:[0-9a-f]{64}\) blob: expected sha256:[0-9a-f]{64} but content hashes to/,
    },
    {
      name: 'a manifest that is not JSON',
      build: async (d) => {
        const src = join(d, 'layout');
        const w = await writeOciLayout(src, [{ ref: 'bad:1', layers: [layer([file('a', 'a')])] }]);
        // Rewrite the manifest with non-JSON and fix up index.json's descriptor so only the JSON is wrong.
        const bad = Buffer.from('{this is not json');
        const digest = `sha256:${createHash('sha256').update(bad).digest('hex')}`;
        await writeFile(join(src, 'blobs', 'sha256', digest.slice(7)), bad);
        const index = JSON.parse(await readFile(join(src, 'index.json'), 'utf8')) as {
          manifests: { digest: string; size: number }[];
        };
        index.manifests[0]!.digest = digest;
        index.manifests[0]!.size = bad.byteLength;
        await writeFile(join(src, 'index.json'), JSON.stringify(index));
        expect(w.images).toHaveLength(1);
        return `${src}:bad:1`;
      },
      code: ErrorCode.INVALID_INPUT,
      message: /manifest sha256:[0-9a-f]{64}: not valid JSON/,
    },
    {
      name: 'an unknown layer media type',
      build: async (d) => {
        const src = join(d, 'layout');
        const w = await writeOciLayout(src, [{ ref: 'bad:1', layers: [layer([file('a', 'a')])] }]);
        const m = JSON.parse(w.images[0]!.manifestBytes.toString()) as { layers: { mediaType: string }[] };
        m.layers[0]!.mediaType = 'application/x-mystery';
        const bytes = Buffer.from(JSON.stringify(m));
        const digest = `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
        await writeFile(join(src, 'blobs', 'sha256', digest.slice(7)), bytes);
        const index = JSON.parse(await readFile(join(src, 'index.json'), 'utf8')) as {
          manifests: { digest: string; size: number }[];
        };
        index.manifests[0]!.digest = digest;
        index.manifests[0]!.size = bytes.byteLength;
        await writeFile(join(src, 'index.json'), JSON.stringify(index));
        return `${src}:bad:1`;
      },
      code: ErrorCode.UNSUPPORTED,
      message: /unknown layer media type "application\/x-mystery"/,
    },
  ];

  for (const c of cases) {
    it(`refuses ${c.name} with a clear error and leaves the store as it was`, async () => {
      const d = await testTempDir();
      const good = join(d, 'good');
      await writeOciLayout(good, [richImage()]);
      const store = await freshStore();
      await importImage(store, `${good}:rich:1`, 'lib/app:1');
      const before = await snapshot(store);
      const source = await c.build(d);
      const err = await importImage(store, source, 'lib/app:1').then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err, 'import must fail').toBeInstanceOf(CairnError);
      expect((err as CairnError).code).toBe(c.code);
      expect((err as CairnError).message).toMatch(c.message);
      // The message names the input.
      expect((err as CairnError).message).toContain(d);
      expect(await snapshot(store)).toEqual(before);
      expect(store.meta.imageByReference('lib/app', '1')?.digest).toBe(
        (before as { images: { digest: Digest }[] }).images[0]!.digest,
      );
      // Whatever the failed import wrote is unreferenced and goes with gc; what was stored stays.
      await collectGarbage(store, { graceMs: 0 });
      const left: string[] = [];
      for await (const b of store.blobs.list()) left.push(b);
      expect(left.sort()).toEqual([...(before as { referencedBlobs: string[] }).referencedBlobs].sort());
      expect(await readdir(store.blobs.tmpDir)).toEqual([]);
    });
  }
});

describe('import onto a full disk', () => {
  it('fails with a storage error naming the problem and keeps what was stored', async (ctx) => {
    if (process.getuid?.() !== 0) ctx.skip(); // mounting a tmpfs needs root
    const d = await testTempDir();
    const root = join(d, 'small');
    await mkdir(root);
    await run('mount', ['-t', 'tmpfs', '-o', 'size=6m', 'tmpfs', root]);
    try {
      const store = await RegistryStore.open(join(root, 'registry'));
      try {
        const src = join(d, 'layout');
        await writeOciLayout(src, [
          richImage('small:1'),
          {
            ref: 'big:1',
            layers: [layer([file('big-a', randomBytes(3 << 20)), file('big-b', randomBytes(3 << 20))], 'none')],
          },
        ]);
        await importImage(store, `${src}:small:1`, 'lib/app:1');
        const before = await snapshot(store);
        const err = await importImage(store, `${src}:big:1`, 'lib/app:1').then(
          () => undefined,
          (e: unknown) => e,
        );
        expect(err).toBeInstanceOf(CairnError);
        expect((err as CairnError).code).toBe(ErrorCode.STORAGE);
        expect((err as CairnError).message).toMatch(/ENOSPC|no space/i);
        expect(await snapshot(store)).toEqual(before);
        // What was stored still reads back whole.
        const row = store.meta.imageByReference('lib/app', '1')!;
        for (const l of row.layers) {
          const recipe = decodeRecipe(store.meta.recipe(l.recipe)!, { gzipped: true });
          const rebuilt = await collect(rebuildLayerTar(store.meta.skeleton(l.skeleton)!, recipe, store.blobs));
          expect(`sha256:${createHash('sha256').update(rebuilt).digest('hex')}`).toBe(l.diffId);
        }
      } finally {
        store.close();
      }
    } finally {
      await run('umount', [root]);
    }
  });
});
