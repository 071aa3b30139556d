"""Herd's LLaMA forward pass against Hugging Face transformers (ctest: engine_model_parity).

For each tiny configuration, transformers builds a LlamaForCausalLM with random weights and saves
it with save_pretrained; Herd loads that directory (herd-engine-tool logits) and must reproduce
the logits and the loss: max|herd - ref| / max|ref| < 1e-5 (DESIGN.md §5). Configurations cover
GQA, MQA, MHA, a tied head, llama3 RoPE scaling (positions past the original context), an explicit
head_dim, and the older rope_theta/rope_scaling config keys. A packed row (two documents, position
ids restarting, document ids) must give each document the logits it has on its own.
Missing packages or any mismatch fail the test; nothing is skipped.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
try:
    import torch
    from safetensors.torch import load_file, save_file
    from transformers import LlamaConfig, LlamaForCausalLM
except ImportError as e:
    sys.exit(f"model_parity.py: cannot import {e.name!r} with {sys.executable}; run scripts/setup.sh")

TOLERANCE = 1e-5
BASE = dict(vocab_size=97, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
            rms_norm_eps=1e-5, tie_word_embeddings=False)
CASES = {
    "gqa": {},
    "mqa": dict(num_key_value_heads=1),
    "mha": dict(num_key_value_heads=4),
    "tied": dict(tie_word_embeddings=True),
    "llama3_rope": dict(rope_parameters=dict(rope_type="llama3", rope_theta=500000.0, factor=8.0,
                                             low_freq_factor=1.0, high_freq_factor=4.0,
                                             original_max_position_embeddings=32)),
    "explicit_head_dim": dict(head_dim=32),
    "legacy_rope_keys": dict(rope_parameters=dict(rope_type="llama3", rope_theta=20000.0, factor=4.0,
                                                  low_freq_factor=1.0, high_freq_factor=2.0,
                                                  original_max_position_embeddings=16)),
}


def build(name, overrides, root):
    torch.manual_seed(hash(name) % 1000)
    config = LlamaConfig(**{**BASE, **overrides})
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():  # weights far from the default init, so every term matters
        for pname, p in model.named_parameters():
            p.copy_(1.0 + 0.2 * torch.randn_like(p) if "norm" in pname else 0.08 * torch.randn_like(p))
    path = os.path.join(root, name)
    model.save_pretrained(path)
    if name == "legacy_rope_keys":
        # The keys of real LLaMA-3.1 directories: rope_theta at the top, rope_scaling beside it.
        with open(os.path.join(path, "config.json")) as f:
            cfg = json.load(f)
        rope = cfg.pop("rope_parameters")
        cfg["rope_theta"] = rope.pop("rope_theta")
        cfg["rope_scaling"] = rope
        with open(os.path.join(path, "config.json"), "w") as f:
            json.dump(cfg, f)
    return model, path


def run_herd(tool, model_dir, tensors, root):
    src, dst = os.path.join(root, "in.safetensors"), os.path.join(root, "out.safetensors")
    save_file({k: v.contiguous() for k, v in tensors.items()}, src)
    subprocess.run([tool, "logits", "--model", model_dir, "--input", src, "--out", dst], check=True)
    return load_file(dst)


def rel(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--tool", required=True)
    args = parser.parse_args()
    failures = []
    with tempfile.TemporaryDirectory() as root:
        for name, overrides in CASES.items():
            model, path = build(name, overrides, root)
            T = 80 if "rope" in name else 24  # past original_max_position_embeddings
            ids = torch.randint(0, BASE["vocab_size"], (2, T))
            with torch.no_grad():
                ref = model(input_ids=ids, labels=ids)
            targets = torch.cat([ids[:, 1:], torch.full((2, 1), -100)], dim=1)
            out = run_herd(args.tool, path, {"input_ids": ids, "targets": targets}, root)
            logit_err = rel(out["logits"], ref.logits)
            herd_loss = (out["loss_sum"] / out["tokens"]).item()
            loss_err = abs(herd_loss - ref.loss.item()) / abs(ref.loss.item())
            ok = logit_err < TOLERANCE and loss_err < TOLERANCE and out["tokens"].item() == 2 * (T - 1)
            print(f"{name:<20} logits rel err {logit_err:.2e}  loss herd {herd_loss:.6f} ref {ref.loss.item():.6f}"
                  f"  {'ok' if ok else 'FAIL'}")
            if not ok:
                failures.append(name)

        # Packing: one row holding two documents equals each document run alone.
        model, path = build("gqa", {}, root + "/packed")
        a, b = torch.randint(0, BASE["vocab_size"], (1, 9)), torch.randint(0, BASE["vocab_size"], (1, 14))
        packed = torch.cat([a, b], dim=1)
        positions = torch.cat([torch.arange(9), torch.arange(14)]).unsqueeze(0)
        docs = torch.cat([torch.zeros(9, dtype=torch.long), torch.ones(14, dtype=torch.long)]).unsqueeze(0)
        out = run_herd(args.tool, path, {"input_ids": packed, "position_ids": positions, "doc_ids": docs}, root)
        with torch.no_grad():
            ref = torch.cat([model(input_ids=a).logits, model(input_ids=b).logits], dim=1)
        err = rel(out["logits"], ref)
        print(f"{'packed_two_docs':<20} logits rel err {err:.2e}  {'ok' if err < TOLERANCE else 'FAIL'}")
        if err >= TOLERANCE:
            failures.append("packed_two_docs")
    if failures:
        sys.exit(f"model_parity.py: mismatch in {', '.join(failures)}")
    print("model_parity.py: all configurations match transformers")


if __name__ == "__main__":
    main()
