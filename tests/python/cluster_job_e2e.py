#!/usr/bin/env python3
"""A job from `herd jobs submit` to `herd adapters download` across trainers (DESIGN.md §3): a real
herd-coordinator and herd-trainer agents on 127.0.0.1 running herd-engine children on the tiny model,
driven through the `herd` CLI. Cases (--case):

  two_vs_one   a 2-trainer job and the same job on 1 trainer: both SUCCEEDED through `jobs watch`,
               both adapters downloaded with the PEFT keys, and equal (max rel. difference < 1e-5).
  cancel       two jobs at once on four trainers (disjoint worlds); cancelling one stops its
               engines and frees its trainers, which then run a third job to SUCCEEDED.
  restart      kill -9 the coordinator mid-job, start it again on the same port and data dir: the
               dataset, the job and the stored checkpoints are there with the same sha256, and the
               job finishes in the same generation, never RECOVERING: its trainers came back within
               the grace period and their engines kept training (DESIGN.md §3.9).
  restart_lost the same, but one trainer is killed while the coordinator is down and a third one
               starts after the restart: the job goes RECOVERING naming the missing trainer (when
               the survivor's engine fails for want of its peer, at the latest when the grace
               period, trainer_grace_seconds: 20, runs out), and finishes in generation 2 on the
               trainer that came back and the new one, resuming from a stored checkpoint.
  lost_trainer three trainers, a 2-trainer job; after a checkpoint is stored one trainer of its world
               is killed -9 with its engine (lease 3 s): the job goes RECOVERING (DESIGN.md §3.8),
               forms generation 2 on the two live trainers resuming after a stored checkpoint, and
               SUCCEEDED.

Every process is killed when the test ends, also on failure, and dies with this one."""
import argparse
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

from datasets_e2e import CALL_TIMEOUT_S, Herd, check, cluster_token, die_with_parent, make_token, stop_all

READY_TIMEOUT_S = 120  # generous: catches hangs, does not measure speed
JOB_TIMEOUT_S = 600

JOB_YAML = """\
name: {name}
base_model: tiny-llama
dataset: {dataset}
validation_split: 0.05
lora: {{r: 4, alpha: 8, target_modules: all-linear}}
training:
  micro_batch_size: 1
  global_batch_size: 4
  max_seq_len: 128
  learning_rate: 1.0e-3
  max_steps: {steps}
  epochs: {epochs}
  seed: 11
checkpoints: {{every_steps: {every}, keep: 2}}
resources: {{trainers: {trainers}}}
"""


def wait_for(what, predicate, logs, timeout=READY_TIMEOUT_S):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)  # polling interval of a bounded wait on an observable condition
    check(False, what, *logs())


class Cluster:
    """A coordinator and trainers in `tmp`, all killed by stop()."""

    def __init__(self, args, tmp):
        self.args, self.tmp = args, tmp
        self.procs, self.trainers, self.coordinator = [], {}, None
        self.data_dir = os.path.join(tmp, "data")
        self.models = os.path.join(tmp, "models")
        subprocess.run([args.make_tiny_model, "--out", os.path.join(self.models, "tiny-llama")], check=True,
                       capture_output=True, timeout=CALL_TIMEOUT_S)
        self.user = make_token(args.coordinator, self.data_dir, "acme")
        self.other = make_token(args.coordinator, self.data_dir, "globex")
        self.token_file = os.path.join(tmp, "cluster.token")
        with open(self.token_file, "w") as f:
            f.write(cluster_token(args.coordinator, self.data_dir) + "\n")
        os.chmod(self.token_file, 0o600)
        self.port = 0
        self.herd = None

    def log(self, name):
        return os.path.join(self.tmp, name + ".log")

    def logs(self):
        out = []
        for name in ["coordinator", *self.trainers]:
            try:
                with open(self.log(name)) as f:
                    out.append(f"--- {name} ---\n" + f.read()[-4000:])
            except FileNotFoundError:
                pass
        return out

    def start_coordinator(self, config=None):
        """Starts the coordinator (on the port it had, if any); `config` is coordinator.yaml text."""
        ready = os.path.join(self.tmp, "ready")
        if os.path.exists(ready):
            os.unlink(ready)
        extra = []
        if config is not None:
            path = os.path.join(self.tmp, "coordinator.yaml")
            with open(path, "w") as f:
                f.write(config)
            extra = ["--config", path]
        self.coordinator = subprocess.Popen(
            [self.args.coordinator, "--listen", f"127.0.0.1:{self.port}", "--data-dir", self.data_dir,
             "--ready-file", ready, *extra], stdout=open(self.log("coordinator"), "a"), stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent)
        self.procs.append(self.coordinator)

        def port():
            if self.coordinator.poll() is not None:
                check(False, "coordinator starts", *self.logs())
            try:
                with open(ready) as f:
                    return int(f.read().strip() or 0)
            except FileNotFoundError:
                return 0

        self.port = wait_for("coordinator ready", port, self.logs)
        self.herd = Herd(self.args.herd, f"127.0.0.1:{self.port}", self.tmp)

    def start_trainer(self, name):
        work = os.path.join(self.tmp, name)
        os.makedirs(work, exist_ok=True)
        p = subprocess.Popen([self.args.trainer, "--coordinator", f"127.0.0.1:{self.port}", "--models", self.models,
                              "--name", name, "--token-file", self.token_file], cwd=work,
                             stdout=open(self.log(name), "w"), stderr=subprocess.STDOUT, preexec_fn=die_with_parent,
                             env={**os.environ, "OMP_NUM_THREADS": "1"})
        self.procs.append(p)
        self.trainers[name] = p
        return p

    def wait_idle(self, n):
        def idle():
            rc, out, _ = self.cli("trainers", "list", "-o", "json")
            if rc != 0:
                return None
            listed = [t for t in json.loads(out) if t.get("state") == "TRAINER_STATE_IDLE"]
            return listed if len(listed) >= n else None
        return wait_for(f"{n} trainers idle", idle, self.logs)

    def cli(self, *args, token=None):
        return self.herd(token or self.user, *args)

    def stop(self):
        stop_all(self.procs)


def submit(cluster, dataset, name, trainers, steps=6, every=3, epochs=1):
    path = os.path.join(cluster.tmp, name + ".yaml")
    with open(path, "w") as f:
        f.write(JOB_YAML.format(name=name, dataset=dataset, trainers=trainers, steps=steps, every=every,
                                epochs=epochs))
    rc, out, err = cluster.cli("jobs", "submit", path)
    check(rc == 0 and out.strip().startswith("job_"), f"submit {name} ({trainers} trainer(s))", out, err,
          *cluster.logs())
    return out.strip()


def get_job(cluster, job_id):
    rc, out, err = cluster.cli("jobs", "get", job_id, "-o", "json")
    if rc != 0:
        check(False, f"get {job_id}", out, err)
    return json.loads(out)


def watch(cluster, job_id, expect_rc=0):
    p = subprocess.run([cluster.args.herd, "jobs", "watch", job_id],
                       env={"PATH": os.environ.get("PATH", ""), "HOME": cluster.tmp,
                            "HERD_ENDPOINT": f"127.0.0.1:{cluster.port}", "HERD_TOKEN": cluster.user},
                       capture_output=True, text=True, timeout=JOB_TIMEOUT_S)
    check(p.returncode == expect_rc, f"jobs watch {job_id} exits {expect_rc}", p.returncode, p.stdout[-3000:],
          p.stderr[-3000:], *cluster.logs())
    return p.stdout


def download(cluster, job_id, out_dir, *extra):
    rc, out, err = cluster.cli("adapters", "download", job_id, "-o", out_dir, *extra)
    check(rc == 0 and os.path.isfile(os.path.join(out_dir, "adapter_model.safetensors")),
          f"adapters download {job_id}", out, err)
    check(not any(n.startswith(".") for n in os.listdir(out_dir)), "no partial files at the destination",
          os.listdir(out_dir))
    return out_dir


def check_peft(adapter_dir, layers):
    from safetensors.numpy import load_file
    with open(os.path.join(adapter_dir, "adapter_config.json")) as f:
        config = json.load(f)
    check(config.get("peft_type") == "LORA" and config.get("r") == 4 and config.get("lora_alpha") == 8,
          "adapter_config.json is a PEFT LoRA config", config)
    tensors = load_file(os.path.join(adapter_dir, "adapter_model.safetensors"))
    want = {f"base_model.model.model.layers.{i}.{m}.{p}.lora_{ab}.weight"
            for i in range(layers)
            for m, projs in (("self_attn", ("q_proj", "k_proj", "v_proj", "o_proj")),
                             ("mlp", ("gate_proj", "up_proj", "down_proj")))
            for p in projs for ab in "AB"}
    check(set(tensors) == want, "the adapter has exactly the PEFT keys", sorted(set(tensors) ^ want)[:6])
    return tensors


def model_layers(cluster):
    with open(os.path.join(cluster.models, "tiny-llama", "config.json")) as f:
        return json.load(f)["num_hidden_layers"]


def case_two_vs_one(cluster, dataset):
    for name in ("t1", "t2"):
        cluster.start_trainer(name)
    cluster.wait_idle(2)
    start = time.monotonic()
    job2 = submit(cluster, dataset, "two", trainers=2)
    out = watch(cluster, job2)
    elapsed = time.monotonic() - start
    check("SUCCEEDED" in out, "watch shows SUCCEEDED", out[-2000:])
    # (Progress lines are coalesced to one a second, so a job this short may end before one is
    # due: their rendering is covered by cli_jobs_watch_test.)
    j = get_job(cluster, job2)
    check(j["state"] == "JOB_STATE_SUCCEEDED" and int(j["progress"].get("step", 0)) == 6
          if "progress" in j else j["state"] == "JOB_STATE_SUCCEEDED", "2-trainer job SUCCEEDED", j)
    print(f"figure: submit-to-SUCCEEDED of the 2-trainer job: {elapsed:.1f} s")
    # The loss history outlives the job (stored when it ends).
    rc, out, err = cluster.cli("jobs", "get", job2, "--metrics")
    check(rc == 0 and "loss history (6 steps)" in out and len(re.findall(r"step +\d+ +loss \d", out)) == 6,
          "jobs get --metrics prints the loss history of every step", out, err)
    rc, out, err = cluster.cli("jobs", "get", job2, "--metrics", "-o", "json")
    history = json.loads(out).get("loss_history", []) if rc == 0 else []
    check([int(p["step"]) for p in history] == list(range(1, 7)) and all(float(p["loss"]) > 0 for p in history),
          "jobs get --metrics -o json carries loss_history", out, err)
    rc, out, err = cluster.cli("adapters", "list", job2, "-o", "json")
    cks = json.loads(out) if rc == 0 else []
    check(rc == 0 and any(c.get("final") for c in cks), "adapters list shows the final adapter", out, err)

    job1 = submit(cluster, dataset, "one", trainers=1)
    watch(cluster, job1)
    a2 = check_peft(download(cluster, job2, os.path.join(cluster.tmp, "out2")), model_layers(cluster))
    a1 = check_peft(download(cluster, job1, os.path.join(cluster.tmp, "out1")), model_layers(cluster))
    import numpy as np
    worst = 0.0
    for k in a1:
        ref = np.abs(a1[k]).max()
        if ref > 0:
            worst = max(worst, float(np.abs(a1[k] - a2[k]).max() / ref))
    print(f"figure: 2 trainers vs 1, max relative difference over adapter tensors: {worst:.3g}")
    check(worst < 1e-5, "the 2-trainer adapter equals the 1-trainer adapter (< 1e-5)", worst)
    # Another tenant sees nothing of it.
    rc, out, err = cluster.cli("adapters", "download", job2, "-o", os.path.join(cluster.tmp, "stolen"),
                               token=cluster.other)
    check(rc == 3 and not os.path.exists(os.path.join(cluster.tmp, "stolen")), "another tenant: not found (3)",
          rc, err)


def case_cancel(cluster, dataset):
    for name in ("t1", "t2", "t3", "t4"):
        cluster.start_trainer(name)
    cluster.wait_idle(4)
    # Both run until cancelled (epochs and steps far beyond the test): had "short" finished on its
    # own (one epoch of the sample data once did, on a fast run), its trainers would be free as well
    # and the third job's placement would prove nothing.
    long_job = submit(cluster, dataset, "long", trainers=2, steps=100000, every=1000, epochs=1000)
    short = submit(cluster, dataset, "short", trainers=2, steps=100000, every=1000, epochs=1000)

    def both_running():
        a, b = get_job(cluster, long_job), get_job(cluster, short)
        if a["state"] == "JOB_STATE_RUNNING" and b["state"] == "JOB_STATE_RUNNING":
            return a, b
        return None
    a, b = wait_for("both jobs RUNNING at once", both_running, cluster.logs)
    check(not set(a["trainer_ids"]) & set(b["trainer_ids"]) and len(a["trainer_ids"]) == 2,
          "the two jobs run on disjoint trainers", a["trainer_ids"], b["trainer_ids"])

    def long_stepping():
        j = get_job(cluster, long_job)
        return int(j.get("progress", {}).get("step", 0)) >= 2
    wait_for("the long job makes progress", long_stepping, cluster.logs)
    third = submit(cluster, dataset, "third", trainers=2)
    check(get_job(cluster, third)["state"] in ("JOB_STATE_VALIDATING", "JOB_STATE_QUEUED"),
          "a third job waits while four trainers are busy", get_job(cluster, third))
    rc, out, err = cluster.cli("jobs", "cancel", long_job, "--reason", "test")
    check(rc == 0 and get_job(cluster, long_job)["state"] == "JOB_STATE_CANCELLED", "cancel: CANCELLED at once",
          out, err)
    watch(cluster, long_job, expect_rc=6)
    # The short job still holds its two trainers, so the third can only run on the two the
    # cancelled job let go of; a trainer is free only once its engine has exited.
    def third_running():
        t = get_job(cluster, third)
        return t if t["state"] in ("JOB_STATE_RUNNING", "JOB_STATE_SUCCEEDED") and t["trainer_ids"] else None
    t = wait_for("the third job starts", third_running, cluster.logs)
    check(set(t["trainer_ids"]) == set(a["trainer_ids"]), "the third job runs on the freed trainers",
          t["trainer_ids"], a["trainer_ids"])
    rc, out, _ = cluster.cli("trainers", "list", "-o", "json")
    names = {tr["id"]: tr["name"] for tr in json.loads(out)}
    for tid in a["trainer_ids"]:
        agent = cluster.trainers[names[tid]].pid
        engines = [d for d in os.listdir("/proc") if d.isdigit() and engine_child_of(d, agent)]
        check(len(engines) <= 1, f"trainer {names[tid]} runs at most one engine", engines)
    watch(cluster, third)
    rc, out, err = cluster.cli("jobs", "cancel", short, "--reason", "test")
    check(rc == 0 and get_job(cluster, short)["state"] == "JOB_STATE_CANCELLED", "the other job cancelled too",
          out, err)
    watch(cluster, short, expect_rc=6)


def engine_child_of(pid, parent):
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        with open(f"/proc/{pid}/comm") as f:
            comm = f.read().strip()
    except OSError:
        return False
    return int(fields[1]) == parent and comm.startswith("herd-engine")


def sha_of(cluster, job_id):
    rc, out, err = cluster.cli("adapters", "list", job_id, "-o", "json")
    if rc != 0:
        check(False, "adapters list", out, err)
    return {int(c["step"]): c["adapter"]["sha256"] for c in json.loads(out)}


def case_restart(cluster, dataset):
    for name in ("t1", "t2"):
        cluster.start_trainer(name)
    cluster.wait_idle(2)
    job = submit(cluster, dataset, "survivor", trainers=2, steps=60, every=5)
    wait_for("a checkpoint is stored", lambda: sha_of(cluster, job), cluster.logs)
    before_ck = sha_of(cluster, job)
    rc, out, _ = cluster.cli("datasets", "list", "-o", "json")
    before_ds = {d["id"]: d["sha256"] for d in json.loads(out)}
    before_job = get_job(cluster, job)
    check(before_job["state"] == "JOB_STATE_RUNNING", "the job is RUNNING when the coordinator is killed",
          before_job["state"])
    cluster.coordinator.send_signal(signal.SIGKILL)
    cluster.coordinator.wait()
    cluster.start_coordinator()  # same port, same data dir
    rc, out, _ = cluster.cli("datasets", "list", "-o", "json")
    check(rc == 0 and {d["id"]: d["sha256"] for d in json.loads(out)} == before_ds,
          "every acknowledged dataset is back with its sha256", out)
    after = get_job(cluster, job)
    check(after["id"] == job and after["spec"] == before_job["spec"], "the job is back", after)
    after_ck = sha_of(cluster, job)
    check(all(after_ck.get(s) == sha for s, sha in before_ck.items() if s in after_ck) and after_ck,
          "stored checkpoints are back with the same sha256", before_ck, after_ck)
    watch(cluster, job)
    done = get_job(cluster, job)
    check(done["state"] == "JOB_STATE_SUCCEEDED" and int(done["generation"]) == 1,
          "the job finished in the generation it had before the restart", done, *cluster.logs())
    events = job_events(cluster, job)
    check(not [e for e in events if e.get("state") == "JOB_STATE_RECOVERING"], "the job never went RECOVERING",
          events[-10:])
    check(len([e for e in events if e.get("type") == "JOB_EVENT_TYPE_WORLD_FORMED"]) == 1, "one world formed",
          events)
    for name in ("t1", "t2"):
        with open(cluster.log(name)) as f:
            log = f.read()
        check("cancellation of" not in log, f"trainer {name}'s engine was never cancelled", log[-3000:])
    # The notice needs every rank back before the job ends; this small job may finish first.
    came_back = [e for e in events if e.get("type") == "JOB_EVENT_TYPE_NOTICE" and "came back" in e.get("message", "")]
    print(f"figure: adoption notice recorded: {bool(came_back)}")
    download(cluster, job, os.path.join(cluster.tmp, "out"))


def job_events(cluster, job_id):
    rc, out, err = cluster.cli("jobs", "events", job_id, "-o", "json")
    check(rc == 0, f"jobs events {job_id}", out, err)
    return json.loads(out)


def case_restart_lost(cluster, dataset):
    for name in ("t1", "t2"):
        cluster.start_trainer(name)
    cluster.wait_idle(2)
    job = submit(cluster, dataset, "halved", trainers=2, steps=60, every=5)
    wait_for("a checkpoint is stored", lambda: sha_of(cluster, job), cluster.logs)
    check(get_job(cluster, job)["state"] == "JOB_STATE_RUNNING", "the job is RUNNING when the coordinator is killed")
    cluster.coordinator.send_signal(signal.SIGKILL)
    cluster.coordinator.wait()
    cluster.trainers["t2"].send_signal(signal.SIGKILL)  # its engine dies with it
    cluster.trainers["t2"].wait()
    cluster.start_coordinator(config="trainer_grace_seconds: 20\n")  # same port, same data dir
    cluster.start_trainer("t3")
    watch(cluster, job)
    done = get_job(cluster, job)
    check(done["state"] == "JOB_STATE_SUCCEEDED" and int(done["generation"]) == 2,
          "the job finished in generation 2", done, *cluster.logs())
    events = job_events(cluster, job)
    recovering = [e for e in events if e.get("state") == "JOB_STATE_RECOVERING"]
    missing = re.search(r"coordinator restarted: trainers? (.+?) (?:did not|had not) come back",
                       recovering[0].get("message", "")) if len(recovering) == 1 else None
    check(missing and missing.group(1) == "t2", "RECOVERING once, naming the trainer that did not come back",
          recovering, events[-10:])
    worlds = [e for e in events if e.get("type") == "JOB_EVENT_TYPE_WORLD_FORMED"]
    check(len(worlds) == 2 and int(worlds[1].get("generation", 0)) == 2 and int(worlds[1].get("step", 0)) > 0,
          "generation 2 resumed from a stored checkpoint", worlds)
    download(cluster, job, os.path.join(cluster.tmp, "out"))


def case_lost_trainer(cluster, dataset):
    for name in ("t1", "t2", "t3"):
        cluster.start_trainer(name)
    cluster.wait_idle(3)
    job = submit(cluster, dataset, "lost", trainers=2, steps=120, every=5)
    wait_for("a checkpoint is stored", lambda: sha_of(cluster, job), cluster.logs)
    running = get_job(cluster, job)
    check(running["state"] == "JOB_STATE_RUNNING" and int(running["generation"]) == 1 and
          len(running["trainer_ids"]) == 2, "the job is RUNNING in generation 1 on two trainers", running)
    rc, out, _ = cluster.cli("trainers", "list", "-o", "json")
    names = {tr["id"]: tr["name"] for tr in json.loads(out)}
    world = [names[t] for t in running["trainer_ids"]]
    victim = world[1]
    agent = cluster.trainers[victim]
    engines = [int(d) for d in os.listdir("/proc") if d.isdigit() and engine_child_of(d, agent.pid)]
    agent.send_signal(signal.SIGKILL)
    agent.wait()
    for pid in engines:  # it dies with its agent (PR_SET_PDEATHSIG); make sure
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    watch(cluster, job)
    done = get_job(cluster, job)
    check(done["state"] == "JOB_STATE_SUCCEEDED" and int(done["generation"]) == 2,
          "the job finished in generation 2", done, *cluster.logs())
    events = job_events(cluster, job)
    # Generation 2 ran on the survivor and the third trainer, not on the killed one.
    for name in cluster.trainers:
        with open(cluster.log(name)) as f:
            ran = re.search(rf"assignment {job}/g2/r\d accepted", f.read()) is not None
        check(ran == (name != victim), f"trainer {name} {'ran' if name != victim else 'did not run'} generation 2",
              *cluster.logs())
    recovering = [e for e in events if e.get("state") == "JOB_STATE_RECOVERING"]
    check(len(recovering) == 1, "RECOVERING once", recovering, events[-10:])
    message = recovering[0].get("message", "")
    # The rank that failed first is named: the lost trainer's (its lease expired) or, usually,
    # its peer's, whose engine failed at once for want of it; the world replaced names both.
    check(re.search(rf"^RUNNING -> RECOVERING: rank \d on trainer ({'|'.join(world)}) ", message) is not None and
          f"generation 1 on {', '.join(world)} is replaced, resuming after step " in message,
          "the RECOVERING event names the failed rank and the world replaced, lost trainer included", message)
    print(f"figure: RECOVERING after {victim} was killed: {message}")
    worlds = [e for e in events if e.get("type") == "JOB_EVENT_TYPE_WORLD_FORMED"]
    check(len(worlds) == 2 and int(worlds[1].get("generation", 0)) == 2 and int(worlds[1].get("step", 0)) > 0,
          "generation 2 resumed from a stored checkpoint", worlds)
    check_peft(download(cluster, job, os.path.join(cluster.tmp, "out")), model_layers(cluster))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--case", required=True, choices=["two_vs_one", "cancel", "restart", "restart_lost",
                                                    "lost_trainer"])
    ap.add_argument("--coordinator", required=True)
    ap.add_argument("--trainer", required=True)
    ap.add_argument("--herd", required=True)
    ap.add_argument("--make-tiny-model", required=True)
    ap.add_argument("--samples", required=True)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix=f"herd-cluster-{args.case}-") as tmp:
        cluster = Cluster(args, tmp)
        try:
            # lost_trainer: a short lease, so a killed trainer is LOST within seconds.
            cluster.start_coordinator(config="heartbeat_seconds: 1\ntrainer_lease_seconds: 3\n"
                                      if args.case == "lost_trainer" else None)
            rc, out, err = cluster.cli("datasets", "upload", os.path.join(args.samples, "support_chat.jsonl"))
            check(rc == 0 and out.strip().startswith("ds_"), "upload the sample dataset", out, err)
            {"two_vs_one": case_two_vs_one, "cancel": case_cancel, "restart": case_restart,
             "restart_lost": case_restart_lost, "lost_trainer": case_lost_trainer}[args.case](
                cluster, out.strip())
        finally:
            cluster.stop()
    print(f"cluster_job_e2e --case {args.case}: all checks passed")


if __name__ == "__main__":
    main()
