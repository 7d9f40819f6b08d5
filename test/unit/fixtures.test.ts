import { gunzipSync } from 'node:zlib';
import { decompress as zstdDecompress } from 'fzstd';
import { describe, expect, it } from 'vitest';
import {
  absolutePathTar,
  danglingHardlinkTar,
  dotDotPathTar,
  fileAndDirTar,
  nestedDotDotPathTar,
  payloadTar,
  truncatedDataTar,
  truncatedGzip,
  truncatedZstd,
} from '../fixtures/hostile.js';
import {
  blockDev,
  charDev,
  dir,
  fifo,
  file,
  FIXTURE_MTIME,
  hardlink,
  layerBlob,
  layerTar,
  opaque,
  symlink,
  whiteout,
} from '../fixtures/layers.js';
import { readTarBuffer } from '../fixtures/tar-read.js';
import { hasCommand } from '../fixtures/tools.js';

const names = async (tar: Buffer): Promise<string[]> => (await readTarBuffer(tar)).map((e) => e.header.name);

describe('layer fixtures', () => {
  it('describe entries concisely', async () => {
    const entries = await readTarBuffer(
      layerTar([
        dir('etc'),
        file('etc/passwd', 'root\n', { mode: 0o600, xattrs: { 'user.a': 'b' } }),
        symlink('etc/link', 'passwd'),
        hardlink('etc/hard', 'etc/passwd'),
        whiteout('etc/x'),
        whiteout('top'),
        opaque('var/lib'),
        opaque('var/cache/'),
        charDev('dev/null', 1, 3),
        blockDev('dev/sda', 8, 0),
        fifo('run/p'),
      ]),
    );
    expect(entries.map((e) => [e.header.name, e.header.type])).toEqual([
      ['etc/', 'dir'],
      ['etc/passwd', 'file'],
      ['etc/link', 'symlink'],
      ['etc/hard', 'hardlink'],
      ['etc/.wh.x', 'file'],
      ['.wh.top', 'file'],
      ['var/lib/.wh..wh..opq', 'file'],
      ['var/cache/.wh..wh..opq', 'file'],
      ['dev/null', 'char'],
      ['dev/sda', 'block'],
      ['run/p', 'fifo'],
    ]);
    const passwd = entries[1]?.header;
    expect(passwd?.mode).toBe(0o600);
    expect(passwd?.mtime).toBe(FIXTURE_MTIME);
    expect(passwd?.pax.get('SCHILY.xattr.user.a')?.toString()).toBe('b');
    expect(entries[8]?.header.devMajor).toBe(1);
    expect(gunzipSync(layerBlob([file('a', 'a')], 'gzip')).equals(layerTar([file('a', 'a')]))).toBe(true);
  });
});

describe('hostile fixtures', () => {
  it('hold the paths they promise', async () => {
    expect(await names(dotDotPathTar())).toEqual(['ok.txt', '../escape.txt']);
    expect(await names(nestedDotDotPathTar())).toEqual(['a/', 'a/../../escape.txt']);
    expect(await names(absolutePathTar())).toEqual(['/etc/passwd']);
    expect(await names(danglingHardlinkTar())).toEqual(['present.txt', 'link.txt', 'missing.txt']);
    expect(await names(fileAndDirTar())).toEqual(['data', 'data/', 'data/inner.txt']);
  });

  it('are broken the way they promise', async () => {
    expect(() => gunzipSync(truncatedGzip())).toThrow(/unexpected end of file/);
    await expect(readTarBuffer(truncatedDataTar())).rejects.toThrow(/truncated/);
    expect((await readTarBuffer(payloadTar())).map((e) => e.header.name)).toEqual(['d/', 'd/a.txt', 'd/big.bin']);
  });

  it.skipIf(!hasCommand('zstd'))('truncated zstd does not decompress', () => {
    const data = truncatedZstd();
    expect(data.readUInt32LE(0)).toBe(0xfd2fb528);
    let out: Uint8Array | undefined;
    try {
      out = zstdDecompress(data);
    } catch {
      out = undefined;
    }
    // fzstd either throws or returns less than the payload; never the whole tar.
    expect(out === undefined || out.length < payloadTar().length).toBe(true);
  });
});
