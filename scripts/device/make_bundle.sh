#!/usr/bin/env bash
# Run on a CPU development box: collects the Debian libraries the GPU machine lacks (DEVICE.md:
# no gRPC, Abseil, sqlite3 or CLI11 there) into device-bundle/ at the repository root, which git
# ignores and a device call carries (`carry: ["device-bundle"]`).
#   scripts/device/make_bundle.sh
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
echo "device-bundle: $(du -sh "$out" | cut -f1) in $out"
