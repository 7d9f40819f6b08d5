#!/usr/bin/env bash
# cairn's main job on its embedded defaults: a registry on a local directory
# with SQLite, a sample image built on the spot and imported, the registry
# served over HTTP on loopback, and a file read back through it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

work=${CAIRN_QUICKSTART_DIR:-$PWD/.cairn}
root=$work/registry
cairn() { node bin/cairn.js "$@"; }

rm -rf "$root"
echo "== building the sample image (busybox-static) in $work/sample"
rm -rf "$work/sample"
cairn sample "$work/sample"

echo "== importing it into the registry at $root"
cairn import "$work/sample:sample/busybox:latest" sample/busybox:latest --root "$root"
echo "== importing it again: nothing new is stored"
cairn import "$work/sample:sample/busybox:latest" sample/busybox:again --root "$root"

echo "== registry stats"
cairn registry stats --root "$root"

echo "== serving the registry on loopback"
port_file=$(mktemp)
node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})' >"$port_file"
port=$(cat "$port_file"); rm -f "$port_file"
node bin/cairn.js registry serve --root "$root" --listen "127.0.0.1:$port" --log-level warn &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null || true' EXIT
for _ in $(seq 1 50); do
  curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done
base="http://127.0.0.1:$port/api/v1"
echo "GET $base/repositories/sample/busybox/images/latest"
image=$(curl -fsS "$base/repositories/sample/busybox/images/latest")
recipe=$(node -e 'const i=JSON.parse(process.argv[1]); console.log(i.layers[i.layers.length-1].recipe)' "$image")
echo "top layer recipe: $recipe"
digest=$(curl -fsS --compressed "$base/recipes/$recipe" |
  node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{const r=JSON.parse(s);console.log(r.entries.find(e=>e.path==="app/hello.sh").digest)})')
echo "== reading /app/hello.sh ($digest) through the registry's file API"
curl -fsS "$base/files/$digest"

mnt=$work/mnt
state=$work/state
mkdir -p "$mnt"
node bin/cairn.js unmount "$mnt" --state-dir "$state" >/dev/null 2>&1 || true
echo "== mounting the image lazily at $mnt (metadata only; contents are fetched on first read)"
node bin/cairn.js mount "http://127.0.0.1:$port" sample/busybox:latest "$mnt" --state-dir "$state"
trap 'node bin/cairn.js unmount "$mnt" --state-dir "$state" >/dev/null 2>&1 || true; kill $server 2>/dev/null; wait $server 2>/dev/null || true' EXIT
echo "== ls $mnt"
ls -l "$mnt"
echo "== running /app/hello.sh from the mount (chroot: the image's own busybox runs it)"
chroot "$mnt" /app/hello.sh
echo "== mount stats"
node bin/cairn.js stats "$mnt" --state-dir "$state"
node bin/cairn.js unmount "$mnt" --state-dir "$state"
