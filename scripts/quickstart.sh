#!/usr/bin/env bash
# The whole service on this machine: a herd-coordinator and two herd-trainer agents on
# 127.0.0.1, a 2-trainer LoRA job on a tiny LLaMA submitted with the `herd` CLI, watched live to
# SUCCEEDED, and its PEFT adapter downloaded to ./out/adapter. Installs what is missing and
# builds first. Everything it starts is stopped when it ends, also on Ctrl-C.
#   scripts/quickstart.sh            (outputs under ./out/)
# The tiny model's base weights are random, so the loss falls only a little; a real LLaMA
# directory under the trainers' --models folder is a real fine-tune.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${HERD_BUILD_DIR:-$root/build}
out=${HERD_QUICKSTART_OUT:-$PWD/out}
start=$(date +%s)

"$root/scripts/setup.sh"
cmake -S "$root" -B "$build" -G Ninja -DHERD_VENV="${HERD_VENV:-$HOME/.cache/herd/venv}" \
  -DHERD_BUILD_ENGINE=ON -DHERD_BUILD_SERVICES=ON -Wno-dev >/dev/null
cmake --build "$build" -j "$(nproc)" --target herd-coordinator herd-trainer herd herd-engine herd-prepare \
  herd-make-tiny-model
bin=$build/bin

run=$out/cluster
rm -rf "$run" "$out/adapter"
mkdir -p "$run" "$out/models"
[[ -f "$out/models/tiny-llama/model.safetensors" ]] || "$bin/herd-make-tiny-model" --out "$out/models/tiny-llama"

# Stop everything we started, however we leave.
pids=()
cleanup() {
  trap - EXIT INT TERM
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT
trap 'cleanup; exit 130' INT TERM

# Tokens are made while the coordinator is stopped (it locks its data dir).
user_token=$("$bin/herd-coordinator" token create --tenant quickstart --data-dir "$run/data" 2>/dev/null)
"$bin/herd-coordinator" token create --cluster --data-dir "$run/data" >"$run/cluster.token" 2>/dev/null
chmod 600 "$run/cluster.token"

"$bin/herd-coordinator" --listen 127.0.0.1:0 --data-dir "$run/data" --ready-file "$run/ready" \
  >"$run/coordinator.log" 2>&1 &
pids+=($!)
for _ in $(seq 600); do [[ -s "$run/ready" ]] && break; sleep 0.1; done
[[ -s "$run/ready" ]] || { echo "quickstart: the coordinator did not start; see $run/coordinator.log" >&2; exit 1; }
export HERD_ENDPOINT=127.0.0.1:$(cat "$run/ready") HERD_TOKEN=$user_token
echo "quickstart: coordinator on $HERD_ENDPOINT (log: $run/coordinator.log)"

for t in 1 2; do
  mkdir -p "$run/trainer-$t"
  (cd "$run/trainer-$t" && OMP_NUM_THREADS=1 exec "$bin/herd-trainer" --coordinator "$HERD_ENDPOINT" \
     --models "$out/models" --name "quickstart-cpu$t" --token-file "$run/cluster.token" \
     --metrics-listen 127.0.0.1:0) \
    >"$run/trainer-$t.log" 2>&1 &
  pids+=($!)
done
for _ in $(seq 600); do
  [[ $("$bin/herd" trainers list 2>/dev/null | grep -c idle) -ge 2 ]] && break
  sleep 0.2
done
"$bin/herd" trainers list

cd "$root"
submitted=$(date +%s)
job=$("$bin/herd" jobs submit deploy/examples/quickstart-job.yaml)
echo "quickstart: submitted $job; watching it (Ctrl-C stops everything)"
"$bin/herd" jobs watch "$job"
echo "quickstart: $job SUCCEEDED $(( $(date +%s) - submitted )) s after submission"
adapter=$("$bin/herd" adapters download "$job" -o "$out/adapter")
echo "quickstart: done in $(( $(date +%s) - start )) s. The adapter is in $adapter; load it with PEFT:"
echo "  PeftModel.from_pretrained(LlamaForCausalLM.from_pretrained('$out/models/tiny-llama'), '$adapter')"
