// What the engine reports about its device (engine_protocol.md §6.1 hello, §6.4 progress): name,
// total memory, the peak memory of a step and the bf16 matmul peak that model FLOPs utilisation
// (MFU) is measured against. libtorch stays in the .cc.
#ifndef HERD_TRAINER_ENGINE_DEVICE_INFO_H_
#define HERD_TRAINER_ENGINE_DEVICE_INFO_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace herd::engine {

struct DeviceInfo {
  std::string kind;      // "cuda" or "cpu"
  std::string name;      // "NVIDIA H100 80GB HBM3", or the CPU's model name
  int64_t memory_bytes;  // the GPU's total memory, or the host's
};

// `device`: "cpu" or "cuda[:N]" (CUDA where available). Never throws.
DeviceInfo DescribeDevice(const std::string& device);

// The dense bf16 tensor-core peak of a GPU by its name, in FLOP/s: the denominator of MFU. Known:
// H100 SXM/HBM3 and H200 989.4 T, H100 PCIe 756 T, H100 NVL 835.5 T, A100 312 T. nullopt for
// other names (MFU is then reported as unknown, not guessed).
std::optional<double> PeakBf16Flops(std::string_view device_name);

// Memory in use on `device`: the CUDA caching allocator's allocated bytes now, or with `peak` the
// most since its last reset; on a CPU the process's resident set now, or its peak. -1 where unknown.
// "cuda" without an index is the current device.
int64_t AllocatedBytes(const std::string& device, bool peak);
// Starts a new peak for AllocatedBytes(device, true) on a GPU; nothing on a CPU (the peak resident
// set cannot be reset).
void ResetPeakMemory(const std::string& device);

// The most memory allocated on `device` since the last call (AllocatedBytes's peak, then reset).
int64_t TakeStepPeakMemory(const std::string& device);

}  // namespace herd::engine

#endif  // HERD_TRAINER_ENGINE_DEVICE_INFO_H_
