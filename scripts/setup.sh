#!/usr/bin/env bash
# ==================================================================================================
# FOR TEST AND LAB MACHINES ONLY. NEVER RUN THIS ON A SERVER YOU WANT TO PROTECT.
# It installs Chromium, MariaDB, nginx, PostgreSQL and Prometheus (for the tests, the lab and the
# demo), and runs `systemctl disable --now postgresql mariadb nginx prometheus ...` on the machine it
# runs on: a database or web server already running there is stopped and kept from booting.
# To install hamirror on a server, see docs/admin-guide.md, "Install" (a wheel and hamirror install).
# ==================================================================================================
# What it does, run as root on a fresh Debian 12 machine: system packages, a virtual environment in
# .venv and the package itself (editable, with the test extras; runtime dependencies pinned by
# constraints.txt, so the tests run with the versions a release ships).
set -euo pipefail
cd "$(dirname "$0")/.."

# The servers of the shipped modules (modules/postgresql, mariadb, nginx) come from Debian too, and
# so does the browser of the console's test (chromium, driven by the pip package playwright; its
# own browser download, `playwright install`, is never run).
# promtool (package prometheus) checks and unit-tests the shipped alert rules; logrotate -d the
# shipped logrotate file.
# etcd-server and etcd-client: the etcd quorum backend's tests and `hamirror lab up --etcd`.
# gcc and python3-dev build the receiver's native apply core (native/, docs/native.md); clang and
# libclang-rt-14-dev (libFuzzer) fuzz it (scripts/fuzz-native.sh, tests/test_native_apply.py).
# libfuse3-dev and pkg-config build the mount's FUSE request loop (hamirror.fs._lowlevel, required).
# glusterfs-server and glusterfs-client: the benchmark's GlusterFS replica-2 column, the peer issue
# 16's targets are stated against (scripts/bench/gluster.py, tests/test_bench_mirror.py); its
# glusterd runs only in the benchmark's own namespaces.
SERVER_UNITS=(postgresql mariadb nginx prometheus prometheus-node-exporter etcd glusterd)
need_pkgs=()
for pkg in fuse3 python3-venv rsync sqlite3 nftables iproute2 attr git procps psmisc util-linux curl \
           postgresql-15 mariadb-server mariadb-client nginx chromium prometheus logrotate etcd-server etcd-client \
           gcc python3-dev clang libclang-rt-14-dev libfuse3-dev pkg-config glusterfs-server glusterfs-client \
           e2fsprogs xfsprogs; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need_pkgs+=("$pkg")
done
if [ "${#need_pkgs[@]}" -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  # Installing a server must not start it on this machine (hamirror's modules start them, in the
  # lab's nodes): a policy-rc.d that denies every start, for the time of the install only.
  own_policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    own_policy=yes
  fi
  trap '[ -z "$own_policy" ] || rm -f /usr/sbin/policy-rc.d' EXIT
  apt-get update -qq
  apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi
# Whatever happened before (a package installed by hand, a policy-rc.d missing), the distribution's
# services stay off and do not come back at boot.
if [ -d /run/systemd/system ]; then
  for unit in "${SERVER_UNITS[@]}"; do
    systemctl disable --now "$unit" >/dev/null 2>&1 || true
  done
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
# The in-place build of the extensions (setup.py build_ext --inplace, below and in the benches'
# trees) reads pyproject.toml with the venv's own setuptools: the license is an SPDX string (PEP
# 639), which setuptools reads from 77 on (the table form it replaces stops building in 2027).
.venv/bin/python -m pip install -q 'setuptools>=77'
.venv/bin/python -m pip install -q -e '.[test]' -c constraints.txt
# The FUSE request loop is required (setup.py fails a build without it); the receiver's apply
# core is optional for a pip install (Python then does its work), not here: the tests run both
# paths, so a machine that cannot build it fails now, with the compiler's words.
if ! .venv/bin/python -c 'import hamirror.link._native, hamirror.fs._lowlevel' 2>/dev/null; then
  echo "setup.sh: a native extension (native/*.c) did not build; the compiler says:" >&2
  .venv/bin/python setup.py -q build_ext --inplace >&2 || true
  exit 1
fi
