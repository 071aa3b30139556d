#!/usr/bin/env python3
"""Submitting jobs end to end (DESIGN.md §3 step 2, §8, §11): a real herd-coordinator on 127.0.0.1
port 0 with a temp data dir and two tenants' tokens; the `herd` CLI uploads a dataset, submits a
job file (idempotency key: same spec -> same job, other spec -> refused), lists and gets it in
VALIDATING or QUEUED (a trainer published the tiny model and left, so nothing runs), hides it from another tenant (exit 3), cancels it (CANCELLED, with an event), and
rejects a bad job file naming the line and field (exit 2) and an unknown dataset (exit 3). The
coordinator is killed when the test ends, also on failure, and dies with this process."""
import json
import os

from datasets_e2e import check, run_scenario

JOB_YAML = """\
name: support-bot
base_model: tiny-llama
dataset: {dataset}
lora: {{r: 8, alpha: 16}}
training:
  micro_batch_size: 1
  global_batch_size: 4
  max_seq_len: 256
  activation_checkpointing: true
resources: {{trainers: 2}}  # more than ever register here: the jobs wait
"""


WAITING = ("JOB_STATE_VALIDATING", "JOB_STATE_QUEUED")


def write(path, text):
    with open(path, "w") as f:
        f.write(text)
    return path


def scenario(herd, tok_a, tok_b, samples, tmp):
    qa = os.path.join(samples, "support_qa.jsonl")
    rc, out, err = herd(tok_a, "datasets", "upload", qa)
    ds_id = out.strip()
    check(rc == 0 and ds_id.startswith("ds_"), "upload a dataset", out, err)

    job_file = write(os.path.join(tmp, "job.yaml"), JOB_YAML.format(dataset=ds_id))
    rc, out, err = herd(tok_a, "jobs", "submit", job_file, "--idempotency-key", "k-1")
    job_id = out.strip()
    check(rc == 0 and job_id.startswith("job_"), "submit prints a job id", out, err)

    rc, out, err = herd(tok_a, "jobs", "submit", job_file, "--idempotency-key", "k-1")
    check(rc == 0 and out.strip() == job_id, "the same key and spec return the same job", out, err)
    rc, out, err = herd(tok_a, "jobs", "submit", job_file, "--idempotency-key", "k-1",
                        "--name", "other-name")
    check(rc != 0 and out.strip() == "" and "k-1" in err,
          "the same key with another spec is refused", rc, out, err)
    # Without a key each submission is a new job.
    rc, out, err = herd(tok_a, "jobs", "submit", job_file, "--name", "second")
    second_id = out.strip()
    check(rc == 0 and second_id.startswith("job_") and second_id != job_id,
          "a submission without a key makes a new job", out, err)

    # A dry run prepares at the coordinator and prints the plan; it creates nothing.
    rc, out, err = herd(tok_a, "jobs", "submit", job_file, "--dry-run")
    check(rc == 0 and "total steps:" in out and "packing efficiency:" in out and "sequences:" in out
          and "PROMPT_COMPLETION" in out, "submit --dry-run prints the plan", out, err)
    rc, out, err = herd(tok_a, "jobs", "submit", job_file, "--dry-run", "-o", "json")
    plan = json.loads(out).get("plan", {}) if rc == 0 else {}
    check(rc == 0 and int(plan.get("total_steps", 0)) > 0 and int(plan.get("sequences", 0)) > 0
          and json.loads(out).get("id", "") == "", "submit --dry-run -o json: the plan, no id", out, err)
    rc, out, err = herd(tok_a, "jobs", "list", "-o", "json")
    listed = json.loads(out) if rc == 0 else []
    check(rc == 0 and [j["id"] for j in listed] == [second_id, job_id]
          and all(j["state"] in WAITING for j in listed),
          "list shows both jobs waiting (VALIDATING or QUEUED), newest first", out, err)
    rc, out, err = herd(tok_a, "jobs", "list", "--name-prefix", "support")
    check(rc == 0 and job_id in out and second_id not in out and ("VALIDATING" in out or "QUEUED" in out),
          "list --name-prefix (text)", out, err)

    rc, out, err = herd(tok_a, "jobs", "get", job_id, "-o", "json")
    j = json.loads(out) if rc == 0 else {}
    spec = j.get("spec", {})
    check(rc == 0 and j.get("state") in WAITING and j.get("idempotency_key") == "k-1"
          and spec.get("dataset_id") == ds_id and spec.get("name") == "support-bot"
          and spec.get("lora", {}).get("r") == 8
          and len(spec.get("lora", {}).get("target_modules", [])) == 7
          and spec.get("training", {}).get("global_batch_size") == 4
          and spec.get("training", {}).get("activation_checkpointing") is True
          and spec.get("checkpoints", {}).get("every_steps") in (100, "100"),
          "get returns the job with its spec, defaults filled in", out, err)
    rc, out, err = herd(tok_a, "jobs", "get", job_id)
    check(rc == 0 and ("VALIDATING" in out or "QUEUED" in out) and job_id in out, "get (text)", out, err)

    # Another tenant: the job answers exactly like a missing one.
    missing = "job_" + "z" * 26
    rc_other, _, err_other = herd(tok_b, "jobs", "get", job_id)
    rc_missing, _, err_missing = herd(tok_b, "jobs", "get", missing)
    check(rc_other == 3 and rc_missing == 3 and err_other.replace(job_id, missing) == err_missing,
          "another tenant's job answers like a missing one (exit 3)", err_other, err_missing)
    rc, out, err = herd(tok_b, "jobs", "cancel", job_id)
    check(rc == 3, "another tenant cannot cancel it", out, err)
    rc, out, err = herd(tok_b, "jobs", "list", "-o", "json")
    check(rc == 0 and json.loads(out) == [], "another tenant lists no jobs", out, err)

    rc, out, err = herd(tok_a, "jobs", "cancel", job_id, "--reason", "testing", "-o", "json")
    j = json.loads(out) if rc == 0 else {}
    check(rc == 0 and j.get("state") == "JOB_STATE_CANCELLED"
          and j.get("failure", {}).get("code") == "CANCELLED", "cancel -> CANCELLED", out, err)
    rc, out, err = herd(tok_a, "jobs", "events", job_id, "-o", "json")
    events = json.loads(out) if rc == 0 else []
    check(rc == 0 and events[0].get("state") == "JOB_STATE_VALIDATING"
          and events[-1].get("state") == "JOB_STATE_CANCELLED"
          and events[-1].get("previous_state") in WAITING,
          "events list the cancellation", out, err)
    rc, out, err = herd(tok_a, "jobs", "events", job_id)
    check(rc == 0 and "STATE_CHANGED" in out, "events (text)", out, err)
    rc, out, err = herd(tok_a, "jobs", "list", "--state", "cancelled", "-o", "json")
    check(rc == 0 and [j["id"] for j in json.loads(out)] == [job_id], "list --state cancelled", out, err)

    # A bad field: exit 2 naming the file, the line and the field; nothing submitted.
    bad = write(os.path.join(tmp, "bad.yaml"), JOB_YAML.format(dataset=ds_id).replace(
        "max_seq_len: 256", "max_seq_len: 4"))
    rc, out, err = herd(tok_a, "jobs", "submit", bad)
    check(rc == 2 and "bad.yaml:8" in err and "training.max_seq_len" in err and out.strip() == "",
          "a job file with a bad value exits 2 naming line 8 and the field", out, err)
    typo = write(os.path.join(tmp, "typo.yaml"), JOB_YAML.format(dataset=ds_id).replace(
        "max_seq_len: 256", "max_seq_len: long"))
    rc, out, err = herd(tok_a, "jobs", "submit", typo)
    check(rc == 2 and "typo.yaml:8" in err and "max_seq_len" in err,
          "a job file with a malformed value exits 2 naming line 8 and the field", out, err)
    rc, out, err = herd(tok_a, "jobs", "list", "-o", "json")
    check(rc == 0 and len(json.loads(out)) == 2, "nothing submitted for the bad files", out, err)

    # Unknown dataset (and another tenant's dataset): exit 3.
    rc, out, err = herd(tok_a, "jobs", "submit", job_file, "--dataset", "ds_" + "q" * 26)
    check(rc == 3, "an unknown dataset exits 3", out, err)
    rc, out, err = herd(tok_b, "jobs", "submit", job_file)
    check(rc == 3, "another tenant's dataset exits 3", out, err)
    rc, out, err = herd(None, "jobs", "list")
    check(rc == 4, "no token exits 4", out, err)
    # A base model no trainer ever published: refused at submission (exit 2), nothing made.
    rc, out, err = herd(tok_a, "jobs", "submit", job_file, "--base-model", "llama-nowhere")
    check(rc == 2 and "llama-nowhere" in err and out.strip() == "", "an unknown base model exits 2", out, err)

    # A local path as the dataset: the CLI uploads it first and submits with the new id.
    local = write(os.path.join(tmp, "local.yaml"), JOB_YAML.format(dataset=os.path.join(samples, "support_chat.jsonl")))
    rc, out, err = herd(tok_a, "jobs", "submit", local, "-o", "json")
    submitted = json.loads(out) if rc == 0 else {}
    uploaded = submitted.get("spec", {}).get("dataset_id", "")
    check(rc == 0 and uploaded.startswith("ds_") and uploaded != ds_id,
          "a local dataset path is uploaded first and the job names the new dataset", out, err)
    rc, out, err = herd(tok_a, "datasets", "get", uploaded)
    check(rc == 0, "the uploaded dataset exists", out, err)


if __name__ == "__main__":
    run_scenario("jobs_e2e", scenario, __doc__)
