#!/usr/bin/env python3
"""Write an OCI image layout from layer tars (Python standard library only,
compression through the gzip / zstd command-line tools).

Usage:
  make_layout.py --spec images.json --layers LAYERS_DIR --out OUT_DIR

The spec (see images.json next to this file) lists images:
  {"images": [{"ref": "REPO:TAG",
               "layers": ["NAME", {"layer": "NAME", "compression": "zstd"}, ...],
               "cmd": [...], "command": [...], "exposedPorts": ["8080/tcp"]}]}

A layer NAME is LAYERS_DIR/NAME/layer.tar (with LAYERS_DIR/NAME/created_by and
LAYERS_DIR/NAME/created written by build-corpus.sh), or a path to a .tar file.
compression is gzip (default), zstd or none.  Compressed copies are cached
next to the tar (layer.tar.gz / layer.tar.zst, plus a .diffid sidecar naming
the tar they were made from).

Writes OUT_DIR/layout (replaced atomically-ish: built in layout.new, then
swapped), OUT_DIR/images.txt and OUT_DIR/commands.json.
"""
import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time

MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_INDEX = "application/vnd.oci.image.index.v1+json"
MT_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_LAYER = {
    "gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
    "zstd": "application/vnd.oci.image.layer.v1.tar+zstd",
    "none": "application/vnd.oci.image.layer.v1.tar",
}
EXT = {"gzip": ".gz", "zstd": ".zst", "none": ""}
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def log(msg):
    print("  [make_layout] " + msg, file=sys.stderr, flush=True)


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(1 << 20)
            if not b:
                break
            h.update(b)
    return "sha256:" + h.hexdigest()


def canonical(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


class Layer:
    def __init__(self, tar, name, created_by, created):
        self.tar = tar
        self.name = name
        self.created_by = created_by
        self.created = created
        self._diff_id = None

    @property
    def diff_id(self):
        if self._diff_id is None:
            self._diff_id = sha256_file(self.tar)
        return self._diff_id

    def blob(self, compression):
        """Return path of the (cached) compressed blob for this layer."""
        if compression == "none":
            return self.tar
        out = self.tar + EXT[compression]
        side = out + ".diffid"
        if os.path.exists(out) and os.path.exists(side) and open(side).read() == self.diff_id:
            return out
        log("compressing %s with %s" % (self.name, compression))
        cmd = {"gzip": ["gzip", "-n", "-6", "-c"],
               "zstd": ["zstd", "-q", "-3", "-c", "--no-progress"]}[compression]
        tmp = out + ".tmp"
        with open(self.tar, "rb") as src, open(tmp, "wb") as dst:
            subprocess.run(cmd, stdin=src, stdout=dst, check=True)
        os.replace(tmp, out)
        with open(side, "w") as f:
            f.write(self.diff_id)
        return out


def resolve_layer(layers_dir, ref, cache):
    if ref in cache:
        return cache[ref]
    if ref.endswith(".tar") and os.path.isfile(ref):
        tar = os.path.abspath(ref)
        created_by = "/bin/sh -c #(nop) ADD file:%s in / " % os.path.basename(ref)
        created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(os.stat(tar).st_mtime))
    else:
        d = os.path.join(layers_dir, ref)
        tar = os.path.join(d, "layer.tar")
        if not os.path.isfile(tar):
            sys.exit("make_layout: layer %r not found (%s)" % (ref, tar))
        created_by = open(os.path.join(d, "created_by")).read()
        created = open(os.path.join(d, "created")).read().strip()
    lay = Layer(tar, ref, created_by, created)
    cache[ref] = lay
    return lay


class BlobStore:
    def __init__(self, layout):
        self.dir = os.path.join(layout, "blobs", "sha256")
        os.makedirs(self.dir, exist_ok=True)

    def put_bytes(self, data):
        dg = "sha256:" + hashlib.sha256(data).hexdigest()
        p = os.path.join(self.dir, dg.split(":", 1)[1])
        if not os.path.exists(p):
            with open(p + ".tmp", "wb") as f:
                f.write(data)
            os.replace(p + ".tmp", p)
        return dg, len(data)

    def put_file(self, path):
        dg = sha256_file(path)
        p = os.path.join(self.dir, dg.split(":", 1)[1])
        if not os.path.exists(p):
            shutil.copyfile(path, p + ".tmp")
            os.replace(p + ".tmp", p)
        return dg, os.path.getsize(p)


def build(spec, layers_dir, out_dir):
    final = os.path.join(out_dir, "layout")
    layout = final + ".new"
    shutil.rmtree(layout, ignore_errors=True)
    os.makedirs(layout)
    store = BlobStore(layout)
    with open(os.path.join(layout, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)

    cache = {}
    index_entries = []
    commands = {}
    refs = []
    for img in spec["images"]:
        ref = img["ref"]
        layers = []
        for l in img["layers"]:
            if isinstance(l, str):
                l = {"layer": l}
            comp = l.get("compression", "gzip")
            if comp not in MT_LAYER:
                sys.exit("make_layout: %s: unknown compression %r" % (ref, comp))
            layers.append((resolve_layer(layers_dir, l["layer"], cache), comp))

        history = []
        for i, (lay, _) in enumerate(layers):
            history.append({"created": lay.created, "created_by": lay.created_by,
                            "comment": "cairn corpus layer " + lay.name})
            if i == 0:
                # the base image's own CMD, inherited like `FROM debian:12`
                history.append({"created": lay.created,
                                "created_by": '/bin/sh -c #(nop)  CMD ["bash"]',
                                "empty_layer": True})
        created = max(lay.created for lay, _ in layers)
        cfg = {"Env": [PATH_ENV], "Cmd": img["cmd"]}
        if img.get("exposedPorts"):
            cfg["ExposedPorts"] = {p: {} for p in img["exposedPorts"]}
            for p in img["exposedPorts"]:
                history.append({"created": created,
                                "created_by": "/bin/sh -c #(nop)  EXPOSE %s" % p,
                                "empty_layer": True})
        if len(layers) > 1 or img["cmd"] != ["bash"]:
            history.append({"created": created,
                            "created_by": "/bin/sh -c #(nop)  CMD " + json.dumps(img["cmd"]),
                            "empty_layer": True})
        config = {
            "created": created,
            "architecture": "amd64",
            "os": "linux",
            "config": cfg,
            "rootfs": {"type": "layers", "diff_ids": [lay.diff_id for lay, _ in layers]},
            "history": history,
        }
        cfg_dg, cfg_size = store.put_bytes(canonical(config))

        mlayers = []
        for lay, comp in layers:
            dg, size = store.put_file(lay.blob(comp))
            mlayers.append({"mediaType": MT_LAYER[comp], "digest": dg, "size": size})
        manifest = {
            "schemaVersion": 2,
            "mediaType": MT_MANIFEST,
            "config": {"mediaType": MT_CONFIG, "digest": cfg_dg, "size": cfg_size},
            "layers": mlayers,
        }
        m_dg, m_size = store.put_bytes(canonical(manifest))
        index_entries.append({
            "mediaType": MT_MANIFEST,
            "digest": m_dg,
            "size": m_size,
            "annotations": {"org.opencontainers.image.ref.name": ref},
            "platform": {"architecture": "amd64", "os": "linux"},
        })
        commands[ref] = img["command"]
        refs.append(ref)
        log("%-20s manifest %s  %d layers (%s)" % (
            ref, m_dg[:19], len(layers), ", ".join("%s:%s" % (l.name, c) for l, c in layers)))

    index = {"schemaVersion": 2, "mediaType": MT_INDEX, "manifests": index_entries}
    with open(os.path.join(layout, "index.json"), "wb") as f:
        f.write(json.dumps(index, indent=2).encode() + b"\n")

    # swap in the new layout
    old = final + ".old"
    shutil.rmtree(old, ignore_errors=True)
    if os.path.exists(final):
        os.rename(final, old)
    os.rename(layout, final)
    shutil.rmtree(old, ignore_errors=True)

    def write(name, data):
        p = os.path.join(out_dir, name)
        with open(p + ".tmp", "w") as f:
            f.write(data)
        os.replace(p + ".tmp", p)

    write("images.txt", "".join(r + "\n" for r in refs))
    write("commands.json", json.dumps(commands, indent=2) + "\n")
    n_blobs = len(os.listdir(store.dir.replace(layout, final)))
    log("wrote %s: %d images, %d blobs" % (final, len(refs), n_blobs))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spec", required=True)
    ap.add_argument("--layers", required=True, help="directory holding NAME/layer.tar")
    ap.add_argument("--out", required=True, help="output dir (layout/ is written inside)")
    a = ap.parse_args()
    with open(a.spec) as f:
        spec = json.load(f)
    os.makedirs(a.out, exist_ok=True)
    build(spec, a.layers, a.out)


if __name__ == "__main__":
    main()
