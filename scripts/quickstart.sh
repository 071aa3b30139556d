#!/usr/bin/env bash
# Fine-tune a tiny LLaMA with LoRA on the sample support conversations, on this machine:
# install what is missing, build, make the tiny model, train on 2 ranks (two herd-engine
# processes on loopback), and print the eval loss before/after and where the adapter is.
#   scripts/quickstart.sh            (outputs under ./out/)
# The tiny model's base weights are random, so the loss falls only a little; the same command
# with --model pointing at a real LLaMA directory is a real fine-tune.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${HERD_BUILD_DIR:-$root/build}
out=${HERD_QUICKSTART_OUT:-$PWD/out}
start=$(date +%s)

"$root/scripts/setup.sh"
cmake -S "$root" -B "$build" -G Ninja -DHERD_VENV="${HERD_VENV:-$HOME/.cache/herd/venv}" -Wno-dev >/dev/null
cmake --build "$build" -j "$(nproc)" --target herd-train herd-engine herd-make-tiny-model

mkdir -p "$out"
[[ -f "$out/tiny-llama/model.safetensors" ]] || "$build/bin/herd-make-tiny-model" --out "$out/tiny-llama"
rm -rf "$out/quickstart"
"$build/bin/herd-train" --model "$out/tiny-llama" --data "$root/datasets/samples/support_chat.jsonl" \
  --out "$out/quickstart" --nproc 2 --max-seq-len 256 --epochs 3 --learning-rate 5e-3
echo "quickstart: done in $(( $(date +%s) - start )) s. Load the adapter with PEFT:"
echo "  PeftModel.from_pretrained(LlamaForCausalLM.from_pretrained('$out/tiny-llama'), '$out/quickstart/adapter')"
