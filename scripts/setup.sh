#!/usr/bin/env bash
# Installs everything Herd's build and tests need on Debian 12 (DESIGN.md §9):
#   - Debian packages (compilers, gRPC, protobuf, yaml-cpp, sentencepiece, SQLite, ...);
#   - a Python virtual environment outside the checkout with torch 2.11.0 (libtorch for the
#     engine) and the reference stack the tests compare against, rebuilt only when
#     scripts/requirements.txt changes.
# Idempotent and quiet when everything is there; on failure it names the step that failed.
# Environment: HERD_VENV (default ~/.cache/herd/venv), HERD_PYTHON_BOOTSTRAP (default python3).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
venv=${HERD_VENV:-$HOME/.cache/herd/venv}
bootstrap_python=${HERD_PYTHON_BOOTSTRAP:-python3}
step=""
trap 'echo "setup.sh: FAILED during: $step" >&2' ERR

packages=(
  build-essential cmake ninja-build pkg-config ccache git binutils file
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler libabsl-dev
  libyaml-cpp-dev nlohmann-json3-dev libcli11-dev libssl-dev openssl
  libsentencepiece-dev sentencepiece
  libsqlite3-dev sqlite3
  libgtest-dev libgmock-dev
  prometheus libcpp-httplib-dev
  python3 python3-venv
)

step="checking Debian packages"
missing=()
for p in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  [[ "$status" == "install ok installed" ]] || missing+=("$p")
done
if [[ ${#missing[@]} -gt 0 ]]; then
  sudo=""
  [[ $(id -u) -eq 0 ]] || sudo="sudo"
  step="apt-get update"
  echo "setup.sh: installing ${missing[*]}"
  $sudo apt-get update -qq
  step="apt-get install ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

step="checking the Python environment at $venv"
requirements="$here/requirements.txt"
stamp="$venv/.herd-requirements.sha256"
want=$(sha256sum "$requirements" | cut -d' ' -f1)
if [[ ! -x "$venv/bin/python3" || ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
  echo "setup.sh: building the Python environment in $venv (torch is several GB the first time)"
  step="creating the virtual environment $venv"
  rm -rf "$venv"
  "$bootstrap_python" -m venv "$venv"
  step="pip install -r $requirements"
  "$venv/bin/python3" -m pip install -q --disable-pip-version-check -r "$requirements"
  echo "$want" > "$stamp"
fi

step="checking the Python environment imports"
"$venv/bin/python3" - <<'PY'
import importlib, sys
for name in ("torch", "transformers", "peft", "tokenizers", "safetensors", "sentencepiece"):
    importlib.import_module(name)
import torch
if not torch.__version__.startswith("2.11.0"):
    sys.exit(f"torch {torch.__version__} is not the pinned 2.11.0")
PY
