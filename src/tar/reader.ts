import { CairnError, ErrorCode } from '../model/errors.js';
import { ByteReader } from './byte-reader.js';

/**
 * A streaming tar reader (ustar, GNU and PAX).
 *
 * Ours rather than tar-stream's because cairn needs two things it does not
 * give: PAX values as raw bytes (binary xattrs such as security.capability
 * must survive), and the raw header and padding bytes of every entry, so a
 * layer can later be rebuilt byte for byte from its recipe (tar-split style).
 */

export type TarType = 'file' | 'hardlink' | 'symlink' | 'char' | 'block' | 'dir' | 'fifo';

export interface TarHeader {
  name: string;
  type: TarType;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  /** Seconds; fractional when PAX carries it. */
  mtime: number;
  linkname: string;
  uname: string;
  gname: string;
  devMajor: number;
  devMinor: number;
  /** PAX records that applied to this entry (global and local), values raw. */
  pax: Map<string, Buffer>;
}

export interface TarEntry {
  header: TarHeader;
  /** All header blocks of the entry, meta headers (PAX, GNU long names) included. */
  rawHeader: Buffer;
  /** The entry's data: exactly header.size bytes. Must be consumed before the next entry. */
  body: AsyncIterable<Buffer>;
  /** Offset of the entry's first header block in the archive. */
  offset: number;
}

export interface TarReadOptions {
  /** Largest PAX or GNU long-name header accepted. */
  maxMetaHeaderBytes?: number;
  /** Called once the archive ends, with the raw bytes from the end-of-archive marker on. */
  onTrailer?: (trailer: Buffer) => void;
  /** Called after each entry's body, with the raw padding bytes that followed it. */
  onPadding?: (padding: Buffer) => void;
}

const BLOCK = 512;
const DEFAULT_MAX_META = 1024 * 1024;
const MAX_TRAILER = 1024 * 1024;
const utf8 = new TextDecoder('utf-8', { fatal: true });

function field(buf: Buffer, off: number, len: number): Buffer {
  const end = buf.indexOf(0, off);
  return buf.subarray(off, end < 0 || end > off + len ? off + len : end);
}

function text(buf: Buffer, what: string): string {
  try {
    return utf8.decode(buf);
  } catch {
    throw new CairnError(ErrorCode.INVALID_INPUT, `${what}: not valid UTF-8`);
  }
}

function numeric(buf: Buffer, off: number, len: number, what: string): number {
  const b = buf.subarray(off, off + len);
  if ((b[0] as number) & 0x80) {
    // GNU base-256: big-endian two's complement with the top bit as a flag.
    if (b[0] === 0xff) throw new CairnError(ErrorCode.INVALID_INPUT, `${what}: negative base-256 number`);
    let v = (b[0] as number) & 0x7f;
    for (let i = 1; i < b.length; i++) {
      v = v * 256 + (b[i] as number);
      if (!Number.isSafeInteger(v)) throw new CairnError(ErrorCode.INVALID_INPUT, `${what}: number too large`);
    }
    return v;
  }
  const s = b.toString('latin1').replace(/\0.*$/s, '').trim();
  if (s === '') return 0;
  if (!/^[0-7]+$/.test(s)) throw new CairnError(ErrorCode.INVALID_INPUT, `${what}: ${JSON.stringify(s)} is not octal`);
  return parseInt(s, 8);
}

function checksumOk(block: Buffer): boolean {
  let unsigned = 0;
  let signed = 0;
  for (let i = 0; i < BLOCK; i++) {
    const v = i >= 148 && i < 156 ? 32 : (block[i] as number);
    unsigned += v;
    signed += v > 127 ? v - 256 : v;
  }
  const stored = numeric(block, 148, 8, 'tar header checksum');
  return stored === unsigned || stored === signed;
}

function isZeroBlock(block: Buffer): boolean {
  for (let i = 0; i < BLOCK; i++) if (block[i] !== 0) return false;
  return true;
}

/** Parses PAX records (`LEN key=value\n`), keeping values as raw bytes. */
export function parsePax(data: Buffer, what: string): Map<string, Buffer> {
  const out = new Map<string, Buffer>();
  let off = 0;
  while (off < data.length) {
    if (data[off] === 0) break; // NUL padding after the last record
    const space = data.indexOf(0x20, off);
    if (space < 0) throw new CairnError(ErrorCode.INVALID_INPUT, `${what}: malformed PAX record at ${off}`);
    const len = Number(data.toString('latin1', off, space));
    if (
      !Number.isSafeInteger(len) ||
      len <= space - off + 1 ||
      off + len > data.length ||
      data[off + len - 1] !== 0x0a
    ) {
      throw new CairnError(ErrorCode.INVALID_INPUT, `${what}: malformed PAX record length at ${off}`);
    }
    const record = data.subarray(space + 1, off + len - 1);
    const eq = record.indexOf(0x3d);
    if (eq <= 0) throw new CairnError(ErrorCode.INVALID_INPUT, `${what}: PAX record without key at ${off}`);
    out.set(text(record.subarray(0, eq), `${what} key`), Buffer.from(record.subarray(eq + 1)));
    off += len;
  }
  return out;
}

const TYPES: Record<string, TarType> = {
  '0': 'file',
  '\0': 'file',
  '7': 'file',
  '1': 'hardlink',
  '2': 'symlink',
  '3': 'char',
  '4': 'block',
  '5': 'dir',
  '6': 'fifo',
};

function paxNumber(pax: Map<string, Buffer>, key: string, what: string): number | undefined {
  const v = pax.get(key);
  if (v === undefined) return undefined;
  const s = v.toString('latin1');
  const n = Number(s);
  if (s === '' || !Number.isFinite(n))
    throw new CairnError(ErrorCode.INVALID_INPUT, `${what}: PAX ${key}=${s} is not a number`);
  return n;
}

/**
 * Reads a tar stream entry by entry. Each entry's body must be fully consumed
 * (or left: the reader skips what is left) before asking for the next one.
 */
export async function* readTar(source: AsyncIterable<Uint8Array>, opts: TarReadOptions = {}): AsyncGenerator<TarEntry> {
  const maxMeta = opts.maxMetaHeaderBytes ?? DEFAULT_MAX_META;
  const r = new ByteReader(source);
  let globalPax = new Map<string, Buffer>();

  for (;;) {
    const offset = r.position;
    if (!(await r.fill(1))) {
      // A stream that ends cleanly on a block boundary with no end marker: accepted, as GNU tar and Go do.
      opts.onTrailer?.(Buffer.alloc(0));
      return;
    }
    const raws: Buffer[] = [];
    let localPax = new Map<string, Buffer>();
    let longName: string | undefined;
    let longLink: string | undefined;
    let block: Buffer;
    let flag: string;
    // Meta headers (PAX, GNU long names) precede the entry they describe.
    for (;;) {
      const at = r.position;
      block = await r.readExact(BLOCK, `tar header at byte ${at}`);
      if (isZeroBlock(block)) {
        if (raws.length > 0)
          throw new CairnError(ErrorCode.INVALID_INPUT, `tar: end-of-archive marker after a meta header at byte ${at}`);
        opts.onTrailer?.(Buffer.concat([block, await r.rest(MAX_TRAILER, 'tar trailer')]));
        return;
      }
      if (!checksumOk(block)) {
        throw new CairnError(
          ErrorCode.INVALID_INPUT,
          `tar header at byte ${at}: bad checksum (not a tar stream, or corrupt)`,
        );
      }
      raws.push(block);
      flag = String.fromCharCode(block[156] as number);
      if (flag !== 'x' && flag !== 'g' && flag !== 'L' && flag !== 'K') break;
      const size = numeric(block, 124, 12, `tar header at byte ${at} size`);
      if (size > maxMeta) {
        throw new CairnError(
          ErrorCode.INVALID_INPUT,
          `tar header at byte ${at}: ${flag === 'x' || flag === 'g' ? 'PAX' : 'GNU long-name'} header of ${size} bytes exceeds the ${maxMeta}-byte limit`,
        );
      }
      const padded = Math.ceil(size / BLOCK) * BLOCK;
      const data = await r.readExact(padded, `tar meta header at byte ${at}`);
      raws.push(data);
      const body = data.subarray(0, size);
      const what = `tar meta header at byte ${at}`;
      if (flag === 'x') localPax = new Map([...localPax, ...parsePax(body, what)]);
      else if (flag === 'g') globalPax = new Map([...globalPax, ...parsePax(body, what)]);
      else if (flag === 'L') longName = text(field(body, 0, body.length), `${what} long name`);
      else longLink = text(field(body, 0, body.length), `${what} long link`);
    }

    const at = r.position - BLOCK;
    const what = `tar entry at byte ${at}`;
    const type = TYPES[flag];
    if (type === undefined) {
      throw new CairnError(ErrorCode.UNSUPPORTED, `${what}: unsupported tar entry type ${JSON.stringify(flag)}`);
    }
    const magic = block.toString('latin1', 257, 263);
    const ustar = magic === 'ustar\0';
    let name = text(field(block, 0, 100), `${what} name`);
    if (ustar) {
      const prefix = text(field(block, 345, 155), `${what} name prefix`);
      if (prefix) name = `${prefix}/${name}`;
    }
    const pax = new Map([...globalPax, ...localPax]);
    const paxText = (key: string): string | undefined => {
      const v = pax.get(key);
      return v === undefined ? undefined : text(v, `${what} PAX ${key}`);
    };
    name = paxText('path') ?? longName ?? name;
    const linkname = paxText('linkpath') ?? longLink ?? text(field(block, 157, 100), `${what} link name`);
    const header: TarHeader = {
      name,
      type,
      mode: numeric(block, 100, 8, `${what} mode`) & 0o7777,
      uid: paxNumber(pax, 'uid', what) ?? numeric(block, 108, 8, `${what} uid`),
      gid: paxNumber(pax, 'gid', what) ?? numeric(block, 116, 8, `${what} gid`),
      size: paxNumber(pax, 'size', what) ?? numeric(block, 124, 12, `${what} size`),
      mtime: paxNumber(pax, 'mtime', what) ?? numeric(block, 136, 12, `${what} mtime`),
      linkname,
      uname: paxText('uname') ?? text(field(block, 265, 32), `${what} uname`),
      gname: paxText('gname') ?? text(field(block, 297, 32), `${what} gname`),
      devMajor: numeric(block, 329, 8, `${what} devmajor`),
      devMinor: numeric(block, 337, 8, `${what} devminor`),
      pax,
    };
    if (!Number.isSafeInteger(header.size) || header.size < 0) {
      throw new CairnError(ErrorCode.INVALID_INPUT, `${what}: size ${header.size} is invalid`);
    }
    // As in Go's archive/tar (which wrote most layers), only regular files carry data; other types' size is ignored.
    const dataSize = type === 'file' ? header.size : 0;
    header.size = dataSize;

    let consumed = 0;
    const body = (async function* () {
      for await (const c of r.readChunks(dataSize, `${what} (${header.name}) data`)) {
        consumed += c.byteLength;
        yield c;
      }
    })();
    yield { header, rawHeader: Buffer.concat(raws), body, offset };
    if (consumed < dataSize) {
      for await (const c of r.readChunks(dataSize - consumed, `${what} (${header.name}) data`)) void c;
    }
    const pad = (BLOCK - (dataSize % BLOCK)) % BLOCK;
    const padding = pad > 0 ? await r.readExact(pad, `${what} (${header.name}) padding`) : Buffer.alloc(0);
    opts.onPadding?.(padding);
  }
}
