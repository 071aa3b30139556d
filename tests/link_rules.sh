#!/usr/bin/env bash
# The dependency split of DESIGN.md §1-2, checked on the built binaries: no process may load
# libtorch together with Debian's protobuf/gRPC, Gloo or fmt (libtorch carries its own copies).
#   link_rules.sh --engine BIN... --service BIN... --tool BIN...
# Tools (herd-train, herd-prepare) link the SentencePiece tokenizer, which carries its own
# protobuf 3.14: they may load neither libtorch nor Debian's protobuf/gRPC.
# For each binary: the libraries the dynamic loader would map (ldd, so transitive ones count),
# and the symbols the binary itself defines (so a static copy cannot slip through).
set -uo pipefail

failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }

libs_of() { ldd "$1" | awk '{print $1}'; }
defined_symbols() { nm -C --defined-only "$1" 2>/dev/null; }

check_engine() {
  local bin=$1 libs syms before=$failures
  libs=$(libs_of "$bin") || { fail "$bin: ldd failed"; return; }
  for want in libtorch_cpu.so libc10.so; do
    grep -q "^$want" <<<"$libs" || fail "$bin does not link $want"
  done
  if [[ "${HERD_EXPECT_NCCL:-0}" == 1 ]]; then
    grep -q '^libnccl.so' <<<"$libs" || fail "$bin does not link NCCL although it was found"
  fi
  for banned in libprotobuf libgrpc libgpr libgloo libfmt libspdlog libsentencepiece; do
    grep -q "^$banned" <<<"$libs" && fail "$bin loads $(grep "^$banned" <<<"$libs" | head -1) (engine must not)"
  done
  syms=$(defined_symbols "$bin")
  for pattern in 'google::protobuf::' 'grpc::' 'gloo::' 'fmt::v9::' 'spdlog::'; do
    grep -q -- "$pattern" <<<"$syms" && fail "$bin defines $pattern symbols (a static copy)"
  done
  [[ $failures -eq $before ]] && echo "ok: $(basename "$bin") links libtorch$([[ "${HERD_EXPECT_NCCL:-0}" == 1 ]] && echo ' and NCCL'), no gRPC/protobuf/Gloo/fmt"
}

check_service() {
  local bin=$1 libs syms before=$failures
  libs=$(libs_of "$bin") || { fail "$bin: ldd failed"; return; }
  for want in libgrpc++.so libprotobuf.so; do
    grep -q "^$want" <<<"$libs" || fail "$bin does not link $want"
  done
  for banned in libtorch libc10 libnccl libgloo libcudart libsentencepiece; do
    grep -q "^$banned" <<<"$libs" && fail "$bin loads $(grep "^$banned" <<<"$libs" | head -1) (only the engine may)"
  done
  syms=$(defined_symbols "$bin")
  for pattern in 'at::Tensor' 'c10::' 'torch::'; do
    grep -q -- "$pattern" <<<"$syms" && fail "$bin defines $pattern symbols"
  done
  [[ $failures -eq $before ]] && echo "ok: $(basename "$bin") links gRPC and protobuf, no libtorch/NCCL"
}

check_tool() {
  local bin=$1 libs before=$failures
  libs=$(libs_of "$bin") || { fail "$bin: ldd failed"; return; }
  for banned in libtorch libc10 libnccl libprotobuf libgrpc libgpr; do
    grep -q "^$banned" <<<"$libs" && fail "$bin loads $(grep "^$banned" <<<"$libs" | head -1) (a tool with the tokenizer must not)"
  done
  [[ $failures -eq $before ]] && echo "ok: $(basename "$bin") links neither libtorch nor gRPC/protobuf"
}

mode=""
checked=0
for arg in "$@"; do
  case "$arg" in
    --engine) mode=engine ;;
    --service) mode=service ;;
    --tool) mode=tool ;;
    *)
      [[ -x "$arg" ]] || { fail "$arg is not a built executable"; continue; }
      "check_$mode" "$arg"
      checked=$((checked + 1))
      ;;
  esac
done
[[ $checked -gt 0 ]] || fail "no binaries given"
[[ $failures -eq 0 ]] || { echo "$failures link rule(s) broken"; exit 1; }
