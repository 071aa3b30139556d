"""Python half of common/safetensors_test.cc's interop test.

Reads the file Herd wrote (--herd-file) with Hugging Face's `safetensors` package and checks every
tensor exactly, then writes the same tensors with `safetensors` (--out) for Herd to check. The
tensor table and value formulas must match kInterop and Pattern() in safetensors_test.cc.
"""
import argparse
import sys

try:
    import torch
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file
except ImportError as e:
    sys.exit(f"safetensors_interop.py: cannot import {e.name!r} with {sys.executable}; "
             "run scripts/setup.sh to build the test venv")

TENSORS = [
    ("f64", torch.float64, (2, 3)),
    ("f32", torch.float32, (4, 5)),
    ("f32_scalar", torch.float32, ()),
    ("f32_empty", torch.float32, (0, 3)),
    ("f16", torch.float16, (7,)),
    ("bf16", torch.bfloat16, (3, 3)),
    ("bf16_scalar", torch.bfloat16, ()),
    ("i64", torch.int64, (5,)),
    ("i32", torch.int32, (2, 2)),
    ("i16", torch.int16, (10,)),
    ("i8", torch.int8, (300,)),
    ("u8", torch.uint8, (256,)),
    ("bool", torch.bool, (10,)),
]


def pattern(dtype, shape):
    """The values of element i (row-major), as Pattern() in safetensors_test.cc computes them."""
    n = 1
    for d in shape:
        n *= d
    i = torch.arange(n, dtype=torch.int64)
    if dtype.is_floating_point:
        v = ((i * 5) % 17 - 8).to(torch.float64) * 0.25
    elif dtype == torch.int64:
        v = i * 3000000019 - 7000000000
    elif dtype == torch.int32:
        v = i * 100003 - 50000
    elif dtype == torch.int16:
        v = (i * 251) % 65536 - 32768
    elif dtype == torch.int8:
        v = (i * 7) % 256 - 128
    elif dtype == torch.uint8:
        v = (i * 13) % 256
    elif dtype == torch.bool:
        v = i % 3 == 0
    else:
        raise ValueError(dtype)
    return v.to(dtype).reshape(shape)


def check_herd_file(path):
    errors = []
    got = load_file(path)
    with safe_open(path, framework="pt") as f:
        metadata = f.metadata()
    if metadata != {"format": "pt", "writer": "herd"}:
        errors.append(f"metadata: {metadata}")
    if sorted(got) != sorted(name for name, _, _ in TENSORS):
        errors.append(f"names: {sorted(got)}")
    for name, dtype, shape in TENSORS:
        t = got.get(name)
        if t is None:
            continue
        want = pattern(dtype, shape)
        if t.dtype != dtype or tuple(t.shape) != shape or not torch.equal(t, want):
            errors.append(f"{name}: got {t.dtype} {tuple(t.shape)} {t.flatten()[:8].tolist()}, "
                          f"want {dtype} {shape} {want.flatten()[:8].tolist()}")
    return errors


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--herd-file", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    errors = check_herd_file(args.herd_file)
    for e in errors:
        print(f"{args.herd_file}: {e}", file=sys.stderr)
    save_file({name: pattern(dtype, shape) for name, dtype, shape in TENSORS}, args.out,
              metadata={"format": "pt", "writer": "python"})
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
