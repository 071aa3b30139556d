#!/usr/bin/env python3
"""The first user path end to end (DESIGN.md §3 step 1, §8, §11): a real herd-coordinator on
127.0.0.1 port 0 with a temp data dir, tokens made by its `token create`, and the `herd` CLI
uploading, listing, getting and deleting datasets. The coordinator is killed when the test ends,
also on failure (and dies with this process: PR_SET_PDEATHSIG)."""
import argparse
import ctypes
import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

READY_TIMEOUT_S = 60  # generous: catches hangs, does not measure speed
CALL_TIMEOUT_S = 120


def die_with_parent():
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def check(cond, what, *details):
    if not cond:
        print("FAIL:", what, file=sys.stderr)
        for d in details:
            print("  ", d, file=sys.stderr)
        sys.exit(1)
    print("ok:", what)


class Herd:
    def __init__(self, binary, endpoint, home):
        self.binary, self.endpoint, self.home = binary, endpoint, home

    def __call__(self, token, *args):
        env = {"PATH": os.environ.get("PATH", ""), "HOME": self.home,
               "HERD_ENDPOINT": self.endpoint}
        if token is not None:
            env["HERD_TOKEN"] = token
        p = subprocess.run([self.binary, *args], env=env, capture_output=True, text=True,
                           timeout=CALL_TIMEOUT_S)
        return p.returncode, p.stdout, p.stderr


def make_token(coordinator, data_dir, tenant):
    p = subprocess.run([coordinator, "token", "create", "--tenant", tenant, "--data-dir", data_dir],
                       capture_output=True, text=True, timeout=CALL_TIMEOUT_S)
    check(p.returncode == 0 and p.stdout.strip().startswith("herd_u_"),
          f"token create --tenant {tenant}", p.stdout, p.stderr)
    return p.stdout.strip()


def cluster_token(coordinator, data_dir):
    """A cluster token for herd-trainer agents (made while the coordinator is stopped)."""
    p = subprocess.run([coordinator, "token", "create", "--cluster", "--data-dir", data_dir],
                       capture_output=True, text=True, timeout=CALL_TIMEOUT_S)
    check(p.returncode == 0 and p.stdout.strip().startswith("herd_c_"), "token create --cluster", p.stdout, p.stderr)
    return p.stdout.strip()


def stop_all(procs):
    """Kills and reaps every process of `procs` still running (a test's cluster, at its end)."""
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait()


def wait_ready(proc, ready_file, log_path):
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            check(False, "coordinator starts", open(log_path).read())
        try:
            with open(ready_file) as f:
                port = f.read().strip()
            if port:
                return int(port)
        except FileNotFoundError:
            pass
        time.sleep(0.05)  # polling interval of a bounded wait, not a synchronisation sleep
    check(False, f"coordinator ready within {READY_TIMEOUT_S} s", open(log_path).read())


def scenario(herd, tok_a, tok_b, samples, tmp):
    qa = os.path.join(samples, "support_qa.jsonl")
    with open(qa, "rb") as f:
        qa_bytes = f.read()
    qa_records = sum(1 for line in qa_bytes.splitlines() if line.strip())

    # Upload a good file: the id on stdout.
    rc, out, err = herd(tok_a, "datasets", "upload", qa)
    ds_id = out.strip()
    check(rc == 0 and ds_id.startswith("ds_"), "upload support_qa.jsonl prints a dataset id", out, err)

    rc, out, err = herd(tok_a, "datasets", "list", "--output", "json")
    listed = json.loads(out) if rc == 0 else []
    check(rc == 0 and [d["id"] for d in listed] == [ds_id], "list shows the dataset", out, err)
    rc, out, err = herd(tok_a, "datasets", "list")
    check(rc == 0 and ds_id in out and "support_qa.jsonl" in out, "list (text)", out, err)

    rc, out, err = herd(tok_a, "datasets", "get", ds_id, "-o", "json")
    d = json.loads(out) if rc == 0 else {}
    check(rc == 0 and d.get("state") == "DATASET_STATE_READY"
          and int(d.get("record_count", 0)) == qa_records
          and d.get("sha256") == hashlib.sha256(qa_bytes).hexdigest()
          and int(d.get("size_bytes", 0)) == len(qa_bytes)
          and d.get("format") == "RECORD_FORMAT_PROMPT_COMPLETION"
          and d.get("name") == "support_qa.jsonl",
          "get returns the READY dataset with its records, digest and format", out, err)

    # A malformed file is rejected whole with line numbers, exit 2, nothing stored.
    bad = os.path.join(tmp, "bad.jsonl")
    with open(bad, "w") as f:
        f.write('{"prompt": "a", "completion": "b"}\n'
                'this is not json\n'
                '{"prompt": "c", "completion": "d"}\n'
                '{"prompt": "e"}\n'
                '{"prompt": "f", "completion": "g"}\n')
    rc, out, err = herd(tok_a, "datasets", "upload", bad)
    check(rc == 2 and "line 2" in err and "line 4" in err and "completion" in err
          and out.strip() == "", "malformed file rejected (exit 2) listing lines 2 and 4", out, err)
    rc, out, err = herd(tok_a, "datasets", "list", "-o", "json")
    check(rc == 0 and [d["id"] for d in json.loads(out)] == [ds_id],
          "nothing stored for the rejected file", out, err)

    # --skip-invalid keeps the valid records and reports the dropped ones.
    rc, out, err = herd(tok_a, "datasets", "upload", bad, "--skip-invalid", "--name", "bad-kept")
    kept_id = out.strip()
    check(rc == 0 and kept_id.startswith("ds_") and kept_id != ds_id and "line 2" in err,
          "upload --skip-invalid keeps the valid records", out, err)
    rc, out, err = herd(tok_a, "datasets", "get", kept_id, "-o", "json")
    d = json.loads(out) if rc == 0 else {}
    v = d.get("validation", {})
    check(rc == 0 and int(d.get("record_count", 0)) == 3 and d.get("skip_invalid") is True
          and int(v.get("records_invalid", 0)) == 2 and int(v.get("records_total", 0)) == 5
          and [int(p["line"]) for p in v.get("problems", [])] == [2, 4],
          "skip_invalid dataset: 3 kept, 2 dropped at lines 2 and 4", out, err)

    # Tokens: wrong or missing -> exit 4.
    rc, out, err = herd("herd_u_" + "a" * 52, "datasets", "list")
    check(rc == 4, "a wrong token exits 4", out, err)
    rc, out, err = herd(None, "datasets", "upload", qa)
    check(rc == 4, "no token exits 4", out, err)

    # Another tenant sees nothing, and the dataset answers exactly like a missing one.
    rc, out, err = herd(tok_b, "datasets", "list", "-o", "json")
    check(rc == 0 and json.loads(out) == [], "another tenant lists no datasets", out, err)
    missing = "ds_" + "z" * 26
    rc_other, _, err_other = herd(tok_b, "datasets", "get", ds_id)
    rc_missing, _, err_missing = herd(tok_b, "datasets", "get", missing)
    check(rc_other == 3 and rc_missing == 3 and err_other.replace(ds_id, missing) == err_missing,
          "another tenant's dataset answers like a missing one (exit 3)", err_other, err_missing)
    rc, out, err = herd(tok_b, "datasets", "delete", ds_id)
    check(rc == 3, "another tenant cannot delete it", out, err)

    # Delete, then it is gone.
    rc, out, err = herd(tok_a, "datasets", "delete", kept_id)
    check(rc == 0, "delete", out, err)
    rc, out, err = herd(tok_a, "datasets", "get", kept_id)
    check(rc == 3, "deleted dataset is not found", out, err)

    # Uploading the same file again makes a new dataset of the same bytes.
    rc, out, err = herd(tok_a, "datasets", "upload", qa, "--name", "again")
    check(rc == 0 and out.strip().startswith("ds_") and out.strip() != ds_id,
          "the same file uploads again", out, err)


def publish_tiny_model(args, endpoint, cluster_token, herd, token, tmp):
    """A trainer holding the tiny model registers (publishing it, DESIGN.md §3 step 3) and leaves
    again, so jobs on it can be submitted but none runs."""
    models = os.path.join(tmp, "models")
    subprocess.run([args.make_tiny_model, "--out", os.path.join(models, "tiny-llama")], check=True,
                   capture_output=True, timeout=CALL_TIMEOUT_S)
    token_file = os.path.join(tmp, "cluster.token")
    with open(token_file, "w") as f:
        f.write(cluster_token + "\n")
    log = os.path.join(tmp, "trainer.log")
    trainer = subprocess.Popen([args.trainer, "--coordinator", endpoint, "--models", models, "--name", "publisher",
                                "--token-file", token_file], cwd=tmp, stdout=open(log, "w"),
                               stderr=subprocess.STDOUT, preexec_fn=die_with_parent)
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            rc, out, _ = herd(token, "models", "list", "-o", "json")
            if rc == 0 and any(m.get("name") == "tiny-llama" for m in json.loads(out)):
                break
            time.sleep(0.1)  # polling interval of a bounded wait on an observable condition
        else:
            check(False, "the trainer publishes tiny-llama", open(log).read())
    finally:
        trainer.terminate()
        trainer.wait(timeout=READY_TIMEOUT_S)


def run_scenario(name, scenario, description):
    """Parses --coordinator/--herd/--samples, makes two tenants' tokens, starts a coordinator on
    127.0.0.1 port 0, runs scenario(herd, tok_a, tok_b, samples, tmp), and stops the coordinator
    (which must then exit 0), also on failure. Shared by the end-to-end tests of the user paths."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--coordinator", required=True)
    parser.add_argument("--herd", required=True)
    parser.add_argument("--samples", required=True)
    parser.add_argument("--trainer", help="herd-trainer: publish the tiny model before the scenario")
    parser.add_argument("--make-tiny-model", help="herd-make-tiny-model (with --trainer)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix=f"herd-{name}-") as tmp:
        data_dir = os.path.join(tmp, "data")
        # Tokens first: `token create` opens the data dir, which the running coordinator locks.
        tok_a = make_token(args.coordinator, data_dir, "acme")
        tok_b = make_token(args.coordinator, data_dir, "globex")
        trainer_token = cluster_token(args.coordinator, data_dir) if args.trainer else None
        ready = os.path.join(tmp, "ready")
        log_path = os.path.join(tmp, "coordinator.log")
        with open(log_path, "w") as log:
            proc = subprocess.Popen(
                [args.coordinator, "--listen", "127.0.0.1:0", "--data-dir", data_dir,
                 "--ready-file", ready],
                stdout=log, stderr=subprocess.STDOUT, preexec_fn=die_with_parent)
        try:
            port = wait_ready(proc, ready, log_path)
            herd = Herd(args.herd, f"127.0.0.1:{port}", tmp)
            if args.trainer:
                publish_tiny_model(args, f"127.0.0.1:{port}", trainer_token, herd, tok_a, tmp)
            try:
                scenario(herd, tok_a, tok_b, args.samples, tmp)
            except SystemExit:
                print("--- coordinator log ---\n" + open(log_path).read(), file=sys.stderr)
                raise
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        check(proc.returncode == 0, "coordinator stops cleanly on SIGTERM", open(log_path).read())
    print(f"{name}: all checks passed")


if __name__ == "__main__":
    run_scenario("datasets_e2e", scenario, __doc__)
