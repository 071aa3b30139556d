"""Herd's LoRA adapters against Hugging Face PEFT and transformers (ctest: engine_adapter_parity).

On a tiny LlamaForCausalLM that transformers writes itself (with a small tokenizer beside it):
  zero_b      an adapter with B = 0 (PEFT's init) leaves Herd's logits bit-identical to the base,
              and PEFT agrees;
  adapters    random-B adapters written by `herd-engine-tool init-adapter` (all-linear; q_proj,v_proj
              with rsLoRA, another r/alpha and dropout): PeftModel.from_pretrained loads each with
              no warning and no missing or unexpected key, and its logits and loss equal Herd's
              `logits --adapter` (max|diff| / max|ref| < 1e-5);
  config      adapter_config.json holds exactly the DESIGN.md §5 values, the safetensors file
              exactly the expected float32 keys and shapes;
  merge       `merge` output (one file, and sharded with an index) loads with
              LlamaForCausalLM.from_pretrained and gives Herd's adapter logits, carries the
              tokenizer, and Herd loads it too;
  from_peft   an adapter PEFT trained-and-saved itself loads into Herd with PEFT's logits;
  errors      a NaN, a wrong r and a non-empty merge target are refused, naming file and tensor.
Missing packages or any mismatch fail the test; nothing is skipped.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import warnings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
try:
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
except ImportError as e:
    sys.exit(f"adapter_parity.py: cannot import {e.name!r} with {sys.executable}; run scripts/setup.sh")

TOLERANCE = 1e-5
PROJ = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
BLOCK = {p: "self_attn" if p in PROJ[:4] else "mlp" for p in PROJ}
CONFIG = dict(vocab_size=97, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
              num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
              rms_norm_eps=1e-5, tie_word_embeddings=False)
ADAPTERS = {  # name: init-adapter settings
    "all_linear": dict(r=8, alpha=16, targets="all-linear", rslora=False, dropout=0.0),
    "qv_rslora": dict(r=4, alpha=12, targets="q_proj,v_proj", rslora=True, dropout=0.1),
}


class Checks:
    def __init__(self):
        self.failures = []

    def expect(self, ok, name, detail=""):
        print(f"{name:<48} {detail:<40} {'ok' if ok else 'FAIL'}")
        if not ok:
            self.failures.append(name)


def read_bytes(directory, name):
    with open(os.path.join(directory, name), "rb") as f:
        return f.read()


def rel(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


def build_base(root):
    torch.manual_seed(7)
    model = LlamaForCausalLM(LlamaConfig(**CONFIG)).eval()
    with torch.no_grad():  # weights far from the default init, so every term matters
        for pname, p in model.named_parameters():
            p.copy_(1.0 + 0.2 * torch.randn_like(p) if "norm" in pname else 0.08 * torch.randn_like(p))
    path = os.path.join(root, "base")
    model.save_pretrained(path)
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, "hello": 3, "world": 4}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>",
                            eos_token="</s>").save_pretrained(path)
    return path


class Herd:
    def __init__(self, tool, root):
        self.tool, self.root = tool, root

    def run(self, *args, check=True):
        r = subprocess.run([self.tool, *args], capture_output=True, text=True)
        if check and r.returncode != 0:
            raise RuntimeError(f"herd-engine-tool {' '.join(args)} failed ({r.returncode}): {r.stderr}")
        return r

    def logits(self, model_dir, ids, targets, adapter=None):
        src, dst = os.path.join(self.root, "in.safetensors"), os.path.join(self.root, "out.safetensors")
        save_file({"input_ids": ids.contiguous(), "targets": targets.contiguous()}, src)
        self.run("logits", "--model", model_dir, "--input", src, "--out", dst,
                 *(["--adapter", adapter] if adapter else []))
        return load_file(dst)

    def init_adapter(self, model_dir, out, r, alpha, targets, rslora, dropout, seed, random_b):
        self.run("init-adapter", "--model", model_dir, "--out", out, "--r", str(r), "--alpha", str(alpha),
                 "--targets", targets, "--dropout", str(dropout), "--seed", str(seed),
                 "--random-b", str(random_b), *(["--rslora"] if rslora else []))


def peft_model(base_dir, adapter_dir):
    """PEFT's model over a fresh base; also the warnings and the key check of a second load."""
    base = LlamaForCausalLM.from_pretrained(base_dir).eval()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = PeftModel.from_pretrained(base, adapter_dir).eval()
    result = model.load_adapter(adapter_dir, adapter_name="keycheck")
    model.set_adapter("default")
    problems = [str(w.message) for w in caught] + [f"missing {k}" for k in result.missing_keys] + \
               [f"unexpected {k}" for k in result.unexpected_keys]
    return model, problems


def expected_targets(spec):
    return PROJ if spec == "all-linear" else [p for p in PROJ if p in spec.split(",")]


def check_adapter_files(checks, name, adapter_dir, settings, base_dir):
    with open(os.path.join(adapter_dir, "adapter_config.json")) as f:
        cfg = json.load(f)
    want = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": base_dir,
            "r": settings["r"], "lora_alpha": settings["alpha"], "lora_dropout": settings["dropout"],
            "target_modules": expected_targets(settings["targets"]), "bias": "none",
            "use_rslora": settings["rslora"], "fan_in_fan_out": False, "inference_mode": True}
    wrong = {k: cfg.get(k, "<absent>") for k, v in want.items()
             if cfg.get(k) != v or type(cfg.get(k)) is not type(v)}
    checks.expect(not wrong, f"{name}: adapter_config.json fields", str(wrong)[:40] if wrong else "")

    c = LlamaConfig(**CONFIG)
    kv = c.num_key_value_heads * (c.hidden_size // c.num_attention_heads)
    shape = {"q_proj": (c.hidden_size, c.hidden_size), "k_proj": (kv, c.hidden_size), "v_proj": (kv, c.hidden_size),
             "o_proj": (c.hidden_size, c.hidden_size), "gate_proj": (c.intermediate_size, c.hidden_size),
             "up_proj": (c.intermediate_size, c.hidden_size), "down_proj": (c.hidden_size, c.intermediate_size)}
    expected = {}
    for i in range(c.num_hidden_layers):
        for p in expected_targets(settings["targets"]):
            out, inp = shape[p]
            key = f"base_model.model.model.layers.{i}.{BLOCK[p]}.{p}"
            expected[f"{key}.lora_A.weight"] = (settings["r"], inp)
            expected[f"{key}.lora_B.weight"] = (out, settings["r"])
    with safe_open(os.path.join(adapter_dir, "adapter_model.safetensors"), "pt") as f:
        got = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
        dtypes = {f.get_slice(k).get_dtype() for k in f.keys()}
    checks.expect(got == expected and dtypes == {"F32"}, f"{name}: safetensors keys, shapes, F32",
                  f"{len(got)} tensors")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--tool", required=True)
    args = parser.parse_args()
    checks = Checks()
    with tempfile.TemporaryDirectory() as root:
        herd = Herd(args.tool, root)
        base_dir = build_base(root)
        base = LlamaForCausalLM.from_pretrained(base_dir).eval()
        ids = torch.randint(0, CONFIG["vocab_size"], (2, 24), generator=torch.Generator().manual_seed(3))
        targets = torch.cat([ids[:, 1:], torch.full((2, 1), -100)], dim=1)
        with torch.no_grad():
            base_logits = base(input_ids=ids).logits
        herd_base = herd.logits(base_dir, ids, targets)

        # zero_b: B = 0 is exactly the base model, in Herd and in PEFT.
        zero = os.path.join(root, "zero_b")
        herd.init_adapter(base_dir, zero, 8, 16, "all-linear", False, 0.0, seed=1, random_b=0)
        out = herd.logits(base_dir, ids, targets, adapter=zero)
        checks.expect(torch.equal(out["logits"], herd_base["logits"]), "zero_b: herd logits == herd base (bitwise)")
        checks.expect(rel(out["logits"], base_logits) < TOLERANCE, "zero_b: herd vs transformers base",
                      f"rel err {rel(out['logits'], base_logits):.2e}")
        model, problems = peft_model(base_dir, zero)
        with torch.no_grad():
            err = rel(out["logits"], model(input_ids=ids).logits)
        checks.expect(err < TOLERANCE and not problems, "zero_b: PEFT loads it cleanly, same logits",
                      f"rel err {err:.2e}" if not problems else problems[0][:40])

        for seed, (name, s) in enumerate(ADAPTERS.items(), start=10):
            adapter = os.path.join(root, name)
            herd.init_adapter(base_dir, adapter, s["r"], s["alpha"], s["targets"], s["rslora"], s["dropout"],
                              seed=seed, random_b=0.05)
            check_adapter_files(checks, name, adapter, s, base_dir)
            out = herd.logits(base_dir, ids, targets, adapter=adapter)
            moved = rel(out["logits"], herd_base["logits"])
            checks.expect(moved > 1e-3, f"{name}: the adapter changes the logits", f"rel change {moved:.2e}")
            model, problems = peft_model(base_dir, adapter)
            checks.expect(not problems, f"{name}: PEFT loads it cleanly", problems[0][:40] if problems else "")
            with torch.no_grad():
                ref = model(input_ids=ids, labels=ids)
            err = rel(out["logits"], ref.logits)
            loss = (out["loss_sum"] / out["tokens"]).item()
            loss_err = abs(loss - ref.loss.item()) / abs(ref.loss.item())
            checks.expect(err < TOLERANCE and loss_err < TOLERANCE, f"{name}: PEFT logits and loss",
                          f"rel err {err:.2e}, loss {loss_err:.2e}")

            # merge: one file, and sharded with an index for the all-linear case.
            for shard_bytes in ([None, 60000] if name == "all_linear" else [None]):
                merged = os.path.join(root, f"merged_{name}_{shard_bytes}")
                herd.run("merge", "--model", base_dir, "--adapter", adapter, "--out", merged,
                         *(["--max-shard-bytes", str(shard_bytes)] if shard_bytes else []))
                label = f"{name}: merge{' sharded' if shard_bytes else ''}"
                files = sorted(os.listdir(merged))
                shards = [f for f in files if f.startswith("model-")]
                layout_ok = ("model.safetensors.index.json" in files and len(shards) > 1) if shard_bytes \
                    else "model.safetensors" in files
                side_ok = all(read_bytes(merged, f) == read_bytes(base_dir, f) for f in
                              ["config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"])
                checks.expect(layout_ok and side_ok, f"{label}: files", f"{len(shards)} shards" if shards else "")
                with torch.no_grad():
                    merged_logits = LlamaForCausalLM.from_pretrained(merged).eval()(input_ids=ids).logits
                err = rel(out["logits"], merged_logits)
                checks.expect(err < TOLERANCE, f"{label}: transformers logits", f"rel err {err:.2e}")
                herd_merged = herd.logits(merged, ids, targets)
                err = rel(herd_merged["logits"], out["logits"])
                checks.expect(err < TOLERANCE, f"{label}: herd loads it", f"rel err {err:.2e}")
            encode = lambda d: AutoTokenizer.from_pretrained(d)("hello world")["input_ids"]
            checks.expect(encode(merged) == encode(base_dir), f"{name}: merged tokenizer")

        # from_peft: an adapter PEFT wrote itself reproduces PEFT's logits in Herd.
        model = get_peft_model(LlamaForCausalLM.from_pretrained(base_dir),
                               LoraConfig(r=6, lora_alpha=9, target_modules=["down_proj", "k_proj", "o_proj"],
                                          task_type="CAUSAL_LM")).eval()
        with torch.no_grad():
            for pname, p in model.named_parameters():
                if "lora_B" in pname:
                    p.copy_(0.05 * torch.randn_like(p))
            ref = model(input_ids=ids).logits
        peft_dir = os.path.join(root, "from_peft")
        model.save_pretrained(peft_dir)
        err = rel(herd.logits(base_dir, ids, targets, adapter=peft_dir)["logits"], ref)
        checks.expect(err < TOLERANCE, "from_peft: herd logits with PEFT's adapter", f"rel err {err:.2e}")

        # errors: refused with the file and the tensor named.
        bad = os.path.join(root, "bad_nan")
        shutil.copytree(os.path.join(root, "qv_rslora"), bad)
        tensors = load_file(os.path.join(bad, "adapter_model.safetensors"))
        victim = "base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight"
        tensors[victim][3, 1] = float("nan")
        save_file(tensors, os.path.join(bad, "adapter_model.safetensors"))
        r = herd.run("logits", "--model", base_dir, "--adapter", bad, "--input", os.path.join(root, "in.safetensors"),
                     "--out", os.path.join(root, "x.safetensors"), check=False)
        checks.expect(r.returncode != 0 and victim in r.stderr and "adapter_model.safetensors" in r.stderr,
                      "errors: NaN in a tensor", r.stderr.strip()[-40:])
        bad = os.path.join(root, "bad_r")
        shutil.copytree(os.path.join(root, "qv_rslora"), bad)
        with open(os.path.join(bad, "adapter_config.json")) as f:
            cfg = json.load(f)
        cfg["r"] = 5
        with open(os.path.join(bad, "adapter_config.json"), "w") as f:
            json.dump(cfg, f)
        r = herd.run("merge", "--model", base_dir, "--adapter", bad, "--out", os.path.join(root, "m_bad"), check=False)
        checks.expect(r.returncode != 0 and "lora_A.weight" in r.stderr and "shape" in r.stderr
                      and not os.path.exists(os.path.join(root, "m_bad")), "errors: r disagrees with the shapes",
                      r.stderr.strip()[-40:])
        r = herd.run("merge", "--model", base_dir, "--adapter", zero, "--out", base_dir, check=False)
        checks.expect(r.returncode != 0 and "not an empty directory" in r.stderr, "errors: merge into a non-empty dir")
    if checks.failures:
        sys.exit(f"adapter_parity.py: {len(checks.failures)} failed: {', '.join(checks.failures)}")
    print("adapter_parity.py: Herd's adapters match PEFT and transformers")


if __name__ == "__main__":
    main()
