"""Where a profiled step's GPU sat idle: reads the Chrome trace `herd-bench --trace` writes
(scripts/device/gpu_check.sh brings 8B b2's back as $OUT/trace_8b-b2.json.gz) and splits the gaps
between consecutive device events (kernels, copies, memsets) into
  - host-bound: the next kernel was launched only after the GPU had run dry, so the host was the
    bottleneck there; attributed to the operator that launched it (and its parent), and
  - launch gaps: the kernel was queued in time, and the gap is the device's own turnaround.
Standard library only.

  python3 scripts/device/trace_gaps.py trace_8b-b2.json.gz [--top 15]
"""
import argparse
import bisect
import gzip
import json
import sys
from collections import defaultdict

DEVICE_CATS = {"kernel", "gpu_memcpy", "gpu_memset"}


def load(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt") as f:
        return json.load(f).get("traceEvents", [])


def correlation(e):
    return (e.get("args") or {}).get("correlation")


def external_id(e):
    args = e.get("args") or {}
    return args.get("External id", args.get("external id"))


def analyse(events, top):
    device = sorted((e for e in events if e.get("cat") in DEVICE_CATS and "dur" in e), key=lambda e: e["ts"])
    if not device:
        return "no device events in this trace (a CPU run?)"
    launches = {correlation(e): e for e in events if e.get("cat") == "cuda_runtime" and correlation(e) is not None}
    ops = sorted((e for e in events if e.get("cat") == "cpu_op" and "dur" in e), key=lambda e: e["ts"])
    op_by_ext = {}
    for e in ops:
        x = external_id(e)
        if x is not None:
            op_by_ext.setdefault(x, e)
    op_starts = [e["ts"] for e in ops]

    def enclosing_ops(ts, tid):
        """The innermost and outermost operators of thread tid running at time ts."""
        i = bisect.bisect_right(op_starts, ts)
        inner = outer = None
        for e in reversed(ops[max(0, i - 400):i]):
            if e.get("tid") == tid and e["ts"] <= ts <= e["ts"] + e["dur"]:
                if inner is None or e["dur"] < inner["dur"]:
                    inner = e
                if outer is None or e["dur"] > outer["dur"]:
                    outer = e
        return inner, outer

    span = device[-1]["ts"] + device[-1]["dur"] - device[0]["ts"]
    busy = sum(e["dur"] for e in device)
    host_bound = defaultdict(float)
    host_bound_outer = defaultdict(float)
    sizes = defaultdict(float)
    counts = defaultdict(int)
    total_host = total_launch = 0.0
    for prev, nxt in zip(device, device[1:]):
        gap = nxt["ts"] - (prev["ts"] + prev["dur"])
        if gap <= 0:
            continue
        bucket = "<2 us" if gap < 2 else "2-5 us" if gap < 5 else "5-20 us" if gap < 20 else \
            "20-100 us" if gap < 100 else ">=100 us"
        sizes[bucket] += gap
        counts[bucket] += 1
        launch = launches.get(correlation(nxt))
        if launch is not None and launch["ts"] > prev["ts"] + prev["dur"]:
            # Launched after the device ran dry: the host was behind by (at most) the gap.
            total_host += gap
            op = op_by_ext.get(external_id(launch))
            if op is None:
                op, outer = enclosing_ops(launch["ts"], launch.get("tid"))
            else:
                _, outer = enclosing_ops(launch["ts"], launch.get("tid"))
            host_bound[(op or {}).get("name", "(no operator)")] += gap
            host_bound_outer[(outer or {}).get("name", "(no operator)")] += gap
        else:
            total_launch += gap
    lines = [f"device span {span / 1e3:.1f} ms, busy {busy / 1e3:.1f} ms, idle {(span - busy) / 1e3:.1f} ms "
             f"over {len(device)} device events",
             f"  host-bound gaps {total_host / 1e3:.1f} ms, launch gaps {total_launch / 1e3:.1f} ms",
             "  gaps by size: " + ", ".join(f"{b} {counts[b]}x {sizes[b] / 1e3:.2f} ms"
                                           for b in ("<2 us", "2-5 us", "5-20 us", "20-100 us", ">=100 us")
                                           if counts[b])]
    for title, table in (("host-bound gaps by the operator that launched the next kernel", host_bound),
                         ("... and by its outermost operator", host_bound_outer)):
        lines.append(f"  {title}:")
        for name, t in sorted(table.items(), key=lambda kv: -kv[1])[:top]:
            lines.append(f"    {t / 1e3:8.2f} ms  {name[:100]}")
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("trace")
    p.add_argument("--top", type=int, default=15)
    a = p.parse_args()
    try:
        events = load(a.trace)
    except (OSError, ValueError) as e:
        sys.exit(f"trace_gaps.py: cannot read {a.trace}: {e}")
    print(analyse(events, a.top))


if __name__ == "__main__":
    main()
