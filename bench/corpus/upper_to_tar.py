#!/usr/bin/env python3
"""Turn an overlayfs upper directory (or a plain rootfs) into an OCI layer tar.

Usage: upper_to_tar.py SRC_DIR OUT.tar

Conversion rules (the same ones moby / buildkit apply when they diff an
overlayfs snapshot):

* a whiteout (character device 0:0) NAME becomes an empty regular file
  ``.wh.NAME`` (mode 0600, same uid/gid/mtime as the whiteout);
* a directory carrying ``trusted.overlay.opaque=y`` is emitted normally and is
  followed by an empty regular file ``DIR/.wh..wh..opq`` that inherits the
  directory's permission bits, owner and mtime; the xattr is not exported;
* no ``trusted.*`` xattr is ever exported; ``security.*`` and ``user.*``
  xattrs are written as ``SCHILY.xattr.*`` PAX records (GNU tar / Go style);
* modes, numeric uid/gid, mtimes (whole seconds, like moby), symlinks and
  hardlinks (inside the layer) are kept; user/group names are left empty
  (``--numeric-owner``);
* member names are relative, without a ``./`` prefix; directories end in
  ``/``; members are sorted by name, parents before children (like GNU tar
  ``--sort=name``);
* sockets and FIFOs are skipped only if they are sockets (tar cannot hold
  them); other device nodes are kept.

Only the Python standard library is used.
"""
import os
import stat
import sys
import tarfile

EXPORT_XATTR_PREFIXES = ("security.", "user.")


def xattrs_of(path):
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return {}
    out = {}
    for n in sorted(names):
        try:
            v = os.getxattr(path, n, follow_symlinks=False)
        except OSError:
            continue
        out[n] = v
    return out


class LayerWriter:
    def __init__(self, root, out):
        self.root = root
        self.tf = tarfile.open(out, "w", format=tarfile.PAX_FORMAT)
        self.inodes = {}  # (dev, ino) -> first arcname (for hardlinks)
        self.counts = {"entries": 0, "whiteouts": 0, "opaque": 0, "hardlinks": 0,
                       "xattrs": 0, "skipped": 0}

    def close(self):
        self.tf.close()

    def _base_info(self, arcname, st):
        ti = tarfile.TarInfo(arcname)
        ti.mode = stat.S_IMODE(st.st_mode)
        ti.uid = st.st_uid
        ti.gid = st.st_gid
        ti.uname = ""
        ti.gname = ""
        ti.mtime = int(st.st_mtime)
        return ti

    def add(self, path, arcname):
        st = os.lstat(path)
        mode = st.st_mode
        xa = xattrs_of(path)
        opaque = False
        if stat.S_ISCHR(mode) and st.st_rdev == 0:
            # overlayfs whiteout -> .wh.NAME
            d, base = os.path.split(arcname)
            wh = os.path.join(d, ".wh." + base) if d else ".wh." + base
            ti = self._base_info(wh, st)
            ti.type = tarfile.REGTYPE
            ti.mode = 0o600
            ti.size = 0
            self.tf.addfile(ti)
            self.counts["entries"] += 1
            self.counts["whiteouts"] += 1
            return False
        if stat.S_ISSOCK(mode):
            self.counts["skipped"] += 1
            return False

        ti = self._base_info(arcname, st)
        pax = {}
        for n, v in xa.items():
            if n == "trusted.overlay.opaque" and stat.S_ISDIR(mode) and v == b"y":
                opaque = True
            if n.startswith(EXPORT_XATTR_PREFIXES):
                pax["SCHILY.xattr." + n] = v.decode("utf-8", "surrogateescape")

        fobj = None
        if stat.S_ISREG(mode):
            key = (st.st_dev, st.st_ino)
            if st.st_nlink > 1 and key in self.inodes:
                ti.type = tarfile.LNKTYPE
                ti.linkname = self.inodes[key]
                ti.size = 0
                self.counts["hardlinks"] += 1
            else:
                if st.st_nlink > 1:
                    self.inodes[key] = arcname
                ti.type = tarfile.REGTYPE
                ti.size = st.st_size
                fobj = open(path, "rb")
        elif stat.S_ISDIR(mode):
            ti.type = tarfile.DIRTYPE
            ti.name = arcname.rstrip("/") + "/"
        elif stat.S_ISLNK(mode):
            ti.type = tarfile.SYMTYPE
            ti.linkname = os.readlink(path)
        elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            ti.type = tarfile.CHRTYPE if stat.S_ISCHR(mode) else tarfile.BLKTYPE
            ti.devmajor = os.major(st.st_rdev)
            ti.devminor = os.minor(st.st_rdev)
        elif stat.S_ISFIFO(mode):
            ti.type = tarfile.FIFOTYPE
        else:
            self.counts["skipped"] += 1
            return False
        if pax and ti.type != tarfile.LNKTYPE:
            # xattrs belong to the inode; they travel with its first entry
            ti.pax_headers = pax
            self.counts["xattrs"] += len(pax)
        try:
            self.tf.addfile(ti, fobj)
        finally:
            if fobj:
                fobj.close()
        self.counts["entries"] += 1

        if opaque:
            wo = tarfile.TarInfo(ti.name + ".wh..wh..opq")
            wo.type = tarfile.REGTYPE
            wo.mode = stat.S_IMODE(mode)
            wo.uid = st.st_uid
            wo.gid = st.st_gid
            wo.uname = ""
            wo.gname = ""
            wo.mtime = int(st.st_mtime)
            wo.size = 0
            self.tf.addfile(wo)
            self.counts["entries"] += 1
            self.counts["opaque"] += 1
        return stat.S_ISDIR(mode)

    def walk(self, rel=""):
        d = os.path.join(self.root, rel) if rel else self.root
        # byte-wise name order, like GNU tar --sort=name in the C locale
        names = sorted(os.listdir(os.fsencode(d)))
        for bname in names:
            name = os.fsdecode(bname)
            r = os.path.join(rel, name) if rel else name
            p = os.path.join(self.root, r)
            if self.add(p, r):
                self.walk(r)


def main():
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    src, out = sys.argv[1], sys.argv[2]
    tmp = out + ".tmp"
    w = LayerWriter(src, tmp)
    try:
        w.walk()
    finally:
        w.close()
    os.replace(tmp, out)
    c = w.counts
    print("  layer %s: %d entries, %d whiteouts, %d opaque dirs, %d hardlinks, "
          "%d xattrs, %d skipped" % (out, c["entries"], c["whiteouts"],
                                     c["opaque"], c["hardlinks"], c["xattrs"],
                                     c["skipped"]), file=sys.stderr)


if __name__ == "__main__":
    main()
