#!/usr/bin/env python3
"""Metrics end to end (DESIGN.md §7, docs/metrics.md): a real herd-coordinator and one herd-trainer,
both with /metrics on 127.0.0.1 port 0 and a --metrics-ready-file that names the port they got.
The trainer registers that address; the coordinator lists it in its Prometheus file_sd file
(<data_dir>/prometheus/trainers.json); both scrapes carry the contract's families and pass
`promtool check metrics`; /healthz answers. Every process is killed when the test ends."""
import argparse
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import urllib.request

from cluster_e2e import cluster_token, wait_for
from datasets_e2e import CALL_TIMEOUT_S, check, die_with_parent, stop_all, wait_ready


def scrape(port, path="/metrics"):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=CALL_TIMEOUT_S) as r:
        return r.status, r.read().decode()


def lint(text, what):
    promtool = shutil.which("promtool") or "/usr/bin/promtool"
    p = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True,
                       timeout=CALL_TIMEOUT_S)
    check(p.returncode == 0 and not (p.stdout + p.stderr).strip(), f"promtool check metrics: {what}",
          p.stdout, p.stderr)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--coordinator", required=True)
    ap.add_argument("--trainer", required=True)
    ap.add_argument("--make-tiny-model", required=True)
    args = ap.parse_args()
    procs = []
    with tempfile.TemporaryDirectory() as tmp:
        data_dir, models = os.path.join(tmp, "data"), os.path.join(tmp, "models")
        subprocess.run([args.make_tiny_model, "--out", os.path.join(models, "tiny-llama")], check=True,
                       capture_output=True, timeout=CALL_TIMEOUT_S)
        token_file = os.path.join(tmp, "cluster.token")
        with open(token_file, "w") as f:
            f.write(cluster_token(args.coordinator, data_dir) + "\n")
        os.chmod(token_file, 0o600)
        logs = {name: os.path.join(tmp, name + ".log") for name in ("coordinator", "t1")}
        try:
            ready, metrics_ready = os.path.join(tmp, "ready"), os.path.join(tmp, "metrics.ready")
            coord = subprocess.Popen([args.coordinator, "--listen", "127.0.0.1:0", "--data-dir", data_dir,
                                      "--ready-file", ready, "--metrics-listen", "127.0.0.1:0",
                                      "--metrics-ready-file", metrics_ready],
                                     stdout=open(logs["coordinator"], "w"), stderr=subprocess.STDOUT,
                                     preexec_fn=die_with_parent)
            procs.append(coord)
            port = wait_ready(coord, ready, logs["coordinator"])
            # Written before the gRPC ready file: present once that one is.
            with open(metrics_ready) as f:
                metrics_port = int(f.read().strip())

            t1_ready = os.path.join(tmp, "t1.metrics.ready")
            t1 = subprocess.Popen([args.trainer, "--coordinator", f"127.0.0.1:{port}", "--models", models,
                                   "--name", "t1", "--token-file", token_file, "--metrics-listen", "127.0.0.1:0",
                                   "--metrics-ready-file", t1_ready], stdout=open(logs["t1"], "w"),
                                  stderr=subprocess.STDOUT, preexec_fn=die_with_parent,
                                  env={**os.environ, "OMP_NUM_THREADS": "1"})
            procs.append(t1)
            t1_port = wait_ready(t1, t1_ready, logs["t1"])

            sd_path = os.path.join(data_dir, "prometheus", "trainers.json")

            def listed():
                try:
                    with open(sd_path) as f:
                        groups = json.load(f)
                except (FileNotFoundError, json.JSONDecodeError):
                    return None
                return groups if groups else None

            groups = wait_for("the trainer in the file_sd file", listed, [logs["coordinator"], logs["t1"]])
            check(groups == [{"targets": [f"127.0.0.1:{t1_port}"], "labels": {"trainer": "t1", "device": "cpu"}}],
                  "file_sd lists the trainer's metrics address", groups)

            # The RPC is counted as its answer goes out, which may be just after the file is written.
            registered = re.compile(r'^herd_rpc_requests_total\{method="TrainerService/RegisterTrainer",code="OK"\} '
                                    r'[1-9][0-9]*$', re.M)
            text = wait_for("RegisterTrainer counted", lambda: (lambda t: t if registered.search(t) else None)(
                scrape(metrics_port)[1]), [logs["coordinator"]])
            for line in ('herd_trainers{state="idle"} 1', 'herd_jobs{state="RUNNING"} 0', "herd_queue_depth 0",
                         'herd_scheduler_decisions_total{decision="world_formed"} 0',
                         'herd_rpc_requests_total{method="JobService/GetJob",code="OK"} 0'):
                check(line + "\n" in text, f"coordinator scrape has {line}", text)
            for family in ("herd_storage_bytes", "herd_data_dir_free_bytes", "herd_rpc_duration_seconds",
                           "herd_tenant_trained_tokens_total", "herd_checkpoint_seconds", "herd_eval_loss"):
                check(f"# TYPE {family} " in text, f"coordinator scrape has {family}", text)
            lint(text, "coordinator")
            check(scrape(metrics_port, "/healthz")[0] == 200, "coordinator /healthz")

            status, text = scrape(t1_port)
            check(status == 200 and "herd_engine_running 0\n" in text
                  and 'herd_engine_exits_total{reason="COMPLETED"} 0\n' in text
                  and "# TYPE herd_step_seconds histogram" in text, "trainer scrape", text)
            check("herd_mfu_ratio" not in text, "no GPU series on a CPU trainer", text)
            lint(text, "trainer")
        finally:
            stop_all(procs)
    print("metrics_e2e: ok")


if __name__ == "__main__":
    main()
