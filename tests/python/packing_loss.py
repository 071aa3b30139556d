"""Packing changes nothing the model sees (ctest: datasets_packing_loss, DESIGN.md §4).

On the tiny model (herd-make-tiny-model) and the first records of each sample dataset:
  - the loss of the packed rows herd-prepare writes (several documents a row, positions restarting,
    attention kept inside each document) equals the loss of the same documents unpacked
    (--no-packing, one a row), both computed by Herd's engine (herd-engine-tool logits), and both
    equal transformers' loss of each document run alone: Σ token losses / Σ trained tokens, to 1e-6
    relative, in float64;
  - both files hold the same documents (ids and targets), and the packed one does pack;
  - changing one document of a packed row leaves the logits of every other document of the row
    unchanged (and does change its own).
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
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
try:
    import numpy as np
    import torch
    from safetensors.numpy import load_file, save_file
    from transformers import LlamaForCausalLM
except ImportError as e:
    sys.exit(f"packing_loss.py: cannot import {e.name!r} with {sys.executable}; run scripts/setup.sh")

TOLERANCE = 1e-6
RECORDS = 40  # of each sample, so that the unpacked rows stay small
CASES = [("support_qa.jsonl", 256), ("support_chat.jsonl", 512)]


def run(cmd):
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"packing_loss.py: {' '.join(cmd)} failed ({p.returncode}):\n{p.stderr}")
    return p.stdout


def prepare(args, data, model, out, seq_len, packing):
    cmd = [args.prepare, "--data", data, "--model", model, "--out", out, "--max-seq-len", str(seq_len)]
    if not packing:
        cmd.append("--no-packing")
    return json.loads(run(cmd))


def documents(rows):
    """(input ids, targets) of every document, row by row."""
    docs = []
    for r in range(rows["input_ids"].shape[0]):
        d = rows["doc_ids"][r]
        for k in range(d.max() + 1):
            sel = d == k
            docs.append((tuple(rows["input_ids"][r][sel]), tuple(rows["targets"][r][sel])))
    return docs


def engine(args, model, rows, root, loss_only):
    src, dst = os.path.join(root, "engine_in.safetensors"), os.path.join(root, "engine_out.safetensors")
    save_file({k: np.ascontiguousarray(v) for k, v in rows.items()}, src)
    cmd = [args.engine_tool, "logits", "--model", model, "--dtype", "float64", "--input", src, "--out", dst]
    if loss_only:
        cmd.append("--loss-only")
    run(cmd)
    return load_file(dst)


def reference_loss(hf, docs):
    """transformers, each document alone: Σ cross-entropy over trained targets, and their count."""
    total, count = 0.0, 0
    with torch.no_grad():
        for ids, targets in docs:
            logits = hf(input_ids=torch.tensor([ids], dtype=torch.long)).logits[0]
            t = torch.tensor(targets, dtype=torch.long)
            total += torch.nn.functional.cross_entropy(logits, t, ignore_index=-100, reduction="sum").item()
            count += int((t != -100).sum())
    return total, count


def rel(a, b):
    return abs(a - b) / abs(b)


def check_loss(args, model, hf, name, seq_len, root, failures):
    data = os.path.join(root, name)
    with open(os.path.join(args.samples, name), encoding="utf-8") as f:
        lines = [line for line in f if line.strip()][:RECORDS]
    with open(data, "w", encoding="utf-8") as f:
        f.writelines(lines)
    packed_path, unpacked_path = os.path.join(root, "packed.safetensors"), os.path.join(root, "unpacked.safetensors")
    stats = prepare(args, data, model, packed_path, seq_len, True)["train"]
    prepare(args, data, model, unpacked_path, seq_len, False)
    packed, unpacked = load_file(packed_path), load_file(unpacked_path)
    docs_packed, docs_unpacked = documents(packed), documents(unpacked)
    if sorted(docs_packed) != sorted(docs_unpacked) or len(docs_packed) != stats["documents"]:
        failures.append(f"{name}: the packed and unpacked files hold different documents")
        return
    rows_packed, rows_unpacked = packed["input_ids"].shape[0], unpacked["input_ids"].shape[0]
    if not rows_packed < rows_unpacked:
        failures.append(f"{name}: {rows_packed} packed rows for {rows_unpacked} documents: nothing packed")

    out_p = engine(args, model, packed, root, True)
    out_u = engine(args, model, unpacked, root, True)
    loss_p = out_p["loss_sum"].item() / out_p["tokens"].item()
    loss_u = out_u["loss_sum"].item() / out_u["tokens"].item()
    ref_sum, ref_count = reference_loss(hf, docs_unpacked)
    loss_ref = ref_sum / ref_count
    ok = (out_p["tokens"].item() == out_u["tokens"].item() == ref_count == stats["trained_tokens"]
          and rel(loss_p, loss_u) < TOLERANCE and rel(loss_p, loss_ref) < TOLERANCE)
    print(f"{name:<20} {len(docs_packed)} documents in {rows_packed} packed / {rows_unpacked} rows, "
          f"{ref_count} trained tokens: loss packed {loss_p:.12f} unpacked {loss_u:.12f} "
          f"transformers {loss_ref:.12f} (rel {rel(loss_p, loss_u):.1e}, {rel(loss_p, loss_ref):.1e})  "
          f"{'ok' if ok else 'FAIL'}")
    if not ok:
        failures.append(f"{name}: packed loss")
    return packed


def check_isolation(args, model, packed, vocab_size, root, failures):
    """Changes the middle document of the fullest row; the others' logits must not move."""
    row = int(np.argmax(packed["doc_ids"].max(axis=1)))
    docs = packed["doc_ids"][row]
    n = int(docs.max()) + 1
    if n < 3:
        failures.append(f"isolation: the fullest row holds only {n} documents")
        return
    victim = n // 2
    sel = docs == victim
    changed = {k: np.stack([v[row], v[row]]) for k, v in packed.items()}
    changed["input_ids"][1][sel] = (changed["input_ids"][1][sel] + 7) % vocab_size
    changed["targets"][1][:] = -100  # logits only
    changed["targets"][0][:] = -100
    logits = engine(args, model, changed, root, False)["logits"]
    scale = np.abs(logits[0]).max()
    others = (docs != victim) & (docs != -1)
    moved_others = np.abs(logits[0][others] - logits[1][others]).max() / scale
    moved_victim = np.abs(logits[0][sel] - logits[1][sel]).max() / scale
    ok = moved_others <= 1e-12 and moved_victim > 1e-3
    print(f"{'isolation':<20} row {row}: changing document {victim} of {n} moves the others' logits by "
          f"{moved_others:.1e} (its own by {moved_victim:.1e})  {'ok' if ok else 'FAIL'}")
    if not ok:
        failures.append("isolation")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--prepare", required=True)
    parser.add_argument("--engine-tool", required=True)
    parser.add_argument("--make-tiny-model", required=True)
    parser.add_argument("--samples", required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    failures = []
    with tempfile.TemporaryDirectory() as root:
        model = os.path.join(root, "model")
        run([args.make_tiny_model, "--out", model])
        hf = LlamaForCausalLM.from_pretrained(model, dtype=torch.float64).eval()
        packed = None
        for name, seq_len in CASES:
            packed = check_loss(args, model, hf, name, seq_len, root, failures) or packed
        if packed is not None:
            check_isolation(args, model, packed, hf.config.vocab_size, root, failures)
    if failures:
        sys.exit("packing_loss.py: " + "; ".join(failures))
    print("packing_loss.py: packed and unpacked losses agree")


if __name__ == "__main__":
    main()
