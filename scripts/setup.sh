#!/usr/bin/env bash
# Prepares a machine to build and test cairn. Idempotent: does only what is missing.
#  1. As root, installs the Debian packages cairn's tests and benchmarks use
#     (apt-get update runs once, and only when something is missing).
#  2. Runs `npm ci` when node_modules is missing or older than package-lock.json.
#  3. Builds (npm run build).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

PACKAGES=(libfuse2 fuse3 busybox-static zstd skopeo umoci nginx-light wrk containerd runc docker-registry)

missing=()
if command -v dpkg-query >/dev/null 2>&1; then
  for pkg in "${PACKAGES[@]}"; do
    status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
    if [[ "$status" != "install ok installed" ]]; then
      missing+=("$pkg")
    fi
  done
else
  echo "setup: not a Debian system (no dpkg-query); make sure these are installed: ${PACKAGES[*]}" >&2
fi

if ((${#missing[@]} > 0)); then
  if [[ "$(id -u)" -eq 0 ]]; then
    echo "setup: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}"
  else
    echo "setup: missing Debian packages: ${missing[*]}" >&2
    echo "setup: run as root, or: sudo apt-get install ${missing[*]}" >&2
    echo "setup: tests that need them will be skipped" >&2
  fi
fi

# npm ci writes node_modules/.package-lock.json; older than package-lock.json means stale.
if [[ ! -f node_modules/.package-lock.json || package-lock.json -nt node_modules/.package-lock.json ]]; then
  echo "setup: npm ci"
  npm ci --no-audit --no-fund
fi

npm run build
