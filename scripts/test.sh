#!/usr/bin/env bash
# The test command: setup, configure, build, run every test. What CI runs (.ci/run).
#   scripts/test.sh [ctest arguments...]     e.g. scripts/test.sh -L unit
# Environment: HERD_BUILD_DIR (default build), HERD_JOBS (default: number of cores).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${HERD_BUILD_DIR:-$root/build}
jobs=${HERD_JOBS:-$(nproc)}
venv=${HERD_VENV:-$HOME/.cache/herd/venv}

"$root/scripts/setup.sh"

start=$(date +%s)
cmake -S "$root" -B "$build" -G Ninja -DHERD_VENV="$venv" -DHERD_BUILD_ENGINE=ON -DHERD_BUILD_SERVICES=ON \
  -DHERD_BUILD_TESTS=ON -Wno-dev >/dev/null
cmake --build "$build" -j "$jobs"
echo "test.sh: build took $(( $(date +%s) - start )) s"
if command -v ccache >/dev/null; then ccache --show-stats 2>/dev/null | grep -iE 'hit|miss' | head -4 || true; fi

ctest --test-dir "$build" -j "$jobs" --output-on-failure --timeout 900 "$@"
