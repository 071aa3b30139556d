#!/usr/bin/env bash
# Optional, on a CPU development box: cross-builds the CUDA binaries gpu_check.sh needs against
# this box's torch (2.11.0+cu130, the GPU machine's version, DEVICE.md) and CUDA 13, and puts them
# with the shared libraries the GPU machine lacks (yaml-cpp 0.7, sentencepiece, libcudart; Abseil
# comes from device-bundle) into device-bundle/prebuilt/{bin,lib}. gpu_check.sh uses them when
# called with HERD_GPU_PREBUILT=device-bundle/prebuilt and they start there (herd-engine --probe
# sees the GPU), and builds on the device otherwise. Unproven on the GPU machine until a device
# call has shown `"how":"prebuilt ..."` in results.jsonl; it saves the build's 1-2 minutes there.
# Run it right before the device call: gpu_check.sh refuses binaries of other sources (a stamp).
#   scripts/device/make_prebuilt.sh        (after make_bundle.sh; HERD_PREBUILT_BUILD=dir to reuse;
#                                           HERD_PREBUILT_EXTRA="" leaves the two check tools out)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
build=${HERD_PREBUILT_BUILD:-$root/build-prebuilt}
dest=$root/device-bundle/prebuilt
python=$(command -v python3)
[[ -x "$HOME/.cache/herd/venv/bin/python3" ]] && python=$HOME/.cache/herd/venv/bin/python3
prefix=$("$python" -c 'import torch;print(torch.utils.cmake_prefix_path)')
torch_lib=$("$python" -c 'import torch,os;print(os.path.join(os.path.dirname(torch.__file__),"lib"))')
# The engine's sources, hashed: prebuilt binaries are used only for the tree they were built from.
src_stamp() {
  (cd "$root" && find CMakeLists.txt cmake common datasets trainer tests/fixtures -type f \( -name '*.cc' -o \
    -name '*.h' -o -name '*.cu' -o -name '*.cuh' -o -name CMakeLists.txt -o -name '*.cmake' \) | LC_ALL=C sort |
    xargs sha256sum | sha256sum | cut -c1-16)
}
gen=(); command -v ninja >/dev/null && gen=(-G Ninja)
cmake -S "$root" -B "$build" "${gen[@]}" -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_BUILD_TYPE=Release \
  -DHERD_WITH_CUDA=ON -DHERD_BUILD_SERVICES=OFF -DHERD_BUILD_TESTS=OFF -DHERD_PYTHON="$python" >/dev/null
targets=(herd-engine herd-bench herd-train)
have=$(cmake --build "$build" --target help)
for t in ${HERD_PREBUILT_EXTRA-herd-kernel-check herd-attention-check}; do
  grep -qE "(^|[ .:])$t(:| |$)" <<<"$have" && targets+=("$t")
done
cmake --build "$build" -j "$(nproc)" --target "${targets[@]}"
rm -rf "$dest"
mkdir -p "$dest/bin" "$dest/lib"
for t in "${targets[@]}"; do cp "$build/bin/$t" "$dest/bin/"; done
# Libraries to carry: what the binaries need, less glibc/libstdc++ (newer there), torch and NCCL
# (the GPU machine's own, same versions) and Abseil (device-bundle/usr has it).
for t in "${targets[@]}"; do ldd "$build/bin/$t"; done | awk '$3 ~ /^\// {print $1, $3}' | sort -u |
  while read -r name path; do
    case $name in
      libc.so*|libm.so*|libstdc++*|libgcc_s*|ld-linux*|libpthread*|libdl.so*|librt.so*|libutil.so*|libresolv*) continue ;;
      libnccl*|libabsl*|libcuda.so*|libnvidia*) continue ;;  # (libcuda: the driver's own)
    esac
    [[ $path == "$torch_lib"/* ]] && continue
    [[ $path == */site-packages/* ]] && continue
    cp -L "$path" "$dest/lib/$name"
  done
src_stamp >"$dest/source-stamp"
echo "prebuilt: $(du -sh "$dest" | cut -f1) in $dest: $(ls "$dest/bin" | tr '\n' ' ')"
echo "libs: $(ls "$dest/lib" | tr '\n' ' ')"
