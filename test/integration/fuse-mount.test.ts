import { describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { createHash } from 'node:crypto';
import { mkdir, readFile as readFileAsync } from 'node:fs/promises';
import { join } from 'node:path';
import { FuseMount } from '../../src/fuse/adapter.js';
import { ImageFs } from '../../src/daemon/image-fs.js';
import { UnionView } from '../../src/union/view.js';
import { CairnError, ErrorCode } from '../../src/model/errors.js';
import { sha256, type Digest } from '../../src/model/digest.js';
import type { BlobRef, BlobSource, ReadOptions } from '../../src/fetch/blob-source.js';
import type { Entry } from '../../src/model/entry.js';
import { testTempDir } from '../fixtures/tmp.js';

const run = promisify(execFile);

/** Contents from a map; `stall` makes reads wait until their signal fires (a registry that never answers). */
class MapSource implements BlobSource {
  stall = false;
  reads = 0;
  constructor(readonly contents: Map<Digest, Buffer>) {}
  async read(ref: BlobRef, offset: number, length: number, opts: ReadOptions = {}): Promise<Buffer> {
    this.reads++;
    if (this.stall) {
      await new Promise((_, reject) =>
        opts.signal?.addEventListener('abort', () => reject(new CairnError(ErrorCode.TIMEOUT, 'deadline passed'))),
      );
    }
    const c = this.contents.get(ref.digest);
    if (!c) throw new CairnError(ErrorCode.NOT_FOUND, `no ${ref.digest}`);
    return c.subarray(offset, offset + length);
  }
  async close(): Promise<void> {}
}

const base = { mode: 0o644, uid: 0, gid: 0, mtime: 1_700_000_000, size: 0 };
function fileEntry(path: string, content: Buffer, contents: Map<Digest, Buffer>, extra: Partial<Entry> = {}): Entry {
  const digest = sha256(content);
  contents.set(digest, content);
  return { ...base, path, type: 'file', size: content.length, digest, ...extra };
}

async function mounted(layers: (contents: Map<Digest, Buffer>) => Entry[][], deadlineMs = 2000) {
  const contents = new Map<Digest, Buffer>();
  const view = UnionView.build(layers(contents), { lookup: 'flat' });
  const source = new MapSource(contents);
  const fs = new ImageFs(view, source, { readDeadlineMs: deadlineMs });
  const mnt = join(await testTempDir('cairn-fuse-'), 'mnt');
  await mkdir(mnt);
  const m = new FuseMount(mnt, fs, { readDeadlineMs: deadlineMs });
  await m.mount();
  return { mnt, source, unmount: () => m.unmount() };
}

describe('FUSE adapter over ImageFs', () => {
  it('serves a union of layers: contents, symlinks, whiteouts, modes, xattrs, devices', async () => {
    const big = Buffer.alloc(300_000, 9);
    const m = await mounted((c) => [
      [
        { ...base, path: 'etc', type: 'dir', mode: 0o755 },
        fileEntry('etc/passwd', Buffer.from('root:x:0:0\n'), c),
        fileEntry('etc/motd', Buffer.from('hi\n'), c),
        { ...base, path: 'bin', type: 'dir', mode: 0o755 },
        fileEntry('bin/tool', big, c, { mode: 0o4755, xattrs: { 'user.note': Buffer.from('yes').toString('base64') } }),
        { ...base, path: 'bin/sh', type: 'symlink', linkTarget: '/bin/tool', mode: 0o777 },
        { ...base, path: 'dev', type: 'dir', mode: 0o755 },
        { ...base, path: 'dev/null', type: 'char', devMajor: 1, devMinor: 3, mode: 0o666 },
      ],
      [
        { ...base, path: 'etc/motd', type: 'whiteout' },
        fileEntry('etc/passwd', Buffer.from('root:x:0:0\napp:x:1:1\n'), c),
      ],
    ]);
    try {
      const ls = await run('ls', ['-A', join(m.mnt, 'etc')]);
      expect(ls.stdout.split('\n').filter(Boolean)).toEqual(['passwd']);
      expect((await run('cat', [join(m.mnt, 'etc/passwd')])).stdout).toBe('root:x:0:0\napp:x:1:1\n');
      const sum = (await run('sha256sum', [join(m.mnt, 'bin/tool')])).stdout.split(' ')[0];
      expect(sum).toBe(createHash('sha256').update(big).digest('hex'));
      expect((await run('readlink', [join(m.mnt, 'bin/sh')])).stdout.trim()).toBe('/bin/tool');
      const st = (await run('stat', ['-c', '%a %u %g %s %t:%T %F', join(m.mnt, 'bin/tool'), join(m.mnt, 'dev/null')]))
        .stdout;
      expect(st.split('\n')[0]).toBe('4755 0 0 300000 0:0 regular file');
      expect(st.split('\n')[1]).toBe('666 0 0 0 1:3 character special file');
      const x = await run('python3', [
        '-c',
        `import os;print(os.getxattr(${JSON.stringify(join(m.mnt, 'bin/tool'))}, "user.note").decode())`,
      ]);
      expect(x.stdout.trim()).toBe('yes');
      await expect(run('cat', [join(m.mnt, 'etc/motd')])).rejects.toThrow(/No such file/);
      // Reading through fs/promises from this process is fine (async); a sync call would deadlock.
      expect((await readFileAsync(join(m.mnt, 'etc/passwd'), 'utf8')).startsWith('root')).toBe(true);
    } finally {
      await m.unmount();
    }
  });

  it('fails a read with EIO once its deadline passes, instead of hanging', async () => {
    const m = await mounted((c) => [[fileEntry('slow', Buffer.from('never'), c)]], 700);
    try {
      m.source.stall = true;
      const started = Date.now();
      const err = await run('cat', [join(m.mnt, 'slow')]).then(
        () => undefined,
        (e: { stderr: string }) => e,
      );
      expect(err?.stderr).toMatch(/Input\/output error/);
      expect(Date.now() - started).toBeLessThan(5000);
      m.source.stall = false;
    } finally {
      await m.unmount();
    }
  });
});
