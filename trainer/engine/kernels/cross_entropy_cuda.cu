// The chunk cross-entropy kernel (cross_entropy.h): one block per row of logits. Pass 1 reads the
// row once in 16-byte vectors (kCeGroup in flight per thread) and keeps, per thread, an online
// (max, Σexp(l − max), first index of the max); one block reduction gives lse and the argmax. With
// the gradient, pass 2 reads the row again, last part first, and writes exp(l − lse) − [j == target]
// over it in the logits' dtype. So a bf16 logit costs 2 bytes without the gradient and at most 6
// with it. Math is float32 with the accurate expf/logf (no --use_fast_math). Each thread's work is
// a body of cross_entropy_device.h, which the CPU tests also run.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

#include <cstdint>
#include <limits>

#include "trainer/engine/kernels/cross_entropy_cuda.h"
#include "trainer/engine/kernels/cross_entropy_device.h"

namespace herd::engine::cuda_kernels {
namespace {

using kernels::CeRunning;

__device__ __forceinline__ CeRunning ShflXor(const CeRunning& r, int o) {
  CeRunning b;
  b.m = __shfl_xor_sync(0xffffffffu, r.m, o);
  b.s = __shfl_xor_sync(0xffffffffu, r.s, o);
  b.i = __shfl_xor_sync(0xffffffffu, r.i, o);
  return b;
}

// One block per row; 1024 threads per SM whatever kThreads (64 registers each).
template <typename T, int kThreads>
__global__ void __launch_bounds__(kThreads, 1024 / kThreads)
    CrossEntropyKernel(T* __restrict__ logits, const int64_t* __restrict__ targets, float* __restrict__ loss,
                       bool* __restrict__ hit, int v, bool grad) {
  constexpr int kWarps = kThreads / 32;
  __shared__ CeRunning partial[kWarps];

  const int tid = threadIdx.x;
  T* row = logits + static_cast<int64_t>(blockIdx.x) * v;
  const kernels::CeRowPlan plan = kernels::PlanCeRow(row, v);
  const int64_t target64 = targets[blockIdx.x];
  const bool in_range = target64 >= 0 && target64 < v;  // out of range: no read, NaN loss, no −1
  const int target = in_range ? static_cast<int>(target64) : -1;
  float target_logit = 0.0f;
  if (tid == 0 && in_range) target_logit = static_cast<float>(row[target]);  // before pass 2 overwrites it

  CeRunning r = kernels::CePass1(row, v, plan, tid, kThreads);

  // Every thread ends with the row's state, merged in the same fixed order.
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) kernels::CeMerge(r, ShflXor(r, o));
  if ((tid & 31) == 0) partial[tid >> 5] = r;
  __syncthreads();
  r = partial[0];
#pragma unroll
  for (int w = 1; w < kWarps; ++w) kernels::CeMerge(r, partial[w]);
  const float lse = kernels::CeLse(r);

  if (tid == 0) {
    loss[blockIdx.x] = in_range ? lse - target_logit : std::numeric_limits<float>::quiet_NaN();
    hit[blockIdx.x] = kernels::CeArgmax(r) == target;
  }
  if (grad) kernels::CePass2(row, v, plan, tid, kThreads, lse, target);
}

template <typename T, int kThreads>
void Launch(at::Tensor& logits, const at::Tensor& targets, at::Tensor& loss, at::Tensor& hit, bool grad) {
  const int64_t m = logits.size(0);
  const int v = static_cast<int>(logits.size(1));
  CrossEntropyKernel<T, kThreads><<<static_cast<unsigned>(m), kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
      logits.data_ptr<T>(), targets.data_ptr<int64_t>(), loss.data_ptr<float>(), hit.data_ptr<bool>(), v, grad);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <typename T>
void LaunchThreads(int threads, at::Tensor& logits, const at::Tensor& targets, at::Tensor& loss, at::Tensor& hit,
                   bool grad) {
  switch (threads) {
    case 256: Launch<T, 256>(logits, targets, loss, hit, grad); break;
    case 512: Launch<T, 512>(logits, targets, loss, hit, grad); break;
    default: Launch<T, 1024>(logits, targets, loss, hit, grad); break;
  }
}

}  // namespace

std::optional<CrossEntropyChunkResult> CrossEntropyChunk(at::Tensor& logits, const at::Tensor& targets, bool grad,
                                                         int threads) {
  if (threads == 0) threads = kDefaultCrossEntropyThreads;
  TORCH_CHECK(threads == 256 || threads == 512 || threads == 1024,
              "CrossEntropyChunk: threads must be 256, 512 or 1024, got ", threads);
  const at::ScalarType s = logits.scalar_type();
  if (s != at::kFloat && s != at::kBFloat16 && s != at::kHalf) return std::nullopt;
  const int64_t m = logits.size(0), v = logits.size(1);
  if (v >= std::numeric_limits<int32_t>::max() || m >= std::numeric_limits<int32_t>::max()) return std::nullopt;
  const c10::cuda::CUDAGuard guard(logits.device());
  at::Tensor t = targets.contiguous();
  at::Tensor loss = at::empty({m}, logits.options().dtype(at::kFloat));
  at::Tensor hit = at::empty({m}, logits.options().dtype(at::kBool));
  if (m == 0) return CrossEntropyChunkResult{loss, hit};
  switch (s) {
    case at::kFloat: LaunchThreads<float>(threads, logits, t, loss, hit, grad); break;
    case at::kBFloat16: LaunchThreads<c10::BFloat16>(threads, logits, t, loss, hit, grad); break;
    default: LaunchThreads<c10::Half>(threads, logits, t, loss, hit, grad); break;
  }
  return CrossEntropyChunkResult{loss, hit};
}

}  // namespace herd::engine::cuda_kernels
