#!/usr/bin/env python3
"""Every sample dataset end to end (datasets/samples/README.md, DESIGN.md §3 steps 1-4, §4): a
real herd-coordinator on 127.0.0.1 port 0 with the tiny model published by a trainer that then
leaves. For each datasets/samples/*.jsonl the `herd` CLI uploads it (format auto-detected),
inspects it both ways -- `herd datasets inspect ID --model tiny-llama` at the coordinator and
`herd datasets inspect FILE --model DIR` through herd-prepare beside the CLI -- and dry-runs a
job on it. The two inspections must agree token for token, every format must show trained
tokens, and every format of DESIGN.md §4 must be among the samples."""
import glob
import json
import os

from datasets_e2e import check, run_scenario

JOB_YAML = """\
name: sample-{stem}
base_model: tiny-llama
dataset: {dataset}
lora: {{r: 4, alpha: 8}}
training:
  micro_batch_size: 1
  global_batch_size: 2
  max_seq_len: 256
"""

ALL_FORMATS = {"text", "prompt_completion", "chat", "alpaca", "tokenized"}
OPEN, CLOSE = "\u27e6", "\u27e7"  # the markers of trained runs when stdout is not a terminal


def check_rendered(what, rc, out, err, n):
    """The text output of `inspect -n n`: n examples, trained runs marked, no ANSI colour (not a
    terminal), totals with trained tokens."""
    total = [line for line in out.splitlines() if line.startswith("total: ")]
    trained = 0
    if total:
        # "total: 2 examples, 123 tokens, 45 trained (36.6%)"
        words = total[0].replace(",", "").split()
        trained = int(words[words.index("trained") - 1])
    check(rc == 0 and out.startswith("format: ") and f"--- example {n} (line " in out
          and f"--- example {n + 1} " not in out and OPEN in out and CLOSE in out
          and "\x1b[" not in out and trained > 0 and "not usable" not in out,
          f"{what}: {n} examples with trained tokens marked", rc, out[:3000], err)


def scenario(herd, tok_a, tok_b, samples, tmp):
    model_dir = os.path.join(tmp, "models", "tiny-llama")  # what publish_tiny_model made
    files = sorted(glob.glob(os.path.join(samples, "*.jsonl")))
    check(len(files) >= 5, "datasets/samples has a file per format", files)
    formats = set()
    for path in files:
        name = os.path.basename(path)
        stem = name.rsplit(".", 1)[0]
        rc, out, err = herd(tok_a, "datasets", "upload", path)
        ds_id = out.strip()
        check(rc == 0 and ds_id.startswith("ds_"), f"upload {name}", out, err)
        rc, out, err = herd(tok_a, "datasets", "get", ds_id, "-o", "json")
        d = json.loads(out) if rc == 0 else {}
        fmt = d.get("format", "").replace("RECORD_FORMAT_", "").lower()
        check(rc == 0 and fmt in ALL_FORMATS and int(d.get("validation", {}).get("records_invalid", 0)) == 0,
              f"{name} is READY as {fmt} with no invalid record", out, err)
        formats.add(fmt)

        # At the coordinator, with the published model's tokenizer.
        rc, remote, err = herd(tok_a, "datasets", "inspect", ds_id, "--model", "tiny-llama", "-n", "2")
        check_rendered(f"inspect {name} (uploaded)", rc, remote, err, 2)
        check(f"format: {fmt}" in remote, f"inspect {name} names the format", remote[:500])
        # Locally, herd-prepare beside the CLI over the same model files: the same text.
        rc, local, err = herd(None, "datasets", "inspect", path, "--model", model_dir, "-n", "2")
        check_rendered(f"inspect {name} (local file)", rc, local, err, 2)
        check(local == remote, f"inspect {name}: the local file and the uploaded dataset render the same",
              local[:1500], remote[:1500])

        rc, out, err = herd(tok_a, "datasets", "inspect", ds_id, "--model", "tiny-llama", "-o", "json")
        r = json.loads(out) if rc == 0 else {}
        examples = r.get("examples", [])
        check(rc == 0 and len(examples) == 3
              and all(len(e["pieces"]) == len(e["token_ids"]) == len(e["trained"]) > 0 for e in examples)
              and any(any(e["trained"]) for e in examples),
              f"inspect {name} -o json: 3 examples (the default) with ids, pieces and trained flags",
              out[:2000], err)

        job = os.path.join(tmp, f"{stem}.yaml")
        with open(job, "w") as f:
            f.write(JOB_YAML.format(stem=stem.replace("_", "-"), dataset=ds_id))
        rc, out, err = herd(tok_a, "jobs", "submit", job, "--dry-run")
        check(rc == 0 and "total steps:" in out and "sequences:" in out and fmt.upper() in out,
              f"jobs submit --dry-run on {name}", out, err)

    check(formats == ALL_FORMATS, "the samples cover every record format", sorted(formats))

    # The routes do not mix: a local file needs a model directory, an id a published name.
    qa = os.path.join(samples, "support_qa.jsonl")
    rc, out, err = herd(tok_a, "datasets", "inspect", qa, "--model", "tiny-llama")
    check(rc == 1 and "model directory" in err and "upload" in err,
          "inspect FILE --model NAME says to give a directory or upload the file", rc, out, err)
    rc, out, err = herd(tok_a, "datasets", "inspect", ds_id, "--model", "no-such-model")
    check(rc == 3 and "no-such-model" in err, "inspect with an unpublished model: not found (exit 3)", out, err)
    rc, out, err = herd(tok_b, "datasets", "inspect", ds_id, "--model", "tiny-llama")
    check(rc == 3, "another tenant cannot inspect the dataset (exit 3)", out, err)
    rc, out, err = herd(tok_a, "datasets", "inspect", "nothing-here.jsonl", "--model", model_dir)
    check(rc == 3, "inspect of a missing file: not found (exit 3)", out, err)


if __name__ == "__main__":
    run_scenario("samples_e2e", scenario, __doc__)
