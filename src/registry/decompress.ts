import { createGunzip } from 'node:zlib';
import { Readable } from 'node:stream';
import { Decompress as ZstdDecompress } from 'fzstd';
import { CairnError, ErrorCode } from '../model/errors.js';
import { DigestBuilder, type Digest } from '../model/digest.js';
import type { Compression } from '../model/oci.js';

const GZIP_MAGIC = [0x1f, 0x8b];
const ZSTD_MAGIC = [0x28, 0xb5, 0x2f, 0xfd];

/** Guesses a blob's compression from its first bytes (docker archives do not say). */
export function sniffCompression(head: Uint8Array): Compression {
  if (GZIP_MAGIC.every((b, i) => head[i] === b)) return 'gzip';
  if (ZSTD_MAGIC.every((b, i) => head[i] === b)) return 'zstd';
  return 'none';
}

async function* gunzip(source: AsyncIterable<Uint8Array>, what: string): AsyncGenerator<Buffer> {
  const z = createGunzip({ chunkSize: 256 * 1024 });
  const input = Readable.from(source, { objectMode: false });
  input.on('error', (err) => z.destroy(err));
  input.pipe(z);
  try {
    for await (const chunk of z) yield chunk as Buffer;
  } catch (err) {
    if (err instanceof CairnError) throw err;
    throw new CairnError(
      ErrorCode.INVALID_INPUT,
      `${what}: gzip stream is corrupt or truncated (${(err as Error).message})`,
    );
  } finally {
    input.destroy();
  }
}

async function* unzstd(source: AsyncIterable<Uint8Array>, what: string): AsyncGenerator<Buffer> {
  let out: Buffer[] = [];
  // fzstd is a pure-JS streaming decoder: Node 20's zlib has no zstd.
  const d = new ZstdDecompress((chunk) => out.push(Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength)));
  const push = (chunk: Uint8Array, final: boolean): void => {
    try {
      d.push(chunk, final);
    } catch (err) {
      throw new CairnError(
        ErrorCode.INVALID_INPUT,
        `${what}: zstd stream is corrupt or truncated (${(err as Error).message})`,
      );
    }
  };
  for await (const chunk of source) {
    push(chunk, false);
    if (out.length > 0) {
      const ready = out;
      out = [];
      yield* ready;
    }
  }
  push(new Uint8Array(0), true);
  yield* out;
}

/**
 * Decompresses a layer blob while hashing both sides: `compressed` is the blob
 * digest a manifest names, `uncompressed` the diffID a config names. Both are
 * valid only once the returned stream has been read to its end.
 */
export class LayerStream {
  readonly compressed = new DigestBuilder();
  readonly uncompressed = new DigestBuilder();
  readonly output: AsyncIterable<Buffer>;

  constructor(source: AsyncIterable<Uint8Array>, compression: Compression, what: string) {
    const { compressed, uncompressed } = this;
    async function* counted(): AsyncGenerator<Buffer> {
      for await (const c of source) {
        const b = Buffer.isBuffer(c) ? c : Buffer.from(c);
        compressed.update(b);
        yield b;
      }
    }
    const inner =
      compression === 'gzip' ? gunzip(counted(), what) : compression === 'zstd' ? unzstd(counted(), what) : counted();
    this.output = (async function* () {
      for await (const c of inner) {
        uncompressed.update(c);
        yield c;
      }
    })();
  }
}

/** Fails with a clear message when content does not hash to what it was announced as. */
export function checkDigest(expected: Digest, actual: Digest, what: string): void {
  if (expected !== actual) {
    throw new CairnError(ErrorCode.DIGEST_MISMATCH, `${what}: expected ${expected} but content hashes to ${actual}`);
  }
}
