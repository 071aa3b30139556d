#!/usr/bin/env bash
# Run on a CPU development box: collects what the GPU machine lacks into device-bundle/ at the
# repository root, which git ignores and a device call carries (`carry: ["device-bundle"]`):
#  - the Debian libraries missing there (DEVICE.md: no gRPC, Abseil, sqlite3 or CLI11), under usr/;
#  - bench/hf_peft_baseline.py, the Hugging Face baseline from ../shared/bench (the folder beside
#    the checkout does not travel to the device);
#  - tiny-model/, the test fixture's tiny model, for gpu_check.sh's correctness step where the
#    build there has no herd-make-tiny-model target (it is a test fixture: HERD_BUILD_TESTS=ON).
#   scripts/device/make_bundle.sh     (HERD_MAKE_TINY_MODEL=binary, else the newest build*/bin one)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
out=$root/device-bundle
packages=(
  libabsl20220623 libabsl-dev libcli11-dev
  libgrpc++1.51 libgrpc++-dev libgrpc29 libgrpc-dev libre2-9 libre2-dev libc-ares2 libc-ares-dev
  protobuf-compiler-grpc libsqlite3-0 libsqlite3-dev
)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
chmod 755 "$work"
(cd "$work" && apt-get download -qq "${packages[@]}" 2>&1 | grep -v "unsandboxed" || true)
got=$(find "$work" -name "*.deb" | wc -l)
[[ $got -eq ${#packages[@]} ]] || { echo "make_bundle.sh: apt-get download got $got of ${#packages[@]} packages" >&2; exit 1; }
rm -rf "$out"
mkdir -p "$out"
for deb in "$work"/*.deb; do dpkg-deb -x "$deb" "$out"; done
# Static archives are not needed for a shared build and are most of the size.
find "$out" -name '*.a' -delete
rm -rf "$out/usr/share/doc" "$out/usr/share/man"

baseline=${HERD_BASELINE:-$root/../shared/bench/hf_peft_baseline.py}
[[ -f $baseline ]] || { echo "make_bundle.sh: no $baseline (the HF baseline gpu_check.sh runs)" >&2; exit 1; }
mkdir -p "$out/bench"
cp "$baseline" "$out/bench/"

tool=${HERD_MAKE_TINY_MODEL:-$(ls -t "$root"/build*/bin/herd-make-tiny-model 2>/dev/null | head -1)}
if [[ -x $tool ]]; then
  "$tool" --out "$out/tiny-model" --corpus "$root/tests/fixtures/corpus/brightwell_corpus.txt" >/dev/null
else
  echo "make_bundle.sh: no herd-make-tiny-model built here; gpu_check.sh then needs that target on the device" >&2
fi
echo "device-bundle: $(du -sh "$out" | cut -f1) in $out"
