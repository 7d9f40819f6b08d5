import { CairnError, ErrorCode } from '../model/errors.js';
import type { TarType } from './reader.js';

/**
 * A deterministic tar writer (ustar, with PAX extended headers when needed).
 *
 * Ours rather than tar-stream's because PAX values must be written as raw
 * bytes: xattr values such as security.capability are binary. The same
 * header always encodes to the same bytes; nothing depends on the clock, the
 * host or the locale. Everything written reads back through `readTar`
 * (src/tar/reader.ts) with the same field values.
 */

export interface TarWriteHeader {
  /** Written as given, except that directories get a trailing slash. */
  name: string;
  type: TarType;
  /** Permission bits (mask 0o7777); default 0o755 for directories, 0o644 otherwise. */
  mode?: number;
  uid?: number;
  gid?: number;
  /** Content size; only regular files carry content. Default 0. */
  size?: number;
  /** Seconds since the epoch, may be fractional or negative (then written as PAX). Default 0. */
  mtime?: number;
  /** Symlink target or hardlink source path. */
  linkname?: string;
  uname?: string;
  gname?: string;
  devMajor?: number;
  devMinor?: number;
  /** Extended attributes, written as `SCHILY.xattr.NAME` PAX records with raw values. */
  xattrs?: Record<string, Buffer>;
  /** Further PAX records to write as they are (after the ones the writer derives). */
  pax?: Record<string, Buffer | string>;
}

export interface TarWriteEntry {
  header: TarWriteHeader;
  /** A regular file's content; `header.size` defaults to its length. */
  content?: Buffer;
}

export const BLOCK_SIZE = 512;

/** The end-of-archive marker: two zero blocks. Shared: do not modify it. */
export const TAR_END: Buffer = Buffer.alloc(2 * BLOCK_SIZE);

const TYPEFLAG: Record<TarType, string> = {
  file: '0',
  hardlink: '1',
  symlink: '2',
  char: '3',
  block: '4',
  dir: '5',
  fifo: '6',
};

/** Largest value of an octal field of `len` bytes (len - 1 digits, then a NUL). */
function octalMax(len: number): number {
  return 8 ** (len - 1) - 1;
}

/** The zero bytes that pad `size` bytes of content to a whole block. */
export function tarPadding(size: number): Buffer {
  return Buffer.alloc((BLOCK_SIZE - (size % BLOCK_SIZE)) % BLOCK_SIZE);
}

function bad(what: string): never {
  throw new CairnError(ErrorCode.INVALID_INPUT, `tar writer: ${what}`);
}

function isAscii(s: string): boolean {
  // eslint-disable-next-line no-control-regex
  return /^[\x00-\x7f]*$/.test(s) && !s.includes('\0');
}

/** An ASCII stand-in for a string that lives in PAX: non-ASCII becomes `_`, cut to `len` bytes. */
function asciiFallback(s: string, len: number): string {
  // eslint-disable-next-line no-control-regex
  return s.replace(/[^\x01-\x7f]/g, '_').slice(0, len);
}

function writeString(block: Buffer, off: number, len: number, s: string): void {
  const b = Buffer.from(s, 'latin1');
  if (b.length > len) bad(`internal: ${JSON.stringify(s)} does not fit ${len} bytes`);
  b.copy(block, off);
}

function writeOctal(block: Buffer, off: number, len: number, value: number): void {
  writeString(block, off, len, value.toString(8).padStart(len - 1, '0'));
  block[off + len - 1] = 0;
}

/** GNU base-256: the top bit of the first byte set, then the value big-endian. */
function writeBase256(block: Buffer, off: number, len: number, value: number): void {
  let v = value;
  for (let i = len - 1; i > 0; i--) {
    block[off + i] = v % 256;
    v = Math.floor(v / 256);
  }
  if (v > 0x7f) bad(`number ${value} does not fit a ${len}-byte field`);
  block[off] = 0x80 | v;
}

function checkNumber(value: number, what: string, name: string): void {
  if (!Number.isSafeInteger(value) || value < 0) bad(`${name}: ${what} ${value} is not a non-negative integer`);
}

/** A decimal string for a PAX time, without exponent notation, that parses back to the same number. */
function paxTime(t: number): string {
  const s = String(t);
  if (!/e/i.test(s)) return s;
  return t.toFixed(20).replace(/\.?0+$/, '');
}

/** Encodes one PAX record, `LEN key=value\n`, LEN counting the whole record including itself. */
function paxRecord(key: string, value: Buffer): Buffer {
  const keyBytes = Buffer.from(key, 'utf8');
  if (key === '' || key.includes('=') || key.includes('\0')) bad(`PAX key ${JSON.stringify(key)} is invalid`);
  const rest = keyBytes.length + value.length + 3; // space, '=', '\n'
  const digits = String(rest).length;
  let len = rest + digits;
  if (String(len).length !== digits) len = rest + String(len).length;
  return Buffer.concat([Buffer.from(`${len} `, 'latin1'), keyBytes, Buffer.from('='), value, Buffer.from('\n')]);
}

/** Splits a long ustar name into prefix (<= 155 bytes) and name (<= 100 bytes) at a slash, if it can. */
function splitUstarName(name: string): { prefix: string; name: string } | undefined {
  if (name.length <= 100) return { prefix: '', name };
  // Look for the rightmost slash that leaves a prefix of at most 155 bytes and a non-empty name of at most 100.
  for (let i = Math.min(name.length - 1, 155); i > 0; i--) {
    if (name[i] !== '/') continue;
    const rest = name.slice(i + 1);
    if (rest.replace(/\/+$/, '') === '') continue;
    if (rest.length > 100) return undefined;
    return { prefix: name.slice(0, i), name: rest };
  }
  return undefined;
}

function checksum(block: Buffer): void {
  block.fill(0x20, 148, 156);
  let sum = 0;
  for (let i = 0; i < BLOCK_SIZE; i++) sum += block[i] as number;
  // As GNU tar: six octal digits, NUL, space.
  writeString(block, 148, 6, sum.toString(8).padStart(6, '0'));
  block[154] = 0;
  block[155] = 0x20;
}

interface RawFields {
  name: string;
  prefix: string;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  mtime: number;
  typeflag: string;
  linkname: string;
  uname: string;
  gname: string;
  devMajor: number;
  devMinor: number;
}

/** One ustar header block; every string must be ASCII and fit, every number must fit its field. */
function ustarBlock(f: RawFields): Buffer {
  const block = Buffer.alloc(BLOCK_SIZE);
  writeString(block, 0, 100, f.name);
  writeOctal(block, 100, 8, f.mode);
  writeOctal(block, 108, 8, f.uid);
  writeOctal(block, 116, 8, f.gid);
  writeOctal(block, 124, 12, f.size);
  writeOctal(block, 136, 12, f.mtime);
  writeString(block, 156, 1, f.typeflag);
  writeString(block, 157, 100, f.linkname);
  writeString(block, 257, 6, 'ustar\0');
  writeString(block, 263, 2, '00');
  writeString(block, 265, 32, f.uname);
  writeString(block, 297, 32, f.gname);
  for (const [off, v] of [
    [329, f.devMajor],
    [337, f.devMinor],
  ] as const) {
    if (v > octalMax(8)) writeBase256(block, off, 8, v);
    else writeOctal(block, off, 8, v);
  }
  writeString(block, 345, 155, f.prefix);
  checksum(block);
  return block;
}

/**
 * A PAX extended header ('x', or 'g' for a global one): its header block, the
 * records, and the padding. `name` is only informative (readers ignore it).
 */
export function encodePaxHeader(
  records: [string, Buffer | string][],
  opts: { name?: string; mtime?: number; global?: boolean } = {},
): Buffer {
  const body = Buffer.concat(records.map(([k, v]) => paxRecord(k, typeof v === 'string' ? Buffer.from(v, 'utf8') : v)));
  const mtime = opts.mtime !== undefined && opts.mtime >= 0 ? Math.min(Math.floor(opts.mtime), octalMax(12)) : 0;
  const block = ustarBlock({
    name: asciiFallback(opts.name ?? 'PaxHeaders/entry', 100),
    prefix: '',
    mode: 0o644,
    uid: 0,
    gid: 0,
    size: body.length,
    mtime,
    typeflag: opts.global ? 'g' : 'x',
    linkname: '',
    uname: '',
    gname: '',
    devMajor: 0,
    devMinor: 0,
  });
  return Buffer.concat([block, body, tarPadding(body.length)]);
}

/**
 * The header block(s) of one entry: a PAX 'x' header first when some value
 * does not fit ustar (long or non-ASCII names and link names, large ids or
 * sizes, fractional or negative mtimes, xattrs, extra records), then the
 * ustar header. Content and padding are the caller's to write.
 */
export function encodeTarEntry(h: TarWriteHeader): Buffer {
  const what = JSON.stringify(h.name);
  if (!Object.hasOwn(TYPEFLAG, h.type)) bad(`${what}: unknown entry type ${JSON.stringify(h.type)}`);
  let name = h.name;
  if (h.type === 'dir' && !name.endsWith('/')) name += '/';
  if (name === '' || name.includes('\0')) bad(`${what}: empty name or name with a NUL byte`);
  const mode = h.mode ?? (h.type === 'dir' ? 0o755 : 0o644);
  if (!Number.isSafeInteger(mode) || mode < 0 || mode > 0o7777) bad(`${what}: mode ${mode} is not within 0..0o7777`);
  const uid = h.uid ?? 0;
  const gid = h.gid ?? 0;
  const size = h.type === 'file' ? (h.size ?? 0) : 0;
  const mtime = h.mtime ?? 0;
  const linkname = h.linkname ?? '';
  const uname = h.uname ?? '';
  const gname = h.gname ?? '';
  const devMajor = h.devMajor ?? 0;
  const devMinor = h.devMinor ?? 0;
  checkNumber(uid, 'uid', what);
  checkNumber(gid, 'gid', what);
  checkNumber(size, 'size', what);
  checkNumber(devMajor, 'devMajor', what);
  checkNumber(devMinor, 'devMinor', what);
  if (!Number.isFinite(mtime) || Math.abs(mtime) > Number.MAX_SAFE_INTEGER) bad(`${what}: mtime ${mtime} is invalid`);
  if (h.type !== 'file' && h.size !== undefined && h.size !== 0) bad(`${what}: only regular files carry content`);
  if ((h.type === 'symlink' || h.type === 'hardlink') && linkname === '') bad(`${what}: a ${h.type} needs a linkname`);
  if (linkname.includes('\0')) bad(`${what}: linkname with a NUL byte`);

  const records: [string, Buffer][] = [];
  const text = (s: string): Buffer => Buffer.from(s, 'utf8');

  let ustarName = name;
  let prefix = '';
  const split = isAscii(name) ? splitUstarName(name) : undefined;
  if (split) ({ name: ustarName, prefix } = split);
  else {
    records.push(['path', text(name)]);
    ustarName = asciiFallback(name, 100);
  }
  let ustarLink = linkname;
  if (!isAscii(linkname) || linkname.length > 100) {
    records.push(['linkpath', text(linkname)]);
    ustarLink = asciiFallback(linkname, 100);
  }
  const numeric = (key: string, v: number, len: number): number => {
    if (v <= octalMax(len)) return v;
    records.push([key, text(String(v))]);
    return 0;
  };
  const ustarUid = numeric('uid', uid, 8);
  const ustarGid = numeric('gid', gid, 8);
  let ustarUname = uname;
  if (!isAscii(uname) || uname.length > 32) {
    records.push(['uname', text(uname)]);
    ustarUname = asciiFallback(uname, 32);
  }
  let ustarGname = gname;
  if (!isAscii(gname) || gname.length > 32) {
    records.push(['gname', text(gname)]);
    ustarGname = asciiFallback(gname, 32);
  }
  const ustarSize = numeric('size', size, 12);
  let ustarMtime = mtime;
  if (!Number.isInteger(mtime) || mtime < 0 || mtime > octalMax(12)) {
    records.push(['mtime', text(paxTime(mtime))]);
    ustarMtime = Math.min(Math.max(Math.floor(mtime), 0), octalMax(12));
  }
  for (const key of Object.keys(h.xattrs ?? {}).sort()) {
    if (key === '' || key.includes('=')) bad(`${what}: xattr name ${JSON.stringify(key)} is invalid`);
    records.push([`SCHILY.xattr.${key}`, (h.xattrs as Record<string, Buffer>)[key] as Buffer]);
  }
  for (const key of Object.keys(h.pax ?? {}).sort()) {
    const v = (h.pax as Record<string, Buffer | string>)[key] as Buffer | string;
    records.push([key, typeof v === 'string' ? text(v) : v]);
  }

  const header = ustarBlock({
    name: ustarName,
    prefix,
    mode,
    uid: ustarUid,
    gid: ustarGid,
    size: ustarSize,
    mtime: ustarMtime,
    typeflag: TYPEFLAG[h.type],
    linkname: ustarLink,
    uname: ustarUname,
    gname: ustarGname,
    devMajor,
    devMinor,
  });
  if (records.length === 0) return header;
  const base = name.replace(/\/+$/, '');
  const paxName = `PaxHeaders/${base.slice(base.lastIndexOf('/') + 1)}`;
  return Buffer.concat([encodePaxHeader(records, { name: paxName, mtime: ustarMtime }), header]);
}

/** One entry's bytes: header block(s), content, padding. */
export function encodeTarEntryWithContent(entry: TarWriteEntry): Buffer {
  const { header, content } = entry;
  if (content !== undefined && header.type !== 'file')
    bad(`${JSON.stringify(header.name)}: only regular files carry content`);
  const data = content ?? Buffer.alloc(0);
  if (header.size !== undefined && header.size !== data.length) {
    bad(`${JSON.stringify(header.name)}: header size ${header.size} but ${data.length} bytes of content`);
  }
  const h = header.type === 'file' ? { ...header, size: data.length } : header;
  return Buffer.concat([encodeTarEntry(h), data, tarPadding(data.length)]);
}

/** A whole archive: every entry with its content and padding, then the end-of-archive marker (unless `end: false`). */
export function buildTar(entries: TarWriteEntry[], opts: { end?: boolean } = {}): Buffer {
  const parts = entries.map(encodeTarEntryWithContent);
  if (opts.end !== false) parts.push(TAR_END);
  return Buffer.concat(parts);
}
