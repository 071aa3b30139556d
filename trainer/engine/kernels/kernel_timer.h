// Timing for the kernel checks (herd-kernel-check, CheckCrossEntropyKernel): the median wall time
// of a piece of work, on CUDA by events with the L2 cache flushed before each run (so the figure
// is the DRAM bandwidth a training step sees), elsewhere by the steady clock.
#ifndef HERD_TRAINER_ENGINE_KERNELS_KERNEL_TIMER_H_
#define HERD_TRAINER_ENGINE_KERNELS_KERNEL_TIMER_H_

#include <ATen/ATen.h>

#include <functional>

namespace herd::engine {

class KernelTimer {
 public:
  // On CUDA this allocates the 256 MB the flush writes (H100/H200 L2: 50/60 MB).
  explicit KernelTimer(at::Device device);
  // Median of `iters` runs after `warmup` untimed ones, in milliseconds.
  double MedianMs(const std::function<void()>& run, int warmup, int iters);

 private:
  at::Device device_;
  at::Tensor flush_;
};

}  // namespace herd::engine

#endif  // HERD_TRAINER_ENGINE_KERNELS_KERNEL_TIMER_H_
