"""Helpers of scripts/device/gpu_check.sh: tags JSON lines into results.jsonl, compares the
bf16-on-GPU and fp32 training runs, and prints the final table (and writes summary.md).
Standard library only, except `correctness`, which needs torch and safetensors.

  gpu_check_report.py tag CHECK [KEY=VALUE ...] < lines     JSON lines with "check" (and keys) added
  gpu_check_report.py smoke < herd-engine --smoke output    one tagged line per smoke check
  gpu_check_report.py correctness CPU_DIR DEV_DIR CPU_LOG DEV_LOG
  gpu_check_report.py report RESULTS SUMMARY_MD [PROFILE_JSONL]
"""
import json
import math
import re
import sys

# The issue's targets (seq 2048, LoRA r16 all-linear), as ratios to the baseline run beside Herd.
# row: (title, baseline kind that counts, min ratio, max peak GiB)
TARGETS = {
    "1b-b8": ("llama3.2-1b b8", "compile", 1.52, 24.0),
    "8b-b2": ("llama3-8b b2", "compile", 1.44, 32.0),
    "8b-b4-ckpt": ("llama3-8b b4 ckpt", "eager", 1.6, 24.0),
}


def tagged_lines(stream, extra):
    for line in stream:
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            r = json.loads(line)
        except json.JSONDecodeError:
            continue
        if "check" in r and r["check"] != extra["check"]:
            r["case_check"] = r.pop("check")  # a tool's own check name, e.g. "rmsnorm_fwd"
        out = dict(extra)
        out.update(r)
        print(json.dumps(out))


def parse_value(v):
    try:
        return json.loads(v)
    except json.JSONDecodeError:
        return v


def cmd_tag(args):
    extra = {"check": args[0]}
    for kv in args[1:]:
        k, _, v = kv.partition("=")
        extra[k] = parse_value(v)
    tagged_lines(sys.stdin, extra)


def cmd_smoke(_):
    for line in sys.stdin:
        line = line.strip()
        if not line.startswith("{"):
            continue
        r = json.loads(line)
        if "torch" in r:
            r["check"] = "probe"
        elif "dtype" in r:
            r["check"] = "matmul_" + r["dtype"]
        elif "check" not in r and "backend" in r:
            r["check"] = "allreduce_one_rank"
        print(json.dumps(r))


def last_loss(log):
    try:
        v = re.findall(r"loss ([0-9.]+)  lr", open(log).read())
    except OSError:
        return float("nan")
    return float(v[-1]) if v else float("nan")


def cmd_correctness(args):
    cpu_dir, dev_dir, cpu_log, dev_log = args
    r = {"check": "bf16_vs_fp32"}
    try:
        import torch
        from safetensors.torch import load_file
        a = load_file(f"{cpu_dir}/adapter/adapter_model.safetensors")
        b = load_file(f"{dev_dir}/adapter/adapter_model.safetensors")
        # B starts at zero on both sides (A from the same CPU generator), so B is the update.
        ua = torch.cat([a[k].float().flatten() for k in sorted(a) if "lora_B" in k])
        ub = torch.cat([b[k].float().flatten() for k in sorted(b) if "lora_B" in k])
        cos = torch.nn.functional.cosine_similarity(ua, ub, dim=0).item()
        lc, lg = last_loss(cpu_log), last_loss(dev_log)
        rel = abs(lg - lc) / lc if lc == lc and lc != 0 else float("nan")
        # For reading a near miss: after 3 AdamW steps each element of B is close to ±lr per step,
        # so an element whose gradient is within rounding of zero can flip sign between dtypes.
        same_sign = (torch.sign(ua) == torch.sign(ub)).float().mean().item()
        r.update(loss_cpu=lc, loss_dev=lg, loss_rel=rel, update_cosine=cos, update_sign_agreement=same_sign,
                 update_norm_cpu=ua.norm().item(), ok=bool(rel < 1e-2 and cos > 0.99 and ua.norm().item() > 0))
    except Exception as e:  # a missing adapter is a failed check, not a crash of the script
        r.update(ok=False, error=f"{type(e).__name__}: {e}")
    print(json.dumps(r))


def num(x, fmt):
    return format(x, fmt) if isinstance(x, (int, float)) and not (isinstance(x, float) and math.isnan(x)) else "-"


def check_line(r):
    c = r.get("check")
    ok = r.get("ok")
    verdict = "SKIP" if r.get("skipped") else ("ok" if ok else ("FAIL" if ok is not None else ""))
    if c == "step":
        return None
    if c == "probe":
        return f"{'probe':<24}{'':<6}torch {r.get('torch')}, nccl {r.get('nccl')}, cuda devices {r.get('cuda_devices')}"
    if c == "machine":
        return f"{'machine':<24}{'':<6}{r.get('gpu')}  (device {r.get('device')})"
    if c == "build":
        how = r.get("how", "")
        return f"{'build':<24}{'ok' if r.get('rc') == 0 else 'FAIL':<6}{how}, {r.get('seconds')} s, targets {r.get('targets')}"
    if c and c.startswith("matmul_"):
        return f"{c:<24}{verdict:<6}max rel err {num(r.get('max_rel_error'), '.2e')} (n={r.get('n')})"
    if c == "allreduce_one_rank":
        return f"{'all-reduce 1 rank':<24}{verdict:<6}{r.get('backend')}, {r.get('elements')} floats"
    if c == "watchdog":
        if "error" in r:
            return f"{c:<24}{verdict:<6}{r['error'][:100]}"
        return (f"{'watchdog':<24}{verdict:<6}{r.get('backend')}: fired {r.get('fired')} after "
                f"{num(r.get('seconds'), '.2f')} s (timeout {r.get('timeout_s')} s), aborted {r.get('aborted')}")
    if c == "bf16_vs_fp32":
        if "error" in r:
            return f"{c:<24}{verdict:<6}{r['error'][:100]}"
        return (f"{c:<24}{verdict:<6}loss {num(r.get('loss_cpu'), '.4f')} vs {num(r.get('loss_dev'), '.4f')} "
                f"(rel {num(r.get('loss_rel'), '.1e')}), update cosine {num(r.get('update_cosine'), '.5f')}, "
                f"same sign {num(r.get('update_sign_agreement'), '.4f')}")
    return None


def kernel_kind(name):
    n = name.lower()
    if "herd::" in n:
        return "herd kernels"
    if "flash" in n or "fmha" in n:
        return "attention"
    if any(k in n for k in ("gemm", "nvjet", "cutlass", "xmma", "cublas", "sm90_", "sm80_")):
        return "matmul"
    if "memcpy" in n or "memset" in n:
        return "copies"
    if "reduce" in n:
        return "reductions"
    if "elementwise" in n or "vectorized" in n or "foreach" in n:
        return "elementwise"
    return "other"


def profile_lines(path):
    """Where one profiled step's GPU time went, per shape: idle time and kernel kinds."""
    out = []
    try:
        rows = [json.loads(l) for l in open(path) if l.strip()]
    except (OSError, json.JSONDecodeError):
        return out
    for h in (r for r in rows if r.get("check") == "profile"):
        key = (h.get("model"), h.get("batch"))
        kernels = [r for r in rows if r.get("check") == "profile_kernel" and (r.get("model"), r.get("batch")) == key]
        kinds = {}
        for k in kernels:
            kinds[kernel_kind(k["kernel"])] = kinds.get(kernel_kind(k["kernel"]), 0.0) + k["ms"]
        dev = h.get("device_ms") or 0.0
        out.append(f"  {h.get('model')} b{h.get('batch')}{' ckpt' if h.get('grad_ckpt') else ''}: step "
                   f"{num(h.get('wall_ms'), '.1f')} ms, kernels {num(dev, '.1f')} ms, idle {num(h.get('idle_ms'), '.1f')} ms; "
                   + ", ".join(f"{k} {v:.1f}" for k, v in sorted(kinds.items(), key=lambda kv: -kv[1])) + " (top 40)")
        for k in kernels[:6]:
            out.append(f"    {k['ms']:8.2f} ms {k['count']:5d}x  {k['kernel'][:90]}")
    return out


def cmd_report(args):
    results, summary = args[0], args[1]
    profile = profile_lines(args[2]) if len(args) > 2 else []
    rows = []
    for line in open(results):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    lines = []
    # Step outcomes: a step that did not finish cleanly is a check line of its own.
    steps = [r for r in rows if r.get("check") == "step"]
    for r in rows:
        s = check_line(r)
        if s:
            lines.append(s)
    tool_checks = {}
    for r in rows:
        if r.get("check") in ("kernel_check", "attention_check") and "rc" not in r:
            t = tool_checks.setdefault(r["check"], [0, 0, []])
            t[0] += 1
            if r.get("ok") is False:
                t[1] += 1
                t[2].append("/".join(str(r[k]) for k in ("case_check", "case", "path", "model", "dtype") if k in r) or "?")
    for s in steps:
        name = s["name"]
        if name in ("kernel_check", "attention_check"):
            n, bad, names = tool_checks.get(name, [0, 0, []])
            if s.get("skipped"):
                v, d = "SKIP", s["skipped"]
            else:
                # The tool's exit status decides (some of its lines are informational).
                v = "ok" if s.get("rc") == 0 and n > 0 else "FAIL"
                d = f"exit {s.get('rc')}, {n} lines, {bad} not ok" + (f": {', '.join(map(str, names[:5]))}" if names else "")
            lines.append(f"{name:<24}{v:<6}{d}")
        elif s.get("skipped"):
            lines.append(f"{name:<24}{'SKIP':<6}{s['skipped']}")
        elif s.get("rc") not in (0, None):
            why = "timed out" if s.get("rc") in (124, 137) else f"exit {s.get('rc')}"
            # Ablations are informational: they fail nothing.
            v = "info" if name.startswith("ablation_") else "FAIL"
            lines.append(f"{name[:23]:<24}{v:<6}{why} after {s.get('seconds')} s")

    bench = {r["row"]: r for r in rows if r.get("check") == "bench" and "tokens_per_s" in r}
    bench_fail = {r["row"]: r for r in rows if r.get("check") == "bench" and "tokens_per_s" not in r}
    base = {}
    base_fail = {}
    for r in rows:
        if r.get("check") != "baseline":
            continue
        key = (r["row"], r.get("kind"))
        (base if "tokens_per_s" in r else base_fail)[key] = r
    hdr = (f"{'target':<20}{'herd tok/s':>11}{'GiB':>7}{'baseline':>18}{'GiB':>7}{'ratio':>7}"
           f"{'want':>7}{'≤GiB':>6}  verdict")
    table = [hdr]
    md = ["| target | Herd tok/s | Herd GiB | baseline | baseline tok/s | baseline GiB | ratio | target | ≤ GiB | verdict |",
          "|---|---|---|---|---|---|---|---|---|---|"]
    verdicts = []
    for row, (title, kind, want, limit) in TARGETS.items():
        h = bench.get(row)
        b = base.get((row, kind))
        notes = []
        if h is None:
            f = bench_fail.get(row)
            notes.append("herd " + (f.get("skipped") or f.get("error", "failed")[:100] if f else "not run"))
        if b is None:
            f = base_fail.get((row, kind))
            notes.append(f"{kind} baseline " + (f.get("skipped") or f.get("error", "failed")[:100] if f else "not run"))
        ratio = h["tokens_per_s"] / b["tokens_per_s"] if h and b else None
        gib = h.get("peak_mem_gib") if h else None
        if h and b:
            mem_ok = gib is not None and gib <= limit
            verdict = "PASS" if ratio >= want and mem_ok else "FAIL"
            if ratio < want:
                notes.append(f"speed {ratio / want:.0%} of target")
            if not mem_ok:
                notes.append("memory over limit" if gib is not None else "no memory figure")
        else:
            verdict = "MISSING"
        verdicts.append(verdict)
        htok = num(h["tokens_per_s"], ",.0f") if h else "-"
        hgib = num(gib, ".1f")
        btok = f"{kind} {num(b['tokens_per_s'], ',.0f')}" if b else f"{kind} -"
        bgib = num(b.get("peak_mem_gib"), ".1f") if b else "-"
        rs = num(ratio, ".2f")
        note = f" ({'; '.join(notes)})" if notes else ""
        table.append(f"{title:<20}{htok:>11}{hgib:>7}{btok:>18}{bgib:>7}{rs:>7}{want:>7.2f}{limit:>6.0f}  {verdict}{note}")
        md.append(f"| {title} | {htok} | {hgib} | {kind} | {btok.split()[-1]} | {bgib} | {rs} | ≥{want} | {limit:.0f} | {verdict}{note} |")
    others = [r for k, r in base.items() if k[1] != TARGETS[k[0]][1]]
    for r in others:
        h = bench.get(r["row"])
        vs = f", Herd {h['tokens_per_s'] / r['tokens_per_s']:.2f}x that" if h else ""
        table.append(f"  also: {r['row']} {r.get('kind')} baseline {num(r['tokens_per_s'], ',.0f')} tok/s, "
                     f"{num(r.get('peak_mem_gib'), '.1f')} GiB{vs}")
    # What each part is worth: the 1B row's Herd figure against the same shape with one part off.
    full = bench.get("1b-b8")
    ablations = []
    for r in rows:
        if r.get("check") != "ablation":
            continue
        if "tokens_per_s" not in r:
            ablations.append(f"  without {r.get('variant')}: {r.get('error', 'failed')[:100]}")
            continue
        vs = f", Herd {full['tokens_per_s'] / r['tokens_per_s']:.2f}x its speed" if full else ""
        ablations.append(f"  {r.get('variant'):<18}{num(r['tokens_per_s'], ',.0f'):>10} tok/s, peak "
                         f"{num(r.get('peak_mem_gib'), '.1f')} GiB, kept {num(r.get('kept_gib'), '.1f')} GiB{vs}")
    if ablations:
        full_line = (f"  {'all on':<18}{num(full['tokens_per_s'], ',.0f'):>10} tok/s, peak "
                     f"{num(full.get('peak_mem_gib'), '.1f')} GiB, kept {num(full.get('kept_gib'), '.1f')} GiB"
                     if full else "  all on: no 1b-b8 figure")
        table += ["", "1B b8 with one part off (what each is worth):", full_line] + ablations
    failed = any(l[24:30].strip() == "FAIL" for l in lines) or any(v != "PASS" for v in verdicts)
    timing = ", ".join(f"{s['name']} {s.get('seconds', 0)} s" for s in steps if not s.get("skipped"))
    print("\nGPU check")
    for s in lines:
        print("  " + s)
    print()
    for s in table:
        print(s)
    if profile:
        print("\nwhere one step's GPU time goes:")
        for s in profile:
            print(s)
    print(f"\nsteps: {timing}")
    with open(summary, "w") as f:
        f.write("# GPU check\n\n")
        f.write("```\n" + "\n".join(lines) + "\n```\n\n")
        f.write("\n".join(md) + "\n\n")
        for r in others:
            f.write(f"- also: {r['row']} {r.get('kind')} baseline {num(r['tokens_per_s'], ',.0f')} tok/s\n")
        if ablations:
            f.write("\n1B b8 with one part off:\n\n```\n" + "\n".join([full_line] + ablations) + "\n```\n")
        if profile:
            f.write("\nWhere one step's GPU time goes:\n\n```\n" + "\n".join(profile) + "\n```\n")
        f.write(f"\nSteps: {timing}\n")
    print("overall: " + ("FAIL" if failed else "PASS"))
    return 1 if failed else 0


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    sys.exit({"tag": cmd_tag, "smoke": cmd_smoke, "correctness": cmd_correctness, "report": cmd_report}[cmd](args))


if __name__ == "__main__":
    main()
