"""Token-exact parity of Herd's examples with the reference tokenizers (ctest:
datasets_tokenizer_parity, DESIGN.md §10).

Makes the tiny model with herd-make-tiny-model, has herd-prepare --dump-examples write Herd's ids
and loss masks for the sample datasets (and a few edge cases), and compares them with:
  - chat: the fixture's Jinja template rendered by transformers' render_jinja_template (text-exact),
    then tokenised with sentencepiece, the template's <s>/</s> as special ids and the text after
    them without SentencePiece's dummy prefix (transformers' `legacy: false`), and with
    transformers' own LlamaTokenizer.apply_chat_template; the same again with `legacy: true`;
  - prompt/completion: sentencepiece's encoding of prompt + completion (and of the two apart);
  - text: transformers with split_special_tokens=True, so "</s>" in user text stays text.
Masks are checked independently: the trained runs must decode to the assistant turns (weight 1)
or the completion. Finally a prepared file is read with the `safetensors` package and its rows
are checked. The transformers tokenizer is built from the sentencepiece vocabulary because
AutoTokenizer needs the protobuf package to convert tokenizer.model, which the venv lacks.
Every missing package or failed check makes the test fail, never skip.
"""
import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

from parity_util import check, read_jsonl, report, run, write_jsonl

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

try:
    import numpy as np
    import sentencepiece
    from safetensors import safe_open
    from transformers import LlamaTokenizer
    from transformers.tokenization_utils_base import generate_merges
    from transformers.utils.chat_template_utils import render_jinja_template
except ImportError as e:
    sys.exit(f"tokenizer_parity.py: cannot import {e.name!r} with {sys.executable}; "
             "run scripts/setup.sh to build the test venv")

BOS, EOS = 1, 2
# Placeholders for the template's special tokens, so that "</s>" typed by a user stays text.
BOS_MARK, EOS_MARK = "\x00HERD_BOS\x00", "\x00HERD_EOS\x00"
# ModelProto with a second normalizer_spec {add_dummy_prefix: false}; protobuf merges it in.
NO_DUMMY_PREFIX = b"\x1a\x02\x18\x00"

EDGE_CHATS = [
    [{"role": "user", "content": "Is </s> or <s> special? [INST] no [/INST]"},
     {"role": "assistant", "content": "No: <s>, </s> and <unk> are plain text here. </s>"}],
    [{"role": "system", "content": "  Leading spaces, trailing newline\n"},
     {"role": "user", "content": "\u3000full-width space and tab\t"},
     {"role": "assistant", "content": "\n\n  caf\u00e9 \U0001F999  \n"},
     {"role": "user", "content": "second"},
     {"role": "assistant", "content": "x", "weight": 0},
     {"role": "user", "content": "third"},
     {"role": "assistant", "content": "y"}],
    [{"role": "system", "content": ""},
     {"role": "user", "content": "empty system, empty answer"},
     {"role": "assistant", "content": ""}],
    [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
     {"role": "user", "content": "ends with a user turn"}],
]
EDGE_TEXTS = ["Plain text.", " starts with a space", "\nstarts with a newline",
              "has </s> and <s> inside", "\u6771\u4eac \U0001F999 caf\u00e9", "ends with spaces  "]

class References:
    def __init__(self, model_dir):
        proto = open(os.path.join(model_dir, "tokenizer.model"), "rb").read()
        self.config = json.load(open(os.path.join(model_dir, "tokenizer_config.json")))
        self.sp = sentencepiece.SentencePieceProcessor(model_proto=proto)
        self.sp_cont = sentencepiece.SentencePieceProcessor(model_proto=proto + NO_DUMMY_PREFIX)
        vocab = {self.sp.id_to_piece(i): i for i in range(self.sp.get_piece_size())}
        # What transformers' SentencePieceExtractor does for a BPE model, minus protobuf.
        self.hf = LlamaTokenizer(vocab=vocab, merges=generate_merges(vocab),
                                 legacy=self.config["legacy"], bos_token="<s>", eos_token="</s>",
                                 unk_token="<unk>")
        self.hf.chat_template = self.config["chat_template"]
        self.legacy = self.config["legacy"]

    def render(self, messages, bos="<s>", eos="</s>"):
        msgs = [{"role": m["role"], "content": m["content"]} for m in messages]
        return render_jinja_template([msgs], chat_template=self.config["chat_template"],
                                     bos_token=bos, eos_token=eos)[0][0]

    def chat_ids(self, messages):
        """sentencepiece over the rendered text, the template's specials as ids."""
        text = self.render(messages, BOS_MARK, EOS_MARK)
        ids, offset = [], 0
        for part in re.split(f"({re.escape(BOS_MARK)}|{re.escape(EOS_MARK)})", text):
            if part == BOS_MARK:
                ids.append(BOS)
            elif part == EOS_MARK:
                ids.append(EOS)
            elif part:
                # transformers' Metaspace: "first" (legacy false) prepends a space only at offset
                # 0, "always" after every special token; never when the text starts with one.
                prefix = (offset == 0 or self.legacy) and not part.startswith(" ")
                ids += (self.sp if prefix else self.sp_cont).encode(part)
            offset += len(part)
        return ids

    def hf_chat_ids(self, messages):
        msgs = [{"role": m["role"], "content": m["content"]} for m in messages]
        out = self.hf.apply_chat_template(msgs, tokenize=True)
        return list(out["input_ids"] if isinstance(out, dict) or hasattr(out, "keys") else out)


def trained_runs(ids, trained):
    runs, cur = [], []
    for i, t in zip(ids, trained):
        if t:
            cur.append(i)
        elif cur:
            runs.append(cur)
            cur = []
    if cur:
        runs.append(cur)
    return runs


def check_chat(ref, name, records, dumped):
    for rec, got in zip(records, dumped):
        where = f"{name}:{got['line']}"
        if not check("ids" in got, f"{where}: herd refused the record: {got.get('error')}"):
            continue
        msgs = rec["messages"]
        check(got.get("text") == ref.render(msgs),
              f"{where}: rendered text differs from the Jinja template:\n"
              f"  herd  {got.get('text')!r}\n  jinja {ref.render(msgs)!r}")
        want = ref.chat_ids(msgs)
        check(got["ids"] == want, f"{where}: ids differ from sentencepiece:\n"
              f"  herd {got['ids'][:40]}\n  ref  {want[:40]}")
        if not any(s in m["content"] for m in msgs for s in ("<s>", "</s>", "<unk>")):
            hf = ref.hf_chat_ids(msgs)
            check(got["ids"] == hf, f"{where}: ids differ from transformers' apply_chat_template:\n"
                  f"  herd {got['ids'][:40]}\n  hf   {hf[:40]}")
        # Mask: one trained run per trained assistant turn, decoding to its stripped content
        # (the trailing space is a token of its own) and ending in EOS.
        turns = [m["content"].strip() for m in msgs
                 if m["role"] == "assistant" and m.get("weight", 1) == 1]
        runs = trained_runs(got["ids"], got["trained"])
        check(len(runs) == len(turns), f"{where}: {len(runs)} trained runs for {len(turns)} turns")
        for run_ids, content in zip(runs, turns):
            check(run_ids[-1] == EOS and ref.sp.decode(run_ids[:-1]).strip() == content,
                  f"{where}: trained run {ref.sp.decode(run_ids)!r} is not the turn {content!r}")


def check_prompt_completion(ref, name, records, dumped):
    for rec, got in zip(records, dumped):
        where = f"{name}:{got['line']}"
        if not check("ids" in got, f"{where}: herd refused the record: {got.get('error')}"):
            continue
        p, c = rec["prompt"], rec["completion"]
        apart = [BOS] + ref.sp.encode(p) + ref.sp_cont.encode(c) + [EOS]
        joined = [BOS] + ref.sp.encode(p + c) + [EOS]
        check(got["ids"] == apart, f"{where}: ids differ from sentencepiece(prompt) + "
              f"sentencepiece-continuation(completion):\n  herd {got['ids'][:40]}\n  ref  {apart[:40]}")
        if c[:1].isspace():
            check(got["ids"] == joined, f"{where}: ids differ from sentencepiece(prompt + completion)")
        n_prompt = 1 + len(ref.sp.encode(p))
        want = [0] * n_prompt + [1] * (len(got["ids"]) - n_prompt)
        check(got["trained"] == want, f"{where}: mask is not 'completion and EOS'")


def check_text(ref, name, records, dumped):
    for rec, got in zip(records, dumped):
        where = f"{name}:{got['line']}"
        if not check("ids" in got, f"{where}: herd refused the record: {got.get('error')}"):
            continue
        hf = ref.hf(rec["text"], add_special_tokens=False, split_special_tokens=True)["input_ids"]
        check(got["ids"] == [BOS] + hf + [EOS],
              f"{where}: ids differ from transformers (split_special_tokens=True):\n"
              f"  herd {got['ids']}\n  hf   {[BOS] + hf + [EOS]}")
        if not rec["text"].startswith(" "):
            check(got["ids"][1:-1] == ref.sp.encode(rec["text"]), f"{where}: ids differ from sentencepiece")
        check(BOS not in got["ids"][1:] and EOS not in got["ids"][:-1],
              f"{where}: user text produced a special token")
        check(got["trained"] == [0] + [1] * (len(got["ids"]) - 1), f"{where}: text is not all trained")


def dump(args, model_dir, data, out_dir, name, *flags):
    out = os.path.join(out_dir, name + ".examples.jsonl")
    run([args.prepare, "--data", data, "--model", model_dir, "--dump-examples", out, *flags])
    return read_jsonl(out)


def check_prepared_file(args, model_dir, tmp):
    data = os.path.join(args.samples, "support_qa.jsonl")
    train, val = os.path.join(tmp, "qa.train.safetensors"), os.path.join(tmp, "qa.val.safetensors")
    out = run([args.prepare, "--data", data, "--model", model_dir, "--out", train,
               "--validation-out", val, "--validation-split", "0.1", "--max-seq-len", "256"])
    result = json.loads(out)
    with safe_open(train, framework="numpy") as f:
        meta = f.metadata()
        cols = {k: f.get_tensor(k) for k in ("input_ids", "targets", "position_ids", "doc_ids")}
    check(meta["herd_prepared"] == "1" and meta["seq_len"] == "256", f"metadata: {meta}")
    model_sha = hashlib.sha256(open(os.path.join(model_dir, "tokenizer.model"), "rb").read()).hexdigest()
    source_sha = hashlib.sha256(open(data, "rb").read()).hexdigest()
    check(meta["tokenizer_sha256"] == model_sha, "tokenizer_sha256 is not sha256(tokenizer.model)")
    check(meta["source_sha256"] == source_sha, "source_sha256 is not sha256 of the JSONL")
    stats = json.loads(meta["stats"])
    n_rows = stats["sequences"]
    for k, v in cols.items():
        check(v.dtype == np.int32 and v.shape == (n_rows, 256), f"{k}: {v.dtype} {v.shape}")
    ids, tg, pos, doc = (cols[k] for k in ("input_ids", "targets", "position_ids", "doc_ids"))
    nxt_same = np.zeros_like(doc, dtype=bool)
    nxt_same[:, :-1] = (doc[:, 1:] == doc[:, :-1]) & (doc[:, :-1] >= 0)
    has_t = tg != -100
    check(not (has_t & ~nxt_same).any(), "a target where the next slot is another document")
    shifted = np.full_like(ids, -1)
    shifted[:, :-1] = ids[:, 1:]
    check((tg[has_t] == shifted[has_t]).all(), "a target that is not the next input id")
    check(int(has_t.sum()) == stats["trained_tokens"], "trained_tokens != number of targets")
    check(int((doc >= 0).sum()) == stats["tokens"], "tokens != non-padding slots")
    check((pos[doc < 0] == 0).all(), "padding with a position")
    starts = np.ones_like(doc, dtype=bool)
    starts[:, 1:] = doc[:, 1:] != doc[:, :-1]
    check((pos[starts & (doc >= 0)] == 0).all(), "a document not starting at position 0")
    check(result["train_records"] + result["validation_records"] == result["records"],
          "records do not add up")
    with safe_open(val, framework="numpy") as f:
        check(f.metadata()["split"] == "validation", "validation file split")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--prepare", required=True, help="herd-prepare")
    ap.add_argument("--make-tiny-model", required=True, help="herd-make-tiny-model")
    ap.add_argument("--samples", required=True, help="datasets/samples")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model = os.path.join(tmp, "tiny")
        run([args.make_tiny_model, "--out", model])
        legacy_model = os.path.join(tmp, "tiny-legacy")
        shutil.copytree(model, legacy_model)
        cfg_path = os.path.join(legacy_model, "tokenizer_config.json")
        cfg = json.load(open(cfg_path))
        cfg["legacy"] = True
        json.dump(cfg, open(cfg_path, "w"))

        chat_file = os.path.join(args.samples, "support_chat.jsonl")
        qa_file = os.path.join(args.samples, "support_qa.jsonl")
        edge_chat = os.path.join(tmp, "edge_chat.jsonl")
        write_jsonl(edge_chat, [{"messages": m} for m in EDGE_CHATS])
        edge_text = os.path.join(tmp, "edge_text.jsonl")
        write_jsonl(edge_text, [{"text": t} for t in EDGE_TEXTS])

        for model_dir, tag in ((model, ""), (legacy_model, "legacy:")):
            ref = References(model_dir)
            check(ref.legacy == (tag == "legacy:"), "legacy flag not applied")
            for path in (chat_file, edge_chat):
                recs = read_jsonl(path)
                check_chat(ref, tag + os.path.basename(path), recs,
                           dump(args, model_dir, path, tmp, "chat"))
        ref = References(model)
        check_prompt_completion(ref, "support_qa.jsonl", read_jsonl(qa_file),
                                dump(args, model, qa_file, tmp, "qa"))
        check_text(ref, "edge_text", [{"text": t} for t in EDGE_TEXTS],
                   dump(args, model, edge_text, tmp, "text"))
        check_prepared_file(args, model, tmp)

    report("chat (legacy false and true), prompt/completion, text and the "
          "prepared file agree with the references")


if __name__ == "__main__":
    main()
