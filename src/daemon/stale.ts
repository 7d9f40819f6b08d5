import { execFile } from 'node:child_process';
import { readFile, stat } from 'node:fs/promises';
import { resolve } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

/** Decodes the octal escapes /proc/mounts uses for spaces and such in paths. */
function unescapeMountPath(p: string): string {
  return p.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
}

/** The filesystem type mounted at `path` per /proc/mounts (the last mount wins), or undefined. */
export async function mountedType(path: string): Promise<string | undefined> {
  const want = resolve(path);
  const text = await readFile('/proc/mounts', 'utf8');
  let type: string | undefined;
  for (const line of text.split('\n')) {
    const [, mnt, fstype] = line.split(' ');
    if (mnt !== undefined && unescapeMountPath(mnt) === want) type = fstype;
  }
  return type;
}

/** The lower directories of the overlay mounted at `path` per /proc/mounts (top first), or []. */
export async function overlayLowerDirs(path: string): Promise<string[]> {
  const want = resolve(path);
  const text = await readFile('/proc/mounts', 'utf8');
  let lowers: string[] = [];
  for (const line of text.split('\n')) {
    const [, mnt, fstype, options] = line.split(' ');
    if (mnt === undefined || unescapeMountPath(mnt) !== want) continue;
    if (fstype !== 'overlay') {
      lowers = [];
      continue;
    }
    const opt = (options ?? '').split(',').find((o) => o.startsWith('lowerdir='));
    // Colons inside a lower directory's name are escaped as \: in the option.
    lowers = opt
      ? unescapeMountPath(opt.slice('lowerdir='.length))
          .split(/(?<!\\):/)
          .map((d) => d.replace(/\\:/g, ':'))
      : [];
  }
  return lowers;
}

/**
 * Whether a FUSE mount at `path` has lost its daemon: the kernel answers
 * ENOTCONN. Checked with an async stat, never a sync one (a live mount served
 * by this very process would deadlock a sync call).
 */
export async function isStaleFuseMount(path: string): Promise<boolean> {
  const type = await mountedType(path);
  if (!type?.startsWith('fuse')) return false;
  try {
    await stat(path);
    return false;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'ENOTCONN';
  }
}

/** Detaches whatever is mounted at `path` (lazily, so a busy stale mount goes too). */
export async function detach(path: string): Promise<void> {
  const type = await mountedType(path);
  if (type === undefined) return;
  if (type.startsWith('fuse')) await run('fusermount', ['-uz', path]);
  else await run('umount', ['-l', path]);
}
