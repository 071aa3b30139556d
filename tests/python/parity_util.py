"""What the tokenizer parity scripts share (bpe_parity.py, tokenizer_parity.py): problems collected
rather than stopping at the first, Herd's tools run as children, JSONL in and out, and the report
at the end."""
import json
import os
import subprocess
import sys

errors = []


def check(ok, message):
    """Records `message` as a problem unless `ok`; returns `ok`."""
    if not ok:
        errors.append(message)
    return ok


def run(cmd):
    """Runs one of Herd's tools; a failure ends the script with its stderr."""
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"{os.path.basename(sys.argv[0])}: {' '.join(cmd)} failed (rc {r.returncode}):\n{r.stderr}")
    return r.stdout


def write_jsonl(path, records):
    with open(path, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def report(success):
    """Exits 1 listing the first 40 problems, else prints `success`."""
    name = os.path.basename(sys.argv[0])
    if errors:
        print(f"{name}: {len(errors)} problem(s):")
        for e in errors[:40]:
            print("  " + e)
        sys.exit(1)
    print(f"{name}: {success}")
