// The CUDA kernels of the fused stages (fused_ops.h): RMSNorm forward/backward (one block per row,
// the row in registers, one block reduction), RoPE forward/backward (one (b, t) row per block row,
// cos/sin read once per row) and SwiGLU forward/backward (grid-stride, two vectors in flight per
// thread). Each thread's work is a body of fused_ops_device.h, which the CPU tests also run.
// 16-byte accesses wherever the row length and the pointers allow, single elements otherwise.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <type_traits>

#include "trainer/engine/kernels/fused_ops_cuda.h"
#include "trainer/engine/kernels/fused_ops_device.h"

namespace herd::engine::cuda_kernels {
namespace {

using kernels::kMaxRowThreads;
using kernels::kVecWidth;

using kernels::Int;
template <typename T>
struct Tag {
  using type = T;
};

// Calls f(Tag<T>{}) for the storage types the kernels handle; false for any other.
template <typename F>
bool DispatchType(at::ScalarType s, F&& f) {
  switch (s) {
    case at::kFloat: f(Tag<float>{}); return true;
    case at::kBFloat16: f(Tag<c10::BFloat16>{}); return true;
    case at::kHalf: f(Tag<c10::Half>{}); return true;
    default: return false;
  }
}

// True where the kernels handle `a` with `others`: a storage type of DispatchType, shared by all,
// on one device. (Checked before anything is allocated; float64 goes to the reference.)
bool SameType(const at::Tensor& a, std::initializer_list<at::Tensor> others) {
  const at::ScalarType s = a.scalar_type();
  if (s != at::kFloat && s != at::kBFloat16 && s != at::kHalf) return false;
  for (const at::Tensor& o : others) {
    if (o.scalar_type() != a.scalar_type() || o.device() != a.device()) return false;
  }
  return true;
}

bool Aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

int SmCount() { return at::cuda::getCurrentDeviceProperties()->multiProcessorCount; }

// A grid-stride grid: enough blocks for the work, at most one full wave at 2048 threads per SM.
int64_t StrideGrid(int64_t work_items, int threads) {
  const int64_t wave = static_cast<int64_t>(SmCount()) * (2048 / threads);
  const int64_t need = (work_items + threads - 1) / threads;
  return need < wave ? need : wave;
}

// ---- RMSNorm ----

__device__ __forceinline__ float WarpSum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// The block's sum, in every thread, in a fixed order (reproducible). One call per block lifetime.
__device__ __forceinline__ float BlockSum(float v, float* partial) {
  v = WarpSum(v);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  v = lane < static_cast<int>(blockDim.x >> 5) ? partial[lane] : 0.0f;
  return WarpSum(v);
}

template <typename T, int kW, int kVec>
__global__ void __launch_bounds__(kMaxRowThreads)
    RmsNormForwardKernel(const T* __restrict__ x, const T* __restrict__ w, T* __restrict__ y,
                         float* __restrict__ rstd_out, int h, int64_t y_stride, float eps) {
  __shared__ float partial[32];
  const int64_t row = blockIdx.x;
  const int nvec = h / kW;
  kernels::RmsNormForwardThread<T, kW, kVec> t;
  const float ss = BlockSum(t.Load(x + row * h, threadIdx.x, blockDim.x, nvec), partial);
  const float rstd = kernels::RmsNormRstd(ss, h, eps);
  if (threadIdx.x == 0) rstd_out[row] = rstd;
  t.Store(y + row * y_stride, w, rstd, threadIdx.x, blockDim.x, nvec);
}

template <typename T, int kW, int kVec>
__global__ void __launch_bounds__(kMaxRowThreads)
    RmsNormBackwardKernel(const T* __restrict__ dy, const T* __restrict__ x, const T* __restrict__ w,
                          const float* __restrict__ rstd_in, T* __restrict__ dx, int h, int64_t dy_stride,
                          const T* __restrict__ add) {
  __shared__ float partial[32];
  const int64_t row = blockIdx.x;
  const int nvec = h / kW;
  const float rstd = rstd_in[row];
  kernels::RmsNormBackwardThread<T, kW, kVec> t;
  const float dot =
      BlockSum(t.Load(x + row * h, dy + row * dy_stride, w, rstd, threadIdx.x, blockDim.x, nvec), partial);
  t.Store(dx + row * h, rstd, dot / static_cast<float>(h), threadIdx.x, blockDim.x, nvec,
          add == nullptr ? nullptr : add + row * h);
}


// The row plan for these tensors, or ok = false where a kernel does not apply. rows_aligned: whether
// rows of a tensor spaced other than H apart still start on 16 bytes (vector accesses need it).
kernels::RowPlan PlanRows(const at::Tensor& x, int vec_width, std::initializer_list<const void*> ptrs,
                          bool rows_aligned = true) {
  bool aligned = rows_aligned;
  for (const void* p : ptrs) aligned = aligned && Aligned16(p);
  kernels::RowPlan plan = kernels::PlanRow(x.size(-1), vec_width, aligned);
  plan.ok = plan.ok && x.numel() / x.size(-1) <= std::numeric_limits<int32_t>::max() &&
            x.size(-1) <= std::numeric_limits<int32_t>::max();
  return plan;
}

// ---- RoPE ----

template <typename T, int kW, bool kBackward>
__global__ void RopeKernel(const T* __restrict__ in, const T* __restrict__ cos, const T* __restrict__ sin,
                           T* __restrict__ out, int64_t rows, int64_t tokens, int64_t cos_sb, int64_t cos_st,
                           int64_t sin_sb, int64_t sin_st, int heads, int d, int64_t out_rs) {
  const int half = d / 2;
  const int j = threadIdx.x;  // blockDim.x == half / kW
  for (int64_t r = static_cast<int64_t>(blockIdx.x) * blockDim.z + threadIdx.z; r < rows;
       r += static_cast<int64_t>(gridDim.x) * blockDim.z) {
    const int64_t b = r / tokens, t = r - b * tokens;
    kernels::RopeThread<T, kW, kBackward> th;
    th.LoadAngles(cos + b * cos_sb + t * cos_st, sin + b * sin_sb + t * sin_st, j, half);
    const int64_t base = r * heads * d, out_base = r * out_rs;
    for (int h = threadIdx.y; h < heads; h += blockDim.y) th.Apply(in + base + h * d, out + out_base + h * d, j, half);
  }
}

template <bool kBackward>
std::optional<at::Tensor> Rope(const at::Tensor& x_in, const at::Tensor& cos_in, const at::Tensor& sin_in,
                               const at::Tensor& out_in) {
  if (!SameType(x_in, {cos_in, sin_in})) return std::nullopt;
  if (out_in.defined() && !SameType(x_in, {out_in})) return std::nullopt;
  const int64_t bsz = x_in.size(0), tokens = x_in.size(1), heads = x_in.size(2), d = x_in.size(3);
  if (d > 2048 || heads > std::numeric_limits<int32_t>::max() / 2048) return std::nullopt;
  const c10::cuda::CUDAGuard guard(x_in.device());
  at::Tensor x = x_in.contiguous();
  at::Tensor cos = cos_in.stride(2) == 1 ? cos_in : cos_in.contiguous();
  at::Tensor sin = sin_in.stride(2) == 1 ? sin_in : sin_in.contiguous();
  // out: [B, T, heads, D] with each (b, t) row's heads·D dense and rows evenly spaced (a slice of a
  // wider [B·T, ·] buffer), or a new tensor.
  int64_t out_rs = heads * d;
  if (out_in.defined()) {
    if (out_in.sizes() != x.sizes() || out_in.stride(3) != 1 || out_in.stride(2) != d ||
        (tokens > 1 && out_in.stride(0) != tokens * out_in.stride(1))) {
      return std::nullopt;
    }
    out_rs = out_in.stride(1);
  }
  at::Tensor out = out_in.defined() ? out_in : at::empty_like(x, at::MemoryFormat::Contiguous);
  if (x.numel() == 0) return out;
  const int64_t rows = bsz * tokens;
  return DispatchType(x.scalar_type(), [&](auto tag) {
           using T = typename decltype(tag)::type;
           constexpr int kV = kVecWidth<T>;
           const int64_t half = d / 2;
           const bool vec = half % kV == 0 && Aligned16(x.data_ptr()) && Aligned16(out.data_ptr()) &&
                            Aligned16(cos.data_ptr()) && Aligned16(sin.data_ptr()) && out_rs % kV == 0 &&
                           cos.stride(0) % kV == 0 &&
                            cos.stride(1) % kV == 0 && sin.stride(0) % kV == 0 && sin.stride(1) % kV == 0;
           auto launch = [&](auto w) {
             constexpr int kW = decltype(w)::value;
             const kernels::RopeBlock rb = kernels::PlanRope(half, kW, heads);
             const dim3 block(rb.x, rb.y, rb.z);
             const int64_t grid = std::min<int64_t>((rows + rb.z - 1) / rb.z, std::numeric_limits<int32_t>::max());
             RopeKernel<T, kW, kBackward><<<static_cast<unsigned>(grid), block, 0, at::cuda::getCurrentCUDAStream()>>>(
                 x.const_data_ptr<T>(), cos.const_data_ptr<T>(), sin.const_data_ptr<T>(), out.mutable_data_ptr<T>(), rows,
                 tokens, cos.stride(0), cos.stride(1), sin.stride(0), sin.stride(1), static_cast<int>(heads),
                 static_cast<int>(d), out_rs);
             C10_CUDA_KERNEL_LAUNCH_CHECK();
           };
           if (vec) {
             launch(Int<kV>{});
           } else {
             launch(Int<1>{});
           }
         })
             ? std::optional<at::Tensor>(out)
             : std::nullopt;
}

// ---- SwiGLU ----

constexpr int kElementwiseThreads = 256;
constexpr int kUnroll = 2;  // vectors per thread per loop trip: more loads in flight

template <typename T, int kW>
__global__ void __launch_bounds__(kElementwiseThreads)
    SwiGluForwardKernel(const T* __restrict__ g, const T* __restrict__ u, T* __restrict__ y, int64_t nvec) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t v0 = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; v0 < nvec; v0 += stride * kUnroll) {
    kernels::SwiGluForwardThread<T, kW> th[kUnroll];
#pragma unroll
    for (int k = 0; k < kUnroll; ++k) {
      if (v0 + k * stride < nvec) th[k].Load(g, u, (v0 + k * stride) * kW);
    }
#pragma unroll
    for (int k = 0; k < kUnroll; ++k) {
      if (v0 + k * stride < nvec) th[k].Store(y, (v0 + k * stride) * kW);
    }
  }
}

template <typename T, int kW>
__global__ void __launch_bounds__(kElementwiseThreads)
    SwiGluBackwardKernel(const T* __restrict__ da, const T* __restrict__ g, const T* __restrict__ u,
                         T* __restrict__ dg, T* __restrict__ du, int64_t nvec, int64_t row_len, int64_t out_rs) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t v0 = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; v0 < nvec; v0 += stride * kUnroll) {
    kernels::SwiGluBackwardThread<T, kW> th[kUnroll];
#pragma unroll
    for (int k = 0; k < kUnroll; ++k) {
      if (v0 + k * stride < nvec) th[k].Load(da, g, u, (v0 + k * stride) * kW);
    }
#pragma unroll
    for (int k = 0; k < kUnroll; ++k) {
      if (v0 + k * stride < nvec) {
        // dg, du rows out_rs apart (the gate/up gradients side by side; row_len when dense).
        const int64_t off = (v0 + k * stride) * kW;
        const int64_t row = out_rs == row_len ? 0 : off / row_len;  // (no division when dense)
        th[k].Store(dg, du, out_rs == row_len ? off : row * out_rs + (off - row * row_len));
      }
    }
  }
}

// Calls f(Int<kW>{}) with 16-byte accesses where n and every pointer allow them.
template <typename T, typename F>
void DispatchElementwise(int64_t n, std::initializer_list<const void*> ptrs, F&& f, bool vectors_allowed = true) {
  bool vec = vectors_allowed && n % kVecWidth<T> == 0;
  for (const void* p : ptrs) vec = vec && Aligned16(p);
  if (vec) {
    f(Int<kVecWidth<T>>{});
  } else {
    f(Int<1>{});
  }
}

// RowSpacing of a tensor that must be [rows, h], or -1.
int64_t RowStride(const at::Tensor& t, int64_t rows, int64_t h) {
  if (t.dim() != 2 || t.size(0) != rows || t.size(1) != h) return -1;
  return RowSpacing(t);
}

}  // namespace

int64_t RowSpacing(const at::Tensor& t) {
  if (t.dim() != 2) return -1;
  if (t.size(1) > 1 && t.stride(1) != 1) return -1;
  return t.size(0) <= 1 ? t.size(1) : t.stride(0);
}

std::optional<RmsNormResult> RmsNormForward(const at::Tensor& x_in, const at::Tensor& w_in, double eps,
                                            const at::Tensor& out) {
  if (!SameType(x_in, {w_in})) return std::nullopt;
  const c10::cuda::CUDAGuard guard(x_in.device());
  at::Tensor x = x_in.contiguous(), w = w_in.contiguous();
  const int64_t h = x.size(-1), rows = h == 0 ? 0 : x.numel() / h;
  const int64_t y_stride = out.defined() ? RowStride(out, rows, h) : h;
  if (out.defined() && (!SameType(x, {out}) || y_stride < h)) return std::nullopt;
  std::optional<RmsNormResult> result;
  const bool handled = DispatchType(x.scalar_type(), [&](auto tag) {
    using T = typename decltype(tag)::type;
    at::Tensor y = out.defined() ? out : at::empty_like(x, at::MemoryFormat::Contiguous);
    at::Tensor rstd = at::empty({rows}, x.options().dtype(at::kFloat));
    const kernels::RowPlan plan =
        PlanRows(x, kVecWidth<T>, {x.data_ptr(), w.data_ptr(), y.data_ptr()}, y_stride % kVecWidth<T> == 0);
    if (!plan.ok) return;
    if (rows > 0) {
      kernels::ForRowPlan<T>(plan, [&](auto kw, auto kvec) {
        RmsNormForwardKernel<T, decltype(kw)::value, decltype(kvec)::value>
            <<<static_cast<unsigned>(rows), plan.threads, 0, at::cuda::getCurrentCUDAStream()>>>(
                x.const_data_ptr<T>(), w.const_data_ptr<T>(), y.mutable_data_ptr<T>(), rstd.mutable_data_ptr<float>(),
                static_cast<int>(h), y_stride, static_cast<float>(eps));
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
    }
    result = RmsNormResult{y, rstd};
  });
  return handled ? result : std::nullopt;
}

std::optional<at::Tensor> RmsNormBackward(const at::Tensor& dy_in, const at::Tensor& x_in, const at::Tensor& w_in,
                                          const at::Tensor& rstd_in, const at::Tensor& add_in) {
  if (!SameType(x_in, {dy_in, w_in}) || rstd_in.scalar_type() != at::kFloat || rstd_in.device() != x_in.device() ||
      (add_in.defined() && !SameType(x_in, {add_in}))) {
    return std::nullopt;
  }
  const at::Tensor add = add_in.defined() ? add_in.contiguous() : at::Tensor();
  const c10::cuda::CUDAGuard guard(x_in.device());
  at::Tensor x = x_in.contiguous(), w = w_in.contiguous(), rstd = rstd_in.contiguous();
  const int64_t h = x.size(-1), rows = h == 0 ? 0 : x.numel() / h;
  // dy may be a [rows, h] view with rows apart (the head of a wider gradient); else made dense.
  int64_t dy_stride = RowStride(dy_in, rows, h);
  at::Tensor dy = dy_in;
  if (dy_stride < h) {
    dy = dy_in.contiguous();
    dy_stride = h;
  }
  std::optional<at::Tensor> result;
  const bool handled = DispatchType(x.scalar_type(), [&](auto tag) {
    using T = typename decltype(tag)::type;
    at::Tensor dx = at::empty_like(x, at::MemoryFormat::Contiguous);
    const kernels::RowPlan plan =
        PlanRows(x, kVecWidth<T>, {x.data_ptr(), dy.data_ptr(), w.data_ptr(), dx.data_ptr(),
                                   add.defined() ? add.data_ptr() : dx.data_ptr()},
                 dy_stride % kVecWidth<T> == 0);
    if (!plan.ok) return;
    if (rows > 0) {
      kernels::ForRowPlan<T>(plan, [&](auto kw, auto kvec) {
        RmsNormBackwardKernel<T, decltype(kw)::value, decltype(kvec)::value>
            <<<static_cast<unsigned>(rows), plan.threads, 0, at::cuda::getCurrentCUDAStream()>>>(
                dy.const_data_ptr<T>(), x.const_data_ptr<T>(), w.const_data_ptr<T>(), rstd.const_data_ptr<float>(),
                dx.mutable_data_ptr<T>(), static_cast<int>(h), dy_stride,
                add.defined() ? add.const_data_ptr<T>() : nullptr);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
    }
    result = dx;
  });
  return handled ? result : std::nullopt;
}

std::optional<at::Tensor> RopeForward(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  return Rope</*kBackward=*/false>(x, cos, sin, at::Tensor());
}

std::optional<at::Tensor> RopeBackward(const at::Tensor& dy, const at::Tensor& cos, const at::Tensor& sin,
                                       const at::Tensor& out) {
  return Rope</*kBackward=*/true>(dy, cos, sin, out);
}

std::optional<at::Tensor> SwiGluForward(const at::Tensor& g_in, const at::Tensor& u_in) {
  if (!SameType(g_in, {u_in})) return std::nullopt;
  const c10::cuda::CUDAGuard guard(g_in.device());
  at::Tensor g = g_in.contiguous(), u = u_in.contiguous();
  at::Tensor y = at::empty_like(g, at::MemoryFormat::Contiguous);
  const int64_t n = g.numel();
  const bool handled = DispatchType(g.scalar_type(), [&](auto tag) {
    using T = typename decltype(tag)::type;
    if (n == 0) return;
    DispatchElementwise<T>(n, {g.data_ptr(), u.data_ptr(), y.data_ptr()}, [&](auto kw) {
      constexpr int kW = decltype(kw)::value;
      const int64_t nvec = n / kW;
      SwiGluForwardKernel<T, kW><<<static_cast<unsigned>(StrideGrid(nvec, kElementwiseThreads)), kElementwiseThreads, 0,
                                   at::cuda::getCurrentCUDAStream()>>>(g.const_data_ptr<T>(), u.const_data_ptr<T>(),
                                                                       y.mutable_data_ptr<T>(), nvec);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
  return handled ? std::optional<at::Tensor>(y) : std::nullopt;
}

std::optional<std::pair<at::Tensor, at::Tensor>> SwiGluBackward(const at::Tensor& da_in, const at::Tensor& g_in,
                                                               const at::Tensor& u_in, const at::Tensor& dg_out,
                                                               const at::Tensor& du_out) {
  if (!SameType(g_in, {u_in, da_in})) return std::nullopt;
  const c10::cuda::CUDAGuard guard(g_in.device());
  at::Tensor da = da_in.contiguous(), g = g_in.contiguous(), u = u_in.contiguous();
  const int64_t row_len = g.dim() == 0 ? 1 : g.size(-1);
  int64_t out_rs = row_len;
  if (dg_out.defined() || du_out.defined()) {
    // Both [rows, row_len] with dense rows the same distance apart.
    if (!dg_out.defined() || !du_out.defined() || !SameType(g, {dg_out, du_out}) || dg_out.dim() != 2 ||
        dg_out.sizes() != du_out.sizes() || dg_out.size(1) != row_len || dg_out.size(0) * row_len != g.numel() ||
        dg_out.stride(1) != 1 || du_out.stride(1) != 1 || dg_out.stride(0) != du_out.stride(0) ||
        dg_out.stride(0) < row_len) {
      return std::nullopt;
    }
    out_rs = dg_out.stride(0);
  }
  at::Tensor dg = dg_out.defined() ? dg_out : at::empty_like(g, at::MemoryFormat::Contiguous);
  at::Tensor du = du_out.defined() ? du_out : at::empty_like(u, at::MemoryFormat::Contiguous);
  const int64_t n = g.numel();
  const bool handled = DispatchType(g.scalar_type(), [&](auto tag) {
    using T = typename decltype(tag)::type;
    if (n == 0) return;
    // Vectors must not straddle rows, and spaced rows must start aligned: else one element a thread.
    const bool rows_allow = out_rs == row_len || (row_len % kVecWidth<T> == 0 && out_rs % kVecWidth<T> == 0);
    DispatchElementwise<T>(n, {da.data_ptr(), g.data_ptr(), u.data_ptr(), dg.data_ptr(), du.data_ptr()}, [&](auto kw) {
      constexpr int kW = decltype(kw)::value;
      const int64_t nvec = n / kW;
      SwiGluBackwardKernel<T, kW><<<static_cast<unsigned>(StrideGrid(nvec, kElementwiseThreads)), kElementwiseThreads,
                                    0, at::cuda::getCurrentCUDAStream()>>>(
          da.const_data_ptr<T>(), g.const_data_ptr<T>(), u.const_data_ptr<T>(), dg.mutable_data_ptr<T>(),
          du.mutable_data_ptr<T>(), nvec, row_len, out_rs);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }, rows_allow);
  });
  return handled ? std::optional<std::pair<at::Tensor, at::Tensor>>(std::make_pair(dg, du)) : std::nullopt;
}

}  // namespace herd::engine::cuda_kernels
