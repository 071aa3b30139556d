#!/usr/bin/env bash
# The GPU issue's checks and benchmarks in one device call (../shared/DEVICE.md):
#   carry ["device-bundle"] (scripts/device/make_bundle.sh), command: scripts/device/gpu_check.sh
# 1. builds herd-engine, herd-bench, herd-train and herd-make-tiny-model with CUDA;
# 2. smoke: bf16/fp32 matmul and a one-rank NCCL all-reduce (herd-engine --smoke cuda:0);
# 3. correctness: 3 optimizer steps on the tiny model, bf16 on the GPU vs fp32 on the CPU (loss
#    within 1e-2 relative, cosine similarity of the LoRA update > 0.99);
# 4. throughput: herd-bench and ../shared/bench/hf_peft_baseline.py on the same shapes.
# Logs and JSON lines go to $OUT; a short table is printed last. HERD_GPU_CHECK_SKIP_BASELINE=1
# skips the Hugging Face runs when the call is short on time.
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
out=${OUT:-$root/build-gpu/out}
mkdir -p "$out"
build=$root/build-gpu
bundle=$root/device-bundle
python=$(command -v python3)
prefix=$("$python" -c 'import torch;print(torch.utils.cmake_prefix_path)')
args=(-DHERD_BUILD_SERVICES=OFF -DHERD_BUILD_TESTS=OFF -DHERD_WITH_CUDA=ON -DHERD_PYTHON="$python")
if [[ -d "$bundle" ]]; then
  prefix="$prefix;$bundle/usr/lib/x86_64-linux-gnu/cmake;$bundle/usr/share/cmake"
  args+=(-DCMAKE_CXX_FLAGS="-isystem $bundle/usr/include")
  export LD_LIBRARY_PATH="$bundle/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
gen=(); command -v ninja >/dev/null && gen=(-G Ninja)
t0=$(date +%s)
cmake -S "$root" -B "$build" "${gen[@]}" -DCMAKE_PREFIX_PATH="$prefix" "${args[@]}" >"$out/configure.log" 2>&1 \
  || { tail -30 "$out/configure.log"; exit 1; }
cmake --build "$build" -j "$(nproc)" --target herd-engine herd-bench herd-train herd-make-tiny-model \
  >"$out/build.log" 2>&1 || { tail -40 "$out/build.log"; exit 1; }
echo "{\"check\":\"build\",\"seconds\":$(( $(date +%s) - t0 ))}" >"$out/results.jsonl"
bin=$build/bin

# Smoke.
"$bin/herd-engine" --smoke cuda:0 --scratch "$out/smoke" >"$out/smoke.jsonl" 2>"$out/smoke.log"
echo "{\"check\":\"smoke\",\"rc\":$?}" >>"$out/results.jsonl"

# Correctness: bf16 GPU vs fp32 CPU, 3 steps from the same initial adapter.
"$bin/herd-make-tiny-model" --out "$out/tiny" >/dev/null
for dev in cpu cuda:0; do
  "$bin/herd-train" --model "$out/tiny" --data "$root/datasets/samples/support_qa.jsonl" --out "$out/train-${dev%%:*}" \
    --device "$dev" --max-steps 3 --max-seq-len 256 --learning-rate 1e-3 --eval-every 0 >"$out/train-${dev%%:*}.log" 2>&1
done
"$python" - "$out" <<'PY' >>"$out/results.jsonl"
import json, re, sys, torch
from safetensors.torch import load_file
out = sys.argv[1]
def last_loss(dev):
    v = re.findall(r"loss ([0-9.]+)  lr", open(f"{out}/train-{dev}.log").read())
    return float(v[-1]) if v else float("nan")
try:
    a = load_file(f"{out}/train-cpu/adapter/adapter_model.safetensors")
    b = load_file(f"{out}/train-cuda/adapter/adapter_model.safetensors")
    # B starts at zero on both sides, so B is the update.
    ua = torch.cat([a[k].flatten() for k in sorted(a) if "lora_B" in k])
    ub = torch.cat([b[k].flatten() for k in sorted(b) if "lora_B" in k])
    cos = torch.nn.functional.cosine_similarity(ua, ub, dim=0).item()
    lc, lg = last_loss("cpu"), last_loss("cuda")
    print(json.dumps({"check": "bf16_vs_fp32", "loss_cpu": lc, "loss_gpu": lg, "loss_rel": abs(lg - lc) / lc,
                      "update_cosine": cos, "ok": abs(lg - lc) / lc < 1e-2 and cos > 0.99}))
except Exception as e:
    print(json.dumps({"check": "bf16_vs_fp32", "ok": False, "error": str(e)}))
PY

# Throughput, Herd and the baseline on the same card.
for shape in "llama3.2-1b 8" "llama3-8b 2"; do
  set -- $shape
  "$bin/herd-bench" --model "$1" --batch "$2" --seq 2048 --device cuda:0 >>"$out/bench.jsonl" 2>>"$out/bench.log"
  if [[ -z "${HERD_GPU_CHECK_SKIP_BASELINE:-}" ]]; then
    timeout 300 "$python" "$root/../shared/bench/hf_peft_baseline.py" --model "$1" --batch "$2" --seq 2048 \
      >>"$out/bench.jsonl" 2>>"$out/baseline.log"
  fi
done

"$python" - "$out" <<'PY'
import json, sys
out = sys.argv[1]
print("\nGPU check")
for line in open(f"{out}/results.jsonl"):
    print(" ", line.strip())
print(f"\n{'system':<28}{'model':<14}{'batch':>6}{'tokens/s':>12}{'TFLOP/s':>10}{'peak GiB':>10}")
try:
    for line in open(f"{out}/bench.jsonl"):
        r = json.loads(line)
        print(f"{r['system']:<28}{r['model']:<14}{r['batch']:>6}{r['tokens_per_s']:>12.0f}{r['model_tflops']:>10.1f}"
              f"{(r['peak_mem_gib'] or 0):>10.1f}")
except FileNotFoundError:
    print("(no benchmark output)")
PY
