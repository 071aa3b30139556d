#!/usr/bin/env python3
"""Herd's observability end to end (DESIGN.md §7, §11): the scrape config, the alert rules and the
Grafana dashboards of deploy/ against a real cluster and a real Prometheus.

Static part (no servers): `promtool check config` and `promtool check rules` on the deploy files;
both dashboards parse as JSON, use the provisioned datasource, and every panel target and alert
expression names only metrics (and labels) of docs/metrics.md, plus `up`.

Live part: a herd-coordinator and two herd-trainer agents on 127.0.0.1 (metrics endpoints on port 0)
running a long 2-trainer job; Prometheus (Debian's) with a test copy of deploy/prometheus/prometheus.yml
(scrape every 1 s, the coordinator's real metrics port, its service-discovery file); then every
dashboard query (job_id = the running job) must answer `success` with data, per-rank panels for
both ranks (panels whose description says "GPU only" are only checked for validity on these CPU
trainers), every alert expression must be valid, and Prometheus must report every rule healthy. Every process is killed when the test ends, also on failure, and
dies with this one (PR_SET_PDEATHSIG)."""
import argparse
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

import yaml

from cluster_job_e2e import READY_TIMEOUT_S, Cluster, get_job, wait_for
from datasets_e2e import CALL_TIMEOUT_S, check, die_with_parent

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PROM_CONFIG = os.path.join(REPO, "deploy", "prometheus", "prometheus.yml")
PROM_RULES = os.path.join(REPO, "deploy", "prometheus", "alerts.yml")
GRAFANA = os.path.join(REPO, "deploy", "grafana")
DASHBOARDS = [os.path.join(GRAFANA, "dashboards", n) for n in ("herd-cluster.json", "herd-job.json")]
METRICS_MD = os.path.join(REPO, "docs", "metrics.md")
DATASOURCE_UID = "herd-prometheus"  # deploy/grafana/provisioning/datasources/prometheus.yml
COORDINATOR_JOB, TRAINER_JOB = "herd-coordinator", "herd-trainer"  # scrape job names of prometheus.yml

DATA_TIMEOUT_S = 240  # generous: catches hangs, does not measure speed
RATE_INTERVAL = "10s"  # stands in for $__rate_interval/$__interval: ten 1 s scrapes

# Runs through every check (the tiny dataset makes ~70 steps an epoch, over ten a second here);
# a checkpoint and an evaluation every 10 steps so their series appear early.
JOB_YAML = """\
name: observed
base_model: tiny-llama
dataset: {dataset}
lora: {{r: 4, alpha: 8, target_modules: all-linear}}
training: {{epochs: 1000, max_steps: 100000, micro_batch_size: 1, global_batch_size: 4, max_seq_len: 128,
           learning_rate: 1.0e-3, seed: 11}}
checkpoints: {{every_steps: 10, keep: 2}}
resources: {{trainers: 2}}
"""

# Labels a query may use besides the contract's: Prometheus' own and the service-discovery file's.
EXTRA_LABELS = {"__name__", "le", "job", "instance", "trainer", "device", "cluster"}
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless",
                "bool", "offset", "inf", "nan"}


# ---------------------------------------------------------------- static checks

def contract():
    """{metric name: (type, {labels})} from the tables of docs/metrics.md."""
    names = {}
    row = re.compile(r"^\|\s*`(herd_\w+)`\s*\|\s*(counter|gauge|histogram)\s*\|([^|]*)\|")
    with open(METRICS_MD) as f:
        for line in f:
            m = row.match(line)
            if m:
                names[m.group(1)] = (m.group(2), set(re.findall(r"`(\w+)`", m.group(3))))
    check(len(names) >= 19, "docs/metrics.md lists the metrics of DESIGN.md §11", sorted(names))
    return names


def allowed_names(names):
    out = {"up"}
    for name, (kind, _) in names.items():
        out |= {name + s for s in ("_bucket", "_sum", "_count")} if kind == "histogram" else {name}
    return out


def names_in(expr):
    """(metric names, label names) a PromQL expression uses. Strings, ranges and template variables
    are dropped first; an identifier followed by "(" is a function or an aggregation."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)
    labels = set()
    for matchers in re.findall(r"\{([^}]*)\}", s):
        labels |= set(re.findall(r"([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)", matchers))
    s = re.sub(r"\{[^}]*\}", " ", s)
    s = re.sub(r"\[[^\]]*\]", " ", s)
    for grouping in re.findall(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)", s):
        labels |= set(re.findall(r"[A-Za-z_]\w*", grouping))
    s = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)
    s = re.sub(r"\$\{?\w+\}?", " ", s)
    metrics = set()
    for m in re.finditer(r"(?<![\w.])[A-Za-z_:][\w:]*", s):
        if m.group(0).lower() in PROMQL_WORDS or s[m.end():].lstrip().startswith("("):
            continue
        metrics.add(m.group(0))
    return metrics, labels


def panels(dashboard):
    """Every panel, rows' nested panels included."""
    for p in dashboard.get("panels", []):
        yield p
        yield from p.get("panels", [])


def dashboard_queries(path):
    """[(dashboard title, panel title, expr, GPU only, per rank)] of one dashboard file."""
    with open(path) as f:
        d = json.load(f)
    out = []
    for p in panels(d):
        for t in p.get("targets", []):
            if "expr" in t:
                out.append((d["title"], p["title"], t["expr"], "gpu only" in p.get("description", "").lower(),
                            "{{rank}}" in t.get("legendFormat", "")))
    return d, out


def alert_rules():
    with open(PROM_RULES) as f:
        groups = yaml.safe_load(f)["groups"]
    return [r for g in groups for r in g["rules"]]


def promtool(args, *argv):
    p = subprocess.run([args.promtool, *argv], capture_output=True, text=True, timeout=CALL_TIMEOUT_S)
    shown = [os.path.relpath(a, REPO) if a.startswith(REPO + os.sep) else a for a in argv]
    check(p.returncode == 0, "promtool " + " ".join(shown), p.stdout, p.stderr)


def static_checks(args):
    """The checks that start no server; returns the dashboards' queries and the alert rules."""
    rules = check_prometheus_files(args)
    queries = check_grafana_files()
    check_queries_parse(args, queries)
    check_contract_names(queries, rules)
    return queries, rules


def check_prometheus_files(args):
    promtool(args, "check", "config", PROM_CONFIG)
    promtool(args, "check", "rules", PROM_RULES)
    with open(PROM_CONFIG) as f:
        config = yaml.safe_load(f)
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    check(COORDINATOR_JOB in jobs and jobs[COORDINATOR_JOB].get("static_configs"),
          "prometheus.yml scrapes the coordinator as a static target", sorted(jobs))
    check(TRAINER_JOB in jobs and jobs[TRAINER_JOB].get("file_sd_configs"),
          "prometheus.yml finds trainers through file_sd_configs", sorted(jobs))
    check(config.get("rule_files") == ["alerts.yml"], "prometheus.yml loads alerts.yml", config.get("rule_files"))

    rules = alert_rules()
    for r in rules:
        check(r.get("for") and r.get("labels", {}).get("severity") in ("critical", "warning")
              and r.get("annotations", {}).get("summary") and r.get("annotations", {}).get("description"),
              f"alert {r['alert']} has for:, a severity label, a summary and a description", r)
    return rules


def check_grafana_files():
    queries = []
    for path in DASHBOARDS:
        d, qs = dashboard_queries(path)
        check(d.get("schemaVersion", 0) >= 36 and d.get("uid") and qs,
              f"{os.path.basename(path)}: a Grafana 10 dashboard with queries", d.get("schemaVersion"))
        wrong = [(p["title"], ds) for p in panels(d)
                 for ds in [p.get("datasource")] + [t.get("datasource") for t in p.get("targets", [])]
                 if ds is not None and ds.get("uid") != DATASOURCE_UID]
        check(not wrong, f"{d['title']}: every panel queries the datasource {DATASOURCE_UID}", *wrong)
        queries += qs
    with open(DASHBOARDS[1]) as f:
        job_board = json.load(f)
    variables = {v["name"]: v for v in job_board.get("templating", {}).get("list", [])}
    check("job_id" in variables and "label_values(herd_job_step, job_id)" in json.dumps(variables["job_id"]),
          "Herd job is templated on job_id from label_values(herd_job_step, job_id)", variables)
    with open(os.path.join(GRAFANA, "provisioning", "datasources", "prometheus.yml")) as f:
        sources = yaml.safe_load(f)["datasources"]
    check([s.get("uid") for s in sources] == [DATASOURCE_UID] and sources[0]["type"] == "prometheus",
          "the provisioned datasource is the dashboards' Prometheus", sources)
    with open(os.path.join(GRAFANA, "provisioning", "dashboards", "herd.yml")) as f:
        providers = yaml.safe_load(f)["providers"]
    check(len(providers) == 1 and providers[0]["type"] == "file" and providers[0]["options"].get("path"),
          "the dashboard provider reads a folder of dashboard files", providers)
    return queries


def check_queries_parse(args, queries):
    """promtool parses PromQL only in rule files: every panel query becomes a recording rule."""
    with tempfile.TemporaryDirectory(prefix="herd-observability-") as tmp:
        path = os.path.join(tmp, "panels.yml")
        with open(path, "w") as f:
            yaml.safe_dump({"groups": [{"name": "panels", "rules": [
                {"record": f"herd_panel:query_{i}", "expr": substitute(e, "job_00000000")}
                for i, (_, _, e, _, _) in enumerate(queries)]}]}, f)
        p = subprocess.run([args.promtool, "check", "rules", path], capture_output=True, text=True,
                           timeout=CALL_TIMEOUT_S)
        check(p.returncode == 0, f"promtool parses all {len(queries)} dashboard queries", p.stdout, p.stderr)


def check_contract_names(queries, rules):
    names = contract()
    allowed = allowed_names(names)
    known_labels = EXTRA_LABELS | {label for _, labels in names.values() for label in labels}
    exprs = [(f"{b} / {p}", e) for b, p, e, _, _ in queries] + [(f"alert {r['alert']}", r["expr"]) for r in rules]
    unknown = []
    for where, expr in exprs:
        metrics, labels = names_in(expr)
        if not metrics:
            unknown.append((where, "no metric at all", expr))
        for bad in sorted(metrics - allowed):
            unknown.append((where, f"metric {bad}", expr))
        for bad in sorted(labels - known_labels):
            unknown.append((where, f"label {bad}", expr))
    check(not unknown, f"{len(exprs)} dashboard and alert expressions use only docs/metrics.md names", *unknown)
    used = set().union(*(names_in(e)[0] for _, e in exprs))
    unused = sorted(n for n in names if not any(u == n or u.rsplit("_", 1)[0] == n for u in used))
    print("note: contract metrics no dashboard or alert shows:", ", ".join(unused) or "none")


# ---------------------------------------------------------------- the live cluster

class ObservedCluster(Cluster):
    """cluster_job_e2e's Cluster with every metrics endpoint on 127.0.0.1 port 0."""

    def start_coordinator(self):
        self.metrics_ready = os.path.join(self.tmp, "metrics.ready")
        super().start_coordinator(
            config=f"metrics_listen: 127.0.0.1:0\nmetrics_ready_file: {self.metrics_ready}\n")

    def start_trainer(self, name):
        work = os.path.join(self.tmp, name)
        os.makedirs(work, exist_ok=True)
        config = os.path.join(work, "trainer.yaml")
        with open(config, "w") as f:
            f.write("metrics_listen: 127.0.0.1:0\n")
        p = subprocess.Popen([self.args.trainer, "--config", config, "--coordinator", f"127.0.0.1:{self.port}",
                              "--models", self.models, "--name", name, "--token-file", self.token_file], cwd=work,
                             stdout=open(self.log(name), "w"), stderr=subprocess.STDOUT, preexec_fn=die_with_parent,
                             env={**os.environ, "OMP_NUM_THREADS": "1"})
        self.procs.append(p)
        self.trainers[name] = p
        return p

    def sd_file(self):
        return os.path.join(self.data_dir, "prometheus", "trainers.json")  # file_sd_path's default


def coordinator_metrics_port(cluster):
    """The port the coordinator's /metrics is bound to (its metrics_ready_file), 0 until known."""
    try:
        with open(cluster.metrics_ready) as f:
            return int(f.read().strip() or 0)
    except FileNotFoundError:
        return 0


def free_port():
    # Racy by nature: another process may take the port between close() and Prometheus' bind;
    # Prometheus.start() then sees it exit and tries another port.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url, timeout=10):
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except (urllib.error.URLError, ConnectionError, socket.timeout):
        return None, ""


class Prometheus:
    """Debian's prometheus on 127.0.0.1 with a test copy of deploy/prometheus/prometheus.yml."""

    def __init__(self, args, tmp):
        self.args, self.tmp, self.proc, self.port = args, tmp, None, 0
        self.log = os.path.join(tmp, "prometheus.log")

    def write_config(self, metrics_port, sd_file):
        with open(PROM_CONFIG) as f:
            config = yaml.safe_load(f)
        config["global"].update({"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"})
        config["rule_files"] = [PROM_RULES]
        for job in config["scrape_configs"]:
            if job["job_name"] == COORDINATOR_JOB:
                job["static_configs"] = [{"targets": [f"127.0.0.1:{metrics_port}"]}]
            elif job["job_name"] == TRAINER_JOB:
                job["file_sd_configs"] = [{"files": [sd_file], "refresh_interval": "1s"}]
        path = os.path.join(self.tmp, "prometheus.yml")
        with open(path, "w") as f:
            yaml.safe_dump(config, f, sort_keys=False)
        promtool(self.args, "check", "config", path)
        return path

    def start(self, config):
        for attempt in range(5):
            self.port = free_port()
            self.proc = subprocess.Popen(
                [self.args.prometheus, "--config.file", config, "--storage.tsdb.path", os.path.join(self.tmp, "tsdb"),
                 f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
                stdout=open(self.log, "a"), stderr=subprocess.STDOUT, preexec_fn=die_with_parent)

            def ready():
                if self.proc.poll() is not None:
                    return "exited"
                status, _ = http_get(f"http://127.0.0.1:{self.port}/-/ready", timeout=2)
                return "ready" if status == 200 else None
            if wait_for("prometheus ready", ready, self.logs) == "ready":
                print(f"ok: prometheus ready on 127.0.0.1:{self.port}")
                return
            print(f"prometheus exited (port {self.port} taken?); try {attempt + 2}", file=sys.stderr)
        check(False, "prometheus starts", *self.logs())

    def logs(self):
        try:
            with open(self.log) as f:
                return ["--- prometheus ---\n" + f.read()[-4000:]]
        except FileNotFoundError:
            return []

    def api(self, path, **params):
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        status, body = http_get(url)
        try:
            return json.loads(body)
        except ValueError:
            return {"status": "error", "error": f"HTTP {status}: {body[:500]}"}

    def query(self, expr):
        return self.api("query", query=expr)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def wait_ok(what, predicate, logs, timeout=READY_TIMEOUT_S):
    value = wait_for(what, predicate, logs, timeout)
    print("ok:", what)
    return value


def substitute(expr, job_id):
    return (expr.replace("$job_id", job_id).replace("${job_id}", job_id)
            .replace("$__rate_interval", RATE_INTERVAL).replace("$__interval", RATE_INTERVAL)
            .replace("$__range", RATE_INTERVAL))


def live_checks(args, tmp, queries, rules):
    cluster, prom = ObservedCluster(args, tmp), Prometheus(args, tmp)
    try:
        cluster.start_coordinator()
        rc, out, err = cluster.cli("datasets", "upload", os.path.join(args.samples, "support_chat.jsonl"))
        check(rc == 0 and out.strip().startswith("ds_"), "upload the sample dataset", out, err)
        dataset = out.strip()
        metrics_port = wait_ok("the coordinator's metrics port is known", lambda: coordinator_metrics_port(cluster),
                                cluster.logs)
        status, body = http_get(f"http://127.0.0.1:{metrics_port}/metrics")
        check(status == 200 and "herd_queue_depth" in body, f"coordinator /metrics on port {metrics_port}",
              status, body[:1000])
        for name in ("t1", "t2"):
            cluster.start_trainer(name)
        cluster.wait_idle(2)

        def sd_targets():
            try:
                with open(cluster.sd_file()) as f:
                    groups = json.load(f)
            except (FileNotFoundError, ValueError):
                return None
            found = [(t, g.get("labels", {})) for g in groups for t in g.get("targets", [])]
            return found if len(found) == 2 else None
        listed = wait_ok("the coordinator's service-discovery file lists both trainers", sd_targets, cluster.logs)
        check(all(re.fullmatch(r"127\.0\.0\.1:\d+", t) and l.get("trainer") in ("t1", "t2") and l.get("device")
                  for t, l in listed), "every SD target is a 127.0.0.1 address with trainer and device labels",
              listed)

        prom.start(prom.write_config(metrics_port, cluster.sd_file()))
        path = os.path.join(tmp, "observed.yaml")
        with open(path, "w") as f:
            f.write(JOB_YAML.format(dataset=dataset))
        rc, out, err = cluster.cli("jobs", "submit", path)
        check(rc == 0 and out.strip().startswith("job_"), "submit a long 2-trainer job", out, err, *cluster.logs())
        job_id = out.strip()

        def all_up():
            targets = prom.api("targets").get("data", {}).get("activeTargets", [])
            up = [t for t in targets if t.get("health") == "up"]
            jobs = sorted(t["labels"]["job"] for t in up)
            return targets if jobs == [COORDINATOR_JOB, TRAINER_JOB, TRAINER_JOB] else None
        wait_ok("prometheus scrapes the coordinator and both trainers", all_up,
                 lambda: cluster.logs() + prom.logs() + [json.dumps(prom.api("targets"))[:3000]])

        def progressed():
            j = get_job(cluster, job_id)
            if j["state"] not in ("JOB_STATE_VALIDATING", "JOB_STATE_QUEUED", "JOB_STATE_RUNNING"):
                check(False, "the observed job is still going", j, *cluster.logs())
            return j["state"] == "JOB_STATE_RUNNING" and int(j.get("progress", {}).get("step", 0)) >= 2
        wait_ok("the job is RUNNING and has made steps", progressed, cluster.logs, timeout=DATA_TIMEOUT_S)
        # One answer with a code other than OK, so the error panels have a series.
        rc, _, _ = cluster.cli("jobs", "get", job_id, token=cluster.other)
        check(rc == 3, "another tenant's `jobs get` answers not found", rc)

        def job_ids():  # what Grafana's label_values(herd_job_step, job_id) offers
            return prom.api("label/job_id/values", **{"match[]": "herd_job_step"}).get("data", [])
        wait_ok("the job_id variable offers the running job", lambda: job_id in job_ids(),
                 lambda: cluster.logs() + [str(job_ids())], timeout=DATA_TIMEOUT_S)

        total = int(get_job(cluster, job_id)["progress"]["total_steps"])

        def total_steps():
            r = prom.query(f'herd_job_total_steps{{job_id="{job_id}"}}')["data"]["result"]
            return r and float(r[0]["value"][1]) == total
        wait_ok(f"herd_job_total_steps of the job is its {total} steps", total_steps, cluster.logs)
        check_queries(prom, cluster, queries, job_id, ranks={"0", "1"})
        check_rules(prom, rules)
        j = get_job(cluster, job_id)
        check(j["state"] == "JOB_STATE_RUNNING", "the job was running throughout the checks", j["state"])
    finally:
        prom.stop()
        cluster.stop()


def check_queries(prom, cluster, queries, job_id, ranks):
    """Every panel query answers success; all but GPU-only ones with data, per-rank ones for every
    rank (polled: rates need a few scrapes, and some series appear only after the first evaluation
    or checkpoint)."""
    gpu_only = [f"{b} / {p}" for b, p, _, gpu, _ in queries if gpu]
    print("GPU-only panels, checked for validity only on these CPU trainers:", ", ".join(gpu_only) or "none")
    pending = {(b, p, substitute(e, job_id)): (gpu, per_rank) for b, p, e, gpu, per_rank in queries}
    last = {}
    deadline = time.monotonic() + DATA_TIMEOUT_S
    while True:
        for (board, panel, q), (gpu, per_rank) in list(pending.items()):
            r = prom.query(q)
            if r.get("status") != "success":
                check(False, f"{board} / {panel}: query is valid", q, r)
            result = r["data"]["result"]
            last[(board, panel, q)] = result
            seen = {s["metric"].get("rank") for s in result}
            if gpu or (result and (not per_rank or seen == ranks)):
                sample = f", e.g. {result[0]['value'][1]}" if result else ""
                print(f"ok: {board} / {panel}: valid, {len(result)} series{sample}" + (" (GPU only)" if gpu else ""))
                del pending[(board, panel, q)]
        if not pending or time.monotonic() > deadline:
            break
        time.sleep(1)  # polling interval of a bounded wait (Prometheus scrapes every 1 s)
    check(not pending, f"every non-GPU panel query ({len(queries) - len(gpu_only)}) returns data, per-rank "
          f"ones for ranks {sorted(ranks)}", *[f"{b} / {p}: {q} -> {last.get((b, p, q))}" for b, p, q in pending],
          *cluster.logs())


def check_rules(prom, rules):
    for r in rules:
        ans = prom.query(r["expr"])
        check(ans.get("status") == "success", f"alert {r['alert']}: expression is valid", r["expr"], ans)
        firing = ans["data"]["result"]
        if firing:
            print(f"note: alert {r['alert']} expression currently matches {len(firing)} series", firing[:3])

    def evaluated():
        loaded = [x for g in prom.api("rules").get("data", {}).get("groups", []) for x in g.get("rules", [])]
        return loaded if len(loaded) == len(rules) and all(x.get("health") == "ok" for x in loaded) else None
    wait_ok(f"prometheus loaded all {len(rules)} alert rules and evaluates each without error", evaluated,
             lambda: [json.dumps(prom.api("rules"))[:4000]])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--promtool", required=True)
    ap.add_argument("--prometheus")
    ap.add_argument("--coordinator")
    ap.add_argument("--trainer")
    ap.add_argument("--herd")
    ap.add_argument("--make-tiny-model")
    ap.add_argument("--samples")
    ap.add_argument("--static-only", action="store_true", help="only the checks that start no server")
    args = ap.parse_args()
    for a in ("promtool", "prometheus", "coordinator", "trainer", "herd", "make_tiny_model", "samples"):
        if getattr(args, a):  # the trainers run in their own folders
            setattr(args, a, os.path.abspath(getattr(args, a)))
    queries, rules = static_checks(args)
    if args.static_only:
        print("observability_e2e --static-only: all checks passed")
        return
    missing = [a for a in ("prometheus", "coordinator", "trainer", "herd", "make_tiny_model", "samples")
               if not getattr(args, a)]
    if missing:
        ap.error("the live checks need --" + ", --".join(m.replace("_", "-") for m in missing))
    with tempfile.TemporaryDirectory(prefix="herd-observability-") as tmp:
        live_checks(args, tmp, queries, rules)
    print("observability_e2e: all checks passed")


if __name__ == "__main__":
    main()
