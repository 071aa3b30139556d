#!/usr/bin/env python3
"""Trainers join the cluster (DESIGN.md §3 step 3): a real herd-coordinator on 127.0.0.1 port 0 and
two herd-trainer agents holding the tiny model register with a cluster token; `herd trainers list`
shows both idle, `herd models list` shows the model held by two trainers, a user token cannot
register a trainer, and an agent stopped with SIGTERM exits 0. Every process is killed when the
test ends, also on failure, and dies with this one."""
import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

from datasets_e2e import (CALL_TIMEOUT_S, READY_TIMEOUT_S, Herd, check, cluster_token, die_with_parent, make_token,
                          stop_all, wait_ready)


def wait_for(what, predicate, log_paths):
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)  # polling interval of a bounded wait on an observable condition
    check(False, what, *[open(p).read()[-2000:] for p in log_paths])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--coordinator", required=True)
    ap.add_argument("--trainer", required=True)
    ap.add_argument("--herd", required=True)
    ap.add_argument("--make-tiny-model", required=True)
    args = ap.parse_args()
    procs = []
    with tempfile.TemporaryDirectory() as tmp:
        data_dir, models = os.path.join(tmp, "data"), os.path.join(tmp, "models")
        subprocess.run([args.make_tiny_model, "--out", os.path.join(models, "tiny-llama")], check=True,
                       capture_output=True, timeout=CALL_TIMEOUT_S)
        user = make_token(args.coordinator, data_dir, "acme")
        cluster = cluster_token(args.coordinator, data_dir)
        token_file, user_token_file = os.path.join(tmp, "cluster.token"), os.path.join(tmp, "user.token")
        for path, value in ((token_file, cluster), (user_token_file, user)):
            with open(path, "w") as f:
                f.write(value + "\n")
            os.chmod(path, 0o600)
        logs = {name: os.path.join(tmp, name + ".log") for name in ("coordinator", "t1", "t2", "bad")}
        try:
            ready = os.path.join(tmp, "ready")
            coord = subprocess.Popen([args.coordinator, "--listen", "127.0.0.1:0", "--data-dir", data_dir,
                                      "--ready-file", ready], stdout=open(logs["coordinator"], "w"),
                                     stderr=subprocess.STDOUT, preexec_fn=die_with_parent)
            procs.append(coord)
            port = wait_ready(coord, ready, logs["coordinator"])
            endpoint = f"127.0.0.1:{port}"
            herd = Herd(args.herd, endpoint, tmp)

            def start_trainer(name, token_path):
                p = subprocess.Popen([args.trainer, "--coordinator", endpoint, "--models", models, "--name", name,
                                      "--token-file", token_path], stdout=open(logs[name], "w"),
                                     stderr=subprocess.STDOUT, preexec_fn=die_with_parent,
                                     env={**os.environ, "OMP_NUM_THREADS": "1"})
                procs.append(p)
                return p

            t1, t2 = start_trainer("t1", token_file), start_trainer("t2", token_file)

            def trainers():
                rc, out, err = herd(user, "trainers", "list", "-o", "json")
                if rc != 0:
                    return None
                listed = json.loads(out)
                idle = [t for t in listed if t.get("state") == "TRAINER_STATE_IDLE"]
                return listed if len(idle) == 2 else None

            listed = wait_for("both trainers registered and idle", trainers, [logs["t1"], logs["t2"]])
            check(sorted(t["name"] for t in listed) == ["t1", "t2"], "trainers list names both", listed)
            check(all(t.get("models") == ["tiny-llama"] for t in listed), "each trainer holds tiny-llama", listed)

            rc, out, err = herd(user, "models", "list", "-o", "json")
            models_listed = json.loads(out) if rc == 0 else []
            check(rc == 0 and len(models_listed) == 1 and models_listed[0]["name"] == "tiny-llama"
                  and len(models_listed[0].get("trainer_ids", [])) == 2, "models list: tiny-llama on 2 trainers",
                  out, err)
            rc, out, err = herd(user, "trainers", "list")
            check(rc == 0 and "t1" in out and "idle" in out, "trainers list as a table", out, err)
            rc, out, err = herd("herd_u_not_a_real_token_000000000000000000000", "trainers", "list")
            check(rc == 4, "a wrong token exits 4", rc, err)

            # A user token is not a cluster token: the agent is refused and says so.
            bad = start_trainer("bad", user_token_file)
            try:
                rc = bad.wait(timeout=READY_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                rc = None
            check(rc is not None and rc != 0, "an agent with a user token is refused", open(logs["bad"]).read())

            t1.send_signal(signal.SIGTERM)
            check(t1.wait(timeout=READY_TIMEOUT_S) == 0, "herd-trainer exits 0 on SIGTERM", open(logs["t1"]).read())
        finally:
            stop_all(procs)
    print("cluster_e2e: ok")


if __name__ == "__main__":
    main()
