#!/usr/bin/env bash
# The GPU issue's checks and benchmarks in one device call (../shared/DEVICE.md, issue 6):
#   here:   scripts/device/make_bundle.sh            (device-bundle/: libraries, baseline, tiny model)
#   device: command "scripts/device/gpu_check.sh", carry ["device-bundle"], timeout_s 600
# Steps, in order, each under `timeout` sized from one global budget (HERD_GPU_CHECK_DEADLINE,
# default 560 s from the start, inside the device's 10-minute command limit):
#  1. build herd-engine, herd-bench, herd-train (+ herd-make-tiny-model, herd-kernel-check,
#     herd-attention-check where those targets exist), Release, CUDA; or take prebuilt binaries
#     from HERD_GPU_PREBUILT=DIR (scripts/device/make_prebuilt.sh) when they start there;
#  2. smoke: bf16/fp32 matmul, a one-rank NCCL all-reduce and the collectives watchdog on a
#     collective that never completes (herd-engine --smoke cuda:0);
#  3. herd-kernel-check and herd-attention-check (fused kernels against their reference);
#  4. correctness: 3 optimizer steps on the tiny model, bf16 on the GPU vs fp32 on the CPU (loss
#     within 1e-2 relative, cosine similarity of the LoRA update > 0.99);
#  5. herd-bench on the three target shapes (seq 2048), each in its own process;
#  6. device-bundle/bench/hf_peft_baseline.py, in priority order: --compile 8B b2, --compile 1B b8,
#     eager 8B b4 --grad-ckpt; a run that no longer fits the budget is skipped and says so.
#  7. (while the budget lasts) the 1B shape with one part off at a time: --no-fold, --attention varlen,
#     --recompute-mlp, --reference layers, --no-fused-kernels, --attention sdpa, --full-logits
#     (informational);
# Always ends with the table (targets as ratios to the baseline of the same call) and writes
# $OUT/{results.jsonl,summary.md,gpu_check.log,build.log,kernel_check.jsonl,profile.jsonl,
# trace_8b-b2.json.gz}. Exit status 0 when all
# checks and all targets passed.
# Environment: HERD_GPU_CHECK_SKIP_BASELINE=1 skips step 6; HERD_GPU_CHECK_DEVICE=cpu runs the
# whole script on a CPU box with tiny shapes (to test the script: no targets can pass there);
# HERD_GPU_CHECK_BUILD=DIR the build folder (default build-gpu, build-gpu-cpu on cpu);
# HERD_GPU_CHECK_BASELINE=FILE another baseline script; HERD_GPU_CHECK_BASELINES which baseline
# runs in which order (step 6); HERD_GPU_CHECK_JOBS build parallelism; HERD_GPU_PREBUILT above.
set -uo pipefail
t_start=$(date +%s)
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
here=$root/scripts/device
device=${HERD_GPU_CHECK_DEVICE:-cuda:0}
cpu=0; [[ $device == cpu ]] && cpu=1
deadline=$(( t_start + ${HERD_GPU_CHECK_DEADLINE:-560} ))
reserve=12  # seconds kept for the table
out=${OUT:-$root/build-gpu/out}
build=${HERD_GPU_CHECK_BUILD:-$root/build-gpu$( ((cpu)) && echo -cpu)}
bundle=$root/device-bundle
baseline=${HERD_GPU_CHECK_BASELINE:-$bundle/bench/hf_peft_baseline.py}
work=$build/gpu-check-work   # scratch that does not come back ($OUT holds a few files only)
rm -rf "$work"  # a machine kept warm between calls still holds the last run's scratch
mkdir -p "$out" "$work"
results=$out/results.jsonl
log=$out/gpu_check.log
: >"$results"; : >"$log"; : >"$out/profile.jsonl"
python=$(command -v python3)
[[ $cpu == 1 && -x "$HOME/.cache/herd/venv/bin/python3" ]] && python=$HOME/.cache/herd/venv/bin/python3
# Python runs with the machine's own libraries: the bundle's Debian ones are for Herd's binaries.
orig_ld=${LD_LIBRARY_PATH:-}
py() { env LD_LIBRARY_PATH="$orig_ld" "$python" "$@"; }
report() { py "$here/gpu_check_report.py" "$@"; }
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
if [[ -d "$bundle/usr/lib/x86_64-linux-gnu" ]]; then
  export LD_LIBRARY_PATH="$bundle/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi

# The engine's sources, hashed: prebuilt binaries are used only for the tree they were built from.
src_stamp() {
  (cd "$root" && find CMakeLists.txt cmake common datasets trainer tests/fixtures -type f \( -name '*.cc' -o \
    -name '*.h' -o -name '*.cu' -o -name '*.cuh' -o -name CMakeLists.txt -o -name '*.cmake' \) | LC_ALL=C sort |
    xargs sha256sum | sha256sum | cut -c1-16)
}
left() { local t=$(( deadline - $(date +%s) - reserve )); echo $(( t > 1 ? t : 1 )); }
note() { echo "{\"check\":\"step\",\"name\":\"$1\"$2}" >>"$results"; }
# step NAME CAP MIN CMD...: runs CMD under a timeout of min(CAP, budget left); skips it when less
# than MIN seconds are left (rc 125). stdout goes to $work/NAME.out, stderr to $work/NAME.err and
# the log. Returns CMD's rc.
step() {
  local name=$1 cap=$2 min=$3; shift 3
  local t; t=$(left)
  if (( t < min )); then
    note "$name" ",\"skipped\":\"no time ($t s left, needs $min)\""
    echo "== $name: skipped, $t s left" >>"$log"
    return 125
  fi
  (( t > cap )) && t=$cap
  echo "== $name (timeout $t s): $*" >>"$log"
  local s; s=$(date +%s)
  timeout -k 5 "$t" "$@" >"$work/$name.out" 2>"$work/$name.err"
  local rc=$?
  cat "$work/$name.err" >>"$log"
  note "$name" ",\"rc\":$rc,\"seconds\":$(( $(date +%s) - s )),\"timeout\":$t"
  echo "== $name: exit $rc after $(( $(date +%s) - s )) s" >>"$log"
  return $rc
}
# why NAME RC: a short reason for a step that did not produce its JSON line.
why() {
  case $2 in
    125) echo "skipped (no time left)" ;;
    124|137) echo "timed out" ;;
    *) echo "exit $2: $(grep -v '^\s*$' "$work/$1.err" 2>/dev/null | tail -1 | tr -d '"\\' | cut -c1-100)" ;;
  esac
}
finish() {
  if [[ -f "$out/trace_8b-b2.json.gz" ]]; then
    { echo; echo "8B b2, where the GPU sat idle (scripts/device/trace_gaps.py):"
      py "$here/trace_gaps.py" "$out/trace_8b-b2.json.gz" --top 8 2>&1; } | tee -a "$log"
  fi
  report report "$results" "$out/summary.md" "$out/profile.jsonl" | tee -a "$log"
  exit "${PIPESTATUS[0]}"
}

gpu=cpu
((cpu)) || gpu=$(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null | head -1)
echo "{\"check\":\"machine\",\"device\":\"$device\",\"gpu\":\"$gpu\",\"cores\":$(nproc)}" >>"$results"

# 1. Binaries: prebuilt where given and able to start here, else built.
bin=
if [[ -n "${HERD_GPU_PREBUILT:-}" ]]; then
  pre=$(cd "$HERD_GPU_PREBUILT" 2>/dev/null && pwd || echo "$HERD_GPU_PREBUILT")
  torch_lib=$(py -c 'import torch,os;print(os.path.join(os.path.dirname(torch.__file__),"lib"))' 2>/dev/null)
  nccl_lib=$(py -c 'import nvidia.nccl,os;print(os.path.join(nvidia.nccl.__path__[0],"lib"))' 2>/dev/null)
  # libcudart as torch loads it (one copy in the process), before the carried one in $pre/lib.
  cudart_dir=$(ldd "$torch_lib/libtorch_cuda.so" 2>/dev/null | awk '/libcudart/ {print $3}' | xargs -r dirname)
  saved_ld=${LD_LIBRARY_PATH:-}
  export LD_LIBRARY_PATH="${cudart_dir:+$cudart_dir:}$pre/lib:$torch_lib:$nccl_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  if [[ "$(cat "$pre/source-stamp" 2>/dev/null)" != "$(src_stamp)" ]]; then
    echo "== prebuilt binaries in $pre are of other sources (scripts/device/make_prebuilt.sh again); building" >>"$log"
    export LD_LIBRARY_PATH=$saved_ld
  elif timeout 60 "$pre/bin/herd-engine" --probe >"$work/prebuilt-probe.out" 2>>"$log" \
     && grep -q "\"cuda_available\":$( ((cpu)) && echo false || echo true )" "$work/prebuilt-probe.out" \
     && timeout 30 "$pre/bin/herd-bench" --help >/dev/null 2>>"$log" && timeout 30 "$pre/bin/herd-train" --help >/dev/null 2>>"$log"; then
    bin=$pre/bin
    echo "{\"check\":\"build\",\"how\":\"prebuilt $pre\",\"rc\":0,\"seconds\":$(( $(date +%s) - t_start )),\"targets\":\"$(ls "$bin" | tr '\n' ' ')\"}" >>"$results"
  else
    echo "== prebuilt binaries in $pre do not start here; building" >>"$log"
    export LD_LIBRARY_PATH=$saved_ld
  fi
fi
if [[ -z $bin ]]; then
  t0=$(date +%s)
  prefix=$(py -c 'import torch;print(torch.utils.cmake_prefix_path)')
  args=(-DCMAKE_BUILD_TYPE=Release -DHERD_BUILD_SERVICES=OFF -DHERD_BUILD_TESTS=OFF -DHERD_PYTHON="$python")
  ((cpu)) || args+=(-DHERD_WITH_CUDA=ON)
  # (Not on a CPU box: it has these libraries, and the extra flag would defeat its ccache.)
  if [[ -d "$bundle/usr" && $cpu == 0 ]]; then
    prefix="$prefix;$bundle/usr/lib/x86_64-linux-gnu/cmake;$bundle/usr/share/cmake"
    args+=(-DCMAKE_CXX_FLAGS="-isystem $bundle/usr/include")
  fi
  gen=(); command -v ninja >/dev/null && gen=(-G Ninja)
  {
    timeout "$(left)" cmake -S "$root" -B "$build" "${gen[@]}" -DCMAKE_PREFIX_PATH="$prefix" "${args[@]}" 2>&1
  } >"$out/build.log"
  rc=$?
  targets=(herd-engine herd-bench herd-train)
  if (( rc == 0 )); then
    have=$(cmake --build "$build" --target help 2>/dev/null)
    for t in herd-make-tiny-model herd-kernel-check herd-attention-check; do
      grep -qE "(^|[ .:])$t(:| |$)" <<<"$have" && targets+=("$t")
    done
    timeout "$(left)" cmake --build "$build" -j "${HERD_GPU_CHECK_JOBS:-$(nproc)}" --target "${targets[@]}" >>"$out/build.log" 2>&1
    rc=$?
    if (( rc != 0 && ${#targets[@]} > 3 && $(left) > 60 )); then
      # A broken optional tool must not cost the benchmarks: the three that matter on their own.
      echo "== build of ${targets[*]} failed; again with herd-engine herd-bench herd-train" >>"$out/build.log"
      targets=(herd-engine herd-bench herd-train)
      timeout "$(left)" cmake --build "$build" -j "${HERD_GPU_CHECK_JOBS:-$(nproc)}" --target "${targets[@]}" >>"$out/build.log" 2>&1
      rc=$?
    fi
  fi
  echo "{\"check\":\"build\",\"how\":\"built in $build\",\"rc\":$rc,\"seconds\":$(( $(date +%s) - t0 )),\"targets\":\"${targets[*]}\"}" >>"$results"
  if (( rc != 0 )); then
    tail -40 "$out/build.log"
    finish
  fi
  bin=$build/bin
fi

# 2. Smoke: matmuls, one-rank all-reduce, watchdog (a 2 s collective timeout).
step smoke 90 20 "$bin/herd-engine" --smoke "$device" --scratch "$work/smoke" --smoke-watchdog 2
report smoke <"$work/smoke.out" >>"$results"

# 3. Kernel and attention checks, where this tree has them.
if [[ -x "$bin/herd-kernel-check" ]]; then
  kargs=(--device "$device" --out "$out/kernel_check.jsonl"); ((cpu)) && kargs+=(--small)
  step kernel_check "${HERD_GPU_CHECK_KERNEL_S:-90}" 20 "$bin/herd-kernel-check" "${kargs[@]}"
  report tag kernel_check <"$work/kernel_check.out" >>"$results"
else
  note kernel_check ',"skipped":"herd-kernel-check not built (no such target)"'
fi
if [[ -x "$bin/herd-attention-check" ]]; then
  step attention_check "${HERD_GPU_CHECK_ATTENTION_S:-60}" 20 "$bin/herd-attention-check" --device "$device"
  report tag attention_check <"$work/attention_check.out" >>"$results"
else
  note attention_check ',"skipped":"herd-attention-check not built (no such target)"'
fi

# 4. Correctness: the same 3 steps in fp32 on the CPU and in bf16 on the device.
tiny=$work/tiny
rm -rf "$tiny"
if [[ -x "$bin/herd-make-tiny-model" ]]; then
  "$bin/herd-make-tiny-model" --out "$tiny" --corpus "$root/tests/fixtures/corpus/brightwell_corpus.txt" >>"$log" 2>&1
elif [[ -d "$bundle/tiny-model" ]]; then
  cp -r "$bundle/tiny-model" "$tiny"
fi
if [[ -f "$tiny/config.json" ]]; then
  for d in cpu "$device"; do
    tag=${d%%:*}
    rm -rf "$work/train-$tag"
    step "train_$tag" 120 15 "$bin/herd-train" --model "$tiny" --data "$root/datasets/samples/support_qa.jsonl" \
      --out "$work/train-$tag" --device "$d" --max-steps 3 --max-seq-len 256 --learning-rate 1e-3 --eval-every 0
    cat "$work/train_$tag.out" >>"$log"
    [[ $cpu == 1 ]] && break  # the dry run compares the CPU run with itself
  done
  devtag=${device%%:*}
  report correctness "$work/train-cpu" "$work/train-$devtag" "$work/train_cpu.out" "$work/train_$devtag.out" >>"$results"
else
  echo '{"check":"bf16_vs_fp32","ok":false,"error":"no tiny model: herd-make-tiny-model not built and no device-bundle/tiny-model"}' >>"$results"
fi

# 5. Herd's throughput, one process per shape (an out-of-memory run must not stop the others).
# row model batch extra-flags
if ((cpu)); then
  shapes=("1b-b8 tiny 8" "8b-b2 small 2" "8b-b4-ckpt small 4 --grad-ckpt"); seq=128; extra=(--steps 3 --warmup 1)
else
  shapes=("1b-b8 llama3.2-1b 8" "8b-b2 llama3-8b 2" "8b-b4-ckpt llama3-8b 4 --grad-ckpt"); seq=2048; extra=()
fi
for s in "${shapes[@]}"; do
  set -- $s
  row=$1 model=$2 batch=$3; shift 3
  # --profile: one more step under the Kineto profiler, after the timed ones (where the time goes);
  # for 8B b2 also its whole timeline (gzipped into $OUT: where the idle gaps are).
  trace=(); [[ $row == 8b-b2 ]] && trace=(--trace "$work/trace_$row.json")
  step "bench_$row" 150 30 "$bin/herd-bench" --model "$model" --batch "$batch" --seq "$seq" --device "$device" "$@" \
    "${extra[@]}" --profile "$out/profile.jsonl" "${trace[@]}"
  rc=$?
  [[ -f "$work/trace_$row.json" ]] && gzip -c "$work/trace_$row.json" >"$out/trace_$row.json.gz"
  if (( rc == 0 )) || grep -q '"system":"herd"' "$work/bench_$row.out"; then
    (( rc == 0 )) || echo "{\"check\":\"step\",\"name\":\"profile_$row\",\"rc\":$rc,\"seconds\":0}" >>"$results"
    report tag bench row="$row" <"$work/bench_$row.out" >>"$results"
  else
    echo "{\"check\":\"bench\",\"row\":\"$row\",\"rc\":$rc,\"error\":\"$(why "bench_$row" $rc)\"}" >>"$results"
  fi
done

# 6. Baselines, most important first; each only if its usual time still fits.
if [[ -n "${HERD_GPU_CHECK_SKIP_BASELINE:-}" ]]; then
  echo '{"check":"step","name":"baseline","skipped":"HERD_GPU_CHECK_SKIP_BASELINE"}' >>"$results"
elif [[ ! -f "$baseline" ]]; then
  echo "{\"check\":\"step\",\"name\":\"baseline\",\"skipped\":\"$baseline is missing: run scripts/device/make_bundle.sh here and carry device-bundle\"}" >>"$results"
  echo "gpu_check.sh: $baseline is missing (scripts/device/make_bundle.sh copies it into device-bundle/bench/)" >&2
else
  # min-seconds: a fresh machine's usual time, so that a run is started only when it can finish.
  # Measured on fresh H100 machines (2026-11-27): 8B compile 179 s, 1B compile 94-124 s, 8B b4 eager
  # with checkpointing 30-42 s (with the compile cache warm: 43 s and 41 s for the compiles).
  # HERD_GPU_CHECK_BASELINES picks others or another order, e.g. "8b-b2-compile 8b-b4-ckpt-eager
  # 1b-b8-compile".
  declare -A hf=(
    [8b-b2-compile]="8b-b2 llama3-8b 2 compile 200 --compile"
    [1b-b8-compile]="1b-b8 llama3.2-1b 8 compile 130 --compile"
    [8b-b4-ckpt-eager]="8b-b4-ckpt llama3-8b 4 eager 50 --grad-ckpt"
    [8b-b2-eager]="8b-b2 llama3-8b 2 eager 50"
    [1b-b8-eager]="1b-b8 llama3.2-1b 8 eager 50"
  )
  for b in ${HERD_GPU_CHECK_BASELINES:-8b-b2-compile 1b-b8-compile 8b-b4-ckpt-eager}; do
    [[ -n "${hf[$b]:-}" ]] || { echo "gpu_check.sh: unknown baseline $b (have ${!hf[*]})" >&2; continue; }
    set -- ${hf[$b]}
    row=$1 model=$2 batch=$3 kind=$4 min=$5; shift 5  # row model batch kind min-seconds flags
    ((cpu)) && min=5
    step "hf_${row}_$kind" 420 "$min" env LD_LIBRARY_PATH="$orig_ld" "$python" "$baseline" --model "$model" --batch "$batch" --seq 2048 "$@"
    rc=$?
    if (( rc == 0 )); then
      report tag baseline row="$row" kind="$kind" <"$work/hf_${row}_$kind.out" >>"$results"
    else
      echo "{\"check\":\"baseline\",\"row\":\"$row\",\"kind\":\"$kind\",\"rc\":$rc,\"error\":\"$(why "hf_${row}_$kind" $rc)\"}" >>"$results"
    fi
  done
fi

# 7. What each part is worth (docs/gpu_notes.md wants a measured outcome per optimisation): the 1B
# target shape again with one part switched off at a time, while the budget lasts. Informational:
# a variant that fails (out of memory, say) fails nothing.
if ((cpu)); then abl=(tiny 8); abl_min=5; else abl=(llama3.2-1b 8); abl_min=20; fi
for a in "no-fold --no-fold" "attention-varlen --attention varlen" "recompute-mlp --recompute-mlp" "reference --reference" \
         "no-fused-kernels --no-fused-kernels" "attention-sdpa --attention sdpa" "full-logits --full-logits"; do
  set -- $a
  name=$1; shift
  step "ablation_$name" 90 "$abl_min" "$bin/herd-bench" --model "${abl[0]}" --batch "${abl[1]}" --seq "$seq" \
    --device "$device" --steps 4 --warmup 2 "$@"
  rc=$?
  if (( rc == 0 )); then
    report tag ablation variant="$name" <"$work/ablation_$name.out" >>"$results"
  else
    echo "{\"check\":\"ablation\",\"variant\":\"$name\",\"rc\":$rc,\"error\":\"$(why "ablation_$name" $rc)\"}" >>"$results"
  fi
  (( rc == 125 )) && break  # out of time: the rest would be skipped too
done

finish
