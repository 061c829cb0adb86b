#!/usr/bin/env bash
# Installs what building and testing ringcache needs on Debian/Ubuntu, skipping what is
# already there: hwloc (CPU topology), libudev, pkg-config; with --test also Debian's
# memcached (the conformance reference) and the Python client libraries used in tests
# (pymemcache for the classic protocol, meta-memcache for the meta protocol).
set -euo pipefail
need=()
for pkg in libhwloc-dev libudev-dev pkg-config; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ "${1:-}" = "--test" ]; then
  dpkg -s memcached >/dev/null 2>&1 || need+=(memcached)
  command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
  command -v python3 >/dev/null 2>&1 || need+=(python3 python3-pip)
fi
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}"
fi
if [ "${1:-}" = "--test" ]; then
  python3 -c 'import pymemcache' 2>/dev/null || python3 -m pip install -q pymemcache
  python3 -c 'import meta_memcache' 2>/dev/null || python3 -m pip install -q 'meta-memcache==4.3.0'
fi
command -v cargo >/dev/null 2>&1 || { echo "cargo (Rust toolchain) is required: https://rustup.rs" >&2; exit 1; }
