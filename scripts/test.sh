#!/usr/bin/env bash
# The test command: setup, configure, build, run every test. What CI runs (.ci/run).
#   scripts/test.sh [ctest arguments...]     e.g. scripts/test.sh -L unit
# Environment: HERD_BUILD_DIR (default build; the CUDA engine goes to <it>-cuda), HERD_JOBS (default:
# number of cores), HERD_CUDA_BUILD=0 (skip the CUDA engine's compile-and-link check).
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
# The CUDA engine (hand-written kernels, flash attention, NCCL) compiles and links on these boxes
# though nothing here can run it: built on every run, so that a session lent a GPU never spends its
# device minutes on a compile error. HERD_CUDA_BUILD=0 skips it.
nvcc=${CUDACXX:-/usr/local/cuda/bin/nvcc}
if [[ ${HERD_CUDA_BUILD:-1} != 0 && -x $nvcc ]]; then
  start=$(date +%s)
  cmake -S "$root" -B "$build-cuda" -G Ninja -DHERD_VENV="$venv" -DHERD_WITH_CUDA=ON -DHERD_BUILD_ENGINE=ON \
    -DHERD_BUILD_SERVICES=OFF -DHERD_BUILD_TESTS=OFF -DCMAKE_CUDA_COMPILER="$nvcc" -Wno-dev >/dev/null
  cmake --build "$build-cuda" -j "$jobs" --target herd-engine herd-bench herd-kernel-check herd-attention-check
  echo "test.sh: CUDA engine build took $(( $(date +%s) - start )) s"
fi
if command -v ccache >/dev/null; then ccache --show-stats 2>/dev/null | grep -iE 'hit|miss' | head -4 || true; fi

ctest --test-dir "$build" -j "$jobs" --output-on-failure --timeout 900 "$@"
