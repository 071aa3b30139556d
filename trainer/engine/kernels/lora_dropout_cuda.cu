// The CUDA kernel of DropoutKeepMask (model/lora_dropout.h): the counter-based hash in native
// uint32 arithmetic, bit for bit the int64 tensor emulation of lora_dropout.cc. One thread per four
// pairs of elements (an 8-byte store) where the row allows it, one per element otherwise; rows of
// the batch along the grid's y.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "trainer/engine/kernels/fused_ops_cuda.h"
#include "trainer/engine/kernels/fused_ops_device.h"

namespace herd::engine::cuda_kernels {
namespace {

constexpr int kThreads = 256;

__global__ void __launch_bounds__(kThreads)
    DropoutQuadKernel(const int64_t* __restrict__ keys, int64_t key_stride0, int64_t key_stride1, uint8_t* __restrict__ out,
                      int64_t rows, uint64_t quads_per_row, uint32_t threshold) {
  for (int64_t b = blockIdx.y; b < rows; b += gridDim.y) {
    const uint32_t lo = static_cast<uint32_t>(keys[b * key_stride0]);
    const uint32_t hi = static_cast<uint32_t>(keys[b * key_stride0 + key_stride1]);
    uint8_t* row = out + static_cast<uint64_t>(b) * quads_per_row * 8;
    for (uint64_t q = static_cast<uint64_t>(blockIdx.x) * blockDim.x + threadIdx.x; q < quads_per_row;
         q += static_cast<uint64_t>(gridDim.x) * blockDim.x) {
      kernels::DropoutQuad(lo, hi, threshold, q, row);
    }
  }
}

__global__ void __launch_bounds__(kThreads)
    DropoutElementKernel(const int64_t* __restrict__ keys, int64_t key_stride0, int64_t key_stride1,
                         uint8_t* __restrict__ out, int64_t rows, uint64_t elements_per_row, uint64_t features,
                         uint32_t threshold) {
  for (int64_t b = blockIdx.y; b < rows; b += gridDim.y) {
    const uint32_t lo = static_cast<uint32_t>(keys[b * key_stride0]);
    const uint32_t hi = static_cast<uint32_t>(keys[b * key_stride0 + key_stride1]);
    uint8_t* row = out + static_cast<uint64_t>(b) * elements_per_row;
    for (uint64_t e = static_cast<uint64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < elements_per_row;
         e += static_cast<uint64_t>(gridDim.x) * blockDim.x) {
      row[e] = kernels::DropoutElement(lo, hi, threshold, e, features);
    }
  }
}

}  // namespace

at::Tensor DropoutKeepMask(const at::Tensor& row_keys, int64_t tokens, int64_t features, double keep) {
  const c10::cuda::CUDAGuard guard(row_keys.device());
  const int64_t rows = row_keys.size(0);
  at::Tensor out = at::empty({rows, tokens, features}, row_keys.options().dtype(at::kBool));
  const uint64_t per_row = static_cast<uint64_t>(tokens) * static_cast<uint64_t>(features);
  if (rows == 0 || per_row == 0) return out;
  const uint32_t threshold = kernels::DropoutThreshold(std::llround(keep * 65536.0));
  const bool quads = features % 2 == 0 && per_row % 8 == 0;
  const uint64_t items = quads ? per_row / 8 : per_row;
  const int64_t wave = static_cast<int64_t>(at::cuda::getCurrentDeviceProperties()->multiProcessorCount) * (2048 / kThreads);
  const int64_t grid_y = std::min<int64_t>(rows, 65535);
  const int64_t grid_x = std::max<int64_t>(1, std::min<int64_t>((items + kThreads - 1) / kThreads, (wave + grid_y - 1) / grid_y));
  const dim3 grid(static_cast<unsigned>(grid_x), static_cast<unsigned>(grid_y));
  auto* dst = reinterpret_cast<uint8_t*>(out.mutable_data_ptr<bool>());
  if (quads) {
    DropoutQuadKernel<<<grid, kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
        row_keys.const_data_ptr<int64_t>(), row_keys.stride(0), row_keys.stride(1), dst, rows, items, threshold);
  } else {
    DropoutElementKernel<<<grid, kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
        row_keys.const_data_ptr<int64_t>(), row_keys.stride(0), row_keys.stride(1), dst, rows, items,
        static_cast<uint64_t>(features), threshold);
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

}  // namespace herd::engine::cuda_kernels
