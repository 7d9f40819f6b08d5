import { CairnError, ErrorCode } from '../model/errors.js';
import { ancestorsOf, baseName, displayPath, parentOf, type Entry } from '../model/entry.js';
import type { Digest } from '../model/digest.js';
import { readTar, type TarEntry } from '../tar/reader.js';
import { SkeletonWriter } from '../tar/skeleton.js';

/**
 * Where a layer's file contents go. `store` resolves once the content is
 * durable; a stream body is fully consumed by then.
 */
export interface ContentSink {
  store(body: Buffer | AsyncIterable<Buffer>): Promise<{ digest: Digest; created: boolean; chunks?: Buffer }>;
}

/** Files up to this size are buffered and written in the background, several at once. */
const INLINE_BYTES = 4 * 1024 * 1024;
/** Background writes in flight at most. */
const MAX_PENDING = 32;

async function collect(body: AsyncIterable<Buffer>, size: number): Promise<Buffer> {
  const out = Buffer.allocUnsafe(size);
  let off = 0;
  for await (const c of body) {
    c.copy(out, off);
    off += c.byteLength;
  }
  return out;
}

export interface ParsedLayer {
  entries: Entry[];
  /** The layer's tar minus regular-file bodies (see skeleton.ts), gzipped: with the contents it rebuilds the tar byte for byte. */
  skeleton: Buffer;
  /** Packed chunk digests of large contents that went through the sink. */
  chunks: Map<Digest, Buffer>;
  /** Regular files whose content was new to the store. */
  newFiles: number;
  newBytes: number;
}

const WHITEOUT = '.wh.';
const OPAQUE = '.wh..wh..opq';

/**
 * Normalizes a tar member name to cairn's path form, refusing anything that
 * could reach outside the image root.
 */
export function normalizeEntryPath(raw: string, what: string): string {
  if (raw.startsWith('/')) {
    throw new CairnError(
      ErrorCode.UNSAFE_ENTRY,
      `${what}: absolute path ${JSON.stringify(raw)} is not allowed in a layer`,
    );
  }
  if (raw.includes('\0')) throw new CairnError(ErrorCode.UNSAFE_ENTRY, `${what}: NUL byte in path`);
  const parts: string[] = [];
  for (const part of raw.split('/')) {
    if (part === '' || part === '.') continue;
    if (part === '..') {
      throw new CairnError(ErrorCode.UNSAFE_ENTRY, `${what}: path ${JSON.stringify(raw)} has a '..' component`);
    }
    parts.push(part);
  }
  return parts.join('/');
}

function decodeXattrs(tar: TarEntry): Record<string, string> | undefined {
  let out: Record<string, string> | undefined;
  for (const [key, value] of tar.header.pax) {
    let name: string | undefined;
    let bytes: Buffer = value;
    if (key.startsWith('SCHILY.xattr.')) name = key.slice('SCHILY.xattr.'.length);
    else if (key.startsWith('LIBARCHIVE.xattr.')) {
      // libarchive URL-encodes the name and base64-encodes the value.
      name = decodeURIComponent(key.slice('LIBARCHIVE.xattr.'.length));
      bytes = Buffer.from(value.toString('latin1'), 'base64');
    }
    if (name === undefined || name === '') continue;
    out ??= {};
    out[name] = bytes.toString('base64');
  }
  return out;
}

/**
 * Parses one uncompressed layer tar into entries, sending regular-file
 * contents to `sink`. Enforces the rules that keep a layer meaningful:
 * no escaping paths, hardlinks only to earlier entries, no path that is both
 * a file and a directory, no path twice.
 */
export async function parseLayer(
  tarStream: AsyncIterable<Uint8Array>,
  sink: ContentSink,
  what: string,
): Promise<ParsedLayer> {
  try {
    return await parseLayerEntries(tarStream, sink, what);
  } catch (err) {
    // Errors from the tar and decompression layers name a byte offset; add which layer of which source.
    if (err instanceof CairnError && !err.message.startsWith(what)) {
      throw new CairnError(err.code, `${what}: ${err.message}`, { cause: err });
    }
    throw err;
  }
}

async function parseLayerEntries(
  tarStream: AsyncIterable<Uint8Array>,
  sink: ContentSink,
  what: string,
): Promise<ParsedLayer> {
  const entries: Entry[] = [];
  const pending = new Set<Promise<void>>();
  const chunks = new Map<Digest, Buffer>();
  const skeleton = new SkeletonWriter();
  const seen = new Map<string, Entry>(); // path -> non-marker entry
  const markers = new Set<string>(); // "wh:path" / "opq:path"
  const implicitDirs = new Set<string>();
  let newFiles = 0;
  let newBytes = 0;
  let failure: unknown;

  try {
    return await parseEntries();
  } finally {
    // A failed layer still lets its background writes finish, so nothing writes after the import returns.
    await Promise.allSettled(pending);
  }

  async function parseEntries(): Promise<ParsedLayer> {
    const tarEntries = readTar(tarStream, {
      onPadding: (p) => skeleton.add(p),
      onTrailer: (t) => skeleton.add(t),
    });
    for await (const tar of tarEntries) {
      skeleton.add(tar.rawHeader);
      const h = tar.header;
      const where = `${what}: entry ${JSON.stringify(h.name)}`;
      const path = normalizeEntryPath(h.name, where);
      const base = baseName(path);
      const common = {
        mode: h.mode,
        uid: h.uid,
        gid: h.gid,
        mtime: h.mtime,
        ...(h.uname ? { uname: h.uname } : {}),
        ...(h.gname ? { gname: h.gname } : {}),
      };

      if (base.startsWith(WHITEOUT)) {
        if (h.type !== 'file' || h.size !== 0) {
          throw new CairnError(ErrorCode.UNSAFE_ENTRY, `${where}: a whiteout marker must be an empty regular file`);
        }
        const dir = parentOf(path);
        let entry: Entry;
        if (base === OPAQUE) entry = { path: dir, type: 'opaque', size: 0, ...common };
        else if (base.startsWith(`${WHITEOUT}${WHITEOUT}`)) {
          throw new CairnError(ErrorCode.UNSUPPORTED, `${where}: AUFS metadata entries (.wh..wh.*) are not supported`);
        } else {
          const target = (dir ? `${dir}/` : '') + base.slice(WHITEOUT.length);
          if (base.length === WHITEOUT.length)
            throw new CairnError(ErrorCode.UNSAFE_ENTRY, `${where}: whiteout with an empty name`);
          entry = { path: target, type: 'whiteout', size: 0, ...common };
        }
        const key = `${entry.type}:${entry.path}`;
        if (markers.has(key))
          throw new CairnError(
            ErrorCode.UNSAFE_ENTRY,
            `${where}: ${entry.type} for ${displayPath(entry.path)} appears twice`,
          );
        markers.add(key);
        checkAncestors(entry.path, where, seen);
        for (const a of ancestorsOf(path)) implicitDirs.add(a);
        entries.push(entry);
        for await (const c of tar.body) void c; // markers have no content
        continue;
      }

      const prior = seen.get(path);
      if (prior) {
        const both = prior.type === 'dir' || h.type === 'dir' ? ' (both a file and a directory)' : '';
        throw new CairnError(
          ErrorCode.UNSAFE_ENTRY,
          `${where}: path ${displayPath(path)} appears twice in the layer${both}`,
        );
      }
      if (h.type !== 'dir' && implicitDirs.has(path)) {
        throw new CairnError(
          ErrorCode.UNSAFE_ENTRY,
          `${where}: ${displayPath(path)} is both a ${h.type} and a directory in this layer`,
        );
      }
      checkAncestors(path, where, seen);
      for (const a of ancestorsOf(path)) implicitDirs.add(a);

      const entry: Entry = { path, type: h.type, size: 0, ...common };
      const xattrs = decodeXattrs(tar);
      if (xattrs) entry.xattrs = xattrs;
      switch (h.type) {
        case 'file': {
          entry.size = h.size;
          // Small contents are written in the background (fsync dominates); the entry gets its digest when the write resolves.
          const inline = h.size <= INLINE_BYTES;
          const write = sink.store(inline ? await collect(tar.body, h.size) : tar.body).then(
            (r) => {
              entry.digest = r.digest;
              if (r.chunks) chunks.set(r.digest, r.chunks);
              if (r.created) {
                newFiles += 1;
                newBytes += h.size;
              }
            },
            (err: unknown) => {
              failure ??= err;
            },
          );
          if (inline) {
            pending.add(write);
            void write.finally(() => pending.delete(write));
            if (pending.size >= MAX_PENDING) await Promise.race(pending);
          } else {
            await write;
          }
          break;
        }
        case 'hardlink': {
          const target = normalizeEntryPath(h.linkname, `${where} link target`);
          const t = seen.get(target);
          if (!t || t.type === 'dir') {
            throw new CairnError(
              ErrorCode.UNSAFE_ENTRY,
              `${where}: hardlink to ${displayPath(target)}, which is not an earlier non-directory entry of this layer`,
            );
          }
          entry.linkTarget = t.type === 'hardlink' ? (t.linkTarget as string) : target;
          break;
        }
        case 'symlink':
          // Absolute or '..' symlink targets are legal in images: they resolve inside the container's root, never on the host.
          if (h.linkname === '')
            throw new CairnError(ErrorCode.INVALID_INPUT, `${where}: symlink with an empty target`);
          entry.linkTarget = h.linkname;
          break;
        case 'char':
        case 'block':
          entry.devMajor = h.devMajor;
          entry.devMinor = h.devMinor;
          break;
        default:
          break;
      }
      if (h.type !== 'file') for await (const c of tar.body) void c;
      seen.set(path, entry);
      entries.push(entry);
      if (failure) break;
    }
    await Promise.all(pending);
    if (failure) throw failure;
    return { entries, skeleton: skeleton.finish(), chunks, newFiles, newBytes };
  }
}

function checkAncestors(path: string, where: string, seen: Map<string, Entry>): void {
  for (const a of ancestorsOf(path)) {
    const e = seen.get(a);
    if (e && e.type !== 'dir') {
      throw new CairnError(
        ErrorCode.UNSAFE_ENTRY,
        `${where}: ${displayPath(a)} is both a ${e.type} and a directory in this layer`,
      );
    }
  }
}
