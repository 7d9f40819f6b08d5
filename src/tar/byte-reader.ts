import { CairnError, ErrorCode } from '../model/errors.js';

/**
 * Pulls exact byte counts out of an async stream of chunks, keeping only what
 * has not been consumed yet. `position` counts consumed bytes, for messages.
 */
export class ByteReader {
  private readonly it: AsyncIterator<Uint8Array>;
  private chunks: Buffer[] = [];
  private buffered = 0;
  private ended = false;
  position = 0;

  constructor(source: AsyncIterable<Uint8Array>) {
    this.it = source[Symbol.asyncIterator]();
  }

  /** Buffers at least n bytes; false when the stream ends first. */
  async fill(n: number): Promise<boolean> {
    while (this.buffered < n && !this.ended) {
      const next = await this.it.next();
      if (next.done) {
        this.ended = true;
        break;
      }
      const chunk = Buffer.isBuffer(next.value) ? next.value : Buffer.from(next.value);
      if (chunk.byteLength > 0) {
        this.chunks.push(chunk);
        this.buffered += chunk.byteLength;
      }
    }
    return this.buffered >= n;
  }

  get available(): number {
    return this.buffered;
  }

  /** Takes n already-buffered bytes (n <= available). */
  take(n: number): Buffer {
    if (n > this.buffered) throw new CairnError(ErrorCode.INTERNAL, 'ByteReader.take past buffered data');
    this.buffered -= n;
    this.position += n;
    const first = this.chunks[0];
    if (first && first.byteLength === n) {
      this.chunks.shift();
      return first;
    }
    if (first && first.byteLength > n) {
      this.chunks[0] = first.subarray(n);
      return first.subarray(0, n);
    }
    const out = Buffer.allocUnsafe(n);
    let off = 0;
    while (off < n) {
      const c = this.chunks[0] as Buffer;
      const use = Math.min(c.byteLength, n - off);
      c.copy(out, off, 0, use);
      off += use;
      if (use === c.byteLength) this.chunks.shift();
      else this.chunks[0] = c.subarray(use);
    }
    return out;
  }

  /** Reads exactly n bytes or throws a truncation error naming `what`. */
  async readExact(n: number, what: string): Promise<Buffer> {
    if (!(await this.fill(n))) {
      throw new CairnError(
        ErrorCode.INVALID_INPUT,
        `${what}: truncated at byte ${this.position + this.buffered} (needed ${n} bytes, ${this.buffered} left)`,
      );
    }
    return this.take(n);
  }

  /** Yields chunks that add up to exactly n bytes, or throws a truncation error. */
  async *readChunks(n: number, what: string): AsyncGenerator<Buffer> {
    let left = n;
    while (left > 0) {
      if (this.buffered === 0 && !(await this.fill(1))) {
        throw new CairnError(
          ErrorCode.INVALID_INPUT,
          `${what}: truncated at byte ${this.position} (${left} of ${n} bytes missing)`,
        );
      }
      const first = this.chunks[0] as Buffer;
      const use = Math.min(first.byteLength, left);
      left -= use;
      yield this.take(use);
    }
  }

  /** Everything left, up to `limit` bytes; throws if there is more. */
  async rest(limit: number, what: string): Promise<Buffer> {
    await this.fill(limit + 1);
    if (this.buffered > limit) {
      throw new CairnError(
        ErrorCode.INVALID_INPUT,
        `${what}: more than ${limit} bytes after the end-of-archive marker`,
      );
    }
    return this.take(this.buffered);
  }
}
