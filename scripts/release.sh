#!/usr/bin/env bash
# Builds a release of hamirror into dist/: the wheel, the pinned dependencies and their checksums
#   dist/hamirror-VERSION-cp311-cp311-linux_x86_64.whl   (units, logrotate file, alert rules, docs
#                                             and the receiver's native core, docs/native.md, inside)
#   dist/hamirror-VERSION-constraints.txt    (the exact dependency versions the tests ran with)
#   dist/SHA256SUMS
# then installs the wheel into a scratch virtualenv and checks `hamirror --version` and
# `hamirror install --root` there. Copy the three files to the servers (docs/admin-guide.md, §1).
#
# Run as root on a Debian 12 BUILD OR TEST machine, not on a server: it runs scripts/setup.sh, the
# test-machine installer (Chromium, MariaDB, nginx..., see its header).
#   bash scripts/release.sh              # the whole test suite first, then the build
#   bash scripts/release.sh --no-tests   # the build only (scripts/test.sh passed on this tree)
set -euo pipefail
cd "$(dirname "$0")/.."
run_tests=yes
case "${1:-}" in
  --no-tests) run_tests="" ;;
  "") ;;
  *) echo "usage: $0 [--no-tests]" >&2; exit 2 ;;
esac

bash scripts/setup.sh                     # .venv, runtime dependencies installed -c constraints.txt
version=$(.venv/bin/python -c 'import hamirror; print(hamirror.__version__)')
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

# The pins are what the tests run with: .venv must hold exactly constraints.txt's versions.
.venv/bin/python scripts/lockdeps.py >"$scratch/locked.txt"
if ! diff <(grep -v '^#' constraints.txt) <(grep -v '^#' "$scratch/locked.txt"); then
  echo "release: .venv's dependencies differ from constraints.txt (above); to pin what .venv has:" >&2
  echo "  .venv/bin/python scripts/lockdeps.py > constraints.txt, run the tests, commit" >&2
  exit 1
fi
if ! grep -q "^## \[$version\]" CHANGELOG.md; then
  echo "release: CHANGELOG.md has no '## [$version]' entry" >&2
  exit 1
fi
[ -z "$run_tests" ] || .venv/bin/python -m pytest -q -p no:cacheprovider

mkdir -p dist
rm -f "dist/hamirror-$version-"* dist/SHA256SUMS
rm -rf build
.venv/bin/python -m pip wheel -q --no-deps --wheel-dir dist .
wheel="hamirror-$version-cp311-cp311-linux_x86_64.whl"   # the native core: built for this Python
test -f "dist/$wheel" || { echo "release: no dist/$wheel (the native core must build: setup.sh)" >&2; exit 1; }
cp constraints.txt "dist/hamirror-$version-constraints.txt"
(cd dist && sha256sum "$wheel" "hamirror-$version-constraints.txt" >SHA256SUMS)

# The wheel as a server gets it: a fresh virtualenv, the pinned dependencies, hamirror install.
python3 -m venv "$scratch/venv"
"$scratch/venv/bin/pip" install -q "dist/$wheel" -c "dist/hamirror-$version-constraints.txt"
test "$("$scratch/venv/bin/hamirror" --version)" = "hamirror $version"
"$scratch/venv/bin/python" -c 'import hamirror.link._native' || { echo "release: the wheel has no native core" >&2; exit 1; }
mkdir "$scratch/root"
"$scratch/venv/bin/hamirror" install --root "$scratch/root" >/dev/null
for f in etc/systemd/system/hamirror.service etc/systemd/system/hamirror-witness.service \
         etc/logrotate.d/hamirror etc/hamirror/prometheus/hamirror-alerts.yml; do
  test -s "$scratch/root/$f" || { echo "release: hamirror install did not write $f" >&2; exit 1; }
done
test -s "$scratch/venv/share/doc/hamirror/admin-guide.md"
echo "release $version:"
(cd dist && cat SHA256SUMS)
