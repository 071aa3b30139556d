"""Reference values for trainer/engine/train/{optimizer,schedule}_test.cc (DESIGN.md §10).

Runs PyTorch's AdamW and clip_grad_norm_ and transformers' learning-rate schedules on seeded
inputs and writes inputs and results to one safetensors file (--out), which the C++ tests read,
replay with Herd's code and compare. --part picks what to compute, so the optimizer test does not
pay for importing transformers. The file's __metadata__ lists the cases:
  adam_cases, clip_cases: comma-separated case names; schedule_cases: the number of cases, with
  schedule.<k>.name the scheduler of case k.
Tensor names, per case c (i = parameter, s = step):
  adam.c.weight_decay F64 [], adam.c.lr F64 [steps], adam.c.param.i (initial), adam.c.grad.s.i,
  adam.c.after.s.i (parameter after step s), adam.c.exp_avg.i / exp_avg_sq.i (final state);
  clip.c.param.i (zeros, for the shapes), clip.c.grad.i (absent = no gradient), clip.c.max_norm
  F64 [] (what Herd is given), clip.c.norm F32 [] (torch's total norm), clip.c.clipped.i;
  schedule.k.total I64 [], schedule.k.warmup_ratio F64 [], schedule.k.peak F64 [],
  schedule.k.warmup_steps I64 [], schedule.k.lr F64 [total] (the rate at 0-based step s).
"""
import argparse
import math
import sys

try:
    import torch
    from safetensors.torch import save_file
except ImportError as e:
    sys.exit(f"optimizer_reference.py: cannot import {e.name!r} with {sys.executable}; "
             "run scripts/setup.sh to build the test venv")

# LoRA-like shapes ([r, in], [out, r]), one odd-sized tensor for the vectorised kernels' tails.
ADAM_SHAPES = [(8, 16), (16, 8), (4, 32), (5,), (64, 257)]
ADAM_CASES = {
    # name: (weight_decay, lr per step; step 0 at lr 0 as after warmup's first step)
    "decay": (0.1, [0.0, 1e-3, 2e-3, 1.5e-3, 5e-4]),
    "no_decay": (0.0, [1e-3, 1e-3, 7e-4, 3e-4, 1e-4]),
}


def adam(tensors, metadata):
    gen = torch.Generator().manual_seed(1234)
    for name, (wd, lrs) in ADAM_CASES.items():
        params = [torch.nn.Parameter(torch.randn(s, generator=gen) * 0.1) for s in ADAM_SHAPES]
        for i, p in enumerate(params):
            tensors[f"adam.{name}.param.{i}"] = p.detach().clone()
        opt = torch.optim.AdamW(params, lr=lrs[0], weight_decay=wd, foreach=False, fused=False)
        for s, lr in enumerate(lrs):
            for i, p in enumerate(params):
                # Magnitudes from 1e-4 to 10; parameter 1 starts with a zero gradient, as LoRA's
                # A does while B is still zero.
                scale = [1e-4, 1.0, 10.0, 0.5, 1e-2][(i + s) % 5]
                g = torch.randn(p.shape, generator=gen) * scale
                if i == 1 and s == 0:
                    g.zero_()
                p.grad = g
                tensors[f"adam.{name}.grad.{s}.{i}"] = g.clone()
            for group in opt.param_groups:
                group["lr"] = lr
            opt.step()
            for i, p in enumerate(params):
                tensors[f"adam.{name}.after.{s}.{i}"] = p.detach().clone()
        for i, p in enumerate(params):
            tensors[f"adam.{name}.exp_avg.{i}"] = opt.state[p]["exp_avg"].clone()
            tensors[f"adam.{name}.exp_avg_sq.{i}"] = opt.state[p]["exp_avg_sq"].clone()
        tensors[f"adam.{name}.weight_decay"] = torch.tensor(wd, dtype=torch.float64)
        tensors[f"adam.{name}.lr"] = torch.tensor(lrs, dtype=torch.float64)
    metadata["adam_cases"] = ",".join(ADAM_CASES)


CLIP_SHAPES = [(8, 16), (16, 8), (3, 3), (5,)]
CLIP_CASES = {
    # name: (gradient scale, max_norm Herd gets, torch's max_norm, parameter without gradient)
    "clipped": (3.0, 1.0, 1.0, 2),
    "unclipped": (0.01, 1.0, 1.0, None),
    # Herd's max_norm 0 disables clipping; torch has no such switch, inf gives the same result.
    "disabled": (3.0, 0.0, math.inf, None),
    # A non-finite norm: Herd leaves the gradients alone (torch would scale them by NaN).
    "nonfinite": (1.0, 1.0, None, None),
}


def clip(tensors, metadata):
    gen = torch.Generator().manual_seed(99)
    for name, (scale, herd_max, torch_max, no_grad) in CLIP_CASES.items():
        params = [torch.nn.Parameter(torch.zeros(s)) for s in CLIP_SHAPES]
        for i, p in enumerate(params):
            tensors[f"clip.{name}.param.{i}"] = p.detach().clone()
            if i == no_grad:
                continue
            p.grad = torch.randn(p.shape, generator=gen) * scale
            tensors[f"clip.{name}.grad.{i}"] = p.grad.clone()
        if torch_max is None:
            params[0].grad[0, 3] = math.inf
            tensors[f"clip.{name}.grad.0"] = params[0].grad.clone()
            norm = torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
        else:
            norm = torch.nn.utils.clip_grad_norm_(params, torch_max)
        for i, p in enumerate(params):
            if p.grad is not None:
                tensors[f"clip.{name}.clipped.{i}"] = p.grad.clone()
        tensors[f"clip.{name}.max_norm"] = torch.tensor(herd_max, dtype=torch.float64)
        tensors[f"clip.{name}.norm"] = norm.detach().clone()
    metadata["clip_cases"] = ",".join(CLIP_CASES)


# (total steps, warmup_ratio, peak lr): the brief's 37 steps with and without warmup, one step,
# a ratio whose product rounds up (100 * 0.07 = 7.000000000000001 -> 8), the job default 0.03.
SCHEDULE_RUNS = [(37, 0.1, 2e-4), (37, 0.0, 1e-3), (1, 0.0, 2e-4), (1, 0.5, 2e-4),
                 (100, 0.07, 3e-4), (10, 0.03, 2e-4), (1000, 0.03, 2e-4)]


def schedule(tensors, metadata):
    from transformers import TrainingArguments
    from transformers.optimization import (get_constant_schedule_with_warmup,
                                           get_cosine_schedule_with_warmup,
                                           get_linear_schedule_with_warmup)
    k = 0
    for name in ("cosine", "linear", "constant"):
        for total, ratio, peak in SCHEDULE_RUNS:
            args = TrainingArguments(output_dir="/nonexistent/herd", warmup_steps=ratio,
                                     report_to=[])
            warmup = args.get_warmup_steps(total)
            opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=peak)
            if name == "cosine":
                sched = get_cosine_schedule_with_warmup(opt, warmup, total)
            elif name == "linear":
                sched = get_linear_schedule_with_warmup(opt, warmup, total)
            else:
                sched = get_constant_schedule_with_warmup(opt, warmup)
            lrs = []
            for _ in range(total):
                lrs.append(sched.get_last_lr()[0])  # the rate the next optimizer.step uses
                opt.step()
                sched.step()
            metadata[f"schedule.{k}.name"] = name
            tensors[f"schedule.{k}.total"] = torch.tensor(total, dtype=torch.int64)
            tensors[f"schedule.{k}.warmup_ratio"] = torch.tensor(ratio, dtype=torch.float64)
            tensors[f"schedule.{k}.peak"] = torch.tensor(peak, dtype=torch.float64)
            tensors[f"schedule.{k}.warmup_steps"] = torch.tensor(warmup, dtype=torch.int64)
            tensors[f"schedule.{k}.lr"] = torch.tensor(lrs, dtype=torch.float64)
            k += 1
    metadata["schedule_cases"] = str(k)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="safetensors file to write")
    parser.add_argument("--part", choices=["optimizer", "schedule", "all"], default="all")
    args = parser.parse_args()
    torch.set_num_threads(1)
    tensors, metadata = {}, {}
    if args.part in ("optimizer", "all"):
        adam(tensors, metadata)
        clip(tensors, metadata)
    if args.part in ("schedule", "all"):
        schedule(tensors, metadata)
    save_file({k: v.contiguous() for k, v in tensors.items()}, args.out, metadata=metadata)


if __name__ == "__main__":
    main()
