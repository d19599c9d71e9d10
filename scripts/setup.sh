#!/usr/bin/env bash
# Installs everything hamirror needs on a fresh Debian machine (run as root): system packages,
# a virtual environment in .venv and the package itself (editable, with the test extras).
set -euo pipefail
cd "$(dirname "$0")/.."

need_pkgs=()
for pkg in fuse3 python3-venv rsync sqlite3 nftables iproute2 attr git procps psmisc; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need_pkgs+=("$pkg")
done
if [ "${#need_pkgs[@]}" -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
.venv/bin/python -m pip install -q -e '.[test]'
