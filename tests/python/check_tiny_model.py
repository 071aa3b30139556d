"""Checks herd-make-tiny-model's output with the reference stack (ctest:
fixture_tiny_model_in_transformers).

Runs the tool twice with the same flags (the files must be byte-identical), then checks that
transformers' LlamaForCausalLM loads every parameter from model.safetensors and runs, that
sentencepiece loads tokenizer.model with LLaMA's special ids and round-trips text, and that the
chat template renders LLaMA-2 text. A tied-embeddings GQA variant is checked the same way.
Every missing package or failed check makes the test fail, never skip.
"""
import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

try:
    import sentencepiece
    import torch
    import transformers
    from safetensors import safe_open
    from safetensors.torch import load_file
    from transformers.utils.chat_template_utils import render_jinja_template
except ImportError as e:
    sys.exit(f"check_tiny_model.py: cannot import {e.name!r} with {sys.executable}; "
             "run scripts/setup.sh to build the test venv")

FILES = ["config.json", "generation_config.json", "model.safetensors", "special_tokens_map.json",
         "tokenizer.model", "tokenizer_config.json"]
ROUND_TRIP = ["Hello world.", "The year 2024 had 366 days; 3.14159!", "  two  spaces, trailing ",
              "caf\u00e9 na\u00efve \u00fcber", "\u6771\u4eac \U0001F999", "tab\tand\nnewline",
              "\ufb01 ligature stays", "<s> is plain text here </s>"]
errors = []


def check(ok, message):
    if not ok:
        errors.append(message)
    return ok


def run_tool(tool, out, flags):
    cmd = [tool, "--out", out, *flags]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"check_tiny_model.py: {' '.join(cmd)} failed (rc {r.returncode}):\n{r.stderr}")


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def check_model(d, tied):
    config = json.load(open(os.path.join(d, "config.json")))
    model, info = transformers.LlamaForCausalLM.from_pretrained(d, output_loading_info=True)
    for key in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs"):
        check(not info.get(key), f"{d}: from_pretrained reports {key}: {info.get(key)}")
    check(model.config.tie_word_embeddings == tied, f"{d}: tie_word_embeddings is not {tied}")

    path = os.path.join(d, "model.safetensors")
    with safe_open(path, framework="pt") as f:
        check(f.metadata() == {"format": "pt"}, f"{path}: metadata {f.metadata()}")
    stored = load_file(path)
    params = model.state_dict()
    want_names = set(params) - ({"lm_head.weight"} if tied else set())
    check(set(stored) == want_names,
          f"{path}: tensors differ from LlamaForCausalLM's: "
          f"extra {sorted(set(stored) - want_names)}, missing {sorted(want_names - set(stored))}")
    # Every parameter must hold the file's values: nothing was initialised by transformers.
    for name, p in params.items():
        src = stored.get("model.embed_tokens.weight" if tied and name == "lm_head.weight" else name)
        if src is not None:
            check(src.dtype == torch.float32 and torch.equal(p, src),
                  f"{path}: {name} in the model differs from the file")
    embed = stored["model.embed_tokens.weight"]
    check(0.015 < embed.std().item() < 0.025 and abs(embed.mean().item()) < 0.002,
          f"{path}: embeddings are not N(0, 0.02): mean {embed.mean()}, std {embed.std()}")
    norm = stored["model.norm.weight"]
    check(abs(norm.mean().item() - 1) < 0.01, f"{path}: model.norm.weight mean {norm.mean()}")

    vocab = config["vocab_size"]
    ids = torch.tensor([[1, 5, 17, 300 % vocab, vocab - 1], [1, 2, 3, 4, 5]])
    with torch.no_grad():
        logits = model.eval()(ids).logits
    check(tuple(logits.shape) == (2, 5, vocab), f"{d}: logits shape {tuple(logits.shape)}")
    check(bool(torch.isfinite(logits).all()), f"{d}: logits are not finite")
    check(logits.std().item() > 0, f"{d}: logits are constant")
    return vocab


def check_tokenizer(d, vocab):
    sp = sentencepiece.SentencePieceProcessor(model_file=os.path.join(d, "tokenizer.model"))
    check(sp.get_piece_size() == vocab,
          f"{d}: tokenizer has {sp.get_piece_size()} pieces, config.json says {vocab}")
    check([sp.id_to_piece(i) for i in range(3)] == ["<unk>", "<s>", "</s>"],
          f"{d}: ids 0-2 are {[sp.id_to_piece(i) for i in range(3)]}")
    check((sp.unk_id(), sp.bos_id(), sp.eos_id(), sp.pad_id()) == (0, 1, 2, -1),
          f"{d}: unk/bos/eos/pad ids {(sp.unk_id(), sp.bos_id(), sp.eos_id(), sp.pad_id())}")
    check(all(sp.is_byte(sp.piece_to_id(f"<0x{b:02X}>")) for b in range(256)),
          f"{d}: not all 256 byte-fallback pieces are present")
    for s in ROUND_TRIP:
        ids = sp.encode(s)
        check(sp.decode(ids) == s, f"{d}: {s!r} decodes back as {sp.decode(ids)!r}")
        check(sp.unk_id() not in ids, f"{d}: {s!r} encodes to <unk> despite byte fallback")
    pieces = sp.encode("year 20241", out_type=str)
    check(all(sum(c.isdigit() for c in p) <= 1 for p in pieces), f"{d}: digits not split: {pieces}")
    llama = sp.encode("\U0001F999", out_type=str)
    check(sum(p.startswith("<0x") for p in llama) == 4, f"{d}: emoji not byte-encoded: {llama}")
    check(sp.encode("hi", out_type=str)[0].startswith("\u2581"), f"{d}: no dummy prefix")


def check_template(d):
    config = json.load(open(os.path.join(d, "tokenizer_config.json")))
    check(config.get("tokenizer_class") == "LlamaTokenizer", f"{d}: tokenizer_class")
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": " Hi "},
            {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Again"}]
    rendered, _ = render_jinja_template(conversations=[chat], chat_template=config["chat_template"],
                                        bos_token="<s>", eos_token="</s>")
    # As Meta's template: strip() applies to the system block + first user message together.
    want = ("<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\n Hi [/INST] Hello! </s>"
            "<s>[INST] Again [/INST]")
    check(rendered == [want], f"{d}: chat template renders {rendered!r}, want {[want]!r}")


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tool", required=True, help="path of herd-make-tiny-model")
    parser.add_argument("--corpus", help="passed on to the tool (default: the tool's)")
    args = parser.parse_args()
    corpus = ["--corpus", args.corpus] if args.corpus else []
    torch.manual_seed(0)

    with tempfile.TemporaryDirectory(prefix="herd_tiny_model_") as tmp:
        a, b, tied = (os.path.join(tmp, n) for n in ("a", "b", "tied"))
        run_tool(args.tool, a, corpus)
        run_tool(args.tool, b, corpus)
        for f in FILES:
            check(sha256(os.path.join(a, f)) == sha256(os.path.join(b, f)),
                  f"{f} differs between two runs with the same flags")
        vocab = check_model(a, tied=False)
        check_tokenizer(a, vocab)
        check_template(a)

        run_tool(args.tool, tied, corpus + ["--tied", "--layers", "1", "--kv-heads", "1",
                                            "--hidden", "32", "--vocab-size", "768", "--seed", "7"])
        check(json.load(open(os.path.join(tied, "config.json")))["num_key_value_heads"] == 1,
              "--kv-heads was not applied")
        check_tokenizer(tied, check_model(tied, tied=True))

    for e in errors:
        print(f"FAIL: {e}", file=sys.stderr)
    print(f"check_tiny_model.py: {len(errors)} failures (transformers {transformers.__version__}, "
          f"torch {torch.__version__}, sentencepiece {sentencepiece.__version__})")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
