import { readFile } from 'node:fs/promises';
import { sha256, type Digest } from '../model/digest.js';
import { CairnError, ErrorCode } from '../model/errors.js';
import type { Compression, Platform } from '../model/oci.js';
import { buildTar, type TarWriteEntry, type TarWriteHeader } from '../tar/writer.js';
import { writeImages, type ImageFormat, type WrittenImages } from './layout-writer.js';

/**
 * A small but real sample image, built on the spot from Debian's
 * busybox-static: a base rootfs layer and an "app" layer that exercises
 * overwrites, a whiteout, an opaque directory and a hardlink. Deterministic:
 * the same busybox binary always gives the same digests.
 */

export const SAMPLE_REF = 'sample/busybox:latest';
/** Every entry's mtime (2023-11-14T22:13:20Z). */
export const SAMPLE_MTIME = 1_700_000_000;
export const SAMPLE_CREATED = '2023-11-14T22:13:20Z';
export const DEFAULT_BUSYBOX = '/bin/busybox';
/** Applets linked in /bin as symlinks to busybox. */
export const SAMPLE_APPLETS = [
  'cat',
  'cp',
  'echo',
  'env',
  'grep',
  'head',
  'id',
  'ls',
  'mkdir',
  'rm',
  'sh',
  'sha256sum',
  'sleep',
  'tail',
  'true',
  'wc',
] as const;

export const SAMPLE_HELLO_OUTPUT = 'hello from the cairn sample image';

export interface SampleImageOptions {
  /** Default `sample/busybox:latest`. */
  ref?: string;
  /** Default `oci-layout` (then outDir is a directory; for archives it is the file written). */
  format?: ImageFormat;
  /** Default gzip. */
  compression?: Compression;
  /** Default /bin/busybox; must be statically linked. */
  busyboxPath?: string;
  /** Default: the host's, which is what busybox was built for. */
  platform?: Platform;
}

/** What the merged root filesystem of the sample image holds. Paths are normalized (no leading slash). */
export interface SampleExpectation {
  files: Record<string, { mode: number; size: number; digest: Digest; text?: string }>;
  dirs: Record<string, number>;
  symlinks: Record<string, string>;
  /** Hardlinks of the app layer: path -> the path it links to. Both are also in `files`. */
  hardlinks: Record<string, string>;
  /** Paths some layer has and the merged view must not (whiteout, opaque directory). */
  absent: string[];
}

export interface SampleLayers {
  /** The uncompressed layer tars, base first. */
  tars: Buffer[];
  expected: SampleExpectation;
}

export interface SampleImage extends WrittenImages {
  ref: string;
  busyboxDigest: Digest;
  layerTars: Buffer[];
  expected: SampleExpectation;
}

/** The image platform for the host Node runs on. */
export function hostPlatform(): Platform {
  const arch: Record<string, Platform> = {
    x64: { os: 'linux', architecture: 'amd64' },
    arm64: { os: 'linux', architecture: 'arm64', variant: 'v8' },
    arm: { os: 'linux', architecture: 'arm', variant: 'v7' },
    ia32: { os: 'linux', architecture: '386' },
    ppc64: { os: 'linux', architecture: 'ppc64le' },
    s390x: { os: 'linux', architecture: 's390x' },
    riscv64: { os: 'linux', architecture: 'riscv64' },
  };
  return arch[process.arch] ?? { os: 'linux', architecture: process.arch };
}

/** True when an ELF executable has no program interpreter (is statically linked). */
export function isStaticElf(bin: Buffer): boolean {
  if (bin.length < 64 || bin.readUInt32BE(0) !== 0x7f454c46) return false;
  const is64 = bin[4] === 2;
  const le = bin[5] === 1;
  const u16 = (o: number): number => (le ? bin.readUInt16LE(o) : bin.readUInt16BE(o));
  const u32 = (o: number): number => (le ? bin.readUInt32LE(o) : bin.readUInt32BE(o));
  const phoff = is64 ? Number(le ? bin.readBigUInt64LE(0x20) : bin.readBigUInt64BE(0x20)) : u32(0x1c);
  const phentsize = u16(is64 ? 0x36 : 0x2a);
  const phnum = u16(is64 ? 0x38 : 0x2c);
  for (let i = 0; i < phnum; i++) {
    const off = phoff + i * phentsize;
    if (off + 4 > bin.length) return false;
    if (u32(off) === 3) return false; // PT_INTERP
  }
  return true;
}

async function readBusybox(path: string): Promise<Buffer> {
  let bin: Buffer;
  try {
    bin = await readFile(path);
  } catch (err) {
    throw new CairnError(
      ErrorCode.NOT_FOUND,
      `sample image: ${path} not found; install it with \`apt-get install busybox-static\``,
      { cause: err },
    );
  }
  if (!isStaticElf(bin)) {
    throw new CairnError(
      ErrorCode.INVALID_INPUT,
      `sample image: ${path} is not a statically linked executable; install \`apt-get install busybox-static\``,
    );
  }
  return bin;
}

function hdr(
  name: string,
  type: TarWriteHeader['type'],
  mode: number,
  extra: Partial<TarWriteHeader> = {},
): TarWriteHeader {
  return { name, type, mode, uid: 0, gid: 0, uname: 'root', gname: 'root', mtime: SAMPLE_MTIME, ...extra };
}

const d = (name: string, mode = 0o755): TarWriteEntry => ({ header: hdr(name, 'dir', mode) });
const f = (name: string, content: Buffer | string, mode = 0o644): TarWriteEntry => ({
  header: hdr(name, 'file', mode),
  content: Buffer.isBuffer(content) ? content : Buffer.from(content),
});
const sym = (name: string, target: string): TarWriteEntry => ({
  header: hdr(name, 'symlink', 0o777, { linkname: target }),
});
const link = (name: string, target: string): TarWriteEntry => ({
  header: hdr(name, 'hardlink', 0o644, { linkname: target }),
});

function dataFile(): string {
  const lines: string[] = [];
  for (let i = 1; i <= 200; i++) {
    lines.push(`line ${String(i).padStart(4, '0')}: the quick brown fox jumps over the lazy dog`);
  }
  return `${lines.join('\n')}\n`;
}

/** The two layer tars of the sample image and what their merge must look like. */
export function sampleLayers(busybox: Buffer): SampleLayers {
  const passwd = 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n';
  const group = 'root:x:0:\nnogroup:x:65534:\n';
  const osRelease = 'NAME="cairn sample"\nID=cairn-sample\nVERSION_ID=1\nPRETTY_NAME="cairn sample (busybox)"\n';
  const hostname1 = 'base\n';
  const hostname2 = 'cairn-sample\n';
  const motd = 'Welcome to the cairn sample base layer.\n';
  const oldTxt = 'old cache entry, hidden by the opaque directory above\n';
  const newTxt = 'new cache entry\n';
  const hello = `#!/bin/sh\necho "${SAMPLE_HELLO_OUTPUT}"\n`;
  const data = dataFile();

  const base: TarWriteEntry[] = [
    d('bin'),
    f('bin/busybox', busybox, 0o755),
    ...[...SAMPLE_APPLETS].sort().map((a) => sym(`bin/${a}`, 'busybox')),
    d('etc'),
    f('etc/group', group),
    f('etc/hostname', hostname1),
    f('etc/motd', motd),
    f('etc/os-release', osRelease),
    f('etc/passwd', passwd),
    d('root', 0o700),
    d('tmp', 0o1777),
    d('usr'),
    d('usr/bin'),
    sym('usr/bin/env', '../../bin/busybox'),
    d('var'),
    d('var/cache'),
    d('var/cache/sample'),
    f('var/cache/sample/old.txt', oldTxt),
  ];
  const app: TarWriteEntry[] = [
    d('app'),
    f('app/data.txt', data),
    link('app/data-link.txt', 'app/data.txt'),
    f('app/hello.sh', hello, 0o755),
    d('etc'),
    f('etc/.wh.motd', ''),
    f('etc/hostname', hostname2),
    d('var'),
    d('var/cache'),
    d('var/cache/sample'),
    f('var/cache/sample/.wh..wh..opq', ''),
    f('var/cache/sample/new.txt', newTxt),
  ];

  const fileInfo = (content: Buffer | string, mode: number, text = true): SampleExpectation['files'][string] => {
    const b = Buffer.isBuffer(content) ? content : Buffer.from(content);
    const info: SampleExpectation['files'][string] = { mode, size: b.length, digest: sha256(b) };
    if (text) info.text = b.toString('utf8');
    return info;
  };
  const expected: SampleExpectation = {
    files: {
      'app/data-link.txt': fileInfo(data, 0o644),
      'app/data.txt': fileInfo(data, 0o644),
      'app/hello.sh': fileInfo(hello, 0o755),
      'bin/busybox': fileInfo(busybox, 0o755, false),
      'etc/group': fileInfo(group, 0o644),
      'etc/hostname': fileInfo(hostname2, 0o644),
      'etc/os-release': fileInfo(osRelease, 0o644),
      'etc/passwd': fileInfo(passwd, 0o644),
      'var/cache/sample/new.txt': fileInfo(newTxt, 0o644),
    },
    dirs: {
      app: 0o755,
      bin: 0o755,
      etc: 0o755,
      root: 0o700,
      tmp: 0o1777,
      usr: 0o755,
      'usr/bin': 0o755,
      var: 0o755,
      'var/cache': 0o755,
      'var/cache/sample': 0o755,
    },
    symlinks: {
      ...Object.fromEntries([...SAMPLE_APPLETS].sort().map((a) => [`bin/${a}`, 'busybox'])),
      'usr/bin/env': '../../bin/busybox',
    },
    hardlinks: { 'app/data-link.txt': 'app/data.txt' },
    absent: ['etc/motd', 'var/cache/sample/old.txt'],
  };
  return { tars: [buildTar(base), buildTar(app)], expected };
}

/**
 * Builds the sample image at `outDir` (an OCI layout directory by default,
 * ref `sample/busybox:latest`, gzip layers). Throws NOT_FOUND with an
 * `apt-get install busybox-static` hint when busybox is missing.
 */
export async function buildSampleImage(outDir: string, opts: SampleImageOptions = {}): Promise<SampleImage> {
  const busybox = await readBusybox(opts.busyboxPath ?? DEFAULT_BUSYBOX);
  const { tars, expected } = sampleLayers(busybox);
  const ref = opts.ref ?? SAMPLE_REF;
  const compression = opts.compression ?? 'gzip';
  const written = await writeImages(
    outDir,
    [
      {
        ref,
        platform: opts.platform ?? hostPlatform(),
        layers: tars.map((tar) => ({ tar, compression })),
        created: SAMPLE_CREATED,
        history: ['cairn sample: busybox base rootfs', 'cairn sample: app layer'],
        config: {
          Env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'],
          Cmd: ['/app/hello.sh'],
          WorkingDir: '/',
          Labels: { 'org.opencontainers.image.title': 'cairn sample' },
        },
      },
    ],
    { format: opts.format ?? 'oci-layout' },
  );
  return { ...written, ref, busyboxDigest: sha256(busybox), layerTars: tars, expected };
}
