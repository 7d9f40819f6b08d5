#!/usr/bin/env bash
# Build a corpus of realistic OCI images the way a Dockerfile builder does:
# a debootstrap'ed Debian bookworm (minbase) base layer, then one layer per
# RUN step, each captured as the upper dir of a kernel overlayfs mount whose
# lowerdirs are the previous layers, converted to an OCI layer tar (overlay
# whiteouts -> .wh.* files, opaque dirs -> .wh..wh..opq).
#
# Usage: bench/corpus/build-corpus.sh [OUT_DIR]      (default /var/tmp/cairn-corpus)
#
# Output:  OUT_DIR/layout/        one OCI image layout holding every image
#          OUT_DIR/images.txt     REPO:TAG per line
#          OUT_DIR/commands.json  REPO:TAG -> argv that runs a program inside it
#          OUT_DIR/work/          build cache (debootstrap tarball, layer upper
#                                 dirs and tars); a re-run reuses it.
# Env:     MIRROR=http://...      Debian mirror (default: from this machine's apt sources)
#          SECURITY_MIRROR=...    Debian security mirror (default: likewise)
#          FORCE=1                ignore the layer cache (the debootstrap tarball is kept)
#
# Needs root (debootstrap, mount, chroot).  Mounts are always undone on exit.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
OUT_DIR="${1:-/var/tmp/cairn-corpus}"
mkdir -p "$OUT_DIR"
OUT_DIR="$(cd "$OUT_DIR" && pwd)"
WORK="$OUT_DIR/work"
CACHE="$WORK/cache"
LAYERS="$WORK/layers"
SUITE=bookworm
ARCH=amd64
START_TS=$(date +%s)

log() { printf '[corpus %s +%ss] %s\n' "$(date +%T)" "$(($(date +%s) - START_TS))" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root (debootstrap, mount, chroot)"

# ---------------------------------------------------------------- mounts ----
MOUNTS=()          # every mount point we created, in mount order
CHROOT_ROOTS=()    # merged dirs we chroot into (to find stray processes)

do_mount() {       # do_mount TARGET mount-args...
  local target="$1"; shift
  mount "$@" "$target"
  MOUNTS+=("$target")
}

kill_chroot_procs() { # processes we started inside a chroot (root dir under $1)
  local root="$1" p r
  for p in /proc/[0-9]*; do
    r="$(readlink "$p/root" 2>/dev/null || true)"
    case "$r" in
      "$root"|"$root"/*)
        log "killing leftover process ${p#/proc/} ($(tr '\0' ' ' <"$p/cmdline" 2>/dev/null || true)) in chroot $root"
        kill -9 "${p#/proc/}" 2>/dev/null || true ;;
    esac
  done
}

undo_mounts() {    # unmount everything we mounted, newest first
  local i t
  for ((i = ${#CHROOT_ROOTS[@]} - 1; i >= 0; i--)); do kill_chroot_procs "${CHROOT_ROOTS[$i]}"; done
  for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do
    t="${MOUNTS[$i]}"
    if mountpoint -q "$t" 2>/dev/null; then
      umount "$t" 2>/dev/null || { log "umount $t failed, trying lazy unmount"; umount -l "$t" || true; }
    fi
  done
  MOUNTS=()
  CHROOT_ROOTS=()
}

on_exit() {
  local rc=$?
  undo_mounts
  if grep -F " $WORK/" /proc/mounts >/dev/null 2>&1; then
    log "WARNING: mounts under $WORK are still present:"
    grep -F " $WORK/" /proc/mounts >&2 || true
    rc=1
  fi
  if [ $rc -ne 0 ]; then log "FAILED (exit $rc)"; fi
  exit $rc
}
trap on_exit EXIT
trap 'exit 130' INT TERM

# ------------------------------------------------------------ prerequisites --
need_pkgs=()
command -v debootstrap >/dev/null || need_pkgs+=(debootstrap)
command -v zstd >/dev/null || need_pkgs+=(zstd)
command -v gzip >/dev/null || need_pkgs+=(gzip)
command -v python3 >/dev/null || need_pkgs+=(python3)
command -v mountpoint >/dev/null || need_pkgs+=(util-linux)
[ -e /usr/share/keyrings/debian-archive-keyring.gpg ] || need_pkgs+=(debian-archive-keyring)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  log "installing ${need_pkgs[*]}"
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_pkgs[@]}" >&2
fi
grep -qw overlay /proc/filesystems || modprobe overlay || die "kernel overlayfs not available"

# ------------------------------------------------------------------ mirror ---
# Find the mirror(s) this machine's apt uses (one-line .list and deb822 .sources).
detect_mirrors() {
  python3 - /etc/apt/sources.list /etc/apt/sources.list.d/* <<'EOF'
import sys, re, os
main = sec = None
for path in sys.argv[1:]:
    if not os.path.isfile(path) or not (path.endswith(".list") or path.endswith(".sources")):
        continue
    text = open(path, errors="replace").read()
    entries = []  # (uris, suites)
    if path.endswith(".list"):
        for line in text.splitlines():
            line = re.sub(r"\[[^]]*\]", "", line.split("#", 1)[0]).split()
            if len(line) >= 3 and line[0] == "deb":
                entries.append(([line[1]], [line[2]]))
    else:
        for stanza in re.split(r"\n\s*\n", text):
            f = {}
            for line in stanza.splitlines():
                if line.startswith("#") or ":" not in line:
                    continue
                k, v = line.split(":", 1)
                f[k.strip().lower()] = v.split()
            if "deb" in f.get("types", []) and f.get("enabled", ["yes"])[0] != "no":
                entries.append((f.get("uris", []), f.get("suites", [])))
    for uris, suites in entries:
        for u in uris:
            if any(s.endswith("-security") or "/updates" in s for s in suites):
                sec = sec or u
            elif any(s.startswith("bookworm") for s in suites):
                main = main or u
print(main or "http://deb.debian.org/debian")
print(sec or "http://deb.debian.org/debian-security")
EOF
}
if [ -z "${MIRROR:-}" ] || [ -z "${SECURITY_MIRROR:-}" ]; then
  mapfile -t _m < <(detect_mirrors)
  MIRROR="${MIRROR:-${_m[0]}}"
  SECURITY_MIRROR="${SECURITY_MIRROR:-${_m[1]}}"
fi
MIRROR="${MIRROR%/}"
SECURITY_MIRROR="${SECURITY_MIRROR%/}"
log "output: $OUT_DIR  mirror: $MIRROR  security: $SECURITY_MIRROR"

mkdir -p "$CACHE" "$LAYERS"

# ------------------------------------------------------------ base rootfs ---
BASE_TARBALL="$CACHE/debootstrap-$SUITE-minbase-$ARCH.tar.zst"
if [ ! -s "$BASE_TARBALL" ]; then
  log "debootstrap --variant=minbase $SUITE (not cached yet; takes a few minutes)"
  tmp="$CACHE/debootstrap.tmp"
  rm -rf "$tmp"
  debootstrap --variant=minbase --arch="$ARCH" \
    --keyring=/usr/share/keyrings/debian-archive-keyring.gpg \
    "$SUITE" "$tmp" "$MIRROR" >"$CACHE/debootstrap.log" 2>&1 \
    || { tail -30 "$CACHE/debootstrap.log" >&2; die "debootstrap failed (log: $CACHE/debootstrap.log)"; }
  # debootstrap may leave mounts behind on failure paths; be sure.
  grep -F " $tmp/" /proc/mounts | awk '{print $2}' | sort -r | xargs -r -n1 umount -l || true
  log "caching debootstrap rootfs as $BASE_TARBALL"
  tar -C "$tmp" --xattrs --xattrs-include='*' --numeric-owner --format=pax --sort=name \
    -I 'zstd -q -T0 -10' -cf "$BASE_TARBALL.tmp" .
  mv "$BASE_TARBALL.tmp" "$BASE_TARBALL"
  rm -rf "$tmp"
else
  log "using cached debootstrap rootfs $BASE_TARBALL"
fi

# Post-processing of the debootstrap rootfs into the "debian:12" base layer,
# in the spirit of the official image (debuerreotype / old docker mkimage).
BASE_FIXUP=$(cat <<EOF
set -e
rm -f etc/apt/sources.list
mkdir -p etc/apt/sources.list.d
cat > etc/apt/sources.list.d/debian.sources <<'SRC'
Types: deb
URIs: $MIRROR
Suites: $SUITE $SUITE-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $SECURITY_MIRROR
Suites: $SUITE-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
# keep daemons from starting while packages are installed (like docker's mkimage)
printf '#!/bin/sh\nexit 101\n' > usr/sbin/policy-rc.d
chmod 755 usr/sbin/policy-rc.d
cat > etc/apt/apt.conf.d/docker-clean <<'CONF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
CONF
printf 'Acquire::Languages "none";\n' > etc/apt/apt.conf.d/docker-no-languages
printf 'APT::AutoRemove::SuggestsImportant "false";\n' > etc/apt/apt.conf.d/docker-autoremove-suggests
rm -f etc/hostname etc/resolv.conf
echo debian > etc/hostname
: > etc/resolv.conf
rm -rf dev/* proc/* sys/* run/* tmp/* var/tmp/*
rm -rf var/lib/apt/lists/* var/cache/apt/*.bin var/cache/apt/archives/*.deb var/cache/apt/archives/partial/*
rm -f var/log/bootstrap.log var/cache/ldconfig/aux-cache
mkdir -p var/lib/apt/lists/partial
chmod 1777 tmp var/tmp
EOF
)

# ------------------------------------------------------------- layer cache ---
# Each layer lives in $LAYERS/NAME: upper/ (the filesystem diff, used as a
# lowerdir by later layers), layer.tar (OCI layer), created_by, created, key.
# The key hashes the step definition and the parents' keys; a changed step
# (or FORCE=1) rebuilds it.

layer_key() {      # layer_key NAME PARENTS SCRIPT
  local parents_keys="" p
  for p in $2; do parents_keys+="$p=$(cat "$LAYERS/$p/key");"; done
  printf '%s\n%s\n%s\n' "$1" "$parents_keys" "$3" | sha256sum | cut -c1-64
}

layer_cached() {   # layer_cached NAME KEY
  [ -z "${FORCE:-}" ] && [ -f "$LAYERS/$1/done" ] && [ "$(cat "$LAYERS/$1/key" 2>/dev/null)" = "$2" ] \
    && [ -s "$LAYERS/$1/layer.tar" ]
}

TAR_KEY=$(sha256sum "$HERE/upper_to_tar.py" | cut -c1-64)

write_layer_tar() { # write_layer_tar NAME: upper/ -> layer.tar
  local d="$LAYERS/$1"
  log "layer $1: writing OCI layer tar"
  python3 "$HERE/upper_to_tar.py" "$d/upper" "$d/layer.tar"
  rm -f "$d"/layer.tar.gz* "$d"/layer.tar.zst*   # stale compressed copies
  printf '%s' "$TAR_KEY" >"$d/tarkey"
  log "layer $1: $(du -sh "$d/layer.tar" | cut -f1) uncompressed"
}

finish_layer() {   # finish_layer NAME KEY CREATED_BY
  local d="$LAYERS/$1"
  write_layer_tar "$1"
  printf '%s' "$3" >"$d/created_by"
  date -u -d "@$(stat -c %Y "$d/layer.tar")" +%Y-%m-%dT%H:%M:%SZ >"$d/created"
  printf '%s' "$2" >"$d/key"
  touch "$d/done"
}

use_cached() {     # use_cached NAME: reuse the upper dir; re-convert if the converter changed
  if [ "$(cat "$LAYERS/$1/tarkey" 2>/dev/null)" != "$TAR_KEY" ]; then
    log "layer $1: cached upper dir, converter changed"
    write_layer_tar "$1"
  else
    log "layer $1: cached"
  fi
}

build_base() {
  local key d
  key=$(printf 'base\n%s\n%s\n' "$(sha256sum "$BASE_TARBALL" | cut -c1-64)" "$BASE_FIXUP" | sha256sum | cut -c1-64)
  d="$LAYERS/base"
  if layer_cached base "$key"; then use_cached base; return; fi
  log "layer base: extracting debootstrap rootfs + fixups"
  rm -rf "$d"; mkdir -p "$d/upper"
  tar -C "$d/upper" --xattrs --xattrs-include='*' --numeric-owner -I zstd -xpf "$BASE_TARBALL"
  (cd "$d/upper" && sh -c "$BASE_FIXUP")
  finish_layer base "$key" "/bin/sh -c #(nop) ADD file:debootstrap-$SUITE-minbase-$ARCH.tar in / "
}

# build_run NAME "PARENT1 PARENT2 ..." SCRIPT [HOST_HOOK]
#   PARENTS are listed bottom (base) first.  SCRIPT runs with /bin/sh -c in a
#   chroot on the overlay mount.  HOST_HOOK (a bash function name) runs on the
#   host afterwards with the merged dir as $1 (used for COPY-like steps).
build_run() {
  local name="$1" parents="$2" script="$3" hook="${4:-}"
  local key d lower="" p merged
  key=$(layer_key "$name" "$parents" "$script$(if [ -n "$hook" ]; then declare -f "$hook" app_hook_common gen_app_files; fi)")
  d="$LAYERS/$name"
  if layer_cached "$name" "$key"; then use_cached "$name"; return; fi
  for p in $parents; do
    [ -f "$LAYERS/$p/done" ] || die "layer $name: parent $p not built"
    lower="$LAYERS/$p/upper${lower:+:$lower}"    # topmost first
  done
  rm -rf "$d"; mkdir -p "$d/upper" "$d/ovlwork" "$d/merged"
  merged="$d/merged"
  log "layer $name: RUN $(printf '%s' "$script" | tr '\n' ' ' | cut -c1-150)"
  do_mount "$merged" -t overlay overlay \
    -o "lowerdir=$lower,upperdir=$d/upper,workdir=$d/ovlwork,redirect_dir=off,metacopy=off,index=off"
  do_mount "$merged/proc" -t proc proc
  do_mount "$merged/dev" --bind /dev
  do_mount "$merged/etc/resolv.conf" --bind -o ro /etc/resolv.conf
  CHROOT_ROOTS+=("$merged")
  if ! chroot "$merged" /usr/bin/env -i \
      PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
      HOME=/root LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive \
      /bin/sh -c "$script" >"$d/run.log" 2>&1; then
    tail -40 "$d/run.log" >&2
    die "layer $name: RUN failed (log: $d/run.log)"
  fi
  if [ -n "$hook" ]; then "$hook" "$merged"; fi
  undo_mounts
  rm -rf "$d/ovlwork" "$d/merged"
  finish_layer "$name" "$key" "/bin/sh -c $script"
}

APT_RUN() {        # Dockerfile-style apt step
  printf 'set -eux; apt-get update; apt-get install -y --no-install-recommends %s; apt-get clean; rm -rf /var/lib/apt/lists/*' "$*"
}

# ------------------------------------------------------- app layer content ---
# Deterministic web-app content (COPY-like), written from the host into the
# merged dir.  Version 1 and 2 share the "vendor" bundle and the logo, so they
# are byte-identical files living in different layers.
gen_app_files() {  # gen_app_files DEST VERSION
  python3 - "$1" "$2" <<'EOF'
import hashlib, os, sys
dest, ver = sys.argv[1], sys.argv[2]
os.makedirs(os.path.join(dest, "static"), exist_ok=True)
def prng_text(seed, n):
    out, h, i = [], hashlib.sha256(seed.encode()).hexdigest(), 0
    words = ["const", "let", "function", "return", "if", "else", "for", "await",
             "async", "import", "export", "class", "this", "new", "null", "true"]
    size = 0
    while size < n:
        h = hashlib.sha256((h + str(i)).encode()).hexdigest(); i += 1
        line = " ".join(words[int(h[k:k + 2], 16) % len(words)] for k in range(0, 24, 2))
        line += " /* %s */;\n" % h[:16]
        out.append(line); size += len(line)
    return "".join(out)[:n]
def prng_bytes(seed, n):
    out, h = bytearray(), seed.encode()
    while len(out) < n:
        h = hashlib.sha256(h).digest(); out += h
    return bytes(out[:n])
w = lambda p, data: open(os.path.join(dest, p), "wb").write(data if isinstance(data, bytes) else data.encode())
w("index.html", "<!doctype html>\n<html><head><title>cairn demo app v%s</title>"
  "<script src=\"static/vendor.js\"></script><script src=\"static/app.js\"></script>"
  "</head><body><h1>cairn demo app, version %s</h1></body></html>\n" % (ver, ver))
w("static/vendor.js", prng_text("vendor-bundle-1.0", 1536 * 1024))        # shared by v1 and v2
w("static/app.js", prng_text("app-" + ver, 256 * 1024))                    # differs
w("static/logo.png", prng_bytes("logo", 64 * 1024))                         # shared, incompressible
if ver == "2":
    w("static/app2-extra.js", prng_text("extra-2", 128 * 1024))
EOF
}

app_hook_common() { # app_hook_common MERGED VERSION
  local merged="$1" ver="$2" stage="$WORK/app-v$2.stage"
  rm -rf "$stage"; mkdir -p "$stage"
  gen_app_files "$stage" "$ver"
  cp -a "$stage/." "$merged/var/www/html/"
  chown -R 0:0 "$merged/var/www/html"
  # a hardlink and a symlink inside the layer, and a user.* xattr
  ln "$merged/var/www/html/index.html" "$merged/var/www/html/index.htm"
  ln -s static/app.js "$merged/var/www/html/app.js"
  python3 -c 'import os,sys; os.setxattr(sys.argv[1], "user.cairn.app-version", sys.argv[2].encode())' \
    "$merged/var/www/html/index.html" "$ver"
  rm -rf "$stage"
}
app_hook_v1() { app_hook_common "$1" 1; }
app_hook_v2() { app_hook_common "$1" 2; }

NGINX_CONF_V1=$(cat <<'EOF'
user www-data;
worker_processes 2;
pid /run/nginx.pid;
error_log /var/log/nginx/error.log;
include /etc/nginx/modules-enabled/*.conf;
events { worker_connections 256; }
http {
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    access_log /var/log/nginx/access.log;
    sendfile on;
    server {
        listen 8080 default_server;
        root /var/www/html;
        index index.html;
        location / { try_files $uri $uri/ =404; }
    }
}
EOF
)
NGINX_CONF_V2="${NGINX_CONF_V1/worker_connections 256/worker_connections 1024}"
NGINX_CONF_V2="${NGINX_CONF_V2/sendfile on;/sendfile on;$'\n'    gzip on;}"

APP_V1_RUN=$(cat <<EOF
set -eux
cat > /etc/nginx/nginx.conf <<'CONF'
$NGINX_CONF_V1
CONF
echo web-v1 > /etc/hostname
rm -f /etc/nginx/sites-enabled/default
rm -rf /var/www/html
mkdir -p /var/www/html
EOF
)
APP_V2_RUN=$(cat <<EOF
set -eux
cat > /etc/nginx/nginx.conf <<'CONF'
$NGINX_CONF_V2
CONF
echo web-v2 > /etc/hostname
rm -f /etc/nginx/sites-enabled/default /etc/nginx/sites-available/default
rm -rf /usr/share/doc/nginx-light
rm -rf /var/www/html
mkdir -p /var/www/html
EOF
)

# ------------------------------------------------------------------ layers ---
build_base
build_run py-minimal         "base"               "$(APT_RUN python3-minimal)"
build_run py-python3         "base"               "$(APT_RUN python3)"
build_run py-pip-on-python3  "base py-python3"    "$(APT_RUN python3-pip)"
build_run py-python3-pip     "base"               "$(APT_RUN python3 python3-pip)"
build_run net-curl-ca        "base"               "$(APT_RUN curl ca-certificates)"
build_run net-curl           "base"               "$(APT_RUN curl)"
build_run net-ca-ping-on-curl "base net-curl"     "$(APT_RUN ca-certificates iputils-ping libcap2-bin)"
build_run web-nginx          "base"               "$(APT_RUN nginx-light)"
build_run web-app-v1         "base web-nginx"     "$APP_V1_RUN" app_hook_v1
build_run web-app-v2         "base web-nginx"     "$APP_V2_RUN" app_hook_v2

# ------------------------------------------------------------------ layout ---
log "writing OCI layout $OUT_DIR/layout"
python3 "$HERE/make_layout.py" --spec "$HERE/images.json" --layers "$LAYERS" --out "$OUT_DIR"

undo_mounts
if grep -F " $WORK/" /proc/mounts >/dev/null; then die "mounts left under $WORK"; fi
log "no mounts left under $WORK (checked /proc/mounts)"
log "done in $(($(date +%s) - START_TS))s: $(wc -l <"$OUT_DIR/images.txt") images, layout $(du -sh "$OUT_DIR/layout" | cut -f1), work cache $(du -sh "$WORK" | cut -f1)"
