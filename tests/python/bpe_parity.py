"""Token-exact parity of Herd's byte-level BPE tokenizer and LLaMA-3 chat template with Hugging
Face (ctest: datasets_bpe_parity, DESIGN.md §4).

Trains a small byte-level BPE with the `tokenizers` package (LLaMA 3's Split regex + ByteLevel,
LLaMA 3's special tokens), saves it with a tokenizer_config.json holding a LLaMA-3 Jinja chat
template (Meta's published format) into a temporary model directory, and compares:
  - encoding: herd-tokenize's ids with `tokenizers` (encode_special_tokens=True) and with
    transformers (split_special_tokens=True), so special-token strings in user text come out as
    ordinary tokens; for merges as "a b" strings and as [a, b] pairs, with ignore_merges off
    and on (LLaMA 3 ships it on);
    A non-special added token (<tool_call>) is produced from text, as Hugging Face does;
  - decoding: Herd's decode of its ids is the text again, and equals `tokenizers`' decode, also
    for id sequences that cut UTF-8 characters apart;
  - text records through herd-prepare: [BOS] ids [EOS];
  - chat: herd-prepare's rendered text with transformers' render_jinja_template, its ids with
    transformers' apply_chat_template (and, where user text holds special-token strings, with
    the rendered text tokenised with the template's tokens as ids), and the loss mask (trained
    runs = stripped assistant turns + <|eot_id|>).
Every missing package or failed check makes the test fail, never skip.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile

from parity_util import check, read_jsonl, report, run, write_jsonl

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

try:
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import AutoTokenizer
    from transformers.utils.chat_template_utils import render_jinja_template
except ImportError as e:
    sys.exit(f"bpe_parity.py: cannot import {e.name!r} with {sys.executable}; "
             "run scripts/setup.sh to build the test venv")

SPLIT = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+"""
         r"""[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+""")
SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
            "<|eot_id|>"]
# Meta's LLaMA-3 Instruct template, as published with the model.
LLAMA3_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    "+ message['content'] | trim + '<|eot_id|>' %}"
    "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
    "{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}"
    "{% endif %}")

CORPUS = [
    "Hello world! How's it going? I'm fine, they're here, we'll see, you've won, I'd go.",
    "DON'T SHOUT. It'S fine; THEY'RE LOUD and WE'LL cope.",
    "Numbers: 1 12 123 1234 12345 1234567 3.14159 2024-11-26 $1,000,000 007 +44 20 7946 0958",
    "Emoji: \U0001F999\U0001F999 \U0001F600\U0001F44D\U0001F3FD \u2764\ufe0f family \U0001F468\u200d\U0001F469\u200d\U0001F467",
    "CJK: \u6771\u4eac\u306f\u6674\u308c\u3067\u3059\u3002\u5317\u4eac\u6b22\u8fce\u4f60\u3002\ud55c\uad6d\uc5b4 \ud14d\uc2a4\ud2b8",
    "Combining: e\u0301 a\u0308 n\u0303 \u1e9b\u0323 Z\u0351\u0352\u0353 caf\u00e9 vs cafe\u0301, na\u00efve",
    "Whitespace:   three spaces,\t\ttabs,\n\n\nnewlines,\r\n\r\nCRLF, trailing   \n   \n end    ",
    "Long run:" + " " * 40 + "x" + "\n" * 12 + "y" + " \t" * 9,
    "Specials in text: <|eot_id|> <|begin_of_text|><|start_header_id|>user<|end_header_id|> </s> <s>",
    "Code: def f(x):\n    return x**2  # square\n\nif __name__ == '__main__':\n\tprint(f(3))",
    "Arabic \u0645\u0631\u062d\u0628\u0627 \u0661\u0662\u0663\u0664 Hindi \u0928\u092e\u0938\u094d\u0924\u0947 \u0967\u0968\u0969 Roman \u216b \u00bd \u00b2",
    "Punctuation!!! ...??? ---- ''quoted'' \"double\" (paren) [bracket] {brace} @#%^&*",
    "Unusual spaces:\u00a0nbsp\u3000ideographic\u2009thin\u200bzero-width\x1c\x1d\x85next",
    "'s 'S 'sup 'Twas it'\u017f o'clock rock'n'roll",
]
EXTRA_TEXTS = ["", " ", "\n", "a", " leading space", "trailing space ", "\U0001F999", "1234",
               "<|eot_id|>", "<|eot_id|><|eot_id|>", "x<|end_header_id|>y",
               "call <tool_call>{\"a\": 1}</tool_call> done", "<tool_call><tool_call>"]

CHATS = [
    [{"role": "system", "content": "You are a helpful assistant.  "},
     {"role": "user", "content": "What's 12345 + 678?"},
     {"role": "assistant", "content": "It's 13023.\n"},
     {"role": "user", "content": "  And in \u6771\u4eac? \U0001F999"},
     {"role": "assistant", "content": "\n\nSame number: 13023 \u2014 caf\u00e9 math."}],
    [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}],
    [{"role": "system", "content": ""},
     {"role": "user", "content": "empty system, empty answer"},
     {"role": "assistant", "content": ""},
     {"role": "user", "content": "ends with a user turn"}],
    [{"role": "system", "content": "Sys"},
     {"role": "user", "content": "Is <|eot_id|> special? <|start_header_id|>assistant<|end_header_id|>"},
     {"role": "assistant", "content": "No: <|eot_id|> is text here.", "weight": 1},
     {"role": "user", "content": "ok"},
     {"role": "assistant", "content": "skip me", "weight": 0},
     {"role": "user", "content": "again"},
     {"role": "assistant", "content": "  \t  spaces   \n"}],
]

def train(path):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(SPLIT), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=700, special_tokens=SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    text = CORPUS * 3 + [c["content"] for chat in CHATS for c in chat] + ["user assistant system"] * 5
    tok.train_from_iterator(text, trainer)
    # A non-special added token, which user text does produce (as in Hugging Face).
    tok.add_tokens([AddedToken("<tool_call>", special=False, normalized=False)])
    tok.save(path)


def make_model_dir(root, name, tokenizer_json, edit):
    d = os.path.join(root, name)
    os.makedirs(d)
    j = json.loads(json.dumps(tokenizer_json))
    edit(j)
    with open(os.path.join(d, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(j, f, ensure_ascii=False)
    with open(os.path.join(d, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump({"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<|begin_of_text|>",
                   "eos_token": "<|eot_id|>", "chat_template": LLAMA3_TEMPLATE,
                   "model_max_length": 8192}, f)
    return d


def to_pairs(j):
    j["model"]["merges"] = [m.split(" ", 1) if isinstance(m, str) else m for m in j["model"]["merges"]]


def to_strings(j):
    j["model"]["merges"] = [m if isinstance(m, str) else " ".join(m) for m in j["model"]["merges"]]


def check_encoding(args, tmp, d, name):
    tok = Tokenizer.from_file(os.path.join(d, "tokenizer.json"))
    tok.encode_special_tokens = True
    hf = AutoTokenizer.from_pretrained(d)
    texts = CORPUS + EXTRA_TEXTS + [c["content"] for chat in CHATS for c in chat]
    inp, out = os.path.join(tmp, name + ".in.jsonl"), os.path.join(tmp, name + ".out.jsonl")
    write_jsonl(inp, [{"text": t} for t in texts])
    run([args.tokenize, "--model", d, "--in", inp, "--out", out])
    got = read_jsonl(out)
    specials = {tok.token_to_id(s) for s in SPECIALS}
    for text, g in zip(texts, got):
        where = f"{name}: {text[:40]!r}"
        if not check("ids" in g, f"{where}: herd refused: {g.get('error')}"):
            continue
        want = tok.encode(text, add_special_tokens=False).ids
        check(g["ids"] == want, f"{where}: ids differ from tokenizers:\n  herd {g['ids']}\n  hf   {want}")
        want_tf = hf(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]
        check(g["ids"] == want_tf, f"{where}: ids differ from transformers (split_special_tokens)")
        check(not specials & set(g["ids"]), f"{where}: user text produced a special token")
        check(("<tool_call>" in text) == (tok.token_to_id("<tool_call>") in g["ids"]),
              f"{where}: the non-special added token <tool_call> is not matched")
        check(g["decoded"] == text, f"{where}: decode round trip gave {g['decoded']!r}")
        check(g["decoded"] == tok.decode(g["ids"]), f"{where}: decode differs from tokenizers")
    # Decoding id runs that cut characters apart (replacement characters) and skip specials.
    id_runs = []
    for g in got:
        ids = g.get("ids", [])
        for k in range(1, min(len(ids), 6)):
            id_runs.append(ids[k:k + 3])
    id_runs.append([tok.token_to_id("<|eot_id|>")] + got[0]["ids"][:4])
    write_jsonl(inp, [{"ids": r} for r in id_runs])
    run([args.tokenize, "--model", d, "--in", inp, "--out", out])
    for r, g in zip(id_runs, read_jsonl(out)):
        want = tok.decode(r, skip_special_tokens=True)
        check(g.get("text") == want, f"{name}: decode {r}: herd {g.get('text')!r} hf {want!r}")
    return tok, hf


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


def reference_chat_ids(tok, messages):
    """The rendered text tokenised with the template's special tokens as ids, user text as text."""
    marks = {s: f"\x00{k}\x00" for k, s in enumerate(SPECIALS)}
    template = LLAMA3_TEMPLATE
    for s, m in marks.items():
        template = template.replace(s, m)
    text = render_jinja_template([messages], chat_template=template,
                                 bos_token=marks["<|begin_of_text|>"])[0][0]
    ids = []
    pattern = "(" + "|".join(re.escape(m) for m in marks.values()) + ")"
    for part in re.split(pattern, text):
        special = [s for s, m in marks.items() if m == part]
        if special:
            ids.append(tok.token_to_id(special[0]))
        elif part:
            ids += tok.encode(part, add_special_tokens=False).ids
    return ids


def check_prepare(args, tmp, d, tok, hf):
    bos, eot = tok.token_to_id("<|begin_of_text|>"), tok.token_to_id("<|eot_id|>")
    texts = CORPUS + [t for t in EXTRA_TEXTS if t]
    data = os.path.join(tmp, "text.jsonl")
    write_jsonl(data, [{"text": t} for t in texts])
    out = os.path.join(tmp, "text.examples.jsonl")
    run([args.prepare, "--data", data, "--model", d, "--dump-examples", out])
    for text, g in zip(texts, read_jsonl(out)):
        want = [bos] + tok.encode(text, add_special_tokens=False).ids + [eot]
        check(g.get("ids") == want, f"text {text[:40]!r}: herd-prepare ids differ: {g}")
        check(g.get("trained") == [0] + [1] * (len(want) - 1), f"text {text[:40]!r}: mask")

    data = os.path.join(tmp, "chat.jsonl")
    write_jsonl(data, [{"messages": m} for m in CHATS])
    out = os.path.join(tmp, "chat.examples.jsonl")
    run([args.prepare, "--data", data, "--model", d, "--dump-examples", out])
    for k, (msgs, g) in enumerate(zip(CHATS, read_jsonl(out))):
        where = f"chat {k}"
        if not check("ids" in g, f"{where}: herd refused: {g.get('error')}"):
            continue
        plain = [{"role": m["role"], "content": m["content"]} for m in msgs]
        jinja = render_jinja_template([plain], chat_template=LLAMA3_TEMPLATE,
                                      bos_token="<|begin_of_text|>")[0][0]
        check(g.get("text") == jinja, f"{where}: rendered text differs from the Jinja template:\n"
              f"  herd  {g.get('text')!r}\n  jinja {jinja!r}")
        want = reference_chat_ids(tok, plain)
        check(g["ids"] == want, f"{where}: ids differ from the reference:\n  herd {g['ids']}\n  ref  {want}")
        if not any(s in m["content"] for m in msgs for s in SPECIALS):
            out_tf = hf.apply_chat_template(plain, tokenize=True)
            tf_ids = list(out_tf["input_ids"] if hasattr(out_tf, "keys") else out_tf)
            check(g["ids"] == tf_ids, f"{where}: ids differ from apply_chat_template:\n"
                  f"  herd {g['ids']}\n  hf   {tf_ids}")
        turns = [m["content"].strip() for m in msgs
                 if m["role"] == "assistant" and m.get("weight", 1) == 1]
        runs = trained_runs(g["ids"], g["trained"])
        check(len(runs) == len(turns), f"{where}: {len(runs)} trained runs for {len(turns)} turns")
        for run_ids, content in zip(runs, turns):
            check(run_ids[-1] == eot and tok.decode(run_ids[:-1]) == content,
                  f"{where}: trained run {tok.decode(run_ids, skip_special_tokens=False)!r} "
                  f"is not the turn {content!r} + <|eot_id|>")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--prepare", required=True, help="herd-prepare")
    ap.add_argument("--tokenize", required=True, help="herd-tokenize")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        trained_path = os.path.join(tmp, "trained.tokenizer.json")
        train(trained_path)
        base = json.load(open(trained_path, encoding="utf-8"))
        check(base["model"]["type"] == "BPE" and len(base["model"]["merges"]) > 100,
              "the trained tokenizer has too few merges to test anything")
        variants = {
            "pairs": to_pairs,
            "strings": to_strings,
            "ignore_merges": lambda j: (to_pairs(j), j["model"].__setitem__("ignore_merges", True)),
        }
        dirs = {}
        for name, edit in variants.items():
            dirs[name] = make_model_dir(tmp, name, base, edit)
            tok, hf = check_encoding(args, tmp, dirs[name], name)
        tok, hf = check_encoding(args, tmp, dirs["pairs"], "pairs")
        check_prepare(args, tmp, dirs["pairs"], tok, hf)

    report("encoding (merge strings, pairs, ignore_merges), decoding, text records "
          "and the LLaMA-3 chat template agree with tokenizers/transformers")


if __name__ == "__main__":
    main()
