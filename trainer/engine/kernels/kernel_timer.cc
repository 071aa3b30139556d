// KernelTimer: see kernel_timer.h.
#include "trainer/engine/kernels/kernel_timer.h"

#include <algorithm>
#include <chrono>
#include <vector>

#ifdef HERD_WITH_CUDA
#include <ATen/cuda/CUDAEvent.h>
#endif

namespace herd::engine {

KernelTimer::KernelTimer(at::Device device) : device_(device) {
  if (device_.is_cuda()) flush_ = at::empty({256 << 20}, at::TensorOptions().dtype(at::kByte).device(device_));
}

double KernelTimer::MedianMs(const std::function<void()>& run, int warmup, int iters) {
  for (int i = 0; i < warmup; ++i) run();
  std::vector<double> ms;
  for (int i = 0; i < std::max(iters, 1); ++i) {
#ifdef HERD_WITH_CUDA
    if (device_.is_cuda()) {
      flush_.zero_();  // evict the inputs from L2
      at::cuda::CUDAEvent start(cudaEventDefault), stop(cudaEventDefault);
      start.record();
      run();
      stop.record();
      stop.synchronize();
      ms.push_back(start.elapsed_time(stop));
      continue;
    }
#endif
    const auto t0 = std::chrono::steady_clock::now();
    run();
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  std::nth_element(ms.begin(), ms.begin() + ms.size() / 2, ms.end());
  return ms[ms.size() / 2];
}

}  // namespace herd::engine
