// DeviceInfo and friends: see device_info.h.
#include "trainer/engine/device_info.h"

#include <unistd.h>

#include <ATen/ATen.h>
#include <torch/cuda.h>

#include <fstream>

#ifdef HERD_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDACachingAllocator.h>
#endif

namespace herd::engine {
namespace {

int64_t HostMemoryBytes() {
  return static_cast<int64_t>(::sysconf(_SC_PHYS_PAGES)) * static_cast<int64_t>(::sysconf(_SC_PAGE_SIZE));
}

std::string CpuName() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) == 0) {
      size_t colon = line.find(':');
      if (colon != std::string::npos) return line.substr(colon + 2);
    }
  }
  return "cpu";
}

// "VmHWM:"-style line of /proc/self/status in bytes; -1 where there is none.
int64_t ProcStatusBytes(const std::string& key) {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(key, 0) == 0) return std::stoll(line.substr(key.size())) * 1024;
  }
  return -1;
}

#ifdef HERD_WITH_CUDA
c10::DeviceIndex CudaIndex(const at::Device& d) { return d.has_index() ? d.index() : c10::DeviceIndex{0}; }
#endif

}  // namespace

DeviceInfo DescribeDevice(const std::string& device) {
  DeviceInfo info{.kind = "cpu", .name = CpuName(), .memory_bytes = HostMemoryBytes()};
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

int64_t TakeStepPeakMemory(const std::string& device) {
#ifdef HERD_WITH_CUDA
  try {
    const at::Device d(device);
    if (d.is_cuda()) {
      const auto index = CudaIndex(d);
      auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(index);
      const int64_t peak =
          stats.allocated_bytes[static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE)].peak;
      c10::cuda::CUDACachingAllocator::resetPeakStats(index);
      return peak;
    }
  } catch (const std::exception&) {
    return -1;
  }
#endif
  (void)device;
  return ProcStatusBytes("VmHWM:");
}

}  // namespace herd::engine
