#!/usr/bin/env python3
"""Independent statistics over an OCI image layout (stdlib only; zstd blobs
are decompressed with the `zstd` command-line tool).

Usage: independent_stats.py LAYOUT_DIR

Reads index.json (following nested image indexes), every image manifest, and
every layer blob directly, and prints JSON:

  images            number of image manifests reachable from index.json
  layers            unique layers, by diff_id (sha256 of the uncompressed tar)
  entries           tar members over unique layers: files, dirs, symlinks,
                    hardlinks, devices, whiteout/opaque markers... (pax
                    extended headers and GNU longname/longlink headers are
                    metadata of the next member, not members)
  files             regular files (type '0' / '\\0' / contiguous '7') over unique
                    layers, whiteout markers (.wh.*) excluded; hardlinks excluded
  uniqueFiles       distinct sha256 of regular-file contents
  fileBytes         sum of regular-file sizes over unique layers
  uniqueFileBytes   sum of sizes of the distinct contents
  layerBytes        sum of uncompressed tar sizes of unique layers
  compressedBytes   sum of layer blob sizes, unique by blob digest (a layer
                    stored both gzip- and zstd-compressed counts twice)
  dedupSavingPercent  100 * (1 - uniqueFileBytes / fileBytes)

plus a few extra details (whiteouts, opaqueMarkers, hardlinks, symlinks,
directories, layerBlobs, blobsVerified, and per-media-type counts).

The tar stream is parsed by hand (512-byte headers, pax 'x'/'g', GNU 'L'/'K'),
not with the tarfile module, so it checks the layout independently of how the
corpus was written.  Every blob's sha256 is checked against its digest and
every layer's uncompressed sha256 against the config's diff_id.
"""
import hashlib
import json
import os
import subprocess
import sys
import zlib

GZIP_TYPES = ("application/vnd.oci.image.layer.v1.tar+gzip",
              "application/vnd.docker.image.rootfs.diff.tar.gzip",
              "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip")
ZSTD_TYPES = ("application/vnd.oci.image.layer.v1.tar+zstd",)
PLAIN_TYPES = ("application/vnd.oci.image.layer.v1.tar",
               "application/vnd.oci.image.layer.nondistributable.v1.tar")
INDEX_TYPES = ("application/vnd.oci.image.index.v1+json",
               "application/vnd.docker.distribution.manifest.list.v2+json")

CHUNK = 1 << 20


class Fail(Exception):
    pass


def blob_path(layout, digest):
    algo, hexd = digest.split(":", 1)
    return os.path.join(layout, "blobs", algo, hexd)


def read_blob(layout, digest):
    with open(blob_path(layout, digest), "rb") as f:
        data = f.read()
    if "sha256:" + hashlib.sha256(data).hexdigest() != digest:
        raise Fail("blob %s: content does not match digest" % digest)
    return data


def raw_chunks(path):
    with open(path, "rb") as f:
        while True:
            b = f.read(CHUNK)
            if not b:
                return
            yield b


def gunzip_chunks(chunks):
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    for c in chunks:
        while c:
            out = d.decompress(c)
            if out:
                yield out
            if d.eof:  # concatenated gzip members
                c = d.unused_data
                d = zlib.decompressobj(16 + zlib.MAX_WBITS)
            else:
                c = b""
    out = d.flush()
    if out:
        yield out


def zstd_chunks(path):
    p = subprocess.Popen(["zstd", "-d", "-q", "-c", path], stdout=subprocess.PIPE)
    try:
        while True:
            b = p.stdout.read(CHUNK)
            if not b:
                break
            yield b
    finally:
        p.stdout.close()
        if p.wait() != 0:
            raise Fail("zstd -d failed on " + path)


class Reader:
    """Byte reader over a chunk iterator that also hashes/counts everything."""

    def __init__(self, chunks):
        self.it = iter(chunks)
        self.buf = b""
        self.pos = 0
        self.h = hashlib.sha256()
        self.total = 0
        self.eof = False

    def _more(self):
        if self.eof:
            return False
        try:
            c = next(self.it)
        except StopIteration:
            self.eof = True
            return False
        self.h.update(c)
        self.total += len(c)
        self.buf = self.buf[self.pos:] + c
        self.pos = 0
        return True

    def read(self, n):
        while len(self.buf) - self.pos < n and self._more():
            pass
        out = self.buf[self.pos:self.pos + n]
        self.pos += len(out)
        return out

    def read_into_hash(self, n, h=None):
        while n > 0:
            if self.pos >= len(self.buf) and not self._more():
                raise Fail("truncated tar")
            k = min(n, len(self.buf) - self.pos)
            if h is not None:
                h.update(memoryview(self.buf)[self.pos:self.pos + k])
            self.pos += k
            n -= k

    def skip(self, n):
        self.read_into_hash(n, None)

    def drain(self):
        self.pos = len(self.buf)
        while self._more():
            self.pos = len(self.buf)


def octal(field):
    field = field.rstrip(b"\0 ").lstrip(b" ")
    if not field:
        return 0
    if field[0] & 0x80:  # base-256 (GNU) encoding
        v = field[0] & 0x3F
        for b in field[1:]:
            v = (v << 8) | b
        return v
    return int(field, 8)


def parse_pax(data):
    out = {}
    i = 0
    while i < len(data):
        sp = data.index(b" ", i)
        n = int(data[i:sp])
        rec = data[sp + 1:i + n - 1]  # strip trailing newline
        k, _, v = rec.partition(b"=")
        out[k.decode("utf-8", "surrogateescape")] = v
        i += n
    return out


def scan_layer(chunks, st, content_sizes):
    """Walk a tar stream; update stats st; return (sha256 hex, size) of the stream."""
    r = Reader(chunks)
    pax_next = {}
    pax_global = {}
    long_name = None
    zero_blocks = 0
    while True:
        hdr = r.read(512)
        if len(hdr) < 512:
            if hdr.strip(b"\0"):
                raise Fail("truncated tar header")
            break
        if hdr == b"\0" * 512:
            zero_blocks += 1
            if zero_blocks == 2:
                break
            continue
        zero_blocks = 0
        chk = octal(hdr[148:156])
        if chk != sum(hdr[:148]) + 256 + sum(hdr[156:]):
            raise Fail("bad tar header checksum")
        typ = hdr[156:157]
        size = octal(hdr[124:136])
        name = hdr[0:100].split(b"\0", 1)[0]
        if hdr[257:263] == b"ustar\x0000":  # POSIX ustar: name prefix field
            prefix = hdr[345:500].split(b"\0", 1)[0]
            if prefix:
                name = prefix + b"/" + name
        padded = (size + 511) // 512 * 512

        if typ in (b"x", b"g"):
            data = r.read(padded)[:size]
            recs = parse_pax(data)
            (pax_next if typ == b"x" else pax_global).update(recs)
            continue
        if typ in (b"L", b"K"):
            data = r.read(padded)[:size].rstrip(b"\0")
            if typ == b"L":
                long_name = data
            continue

        meta = dict(pax_global)
        meta.update(pax_next)
        pax_next = {}
        if long_name is not None:
            name = long_name
            long_name = None
        if "path" in meta:
            name = meta["path"]
        if "size" in meta:
            size = int(meta["size"])
            padded = (size + 511) // 512 * 512

        st["entries"] += 1
        base = name.rstrip(b"/").rsplit(b"/", 1)[-1]
        is_marker = base.startswith(b".wh.")
        if is_marker:
            if base == b".wh..wh..opq":
                st["opaqueMarkers"] += 1
            else:
                st["whiteouts"] += 1
        if typ in (b"0", b"\0", b"7") and not is_marker:
            h = hashlib.sha256()
            r.read_into_hash(size, h)
            r.skip(padded - size)
            st["files"] += 1
            st["fileBytes"] += size
            content_sizes[h.digest()] = size
            continue
        if typ == b"1":
            st["hardlinks"] += 1
        elif typ == b"2":
            st["symlinks"] += 1
        elif typ == b"5":
            st["directories"] += 1
        elif typ in (b"3", b"4", b"6"):
            st["devicesAndFifos"] += 1
        elif not is_marker:
            st["otherTypes"] += 1
        r.skip(padded)
    r.drain()  # trailing padding after the end-of-archive blocks
    return r.h.hexdigest(), r.total


def collect_manifests(layout, digest_desc, out):
    mt = digest_desc.get("mediaType")
    data = read_blob(layout, digest_desc["digest"])
    doc = json.loads(data)
    mt = mt or doc.get("mediaType")
    if mt in INDEX_TYPES or "manifests" in doc:
        for d in doc["manifests"]:
            collect_manifests(layout, d, out)
    else:
        out.append((digest_desc, doc))


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    layout = sys.argv[1]
    with open(os.path.join(layout, "index.json"), "rb") as f:
        index = json.load(f)
    manifests = []
    for d in index["manifests"]:
        collect_manifests(layout, d, manifests)

    st = {k: 0 for k in ("entries", "files", "fileBytes", "layerBytes", "compressedBytes",
                         "whiteouts", "opaqueMarkers", "hardlinks", "symlinks",
                         "directories", "devicesAndFifos", "otherTypes")}
    content_sizes = {}
    seen_diff = set()
    seen_blob = set()
    media_types = {}
    verified = 0
    refs = []
    for desc, man in manifests:
        refs.append(desc.get("annotations", {}).get("org.opencontainers.image.ref.name", desc["digest"]))
        cfg = json.loads(read_blob(layout, man["config"]["digest"]))
        diff_ids = cfg["rootfs"]["diff_ids"]
        if len(diff_ids) != len(man["layers"]):
            raise Fail("%s: %d layers but %d diff_ids" % (desc["digest"], len(man["layers"]), len(diff_ids)))
        for ldesc, diff_id in zip(man["layers"], diff_ids):
            dg, mt = ldesc["digest"], ldesc["mediaType"]
            path = blob_path(layout, dg)
            if dg not in seen_blob:
                seen_blob.add(dg)
                size = os.path.getsize(path)
                if size != ldesc["size"]:
                    raise Fail("blob %s: size %d, descriptor says %d" % (dg, size, ldesc["size"]))
                h = hashlib.sha256()
                for c in raw_chunks(path):
                    h.update(c)
                if "sha256:" + h.hexdigest() != dg:
                    raise Fail("blob %s: content does not match digest" % dg)
                verified += 1
                st["compressedBytes"] += size
                media_types[mt] = media_types.get(mt, 0) + 1
            else:
                continue  # same blob already scanned
            if mt in GZIP_TYPES:
                chunks = gunzip_chunks(raw_chunks(path))
            elif mt in ZSTD_TYPES:
                chunks = zstd_chunks(path)
            elif mt in PLAIN_TYPES:
                chunks = raw_chunks(path)
            else:
                raise Fail("unsupported layer media type " + mt)
            if diff_id in seen_diff:
                # same uncompressed layer under another compression: verify only
                h = hashlib.sha256()
                for c in chunks:
                    h.update(c)
                if "sha256:" + h.hexdigest() != diff_id:
                    raise Fail("layer %s: uncompressed sha256 != diff_id %s" % (dg, diff_id))
                continue
            seen_diff.add(diff_id)
            tar_sha, tar_size = scan_layer(chunks, st, content_sizes)
            if "sha256:" + tar_sha != diff_id:
                raise Fail("layer %s: uncompressed sha256 %s != diff_id %s" % (dg, tar_sha, diff_id))
            st["layerBytes"] += tar_size

    unique_bytes = sum(content_sizes.values())
    result = {
        "images": len(manifests),
        "layers": len(seen_diff),
        "entries": st["entries"],
        "files": st["files"],
        "uniqueFiles": len(content_sizes),
        "fileBytes": st["fileBytes"],
        "uniqueFileBytes": unique_bytes,
        "layerBytes": st["layerBytes"],
        "compressedBytes": st["compressedBytes"],
        "dedupSavingPercent": round(100.0 * (1 - unique_bytes / st["fileBytes"]), 2) if st["fileBytes"] else 0.0,
        "details": {
            "refs": refs,
            "layerBlobs": len(seen_blob),
            "blobsVerified": verified,
            "layerMediaTypes": media_types,
            "whiteouts": st["whiteouts"],
            "opaqueMarkers": st["opaqueMarkers"],
            "hardlinks": st["hardlinks"],
            "symlinks": st["symlinks"],
            "directories": st["directories"],
            "devicesAndFifos": st["devicesAndFifos"],
            "otherTypes": st["otherTypes"],
        },
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    try:
        main()
    except Fail as e:
        print("independent_stats: " + str(e), file=sys.stderr)
        sys.exit(1)
