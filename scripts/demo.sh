#!/usr/bin/env bash
# Installs what is needed, then runs the main job: the narrated two-node lab demo.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/hamirror lab demo "$@"
