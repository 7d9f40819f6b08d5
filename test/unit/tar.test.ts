import { spawnSync } from 'node:child_process';
import { lstat, mkdir, readFile, readlink, stat, symlink as fsSymlink, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { CairnError, ErrorCode } from '../../src/model/errors.js';
import { readTar, type TarHeader } from '../../src/tar/reader.js';
import {
  buildTar,
  encodePaxHeader,
  encodeTarEntry,
  tarPadding,
  TAR_END,
  type TarWriteEntry,
  type TarWriteHeader,
} from '../../src/tar/writer.js';
import { badChecksumTar, nonOctalSizeTar, oversizedPaxTar, truncatedDataTar } from '../fixtures/hostile.js';
import { blockDev, charDev, dir, fifo, file, hardlink, layerTar, symlink } from '../fixtures/layers.js';
import { chunked, readTarBuffer } from '../fixtures/tar-read.js';
import { testTempDir } from '../fixtures/tmp.js';
import { runCommand } from '../fixtures/tools.js';

const ALL_BYTES = Buffer.from(Array.from({ length: 256 }, (_, i) => i));

function run(cmd: string, args: string[]): string {
  return runCommand(cmd, args).toString();
}

const gnuTar = ((): boolean => {
  const r = spawnSync('tar', ['--version'], { encoding: 'utf8' });
  return r.status === 0 && r.stdout.includes('GNU tar');
})();

/** The fields the writer sets, with the defaults it applies, as the reader should report them. */
function expectedHeader(h: TarWriteHeader, size: number): Omit<TarHeader, 'pax'> {
  return {
    name: h.type === 'dir' && !h.name.endsWith('/') ? `${h.name}/` : h.name,
    type: h.type,
    mode: h.mode ?? (h.type === 'dir' ? 0o755 : 0o644),
    uid: h.uid ?? 0,
    gid: h.gid ?? 0,
    size: h.type === 'file' ? size : 0,
    mtime: h.mtime ?? 0,
    linkname: h.linkname ?? '',
    uname: h.uname ?? '',
    gname: h.gname ?? '',
    devMajor: h.devMajor ?? 0,
    devMinor: h.devMinor ?? 0,
  };
}

async function roundTrip(entries: TarWriteEntry[], chunkSize?: number): Promise<void> {
  const tar = buildTar(entries);
  expect(tar.length % 512).toBe(0);
  const read = await readTarBuffer(tar, {}, chunkSize);
  expect(read).toHaveLength(entries.length);
  entries.forEach((e, i) => {
    const r = read[i];
    if (!r) throw new Error(`entry ${i} missing`);
    const { pax, ...fields } = r.header;
    expect(fields).toEqual(expectedHeader(e.header, e.content?.length ?? 0));
    expect(r.data.equals(e.content ?? Buffer.alloc(0))).toBe(true);
    for (const [k, v] of Object.entries(e.header.xattrs ?? {})) {
      expect(pax.get(`SCHILY.xattr.${k}`)?.equals(v), `xattr ${k}`).toBe(true);
    }
  });
}

async function firstHeader(tar: Buffer): Promise<TarHeader> {
  for await (const e of readTar(chunked(tar))) return e.header;
  throw new Error('no entry');
}

async function readError(tar: Buffer, opts = {}): Promise<CairnError> {
  try {
    await readTarBuffer(tar, opts);
  } catch (err) {
    expect(err).toBeInstanceOf(CairnError);
    return err as CairnError;
  }
  throw new Error('readTar accepted the input');
}

describe('tar writer', () => {
  it('round-trips every entry type through readTar', async () => {
    const entries = [
      dir('etc', { mode: 0o755, uid: 0, gid: 0, uname: 'root', gname: 'root' }),
      file('etc/passwd', 'root:x:0:0::/root:/bin/sh\n', { mode: 0o644 }),
      file('etc/empty', ''),
      file('bin/tool', Buffer.alloc(1000, 0xab), { mode: 0o4755, uid: 1000, gid: 1000, uname: 'me', gname: 'us' }),
      hardlink('bin/tool-link', 'bin/tool'),
      symlink('bin/sh', '/bin/busybox'),
      symlink('rel', '../x/y'),
      charDev('dev/null', 1, 3),
      blockDev('dev/sda', 8, 0),
      fifo('run/pipe', { mode: 0o600 }),
      dir('tmp', { mode: 0o1777 }),
      dir('trailing/', { mode: 0o700 }),
    ];
    await roundTrip(entries);
    // The same entries fed in awkward chunk sizes.
    await roundTrip(entries, 7);
    await roundTrip(entries, 513);
  });

  it('writes plain ustar headers when everything fits', () => {
    const h = encodeTarEntry({ name: 'etc/passwd', type: 'file', mode: 0o644, size: 5, mtime: 1_700_000_000 });
    expect(h.length).toBe(512);
    expect(h.toString('latin1', 257, 265)).toBe('ustar\u000000');
    expect(h.toString('latin1', 100, 108)).toBe('0000644\0');
    expect(h.toString('latin1', 124, 136)).toBe('00000000005\0');
    expect(h.toString('latin1', 156, 157)).toBe('0');
    expect(encodeTarEntry({ name: 'd', type: 'dir' }).toString('latin1', 0, 3)).toBe('d/\0');
  });

  it('is deterministic', () => {
    const entries = [
      file('a', 'x', { xattrs: { 'user.b': 'b', 'user.a': ALL_BYTES } }),
      file('b'.repeat(300), 'y', { mtime: 1.5 }),
    ];
    expect(layerTar(entries).equals(layerTar(entries))).toBe(true);
  });

  it('splits long names into ustar prefix and name, and uses PAX when that fails', async () => {
    const split = `${'p'.repeat(120)}/${'n'.repeat(90)}`;
    const longComponent = `dir/${'x'.repeat(200)}`;
    const veryLong = Array.from({ length: 40 }, (_, i) => `component-${i}`).join('/');
    const longDir = `${'d'.repeat(99)}`; // 100 bytes with the slash: still fits the name field
    const longerDir = `${'e'.repeat(150)}/${'f'.repeat(100)}`; // the slash makes 101: PAX
    const unicode = 'données/été/ファイル.txt';
    const longTarget = `/${'t'.repeat(50)}/${'u'.repeat(100)}`;
    expect(encodeTarEntry({ name: split, type: 'file' }).length).toBe(512);
    expect(encodeTarEntry({ name: longDir, type: 'dir' }).length).toBe(512);
    expect(encodeTarEntry({ name: longComponent, type: 'file' }).length).toBeGreaterThan(512);
    await roundTrip([
      file(split, 'split'),
      file(longComponent, 'pax path'),
      file(veryLong, 'very long'),
      dir(longDir),
      dir(longerDir),
      file(`${'p'.repeat(154)}/${'n'.repeat(100)}`, 'both fields full'),
      file(unicode, 'utf-8'),
      symlink('link', longTarget),
      hardlink(`${'h'.repeat(120)}/link`, longComponent),
      symlink('unicode-link', unicode),
    ]);
  });

  it('keeps binary xattr values byte for byte', async () => {
    const cap = Buffer.from('0100000200200000000000000000000000000000', 'hex');
    const withNewlines = Buffer.from('a\nb=c\n\0\n');
    await roundTrip([
      file('bin/ping', 'elf', {
        xattrs: { 'security.capability': cap, 'user.all-bytes': ALL_BYTES, 'user.newlines': withNewlines },
      }),
      dir('d', { xattrs: { 'user.empty': Buffer.alloc(0), 'trusted.overlay.opaque': 'y' } }),
      symlink('s', 't', { xattrs: { 'user.big': Buffer.alloc(70_000, 0xfe) } }),
    ]);
    const [e] = await readTarBuffer(layerTar([file('x', '', { xattrs: { 'user.all': ALL_BYTES } })]));
    expect(e?.header.pax.get('SCHILY.xattr.user.all')).toEqual(ALL_BYTES);
  });

  it('writes large ids, sizes and device numbers', async () => {
    await roundTrip([
      file('big-uid', 'x', { uid: 0o7777777 + 1, gid: 2 ** 32 - 2 }),
      file('max-octal', 'y', { uid: 0o7777777, gid: 0o7777777 }),
      file('long-names', 'z', { uname: 'u'.repeat(40), gname: 'gröup' }),
    ]);
    const [bigDev] = await readTarBuffer(buildTar([charDev('dev/big', 2 ** 24, 2 ** 31)]));
    expect(bigDev?.header.devMajor).toBe(2 ** 24);
    expect(bigDev?.header.devMinor).toBe(2 ** 31);
    // A size beyond the 11-digit octal field (8 GiB) goes to PAX; read only the header.
    const huge = 2 ** 34 + 5;
    const header = encodeTarEntry({ name: 'huge.img', type: 'file', size: huge });
    expect(header.length).toBeGreaterThan(512);
    expect((await firstHeader(header)).size).toBe(huge);
  });

  it('writes fractional and negative mtimes via PAX', async () => {
    await roundTrip([
      file('frac', 'a', { mtime: 1_700_000_000.123456 }),
      file('frac2', 'b', { mtime: 1_234_567_890.5 }),
      file('small', 'c', { mtime: 0.000001 }),
      file('negative', 'd', { mtime: -86_400 }),
      file('negative-frac', 'e', { mtime: -1.25 }),
      file('zero', 'f', { mtime: 0 }),
    ]);
    expect(encodeTarEntry({ name: 'x', type: 'file', mtime: 1.5 }).toString('latin1', 512, 1024)).toContain(
      '13 mtime=1.5\n',
    );
  });

  it('writes padding, end marker and extra PAX records', async () => {
    expect(tarPadding(0).length).toBe(0);
    expect(tarPadding(1).length).toBe(511);
    expect(tarPadding(512).length).toBe(0);
    expect(tarPadding(513).length).toBe(511);
    expect(TAR_END.length).toBe(1024);
    expect(TAR_END.every((b) => b === 0)).toBe(true);
    const [e] = await readTarBuffer(layerTar([file('x', 'x', { pax: { 'SCHILY.fflags': 'nodump' } })]));
    expect(e?.header.pax.get('SCHILY.fflags')?.toString()).toBe('nodump');
    const noEnd = buildTar([file('x', 'x')], { end: false });
    expect(noEnd.length).toBe(1024);
    expect((await readTarBuffer(noEnd)).map((r) => r.header.name)).toEqual(['x']);
    const global = encodePaxHeader([['comment', 'hello']], { global: true });
    const [g] = await readTarBuffer(Buffer.concat([global, layerTar([file('y', 'y')])]));
    expect(g?.header.pax.get('comment')?.toString()).toBe('hello');
  });

  it('refuses headers it cannot write', () => {
    const bad: TarWriteHeader[] = [
      { name: '', type: 'file' },
      { name: 'a\0b', type: 'file' },
      { name: 'x', type: 'file', mode: 0o10000 },
      { name: 'x', type: 'file', uid: -1 },
      { name: 'x', type: 'file', gid: 1.5 },
      { name: 'x', type: 'file', mtime: Number.NaN },
      { name: 'x', type: 'symlink' },
      { name: 'x', type: 'dir', size: 3 },
      { name: 'x', type: 'file', xattrs: { 'a=b': Buffer.alloc(1) } },
      { name: 'x', type: 'nope' as TarWriteHeader['type'] },
    ];
    for (const h of bad) expect(() => encodeTarEntry(h), JSON.stringify(h)).toThrow(CairnError);
    expect(() => buildTar([{ header: { name: 'x', type: 'file', size: 3 }, content: Buffer.from('ab') }])).toThrow(
      /header size 3 but 2 bytes/,
    );
    expect(() => buildTar([{ header: { name: 'x', type: 'dir' }, content: Buffer.from('ab') }])).toThrow(
      /only regular files/,
    );
  });
});

describe('tar reader errors', () => {
  it('refuses a header with a bad checksum', async () => {
    const err = await readError(badChecksumTar());
    expect(err.code).toBe(ErrorCode.INVALID_INPUT);
    expect(err.message).toBe('tar header at byte 0: bad checksum (not a tar stream, or corrupt)');
  });

  it('refuses a header claiming more bytes than follow', async () => {
    const err = await readError(truncatedDataTar());
    expect(err.code).toBe(ErrorCode.INVALID_INPUT);
    expect(err.message).toMatch(
      /^tar entry at byte 0 \(short\.bin\) data: truncated at byte 612 \(3996 of 4096 bytes missing\)$/,
    );
  });

  it('refuses a tar cut inside a header block', async () => {
    const tar = layerTar([file('a', 'a'), file('b', 'b')]);
    const err = await readError(tar.subarray(0, 1024 + 100));
    expect(err.message).toMatch(/^tar header at byte 1024: truncated/);
  });

  it('refuses an oversized PAX header, naming the limit', async () => {
    const err = await readError(oversizedPaxTar());
    expect(err.code).toBe(ErrorCode.INVALID_INPUT);
    expect(err.message).toBe('tar header at byte 0: PAX header of 2097152 bytes exceeds the 1048576-byte limit');
    // The limit is an option: a small one refuses an ordinary long-name header too.
    const longName = layerTar([file('n'.repeat(300), 'x')]);
    const small = await readError(longName, { maxMetaHeaderBytes: 100 });
    expect(small.message).toMatch(/^tar header at byte 0: PAX header of \d+ bytes exceeds the 100-byte limit$/);
    expect(await readTarBuffer(oversizedPaxTar(), { maxMetaHeaderBytes: 4 * 1024 * 1024 })).toHaveLength(1);
  });

  it('refuses a numeric field that is not octal', async () => {
    const err = await readError(nonOctalSizeTar());
    expect(err.code).toBe(ErrorCode.INVALID_INPUT);
    expect(err.message).toBe('tar entry at byte 0 size: "0000000009z" is not octal');
  });
});

describe.skipIf(!gnuTar)('GNU tar interoperability', () => {
  it('reads a --format=gnu archive with long names and link targets', async () => {
    const tmp = await testTempDir();
    const src = join(tmp, 'src');
    const longDir = `${'a'.repeat(60)}/${'b'.repeat(60)}`;
    const longFile = `${longDir}/${'c'.repeat(120)}.txt`;
    await mkdir(join(src, longDir), { recursive: true });
    await writeFile(join(src, longFile), 'long name content\n');
    await writeFile(join(src, 'short.txt'), 'short\n');
    await fsSymlink(`../${'t'.repeat(150)}`, join(src, 'longlink'));
    const out = join(tmp, 'gnu.tar');
    run('tar', [
      '--format=gnu',
      '--sort=name',
      '--owner=0',
      '--group=0',
      '--numeric-owner',
      '-C',
      src,
      '-cf',
      out,
      '.',
    ]);
    const entries = await readTarBuffer(await readFile(out));
    const byName = new Map(entries.map((e) => [e.header.name, e]));
    const long = byName.get(`./${longFile}`);
    expect(long?.header.type).toBe('file');
    expect(long?.data.toString()).toBe('long name content\n');
    expect(long?.rawHeader.toString('latin1', 156, 157)).toBe('L');
    expect(byName.get(`./${longDir}/`)?.header.type).toBe('dir');
    expect(byName.get('./longlink')?.header.linkname).toBe(`../${'t'.repeat(150)}`);
    expect(byName.get('./short.txt')?.data.toString()).toBe('short\n');
  });

  it('reads a --format=pax archive with xattrs and fractional mtimes', async (ctx) => {
    const tmp = await testTempDir();
    const src = join(tmp, 'src');
    await mkdir(src);
    // Set xattrs by extracting an archive of ours with GNU tar (no setfattr needed).
    const ours = buildTar([
      {
        header: { name: 'x.bin', type: 'file', mode: 0o644, mtime: 1_700_000_000, xattrs: { 'user.bytes': ALL_BYTES } },
      },
      { header: { name: 'y.txt', type: 'file', mode: 0o600, mtime: 1_700_000_000 }, content: Buffer.from('y\n') },
    ]);
    await writeFile(join(tmp, 'ours.tar'), ours);
    run('tar', ['--xattrs', '--xattrs-include=*', '-C', src, '-xf', join(tmp, 'ours.tar')]);
    await utimes(join(src, 'y.txt'), 1_700_000_000.25, 1_700_000_000.25);
    const out = join(tmp, 'pax.tar');
    run('tar', [
      '--format=pax',
      '--xattrs',
      '--xattrs-include=*',
      '--sort=name',
      '--owner=0',
      '--group=0',
      '--numeric-owner',
      '-C',
      src,
      '-cf',
      out,
      'x.bin',
      'y.txt',
    ]);
    const entries = await readTarBuffer(await readFile(out));
    const x = entries.find((e) => e.header.name === 'x.bin');
    const y = entries.find((e) => e.header.name === 'y.txt');
    expect(y?.data.toString()).toBe('y\n');
    expect(y?.header.mode).toBe(0o600);
    expect(y?.header.mtime).toBe(1_700_000_000.25);
    const got = x?.header.pax.get('SCHILY.xattr.user.bytes');
    if (got === undefined) ctx.skip('the temp directory file system does not keep user.* xattrs');
    expect(got).toEqual(ALL_BYTES);
  });

  it('GNU tar extracts what the writer produces', async () => {
    const tmp = await testTempDir();
    const longName = `${'l'.repeat(80)}/${'m'.repeat(80)}/${'n'.repeat(120)}.txt`;
    const tar = layerTar([
      dir('etc'),
      file('etc/passwd', 'root:x:0:0::/root:/bin/sh\n', { mode: 0o640 }),
      file(longName, 'long\n'),
      hardlink('etc/passwd-link', 'etc/passwd'),
      symlink('etc/link', `/${'t'.repeat(200)}`),
      dir('tmp', { mode: 0o1777 }),
      fifo('pipe'),
      file('frac', 'f', { mtime: 1_700_000_000.5 }),
      file('unicode-été', 'u'),
    ]);
    await writeFile(join(tmp, 'w.tar'), tar);
    const listing = run('tar', ['-tf', join(tmp, 'w.tar')]);
    expect(listing.split('\n').filter(Boolean)).toEqual([
      'etc/',
      'etc/passwd',
      longName,
      'etc/passwd-link',
      'etc/link',
      'tmp/',
      'pipe',
      'frac',
      'unicode-été',
    ]);
    const out = join(tmp, 'out');
    await mkdir(out);
    run('tar', ['--same-permissions', '-C', out, '-xf', join(tmp, 'w.tar')]);
    expect(await readFile(join(out, 'etc/passwd'), 'utf8')).toBe('root:x:0:0::/root:/bin/sh\n');
    expect((await stat(join(out, 'etc/passwd'))).mode & 0o7777).toBe(0o640);
    expect((await stat(join(out, 'etc/passwd-link'))).ino).toBe((await stat(join(out, 'etc/passwd'))).ino);
    expect(await readFile(join(out, longName), 'utf8')).toBe('long\n');
    expect(await readlink(join(out, 'etc/link'))).toBe(`/${'t'.repeat(200)}`);
    expect((await stat(join(out, 'tmp'))).mode & 0o7777).toBe(0o1777);
    expect((await lstat(join(out, 'pipe'))).isFIFO()).toBe(true);
    expect((await stat(join(out, 'frac'))).mtimeMs).toBe(1_700_000_000_500);
  });
});
