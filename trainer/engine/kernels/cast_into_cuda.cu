// cuda_kernels::CastInto (kernels/cast_into.h): one launch, a copy per y-block row of the grid. The
// table of copies (pointers, shapes, row spacings) goes to the device through pinned memory with
// the launch; each copy is a few hundred KB at most, so plain element-wise code is enough.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

#include <algorithm>
#include <cstdint>

#include "trainer/engine/kernels/cast_into.h"
#include "trainer/engine/kernels/fused_ops_cuda.h"

namespace herd::engine::cuda_kernels {
namespace {

constexpr int kThreads = 256;
constexpr int kBlocksPerCopy = 16;
constexpr int kFields = 6;  // src, dst, rows, cols, src row spacing, dst row spacing

template <typename T>
__global__ void __launch_bounds__(kThreads) CastIntoKernel(const int64_t* __restrict__ table, int first) {
  const int64_t* job = table + static_cast<int64_t>(first + blockIdx.y) * kFields;
  const float* src = reinterpret_cast<const float*>(job[0]);
  T* dst = reinterpret_cast<T*>(job[1]);
  const int64_t rows = job[2], cols = job[3], src_ld = job[4], dst_ld = job[5];
  const int64_t n = rows * cols;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = i / cols, c = i - r * cols;
    dst[r * dst_ld + c] = static_cast<T>(src[r * src_ld + c]);
  }
}

}  // namespace

bool CastInto(const std::vector<CastPair>& pairs) {
  if (pairs.empty()) return true;
  const at::Tensor& first = pairs.front().dst;
  const at::ScalarType dtype = first.scalar_type();
  if (dtype != at::kBFloat16 && dtype != at::kHalf) return false;
  at::Tensor table = at::empty({static_cast<int64_t>(pairs.size()), kFields},
                               at::TensorOptions().dtype(at::kLong).pinned_memory(true));
  int64_t* t = table.data_ptr<int64_t>();
  for (const CastPair& p : pairs) {
    const int64_t src_ld = RowSpacing(p.src), dst_ld = RowSpacing(p.dst);
    if (p.src.scalar_type() != at::kFloat || p.dst.scalar_type() != dtype || !p.src.is_cuda() ||
        p.src.device() != first.device() || p.dst.device() != first.device() || src_ld < p.src.size(1) ||
        dst_ld < p.dst.size(1)) {
      return false;
    }
    t[0] = reinterpret_cast<int64_t>(p.src.const_data_ptr());
    t[1] = reinterpret_cast<int64_t>(p.dst.data_ptr());
    t[2] = p.src.size(0);
    t[3] = p.src.size(1);
    t[4] = src_ld;
    t[5] = dst_ld;
    t += kFields;
  }
  const c10::cuda::CUDAGuard guard(first.device());
  // (non_blocking from pinned memory: the caching host allocator keeps the table until the copy ran)
  const at::Tensor on_device = table.to(first.device(), /*non_blocking=*/true);
  const int n = static_cast<int>(pairs.size());
  for (int start = 0; start < n; start += 65535) {  // (gridDim.y's limit)
    const dim3 grid(kBlocksPerCopy, static_cast<unsigned>(std::min(n - start, 65535)));
    if (dtype == at::kBFloat16) {
      CastIntoKernel<c10::BFloat16><<<grid, kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
          on_device.const_data_ptr<int64_t>(), start);
    } else {
      CastIntoKernel<c10::Half><<<grid, kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
          on_device.const_data_ptr<int64_t>(), start);
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  return true;
}

}  // namespace herd::engine::cuda_kernels
