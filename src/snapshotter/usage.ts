/** Disk usage of a directory tree as containerd counts it: allocated blocks and inodes, hardlinks once. */
import { lstat, readdir } from 'node:fs/promises';
import { join } from 'node:path';

export interface DiskUsage {
  sizeBytes: number;
  inodes: number;
}

export async function diskUsage(dir: string): Promise<DiskUsage> {
  const seen = new Set<string>();
  let sizeBytes = 0;
  const visit = async (path: string): Promise<void> => {
    const st = await lstat(path);
    const id = `${st.dev}:${st.ino}`;
    if (!seen.has(id)) {
      seen.add(id);
      sizeBytes += st.blocks * 512;
    }
    if (st.isDirectory()) for (const name of await readdir(path)) await visit(join(path, name));
  };
  await visit(dir);
  return { sizeBytes, inodes: seen.size };
}
