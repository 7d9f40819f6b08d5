/** containerd's snapshotter rules, through a real gRPC client on the unix socket, over a real SQLite file. */
import { credentials, status, type Client, type ServiceError } from '@grpc/grpc-js';
import { existsSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, test } from 'vitest';
import { snapshotsService } from '../../src/snapshotter/proto.js';
import { SnapshotterServer } from '../../src/snapshotter/server.js';
import { Snapshotter } from '../../src/snapshotter/snapshotter.js';
import { createLogger } from '../../src/util/log.js';
import { testTempDir } from '../fixtures/tmp.js';

type Call = (method: string, req: object) => Promise<Record<string, unknown>>;

async function start(dir: string) {
  const snapshotter = new Snapshotter({ rootDir: join(dir, 'root') });
  const socketPath = join(dir, 's.sock');
  const server = new SnapshotterServer({
    snapshotter,
    socketPath,
    log: createLogger({ level: 'silent', component: 'test' }),
  });
  await server.listen();
  const Ctor = snapshotsService();
  const client = new Ctor(`unix://${socketPath}`, credentials.createInsecure()) as Client &
    Record<string, (req: object, cb: (e: ServiceError | null, v: Record<string, unknown>) => void) => void>;
  const call: Call = (method, req) =>
    new Promise((resolve, reject) => client[method]!(req, (e, v) => (e ? reject(e) : resolve(v))));
  const list = async (filters: string[] = []) => {
    const out: { name: string; parent: string; kind: string; labels: Record<string, string> }[] = [];
    const stream = (client as unknown as { List(r: object): AsyncIterable<{ info: typeof out }> }).List({ filters });
    for await (const m of stream) out.push(...m.info);
    return out;
  };
  const stop = async () => {
    client.close();
    await server.close();
    snapshotter.close();
  };
  return { call, list, stop, snapshotter };
}

async function codeOf(p: Promise<unknown>): Promise<number> {
  try {
    await p;
  } catch (e) {
    return (e as ServiceError).code;
  }
  throw new Error('call succeeded, expected a failure');
}

describe('snapshotter over gRPC', () => {
  test('prepare, commit, overlay mounts, views, and the rules containerd relies on', async () => {
    const dir = await testTempDir('cairn-snap-');
    const s = await start(dir);
    try {
      const p = (await s.call('Prepare', { key: 'a', parent: '', labels: { l: '1' } })) as {
        mounts: { type: string; source: string; options: string[] }[];
      };
      expect(p.mounts).toHaveLength(1);
      expect(p.mounts[0]!.type).toBe('bind');
      expect(p.mounts[0]!.options).toEqual(['rw', 'rbind']);
      await writeFile(join(p.mounts[0]!.source, 'f'), 'x'.repeat(10000));
      expect(await codeOf(s.call('Prepare', { key: 'a', parent: '' }))).toBe(status.ALREADY_EXISTS);
      expect(await codeOf(s.call('Prepare', { key: 'b', parent: 'a' }))).toBe(status.INVALID_ARGUMENT);
      expect(await codeOf(s.call('Prepare', { key: 'b', parent: 'nope' }))).toBe(status.NOT_FOUND);

      await s.call('Commit', { name: 'A', key: 'a', labels: { c: '2' } });
      expect(await codeOf(s.call('Stat', { key: 'a' }))).toBe(status.NOT_FOUND);
      const stat = (await s.call('Stat', { key: 'A' })) as { info: { kind: string; labels: Record<string, string> } };
      expect(stat.info.kind).toBe('COMMITTED');
      expect(stat.info.labels).toEqual({ c: '2' });
      const usage = (await s.call('Usage', { key: 'A' })) as { size: number; inodes: number };
      expect(usage.size).toBeGreaterThanOrEqual(10000);
      expect(usage.inodes).toBe(2);
      expect(await codeOf(s.call('Mounts', { key: 'A' }))).toBe(status.FAILED_PRECONDITION);

      const b = (await s.call('Prepare', { key: 'b', parent: 'A' })) as {
        mounts: { type: string; options: string[] }[];
      };
      expect(b.mounts[0]!.type).toBe('overlay');
      expect(b.mounts[0]!.options.some((o) => o.startsWith('upperdir='))).toBe(true);
      expect(await codeOf(s.call('Commit', { name: 'A', key: 'b' }))).toBe(status.ALREADY_EXISTS);
      await s.call('Commit', { name: 'B', key: 'b' });
      const v = (await s.call('View', { key: 'v', parent: 'B' })) as { mounts: { type: string; options: string[] }[] };
      expect(v.mounts[0]!.type).toBe('overlay');
      expect(v.mounts[0]!.options).toHaveLength(1);
      expect(v.mounts[0]!.options[0]).toMatch(/^lowerdir=.*:.*/);
      const v1 = (await s.call('View', { key: 'v1', parent: 'A' })) as {
        mounts: { type: string; options: string[] }[];
      };
      expect(v1.mounts[0]).toMatchObject({ type: 'bind', options: ['ro', 'rbind'] });
      expect(await codeOf(s.call('Commit', { name: 'V', key: 'v' }))).toBe(status.FAILED_PRECONDITION);

      // Children block removal; removing them first frees the parent.
      expect(await codeOf(s.call('Remove', { key: 'A' }))).toBe(status.FAILED_PRECONDITION);
      expect((await s.list(['kind==view'])).map((i) => i.name).sort()).toEqual(['v', 'v1']);
      expect((await s.list(['parent==A', 'name==v'])).map((i) => i.name).sort()).toEqual(['B', 'v', 'v1']);
      expect((await s.list(['labels.c==2'])).map((i) => i.name)).toEqual(['A']);
      expect(await codeOf(s.list(['bogus==1']))).toBe(status.INVALID_ARGUMENT);
      for (const k of ['v', 'v1', 'B', 'A']) await s.call('Remove', { key: k });
      expect(await s.list()).toEqual([]);
      expect(await codeOf(s.call('Remove', { key: 'A' }))).toBe(status.NOT_FOUND);
    } finally {
      await s.stop();
    }
  });

  test('update changes labels only; ids are never reused; cleanup removes orphan directories; restart keeps metadata', async () => {
    const dir = await testTempDir('cairn-snap-');
    let s = await start(dir);
    try {
      await s.call('Prepare', { key: 'a', parent: '', labels: { x: '1', y: '2' } });
      const u = (await s.call('Update', {
        info: { name: 'a', labels: { y: '3' } },
        updateMask: { paths: ['labels.y', 'labels.x'] },
      })) as { info: { labels: Record<string, string> } };
      expect(u.info.labels).toEqual({ y: '3' });
      expect(
        await codeOf(s.call('Update', { info: { name: 'a', labels: {} }, updateMask: { paths: ['parent'] } })),
      ).toBe(status.INVALID_ARGUMENT);
      expect(await codeOf(s.call('Prepare', { key: 'big', parent: '', labels: { k: 'v'.repeat(5000) } }))).toBe(
        status.INVALID_ARGUMENT,
      );
      await s.call('Prepare', { key: 'gone', parent: '' });
      await s.call('Remove', { key: 'gone' });
      const orphan = join(dir, 'root', 'snapshots', '99');
      await mkdir(orphan);
      await s.call('Cleanup', {});
      expect(existsSync(orphan)).toBe(false);
      await s.stop();

      s = await start(dir);
      expect((await s.list()).map((i) => [i.name, i.labels])).toEqual([['a', { y: '3' }]]);
      const c = (await s.call('Prepare', { key: 'c', parent: '' })) as { mounts: { source: string }[] };
      // ids 1 (a) and 2 (gone) were handed out; the new snapshot must not reuse 2.
      expect(c.mounts[0]!.source).toBe(join(dir, 'root', 'snapshots', '3', 'fs'));
      expect(existsSync(join(dir, 'root', 'snapshots', '1', 'fs'))).toBe(true);
    } finally {
      await s.stop();
    }
  });
});
