#!/usr/bin/env bash
# GPU smoke check, run on the lent machine (../shared/DEVICE.md) from the repository root:
#   scripts/device/smoke.sh            (device call: carry ["device-bundle"], results in $OUT)
# Builds herd-engine with CUDA against that machine's torch and NCCL (the Abseil and CLI11
# headers it lacks come from device-bundle/, made by scripts/device/make_bundle.sh), then runs
# `herd-engine --smoke cuda:0`: a bf16 and an fp32 matmul against a float64 reference and a
# one-rank NCCL all-reduce through Herd's communicator, and the collectives watchdog on a collective
# that never completes. Prints a short table last. (scripts/device/gpu_check.sh does all of this
# and the issue's other checks and benchmarks.)
# HERD_SMOKE_DEVICE=cpu runs the same script on a CPU box (to test the script itself).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
device=${HERD_SMOKE_DEVICE:-cuda:0}
out=${OUT:-$root/build-device/out}
build=$root/build-device
bundle=$root/device-bundle
mkdir -p "$out"
python=$(command -v python3)
[[ -x "$HOME/.cache/herd/venv/bin/python3" && "$device" == cpu ]] && python=$HOME/.cache/herd/venv/bin/python3

prefix=$("$python" -c 'import torch;print(torch.utils.cmake_prefix_path)')
args=(-DHERD_BUILD_SERVICES=OFF -DHERD_BUILD_TESTS=OFF -DHERD_PYTHON="$python" -DCMAKE_BUILD_TYPE=Release)
[[ "$device" == cuda* ]] && args+=(-DHERD_WITH_CUDA=ON)
if [[ -d "$bundle" ]]; then
  prefix="$prefix;$bundle/usr/lib/x86_64-linux-gnu/cmake;$bundle/usr/share/cmake"
  args+=(-DCMAKE_CXX_FLAGS="-isystem $bundle/usr/include")
  export LD_LIBRARY_PATH="$bundle/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
gen=()
command -v ninja >/dev/null && gen=(-G Ninja)

t0=$(date +%s)
cmake -S "$root" -B "$build" "${gen[@]}" -DCMAKE_PREFIX_PATH="$prefix" "${args[@]}" >"$out/configure.log" 2>&1 \
  || { tail -30 "$out/configure.log"; exit 1; }
cmake --build "$build" -j "$(nproc)" --target herd-engine >"$out/build.log" 2>&1 || { tail -40 "$out/build.log"; exit 1; }
t1=$(date +%s)
"$build/bin/herd-engine" --smoke "$device" --scratch "$out/scratch" | tee "$out/smoke.jsonl"
rc=${PIPESTATUS[0]}
"$python" - "$out/smoke.jsonl" "$((t1 - t0))" "$rc" <<'PY'
import json, sys
path, build_s, rc = sys.argv[1], sys.argv[2], int(sys.argv[3])
rows = [json.loads(l) for l in open(path) if l.strip()]
print(f"\nherd-engine smoke  (build {build_s} s, exit {rc})")
print(f"{'check':<28}{'result':<12}detail")
for r in rows:
    if "torch" in r:
        print(f"{'probe':<28}{'':<12}torch {r['torch']}, nccl {r['nccl']}, cuda devices {r['cuda_devices']}")
    elif r.get("check") == "watchdog":
        detail = r.get("error") or f"{r['backend']}: fired {r['fired']} after {r['seconds']:.2f} s, aborted {r['aborted']}"
        print(f"{'watchdog':<28}{'ok' if r['ok'] else 'FAIL':<12}{detail}")
    elif "dtype" in r:
        print(f"{'matmul ' + r['dtype'] + ' ' + r['device']:<28}{'ok' if r['ok'] else 'FAIL':<12}max rel err {r['max_rel_error']:.2e} (n={r['n']})")
    elif "backend" in r:
        print(f"{'all-reduce 1 rank (' + r['backend'] + ')':<28}{'ok' if r['ok'] else 'FAIL':<12}{r['elements']} floats")
PY
exit "$rc"
