// DeviceInfo and friends: see device_info.h.
#include "trainer/engine/device_info.h"

#include <ATen/ATen.h>
#include <torch/cuda.h>

#ifdef HERD_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#endif

#include "common/host_info.h"

namespace herd::engine {
namespace {

#ifdef HERD_WITH_CUDA
c10::DeviceIndex CudaIndex(const at::Device& d) { return d.has_index() ? d.index() : c10::cuda::current_device(); }
#endif

}  // namespace

DeviceInfo DescribeDevice(const std::string& device) {
  DeviceInfo info{.kind = "cpu", .name = CpuModelName(), .memory_bytes = HostMemoryBytes()};
#ifdef HERD_WITH_CUDA
  try {
    const at::Device d(device);
    if (d.is_cuda() && torch::cuda::is_available()) {
      const cudaDeviceProp* p = at::cuda::getDeviceProperties(CudaIndex(d));
      info = {.kind = "cuda", .name = p->name, .memory_bytes = static_cast<int64_t>(p->totalGlobalMem)};
    }
  } catch (const std::exception&) {
    // A bad device string is the assignment's error to report; describe the host meanwhile.
  }
#else
  (void)device;
#endif
  return info;
}

std::optional<double> PeakBf16Flops(std::string_view name) {
  auto has = [&](std::string_view s) { return name.find(s) != std::string_view::npos; };
  if (has("H200")) return 989.4e12;
  if (has("H100")) {
    if (has("PCIe")) return 756e12;
    if (has("NVL")) return 835.5e12;
    return 989.4e12;  // SXM5 (HBM3)
  }
  if (has("A100")) return 312e12;
  return std::nullopt;
}

int64_t AllocatedBytes(const std::string& device, bool peak) {
#ifdef HERD_WITH_CUDA
  try {
    const at::Device d(device);
    if (d.is_cuda()) {
      const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(CudaIndex(d));
      const auto& allocated = stats.allocated_bytes[static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE)];
      return peak ? allocated.peak : allocated.current;
    }
  } catch (const std::exception&) {
    return -1;
  }
#endif
  (void)device;
  return ProcStatusBytes(peak ? "VmHWM:" : "VmRSS:");
}

void ResetPeakMemory(const std::string& device) {
#ifdef HERD_WITH_CUDA
  try {
    const at::Device d(device);
    if (d.is_cuda()) c10::cuda::CUDACachingAllocator::resetPeakStats(CudaIndex(d));
  } catch (const std::exception&) {
    // Nothing to reset on a device that does not exist.
  }
#endif
  (void)device;
}

int64_t TakeStepPeakMemory(const std::string& device) {
  const int64_t peak = AllocatedBytes(device, /*peak=*/true);
  ResetPeakMemory(device);
  return peak;
}

}  // namespace herd::engine
