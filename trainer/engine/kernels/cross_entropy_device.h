// What one GPU thread of the cross-entropy kernel (cross_entropy_cuda.cu) does, written once for
// both compilers: the kernel runs these bodies, and cross_entropy_test.cc runs the very same bodies
// thread by thread on the host, so the row's head/vector/tail split, the online max/Σexp/argmax and
// the gradient's indices and rounding are tested on machines without a GPU. No torch beyond c10's
// header-only Half/BFloat16 (float conversions host-and-device, round to nearest even).
#ifndef HERD_TRAINER_ENGINE_KERNELS_CROSS_ENTROPY_DEVICE_H_
#define HERD_TRAINER_ENGINE_KERNELS_CROSS_ENTROPY_DEVICE_H_

#include <c10/macros/Macros.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#include "trainer/engine/kernels/fused_ops_device.h"  // Exp, the accurate expf on both compilers

#define HERD_CE_HD C10_HOST_DEVICE
#ifdef __CUDACC__
#define HERD_CE_UNROLL _Pragma("unroll")
#else
#define HERD_CE_UNROLL
#endif

namespace herd::engine::kernels {

inline constexpr int kCeGroup = 4;  // 16-byte vectors per thread per step, all loaded before any use
inline constexpr int kCeNoIndex = std::numeric_limits<int>::max();

// 16 bytes of a row, as four 32-bit words (the lower address in the lower word).
struct alignas(16) CeVec {
  uint32_t w[4];
};

HERD_CE_HD inline float CeLog(float v) {
#ifdef __CUDA_ARCH__
  return logf(v);
#else
  return std::log(v);
#endif
}

HERD_CE_HD inline float CeBitsToFloat(uint32_t b) {
#ifdef __CUDA_ARCH__
  return __uint_as_float(b);
#else
  float f;
  std::memcpy(&f, &b, sizeof(f));
  return f;
#endif
}

HERD_CE_HD inline uint32_t CeFloatToBits(float f) {
#ifdef __CUDA_ARCH__
  return __float_as_uint(f);
#else
  uint32_t b;
  std::memcpy(&b, &f, sizeof(b));
  return b;
#endif
}

// A 16-byte vector of T as kW floats, and back (rounded to T once).
template <typename T>
struct CeCodec {  // bfloat16 and float16: two per word
  static constexpr int kW = 8;
  HERD_CE_HD static float Half(uint32_t bits) {
    return static_cast<float>(T(static_cast<uint16_t>(bits), T::from_bits()));
  }
  HERD_CE_HD static uint32_t Bits(float f) { return static_cast<T>(f).x; }
  HERD_CE_HD static void Unpack(const CeVec& r, float (&f)[kW]) {
    HERD_CE_UNROLL for (int i = 0; i < 4; ++i) {
      f[2 * i] = Half(r.w[i] & 0xffffu);
      f[2 * i + 1] = Half(r.w[i] >> 16);
    }
  }
  HERD_CE_HD static CeVec Pack(const float (&f)[kW]) {
    CeVec r;
    HERD_CE_UNROLL for (int i = 0; i < 4; ++i) r.w[i] = Bits(f[2 * i]) | (Bits(f[2 * i + 1]) << 16);
    return r;
  }
};

template <>
struct CeCodec<float> {
  static constexpr int kW = 4;
  HERD_CE_HD static void Unpack(const CeVec& r, float (&f)[kW]) {
    HERD_CE_UNROLL for (int i = 0; i < 4; ++i) f[i] = CeBitsToFloat(r.w[i]);
  }
  HERD_CE_HD static CeVec Pack(const float (&f)[kW]) {
    CeVec r;
    HERD_CE_UNROLL for (int i = 0; i < 4; ++i) r.w[i] = CeFloatToBits(f[i]);
    return r;
  }
};

// 16-byte loads and stores; on the GPU the second pass's loads are the row's last use (evict first).
HERD_CE_HD inline CeVec CeLoad(const CeVec* p) {
#ifdef __CUDA_ARCH__
  const uint4 u = *reinterpret_cast<const uint4*>(p);
  return CeVec{{u.x, u.y, u.z, u.w}};
#else
  CeVec r;
  std::memcpy(&r, p, sizeof(r));
  return r;
#endif
}
HERD_CE_HD inline CeVec CeLoadLast(const CeVec* p) {
#ifdef __CUDA_ARCH__
  const uint4 u = __ldcs(reinterpret_cast<const uint4*>(p));
  return CeVec{{u.x, u.y, u.z, u.w}};
#else
  return CeLoad(p);
#endif
}
HERD_CE_HD inline void CeStore(CeVec* p, const CeVec& v) {
#ifdef __CUDA_ARCH__
  *reinterpret_cast<uint4*>(p) = make_uint4(v.w[0], v.w[1], v.w[2], v.w[3]);
#else
  std::memcpy(p, &v, sizeof(v));
#endif
}

// A part of the row's (max, Σexp(l − max), first index of the max). A plain aggregate: it lives in
// __shared__ memory too. Merging is symmetric, so a butterfly leaves every lane with the same state.
struct CeRunning {
  float m;
  float s;
  int i;
};
HERD_CE_HD inline CeRunning CeStart() { return {-INFINITY, 0.0f, kCeNoIndex}; }

// The subtrahend of exp(): the max, or 0 while the max is −inf (exp(−inf − 0) = 0, not NaN).
HERD_CE_HD inline float CeBase(float m) { return m == -INFINITY ? 0.0f : m; }

HERD_CE_HD inline void CeMerge(CeRunning& a, const CeRunning& b) {
  const float m = a.m > b.m ? a.m : b.m;
  const float base = CeBase(m);
  a.s = a.s * Exp(a.m - base) + b.s * Exp(b.m - base);
  if (b.m > a.m || (b.m == a.m && b.i < a.i)) a.i = b.i;
  a.m = m;
}

// Folds kN values at increasing indices (all above those already in r) into r, one rescale per
// call. Strict comparisons keep the first index of the max.
template <int kN>
HERD_CE_HD inline void CeFold(CeRunning& r, const float (&x)[kN], const int (&index)[kN]) {
  float gm = -INFINITY;
  int gi = kCeNoIndex;
  HERD_CE_UNROLL for (int k = 0; k < kN; ++k) {
    if (x[k] > gm) {
      gm = x[k];
      gi = index[k];
    }
  }
  if (gm > r.m) {
    r.s *= Exp(r.m - gm);  // exp(−inf) = 0 on the first finite value
    r.m = gm;
    r.i = gi;
  }
  const float base = CeBase(r.m);
  float s = 0.0f;
  HERD_CE_UNROLL for (int k = 0; k < kN; ++k) s += Exp(x[k] - base);
  r.s += s;
}

// The row as `head` scalars up to the first 16-byte boundary, `nvec` vectors, then scalars from
// `tail_start` to v (head and the tail are shorter than a vector: one element per thread at most).
struct CeRowPlan {
  int head;
  int nvec;
  int tail_start;
};
template <typename T>
HERD_CE_HD inline CeRowPlan PlanCeRow(const T* row, int v) {
  constexpr int kW = CeCodec<T>::kW;
  const int misalign = static_cast<int>((reinterpret_cast<uintptr_t>(row) % 16) / sizeof(T));
  CeRowPlan p;
  p.head = misalign == 0 ? 0 : (kW - misalign < v ? kW - misalign : v);
  p.nvec = (v - p.head) / kW;
  p.tail_start = p.head + p.nvec * kW;
  return p;
}

// Pass 1 of thread `tid` of `threads`: its part of the row's state. Its elements are the head
// element tid, the vectors tid + threads · k, the tail element tail_start + tid, in that
// (increasing) index order.
template <typename T>
HERD_CE_HD inline CeRunning CePass1(const T* row, int v, const CeRowPlan& p, int tid, int threads) {
  using C = CeCodec<T>;
  constexpr int kW = C::kW;
  const CeVec* vec = reinterpret_cast<const CeVec*>(row + p.head);
  CeRunning r = CeStart();
  if (tid < p.head) {
    const float x[1] = {static_cast<float>(row[tid])};
    const int idx[1] = {tid};
    CeFold<1>(r, x, idx);
  }
  for (int v0 = tid; v0 < p.nvec; v0 += kCeGroup * threads) {
    CeVec raw[kCeGroup];
    HERD_CE_UNROLL for (int g = 0; g < kCeGroup; ++g) {
      const int vi = v0 + g * threads;
      raw[g] = vi < p.nvec ? CeLoad(vec + vi) : CeVec{{0u, 0u, 0u, 0u}};
    }
    HERD_CE_UNROLL for (int g = 0; g < kCeGroup; ++g) {
      const int vi = v0 + g * threads;
      float x[kW];
      int idx[kW];
      C::Unpack(raw[g], x);
      HERD_CE_UNROLL for (int k = 0; k < kW; ++k) {
        idx[k] = p.head + vi * kW + k;
        if (vi >= p.nvec) x[k] = -INFINITY;  // past the end: no weight, never the max
      }
      CeFold<kW>(r, x, idx);
    }
  }
  if (p.tail_start + tid < v) {
    const float x[1] = {static_cast<float>(row[p.tail_start + tid])};
    const int idx[1] = {p.tail_start + tid};
    CeFold<1>(r, x, idx);
  }
  return r;
}

// lse of the merged state: −inf for a row of −inf, as at::logsumexp.
HERD_CE_HD inline float CeLse(const CeRunning& r) { return r.m + CeLog(r.s); }
// The argmax of the merged state: kCeNoIndex means no value above −inf, where at::argmax says 0.
HERD_CE_HD inline int CeArgmax(const CeRunning& r) { return r.i == kCeNoIndex ? 0 : r.i; }

HERD_CE_HD inline float CeGrad(float x, float lse, bool is_target) {
  return Exp(x - lse) - (is_target ? 1.0f : 0.0f);
}

// Pass 2 of thread `tid`: exp(l − lse) − [j == target] over its elements of pass 1, the last
// vectors first (what pass 1 read last is the likeliest still in L2). target −1: none.
template <typename T>
HERD_CE_HD inline void CePass2(T* row, int v, const CeRowPlan& p, int tid, int threads, float lse, int target) {
  using C = CeCodec<T>;
  constexpr int kW = C::kW;
  if (tid < p.head) row[tid] = static_cast<T>(CeGrad(static_cast<float>(row[tid]), lse, tid == target));
  if (p.tail_start + tid < v) {
    const int j = p.tail_start + tid;
    row[j] = static_cast<T>(CeGrad(static_cast<float>(row[j]), lse, j == target));
  }
  CeVec* vec = reinterpret_cast<CeVec*>(row + p.head);
  const int steps = (p.nvec + kCeGroup * threads - 1) / (kCeGroup * threads);
  for (int step = steps - 1; step >= 0; --step) {
    const int v0 = step * kCeGroup * threads + tid;
    CeVec raw[kCeGroup] = {};
    HERD_CE_UNROLL for (int g = 0; g < kCeGroup; ++g) {
      const int vi = v0 + g * threads;
      if (vi < p.nvec) raw[g] = CeLoadLast(vec + vi);
    }
    HERD_CE_UNROLL for (int g = 0; g < kCeGroup; ++g) {
      const int vi = v0 + g * threads;
      if (vi >= p.nvec) continue;
      float x[kW];
      C::Unpack(raw[g], x);
      const int off = target - (p.head + vi * kW);  // the target's place in this vector, if any
      HERD_CE_UNROLL for (int k = 0; k < kW; ++k) x[k] = CeGrad(x[k], lse, k == off);
      CeStore(vec + vi, C::Pack(x));
    }
  }
}

}  // namespace herd::engine::kernels

#endif  // HERD_TRAINER_ENGINE_KERNELS_CROSS_ENTROPY_DEVICE_H_
