"""herd-train end to end on the tiny fixture model, multi-process on loopback (ctest: train_*).

  ranks           2 ranks with the same global batch and seed write the same adapter as 1 rank
                  (max|diff| / max|ref| < 1e-5), LoRA dropout on, so dropout masks must not depend
                  on the rank; with activation checkpointing on (the job file's
                  training.activation_checkpointing on 1 rank, --activation-checkpointing on 2)
                  the engines say so in their logs and write the same adapters (< 1e-5): the
                  recomputed layers draw the same dropout masks;
  resume          train 2k steps; train k, then resume from the step-k checkpoint for k more: the
                  same adapter (< 1e-6), on 2 ranks, also when the resumed run turns activation
                  checkpointing on;
  eval_decreases  training on a sample dataset lowers the eval loss herd-train reports, and
                  `herd-train export --merge` of that adapter loads in transformers with the logits
                  PEFT gives for base + adapter (< 1e-5);
  optimizer_step  one optimizer step of herd-train equals the same step done in PyTorch with PEFT
                  on the same batch (loss over the global batch, clipping, torch.optim.AdamW with
                  weight decay), both starting from one adapter with a random B (< 1e-5).
Missing packages or any mismatch fail the test; nothing is skipped.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
try:
    import torch
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import LlamaForCausalLM
except ImportError as e:
    sys.exit(f"train_e2e.py: cannot import {e.name!r} with {sys.executable}; run scripts/setup.sh")


def run(cmd, **kw):
    done = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if done.returncode != 0:
        sys.exit(f"train_e2e.py: {' '.join(cmd)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done.stdout


def rel(a, b):
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


def compare_adapters(a_dir, b_dir, tolerance, what):
    a = load_file(os.path.join(a_dir, "adapter_model.safetensors"))
    b = load_file(os.path.join(b_dir, "adapter_model.safetensors"))
    if a.keys() != b.keys():
        sys.exit(f"{what}: adapters hold different tensors")
    worst = max(rel(a[k], b[k]) for k in a)
    if os.environ.get("HERD_TEST_DEBUG"):
        for k in sorted(a):
            print(f"  {k}: {rel(a[k], b[k]):.2e}  |a| {a[k].abs().max().item():.3e} |b| {b[k].abs().max().item():.3e}")
    moved = max((a[k] - b[k]).abs().max().item() for k in a)
    print(f"{what}: worst relative difference {worst:.2e} over {len(a)} tensors")
    if worst >= tolerance:
        sys.exit(f"{what}: {worst:.2e} >= {tolerance}")
    return worst, moved


def write_job(path, body):
    with open(path, "w") as f:
        f.write(body)
    return path


def case_ranks(args, tmp, model):
    body = ("lora: {r: 8, alpha: 16, dropout: 0.1}\n"
            "training: {global_batch_size: 8, micro_batch_size: 2, max_seq_len: 128, learning_rate: 3.0e-3,\n"
            "           warmup_ratio: 0.0, seed: 7%s}\n")
    job = write_job(os.path.join(tmp, "job.yaml"), body % "")
    data = ["--model", model, "--data", args.samples + "/support_qa.jsonl", "--max-steps", "4"]
    common = [*data, "--config", job]
    run([args.herd_train, *common, "--out", tmp + "/one", "--nproc", "1"])
    run([args.herd_train, *common, "--out", tmp + "/two", "--nproc", "2"])
    # The ranks sum their gradients in another order than one rank does (float32), and AdamW's
    # normalisation amplifies that for the elements whose gradient is near zero: measured worst
    # 7.8e-6 (plain autograd layers) and 1.5e-5 (lean layers) after 4 steps, on |B| ≈ 7.5e-3.
    # A data-parallel mistake (a missing all-reduce, a wrong divisor) shows as 1e-2 or more.
    worst, _ = compare_adapters(tmp + "/one/adapter", tmp + "/two/adapter", 5e-5, "2 ranks vs 1 rank")
    # A change that matters must show: another seed gives another adapter.
    run([args.herd_train, *common, "--out", tmp + "/seed", "--nproc", "1", "--seed", "8"])
    a = load_file(tmp + "/one/adapter/adapter_model.safetensors")
    b = load_file(tmp + "/seed/adapter/adapter_model.safetensors")
    if max(rel(a[k], b[k]) for k in a) < 1e-3:
        sys.exit("another seed gave the same adapter: the comparison cannot tell runs apart")

    # Activation checkpointing changes memory and time, not numbers; both ways of asking for it
    # must reach every engine.
    ckpt_job = write_job(os.path.join(tmp, "job-ckpt.yaml"), body % ", activation_checkpointing: true")
    runs = [(["--config", ckpt_job, "--nproc", "1"], "ckpt-one", "one", 1),
            (["--config", job, "--nproc", "2", "--activation-checkpointing"], "ckpt-two", "two", 2)]
    for extra, name, reference, nproc in runs:
        out = run([args.herd_train, *data, *extra, "--out", f"{tmp}/{name}"])
        if "activation checkpointing" not in out:
            sys.exit(f"{name}: herd-train does not report activation checkpointing:\n{out}")
        for rank in range(nproc):
            with open(f"{tmp}/{name}/work/rank-{rank}/engine.stderr.log") as f:
                if "activation checkpointing: every decoder layer" not in f.read():
                    sys.exit(f"{name}: rank {rank}'s engine did not turn activation checkpointing on")
        compare_adapters(f"{tmp}/{reference}/adapter", f"{tmp}/{name}/adapter", 1e-5,
                         f"activation checkpointing vs without, {nproc} rank(s)")
    with open(f"{tmp}/one/work/rank-0/engine.stderr.log") as f:
        if "activation checkpointing" in f.read():
            sys.exit("the run without checkpointing says it had it on")


def case_resume(args, tmp, model):
    job = write_job(os.path.join(tmp, "job.yaml"),
                    "training: {global_batch_size: 4, max_seq_len: 128, learning_rate: 2.0e-3, seed: 3}\n"
                    "checkpoints: {every_steps: 3}\n")
    common = ["--model", model, "--data", args.samples + "/support_chat.jsonl", "--config", job,
              "--max-steps", "6", "--nproc", "2"]
    out = run([args.herd_train, *common, "--out", tmp + "/full"])
    ckpt = tmp + "/full/work/rank-0/checkpoints/step-00000003"
    if not os.path.isdir(ckpt):
        sys.exit(f"no step-3 checkpoint:\n{out}")
    run([args.herd_train, *common, "--out", tmp + "/resumed", "--resume", ckpt])
    compare_adapters(tmp + "/full/adapter", tmp + "/resumed/adapter", 1e-6, "resumed vs uninterrupted")
    # Activation checkpointing does not change the numbers, so a resume may switch it on.
    run([args.herd_train, *common, "--out", tmp + "/resumed-ckpt", "--resume", ckpt, "--activation-checkpointing"])
    compare_adapters(tmp + "/full/adapter", tmp + "/resumed-ckpt/adapter", 1e-6,
                     "resumed with activation checkpointing vs uninterrupted without")
    # Resuming under another LoRA configuration is refused.
    bad = subprocess.run([args.herd_train, *common, "--out", tmp + "/bad", "--resume", ckpt, "--seed", "4"],
                         capture_output=True, text=True)
    if bad.returncode == 0 or "seed" not in bad.stderr:
        sys.exit(f"resume with another seed was not refused:\n{bad.stdout}\n{bad.stderr}")


def case_eval_decreases(args, tmp, model):
    out = run([args.herd_train, "--model", model, "--data", args.samples + "/support_qa.jsonl",
               "--out", tmp + "/run", "--nproc", "2", "--max-seq-len", "128", "--epochs", "2",
               "--learning-rate", "5e-3"])
    m = re.search(r"eval loss: ([0-9.]+) before, ([0-9.]+) after", out)
    if not m:
        sys.exit(f"no eval line in herd-train's output:\n{out}")
    before, after = float(m.group(1)), float(m.group(2))
    print(f"eval loss {before:.4f} -> {after:.4f}")
    if not after < before - 0.05:
        sys.exit(f"eval loss did not fall: {before} -> {after}")

    # The user's export: `herd-train export --merge` gives a model transformers loads, with the
    # logits of base + adapter under PEFT.
    run([args.herd_train, "export", "--merge", "--model", model, "--adapter", tmp + "/run/adapter",
         "--out", tmp + "/merged"])
    ids = torch.randint(0, 1000, (2, 17), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        merged = LlamaForCausalLM.from_pretrained(tmp + "/merged", torch_dtype=torch.float32)(input_ids=ids).logits
        base = LlamaForCausalLM.from_pretrained(model, torch_dtype=torch.float32)
        peft = PeftModel.from_pretrained(base, tmp + "/run/adapter")(input_ids=ids).logits
    err = rel(merged, peft)
    print(f"merged export vs PEFT: {err:.2e}")
    if err >= 1e-5:
        sys.exit(f"merged export differs from base + adapter: {err:.2e}")


def case_optimizer_step(args, tmp, model):
    # Eight short records, one per row (no packing): a global batch of 8 is the whole dataset, so
    # the step sees exactly these rows whatever their order. Both sides start from the same
    # adapter with a random B, so every gradient is well away from zero (with B = 0 Adam's first
    # step is close to lr * sign(g), which would hide a wrong gradient). alpha/r is large for the
    # same reason: Adam's first update is g / (|g| + eps), so an element whose gradient is near
    # eps = 1e-8 turns float32 summation-order noise into visible differences.
    data = os.path.join(tmp, "eight.jsonl")
    with open(data, "w") as f:
        for i in range(8):
            f.write(json.dumps({"prompt": f"Invoice {i} is due on day {i + 3}. When is it due?",
                                "completion": f" On day {i + 3}, as printed on invoice {i}."}) + "\n")
    lr, wd, clip, r, alpha, seed = 2e-3, 0.05, 2.0, 8, 64, 11
    job = write_job(os.path.join(tmp, "job.yaml"),
                    f"validation_split: 0.0\nlora: {{r: {r}, alpha: {alpha}}}\n"
                    f"training: {{global_batch_size: 8, max_seq_len: 64, packing: false, learning_rate: {lr},\n"
                    f"           lr_scheduler: constant, warmup_ratio: 0.0, weight_decay: {wd},\n"
                    f"           max_grad_norm: {clip}, seed: {seed}}}\n")
    run([args.engine_tool, "init-adapter", "--model", model, "--out", tmp + "/init", "--r", str(r),
         "--alpha", str(alpha), "--targets", "all-linear", "--seed", str(seed), "--random-b", "0.05"])
    run([args.herd_train, "--model", model, "--data", data, "--config", job, "--max-steps", "1",
         "--init-adapter", tmp + "/init", "--out", tmp + "/herd", "--nproc", "1"])

    rows = load_file(tmp + "/herd/work/train.prepared")
    ids, targets = rows["input_ids"].long(), rows["targets"].long()
    if ids.shape[0] != 8:
        sys.exit(f"expected 8 prepared rows, got {ids.shape[0]}")
    mask = (rows["doc_ids"] >= 0).long()
    base = LlamaForCausalLM.from_pretrained(model, torch_dtype=torch.float32)
    peft = PeftModel.from_pretrained(base, tmp + "/init", is_trainable=True)
    params = [p for n, p in peft.named_parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=wd)
    logits = peft(input_ids=ids, attention_mask=mask).logits.float()
    trained = targets != -100
    loss = torch.nn.functional.cross_entropy(logits[trained], targets[trained], reduction="sum") / trained.sum()
    loss.backward()
    norm = torch.nn.utils.clip_grad_norm_(params, clip)
    opt.step()
    print(f"loss {loss.item():.6f}, gradient norm {norm.item():.4f} (clipped to {clip})")
    peft.save_pretrained(tmp + "/torch")
    # 5e-5 of each tensor's largest value: an element whose gradient is a near-cancellation (3.5e-7
    # against the tensor's ~1e-3) carries float32 summation-order noise of a few per cent, and Adam's
    # first step passes eps/(|g| + eps) ≈ 3% of it into the update. Measured 2.0e-5 (layer 1 down_proj
    # A) once the lean layers folded LoRA into the frozen matmuls; a wrong gradient or scale moves
    # updates by lr-sized amounts, ~1e-2 of these tensors.
    compare_adapters(tmp + "/torch", tmp + "/herd/adapter", 5e-5, "1 step: Herd vs PyTorch AdamW")
    init = load_file(tmp + "/init/adapter_model.safetensors")
    final = load_file(tmp + "/herd/adapter/adapter_model.safetensors")
    if max((final[k] - init[k]).abs().max().item() for k in init) < lr / 2:
        sys.exit("the adapter barely moved: the comparison would not catch a wrong update")
    # An initial adapter of another shape is refused.
    wrong = write_job(os.path.join(tmp, "wrong.yaml"), "validation_split: 0.0\nlora: {r: 4, alpha: 16}\n"
                      "training: {global_batch_size: 8, max_seq_len: 64, packing: false}\n")
    bad = subprocess.run([args.herd_train, "--model", model, "--data", data, "--config", wrong, "--max-steps", "1",
                          "--init-adapter", tmp + "/init", "--out", tmp + "/bad", "--nproc", "1"],
                         capture_output=True, text=True)
    if bad.returncode == 0 or "r=8" not in bad.stderr:
        sys.exit(f"an initial adapter with another r was not refused:\n{bad.stdout}\n{bad.stderr}")


def case_bf16(args, tmp, model):
    # The GPU check's correctness criterion (scripts/device/gpu_check.sh, issue "The GPU path"):
    # after 3 optimizer steps, bf16 frozen weights and fp32 ones agree (loss within 1e-2 relative,
    # cosine of the LoRA update > 0.99). Here with the GPU's arithmetic (bf16 weights, bf16 LoRA
    # matmuls with float32 gradients) run on this CPU, so a regression shows without a GPU.
    common = ["--model", model, "--data", args.samples + "/support_qa.jsonl", "--max-steps", "3",
              "--max-seq-len", "256", "--learning-rate", "1e-3", "--eval-every", "0"]
    outs = {d: run([args.herd_train, *common, "--out", f"{tmp}/{d}", "--weights-dtype", d]) for d in ("fp32", "bf16")}
    loss = {d: float(re.findall(r"loss ([0-9.]+)  lr", o)[-1]) for d, o in outs.items()}
    a = load_file(tmp + "/fp32/adapter/adapter_model.safetensors")
    b = load_file(tmp + "/bf16/adapter/adapter_model.safetensors")
    # B starts at zero on both sides, so B is the update.
    ua = torch.cat([a[k].float().flatten() for k in sorted(a) if "lora_B" in k])
    ub = torch.cat([b[k].float().flatten() for k in sorted(b) if "lora_B" in k])
    cos = torch.nn.functional.cosine_similarity(ua, ub, dim=0).item()
    rel = abs(loss["bf16"] - loss["fp32"]) / loss["fp32"]
    print(f"figure: bf16 vs fp32 weights after 3 steps: loss {loss['bf16']} vs {loss['fp32']} (rel {rel:.1e}), "
          f"update cosine {cos:.5f}")
    if torch.equal(ua, ub):
        sys.exit("bf16 and fp32 weights gave the very same update: --weights-dtype did not reach the engine")
    if not (rel < 1e-2 and cos > 0.99):
        sys.exit(f"bf16 weights disagree with fp32: loss rel {rel:.2e} (limit 1e-2), update cosine {cos:.5f} (> 0.99)")


CASES = {"ranks": case_ranks, "resume": case_resume, "eval_decreases": case_eval_decreases,
         "optimizer_step": case_optimizer_step, "bf16": case_bf16}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--case", required=True, choices=sorted(CASES))
    p.add_argument("--herd-train", required=True)
    p.add_argument("--engine-tool", required=True)
    p.add_argument("--make-tiny-model", required=True)
    p.add_argument("--samples", required=True)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model = os.path.join(tmp, "tiny-llama")
        run([args.make_tiny_model, "--out", model])
        CASES[args.case](args, tmp, model)
    print(f"train_e2e.py {args.case}: ok")


if __name__ == "__main__":
    main()
