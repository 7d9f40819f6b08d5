import { describe, expect, it } from 'vitest';
import { CairnError, ErrorCode } from '../../src/model/errors.js';
import { HttpBlobSource, type HttpBlobSourceOptions } from '../../src/fetch/http-source.js';

function invalid(opts: unknown): CairnError {
  try {
    const s = new HttpBlobSource(opts as HttpBlobSourceOptions);
    void s.close();
  } catch (err) {
    expect(err).toBeInstanceOf(CairnError);
    expect((err as CairnError).code).toBe(ErrorCode.INVALID_OPTION);
    return err as CairnError;
  }
  throw new Error(`accepted ${JSON.stringify(opts)}`);
}

const url = 'http://127.0.0.1:1';

describe('HttpBlobSource options', () => {
  it('names the option and the rule in INVALID_OPTION errors', () => {
    const cases: [unknown, string][] = [
      [undefined, 'HttpBlobSource: options must be an object with a url'],
      [{}, 'HttpBlobSource: option url must be a string (got undefined)'],
      [{ url: 42 }, 'HttpBlobSource: option url must be a string (got 42)'],
      [{ url: 'not a url' }, 'HttpBlobSource: option url must be an http:// or https:// URL (got "not a url")'],
      [{ url: 'ftp://host/' }, 'HttpBlobSource: option url must be an http:// or https:// URL (got "ftp://host/")'],
      [
        { url: 'http://user:pw@host/' },
        'HttpBlobSource: option url must not have credentials, a query or a fragment (got "http://user:pw@host/")',
      ],
      [{ url: 'http://host/?x=1' }, 'option url must not have credentials, a query or a fragment'],
      [{ url, deadlineMs: 0 }, 'HttpBlobSource: option deadlineMs must be a positive integer (got 0)'],
      [{ url, deadlineMs: 1.5 }, 'HttpBlobSource: option deadlineMs must be a positive integer (got 1.5)'],
      [{ url, deadlineMs: '100' }, 'HttpBlobSource: option deadlineMs must be a positive integer (got "100")'],
      [{ url, deadlineMs: NaN }, 'HttpBlobSource: option deadlineMs must be a positive integer (got NaN)'],
      [{ url, deadlineMs: 2 ** 31 }, 'HttpBlobSource: option deadlineMs must be at most 2147483647 (got 2147483648)'],
      [{ url, attemptTimeoutMs: 0 }, 'HttpBlobSource: option attemptTimeoutMs must be a positive integer (got 0)'],
      [
        { url, deadlineMs: 1000, attemptTimeoutMs: 1001 },
        'HttpBlobSource: option attemptTimeoutMs must be at most deadlineMs (1000) (got 1001)',
      ],
      [{ url, retries: -1 }, 'HttpBlobSource: option retries must be a non-negative integer (got -1)'],
      [{ url, retries: 101 }, 'HttpBlobSource: option retries must be at most 100 (got 101)'],
      [{ url, backoffMs: -5 }, 'HttpBlobSource: option backoffMs must be a non-negative integer (got -5)'],
      [{ url, connections: 0 }, 'HttpBlobSource: option connections must be a positive integer (got 0)'],
      [{ url, connections: null }, 'HttpBlobSource: option connections must be a positive integer (got null)'],
      [{ url, onEvent: 'log' }, 'HttpBlobSource: option onEvent must be a function (got "log")'],
      [{ url, deadline: 100 }, 'HttpBlobSource: unknown option deadline'],
    ];
    for (const [opts, message] of cases) {
      expect(invalid(opts).message, JSON.stringify(opts)).toContain(message);
    }
  });

  it('applies the defaults, keeps a path prefix, and accepts edge values', async () => {
    const s = new HttpBlobSource({ url: 'http://127.0.0.1:1/' });
    expect(s.url).toBe('http://127.0.0.1:1');
    expect([s.deadlineMs, s.attemptTimeoutMs, s.retries, s.backoffMs, s.connections]).toEqual([
      10_000, 5000, 3, 100, 8,
    ]);
    await s.close();

    const t = new HttpBlobSource({
      url: 'https://registry.example:5000/cairn/',
      deadlineMs: 1,
      attemptTimeoutMs: 1,
      retries: 0,
      backoffMs: 0,
      connections: 1,
      onEvent: () => {},
    });
    expect(t.url).toBe('https://registry.example:5000/cairn');
    expect([t.deadlineMs, t.attemptTimeoutMs, t.retries, t.backoffMs, t.connections]).toEqual([1, 1, 0, 0, 1]);
    await t.close();
  });

  it('close() is idempotent and reads after it reject with UNAVAILABLE, without connecting', async () => {
    const s = new HttpBlobSource({ url });
    const first = s.close();
    expect(s.close()).toBe(first);
    await first;
    const ref = { digest: `sha256:${'a'.repeat(64)}` as const, size: 10 };
    await expect(s.read(ref, 0, 10)).rejects.toMatchObject({ code: ErrorCode.UNAVAILABLE, message: /closed/ });
    await expect(s.readChunk(ref, 0)).rejects.toMatchObject({ code: ErrorCode.UNAVAILABLE });
    await expect(s.chunkDigest(ref, 0)).rejects.toMatchObject({ code: ErrorCode.UNAVAILABLE });
  });

  it('rejects bad arguments before any request', async () => {
    const s = new HttpBlobSource({ url });
    try {
      const ref = { digest: `sha256:${'a'.repeat(64)}` as const, size: 3 * 1024 * 1024 };
      await expect(s.read(ref, -1, 1)).rejects.toMatchObject({ code: ErrorCode.RANGE });
      await expect(s.read(ref, 0.5, 1)).rejects.toMatchObject({ code: ErrorCode.RANGE });
      await expect(s.readChunk(ref, 12)).rejects.toMatchObject({ code: ErrorCode.RANGE, message: /no chunk 12/ });
      await expect(s.readChunk(ref, -1)).rejects.toMatchObject({ code: ErrorCode.RANGE });
      await expect(s.read({ digest: 'sha256:nope' as `sha256:${string}`, size: 1 }, 0, 1)).rejects.toMatchObject({
        code: ErrorCode.INVALID_INPUT,
      });
      await expect(s.read({ ...ref, size: -1 }, 0, 1)).rejects.toMatchObject({ code: ErrorCode.INVALID_INPUT });
      // Zero-byte reads need no request (port 1 would refuse one).
      expect((await s.read(ref, ref.size, 10)).length).toBe(0);
      expect((await s.read(ref, 5, 0)).length).toBe(0);
      expect((await s.read(ref, 5, -3)).length).toBe(0);
      const aborted = AbortSignal.abort();
      await expect(s.read(ref, 0, 1, { signal: aborted })).rejects.toMatchObject({ code: ErrorCode.ABORTED });
      await expect(s.readChunk(ref, 0, { signal: aborted })).rejects.toMatchObject({ code: ErrorCode.ABORTED });
      expect(s.inFlight).toBe(0);
    } finally {
      await s.close();
    }
  });
});
