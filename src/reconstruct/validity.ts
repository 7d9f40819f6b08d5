/**
 * Validity is checked, never assumed: a reconstructed image is valid when
 * its merged view (what `cairn mount` shows, built by src/union) equals the
 * original's entry for entry: the same paths, each with the same type,
 * permission bits, owner, size, mtime, content digest, symlink target,
 * device numbers and xattrs; non-directories with the same link count; and
 * the same hardlink groups (paths sharing an inode in one share it in the
 * other).
 *
 * A directory's link count is not compared: like overlayfs, the view reports
 * 1 for a directory merged from several layers, so it says how many layers a
 * directory spans, which is what a reconstruction changes, not what the
 * image contains. Inode numbers and the providing layer are not compared.
 */
import type { Entry } from '../model/entry.js';
import { MAX_LAYERS, ROOT_INO, UnionView } from '../union/index.js';

interface Row {
  path: string;
  desc: string;
}

function walk(view: UnionView): Row[] {
  const rows: Row[] = [];
  const firstPathOfIno = new Map<number, string>();
  const visit = (ino: number, path: string): void => {
    const a = view.getattr(ino);
    if (!a) return;
    const xattrs = (view.listxattr(ino) ?? []).map((n) => `${n}=${view.getxattr(ino, n)?.toString('base64') ?? ''}`);
    let link = '';
    if (a.type !== 'dir') {
      const first = firstPathOfIno.get(ino);
      if (first === undefined) firstPathOfIno.set(ino, path);
      else link = ` same-inode-as=/${first}`;
    }
    rows.push({
      path,
      desc:
        `${a.type} mode=${a.mode.toString(8)} uid=${a.uid} gid=${a.gid} size=${a.size} mtime=${a.mtime}` +
        (a.type === 'dir' ? '' : ` nlink=${a.nlink}`) +
        (a.digest ? ` digest=${a.digest}` : '') +
        (a.linkTarget !== undefined ? ` target=${JSON.stringify(a.linkTarget)}` : '') +
        (a.type === 'char' || a.type === 'block' ? ` dev=${a.rdevMajor}:${a.rdevMinor}` : '') +
        (xattrs.length ? ` xattrs=${xattrs.join(',')}` : '') +
        link,
    });
    if (a.type !== 'dir') return;
    for (const c of view.readdirEntries(ino) ?? []) visit(c.ino, path === '' ? c.name : `${path}/${c.name}`);
  };
  visit(ROOT_INO, '');
  return rows;
}

export interface Validity {
  valid: boolean;
  /** The first difference (or why the check could not run), when invalid. */
  reason?: string;
}

/** The merged view of `layers` as comparable rows, one per visible path in walk order. */
export function viewRows(layers: Entry[][]): Row[] {
  return walk(UnionView.build(layers, { lookup: 'flat' }));
}

/** Compares the merged views of two layer stacks; `original` may be given as rows already walked. */
export function checkValidity(original: Entry[][] | Row[], reconstructed: Entry[][]): Validity {
  if (reconstructed.length > MAX_LAYERS) {
    return { valid: false, reason: `${reconstructed.length} layers: overlayfs stacks at most ${MAX_LAYERS}` };
  }
  let a: Row[];
  let b: Row[];
  try {
    a = isRows(original) ? original : viewRows(original);
    b = viewRows(reconstructed);
  } catch (err) {
    return { valid: false, reason: `the layers do not form an image: ${(err as Error).message}` };
  }
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const x = a[i] as Row;
    const y = b[i] as Row;
    if (x.path !== y.path) {
      return { valid: false, reason: `/${x.path < y.path ? x.path : y.path} is in one view only` };
    }
    if (x.desc !== y.desc) return { valid: false, reason: `/${x.path}: ${x.desc} became ${y.desc}` };
  }
  if (a.length !== b.length) {
    const extra = (a.length > b.length ? a[n] : b[n]) as Row;
    return { valid: false, reason: `/${extra.path} is in one view only` };
  }
  return { valid: true };
}

function isRows(x: Entry[][] | Row[]): x is Row[] {
  const first = x[0];
  return first !== undefined && !Array.isArray(first);
}
