import { gunzipSync, gzipSync } from 'node:zlib';
import { CairnError, ErrorCode } from '../model/errors.js';

/**
 * A tar skeleton: everything of a tar except regular-file bodies, so that the
 * tar can be rebuilt byte for byte from it and the file contents.
 *
 * Encoding (before gzip): for each entry, a length-prefixed (u32 BE) raw
 * header (meta headers included) and a length-prefixed padding; then a
 * length-prefixed trailer (end-of-archive blocks and whatever followed).
 */
export class SkeletonWriter {
  private readonly parts: Buffer[] = [];

  add(bytes: Buffer): void {
    const len = Buffer.allocUnsafe(4);
    len.writeUInt32BE(bytes.byteLength);
    this.parts.push(len, bytes);
  }

  finish(): Buffer {
    return gzipSync(Buffer.concat(this.parts), { level: 6 });
  }
}

/** Reads a skeleton back, segment by segment, in the order they were added. */
export class SkeletonReader {
  private readonly data: Buffer;
  private off = 0;

  constructor(gz: Buffer) {
    this.data = gunzipSync(gz);
  }

  next(what: string): Buffer {
    if (this.off + 4 > this.data.length)
      throw new CairnError(ErrorCode.INVALID_INPUT, `tar skeleton: ends before ${what}`);
    const len = this.data.readUInt32BE(this.off);
    const start = this.off + 4;
    if (start + len > this.data.length)
      throw new CairnError(ErrorCode.INVALID_INPUT, `tar skeleton: ${what} runs past the end`);
    this.off = start + len;
    return this.data.subarray(start, start + len);
  }

  get done(): boolean {
    return this.off === this.data.length;
  }
}
