#!/usr/bin/env bash
# Fuzz the receiver's native apply core with libFuzzer + AddressSanitizer for SECONDS (default 60).
#
#     scripts/fuzz-native.sh 600 [--no-openat2]
#
# --no-openat2 builds the core's other way to reach a directory (one component at a time, for
# kernels without openat2) and fuzzes that.
# Builds native/fuzz/fuzz_apply.c with clang (-fsanitize=fuzzer,address) into build/fuzz/, and runs
# it in a private mount namespace on its own 64 MiB tmpfs (nodev, nosuid) when run as root, so a
# run can fill nothing but that, and the tmpfs goes with the namespace. The corpus stays in
# build/fuzz/corpus between runs. Exit status: 0 if no crash, no leak, no write outside the
# directory (the target checks it after every input) and no hang (-timeout) was found.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_TO_RUN=${1:-60}
CC=${CLANG:-clang}
OUT=build/fuzz
BIN=fuzz_apply
DEFS=()
if [ "${2:-}" = --no-openat2 ]; then
    BIN=fuzz_apply_no_openat2
    DEFS=(-DHM_USE_OPENAT2=0)
fi
mkdir -p "$OUT/corpus"
"$CC" -g -O1 -std=gnu11 -Wall -Wextra -Werror -fsanitize=fuzzer,address,undefined \
    -fno-sanitize-recover=undefined "${DEFS[@]}" native/hm_apply.c native/hm_resolve.c native/fuzz/fuzz_apply.c -o "$OUT/$BIN"
run=("$PWD/$OUT/$BIN" -max_total_time="$SECONDS_TO_RUN" -timeout=10 -rss_limit_mb=1024
     -print_final_stats=1 -artifact_prefix="$PWD/$OUT/" "$PWD/$OUT/corpus")
if [ "$(id -u)" = 0 ] && command -v unshare >/dev/null; then
    exec unshare --mount --propagation private sh -c '
        dir=$(mktemp -d /tmp/hm-fuzz-native.XXXXXX)
        mount -t tmpfs -o size=64m,nodev,nosuid tmpfs "$dir"
        HM_FUZZ_DIR=$dir "$@"; rc=$?
        umount "$dir"; rmdir "$dir"; exit $rc' fuzz "${run[@]}"
fi
dir=$(mktemp -d /tmp/hm-fuzz-native.XXXXXX)
trap 'rm -rf "$dir"' EXIT
HM_FUZZ_DIR=$dir "${run[@]}"
