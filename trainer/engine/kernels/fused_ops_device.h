// What one GPU thread of each fused-stage kernel does, written once for both compilers: the CUDA
// kernels (fused_ops_cuda.cu, lora_dropout_cuda.cu) run these bodies, and fused_ops_test.cc runs
// the very same bodies thread by thread on the host, so the index arithmetic, the 16-byte vector
// paths and the rounding steps are tested on machines without a GPU. No torch beyond c10's
// header-only Half/BFloat16 (their float conversions are host-and-device, round to nearest even).
//
// Each body is a struct holding the thread's registers, with Load (all global reads, issued
// before any use) and Store (the math and the writes). Math is float32; a value is rounded to the
// storage type exactly where the ATen reference (fused_ops.cc) rounds it.
#ifndef HERD_TRAINER_ENGINE_KERNELS_FUSED_OPS_DEVICE_H_
#define HERD_TRAINER_ENGINE_KERNELS_FUSED_OPS_DEVICE_H_

#include <c10/macros/Macros.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#define HERD_HD C10_HOST_DEVICE
#ifdef __CUDACC__
#define HERD_UNROLL _Pragma("unroll")
#else
#define HERD_UNROLL
#endif

namespace herd::engine::kernels {

// Elements of T in one 16-byte access.
template <typename T>
inline constexpr int kVecWidth = static_cast<int>(16 / sizeof(T));

// kW consecutive elements, aligned so that a load of one is a single kW·sizeof(T)-byte access.
template <typename T, int kW>
struct alignas(sizeof(T) * kW) Pack {
  T v[kW];
};

#ifdef __CUDA_ARCH__
// The built-in type of one n-byte access, so that each Pack is one load or store. The RoPE kernel's
// Pack stores came out as scalar stores (PTX: 16 st.global.u16 a thread for bf16, 8 st.global.f32
// for float32), and it wrote bf16 at 0.6–1.0 TB/s on an H100 against 2.4–2.6 TB/s for float32.
template <int kBytes>
struct RawAccess;
template <>
struct RawAccess<16> {
  using type = uint4;
};
template <>
struct RawAccess<8> {
  using type = uint2;
};
template <>
struct RawAccess<4> {
  using type = unsigned int;
};
template <>
struct RawAccess<2> {
  using type = unsigned short;
};
#endif

template <typename T, int kW>
HERD_HD inline void LoadF(const T* p, float (&out)[kW]) {
  Pack<T, kW> pk;
#ifdef __CUDA_ARCH__
  using Raw = typename RawAccess<sizeof(Pack<T, kW>)>::type;
  const Raw raw = *reinterpret_cast<const Raw*>(p);
  memcpy(&pk, &raw, sizeof(pk));
#else
  std::memcpy(&pk, p, sizeof(pk));
#endif
  HERD_UNROLL for (int i = 0; i < kW; ++i) out[i] = static_cast<float>(pk.v[i]);
}

template <typename T, int kW>
HERD_HD inline void StoreF(T* p, const float (&in)[kW]) {
  Pack<T, kW> pk;
  HERD_UNROLL for (int i = 0; i < kW; ++i) pk.v[i] = static_cast<T>(in[i]);
#ifdef __CUDA_ARCH__
  using Raw = typename RawAccess<sizeof(Pack<T, kW>)>::type;
  Raw raw;
  memcpy(&raw, &pk, sizeof(raw));
  if constexpr (sizeof(Raw) == 16) {
    // Spelled out: even through uint4 the compiler split the RoPE kernel's stores into 4-byte ones.
    // The callers' dispatch guarantees 16-byte alignment wherever kW·sizeof(T) is 16.
    asm volatile("st.global.v4.u32 [%0], {%1, %2, %3, %4};" ::"l"(p), "r"(raw.x), "r"(raw.y), "r"(raw.z),
                 "r"(raw.w)
                 : "memory");
  } else {
    *reinterpret_cast<Raw*>(p) = raw;
  }
#else
  std::memcpy(p, &pk, sizeof(pk));
#endif
}

// A float rounded to T and back: where the reference stores an intermediate in x's dtype.
template <typename T>
HERD_HD inline float Round(float f) {
  return static_cast<float>(static_cast<T>(f));
}

HERD_HD inline float Rsqrt(float v) {
#ifdef __CUDA_ARCH__
  return rsqrtf(v);
#else
  return 1.0f / std::sqrt(v);
#endif
}

HERD_HD inline float Exp(float v) {
#ifdef __CUDA_ARCH__
  return expf(v);  // the accurate expf: the kernels build without --use_fast_math
#else
  return std::exp(v);
#endif
}

// ---- RMSNorm: one row per block. Thread `tid` of `threads` holds the row's 16-byte vectors
// tid, tid + threads, ... (kVec of them at most, in registers), so x is read once. ----

// How a row of H elements is spread over a block; ok = false when it does not fit the registers
// (the caller then runs the ATen reference).
struct RowPlan {
  int width = 1;    // elements per access: kVecWidth<T>, or 1 where H or a pointer does not allow it
  int per_thread = 1;  // kVec: accesses per thread, 1, 2 or 4
  int threads = 32;    // a multiple of 32, at most kMaxRowThreads
  bool ok = false;
};
// A compile-time int, for the template arguments a row plan picks at run time.
template <int N>
using Int = std::integral_constant<int, N>;

// Calls f(Int<kW>{}, Int<kVec>{}) for the plan's access width and accesses per thread: the one
// place that turns a RowPlan into template arguments (the kernels' launcher and the host tests).
template <typename T, typename F>
void ForRowPlan(const RowPlan& p, F&& f) {
  auto per_thread = [&](auto w) {
    switch (p.per_thread) {
      case 1: f(w, Int<1>{}); break;
      case 2: f(w, Int<2>{}); break;
      default: f(w, Int<4>{}); break;
    }
  };
  if (p.width == 1) {
    per_thread(Int<1>{});
  } else {
    per_thread(Int<kVecWidth<T>>{});
  }
}

inline constexpr int kMaxRowThreads = 512;
inline constexpr int kPreferredRowThreads = 256;

inline RowPlan PlanRow(int64_t h, int vec_width, bool aligned) {
  RowPlan p;
  p.width = (aligned && h % vec_width == 0) ? vec_width : 1;
  const int64_t nvec = h / p.width;
  while (p.per_thread < 4 && (nvec + p.per_thread - 1) / p.per_thread > kPreferredRowThreads) p.per_thread *= 2;
  const int64_t threads = ((nvec + p.per_thread - 1) / p.per_thread + 31) / 32 * 32;
  p.threads = static_cast<int>(threads < 32 ? 32 : threads);
  p.ok = h > 0 && threads <= kMaxRowThreads;
  return p;
}

template <typename T, int kW, int kVec>
struct RmsNormForwardThread {
  float x[kVec][kW];

  // Returns this thread's part of Σx².
  HERD_HD float Load(const T* __restrict__ row, int tid, int threads, int nvec) {
    float ss = 0.0f;
    HERD_UNROLL for (int k = 0; k < kVec; ++k) {
      const int v = tid + k * threads;
      if (v < nvec) LoadF<T, kW>(row + static_cast<int64_t>(v) * kW, x[k]);
    }
    HERD_UNROLL for (int k = 0; k < kVec; ++k) {
      if (tid + k * threads < nvec) {
        HERD_UNROLL for (int i = 0; i < kW; ++i) ss += x[k][i] * x[k][i];
      }
    }
    return ss;
  }

  // y = w · round(x · rstd), rounded.
  HERD_HD void Store(T* __restrict__ y, const T* __restrict__ w, float rstd, int tid, int threads, int nvec) const {
    HERD_UNROLL for (int k = 0; k < kVec; ++k) {
      const int v = tid + k * threads;
      if (v >= nvec) continue;
      float wf[kW], out[kW];
      LoadF<T, kW>(w + static_cast<int64_t>(v) * kW, wf);
      HERD_UNROLL for (int i = 0; i < kW; ++i) out[i] = wf[i] * Round<T>(x[k][i] * rstd);
      StoreF<T, kW>(y + static_cast<int64_t>(v) * kW, out);
    }
  }
};

// 1 / sqrt(Σx² / H + eps), as the reference: the mean first, then eps, then the reciprocal root.
HERD_HD inline float RmsNormRstd(float sum_squares, int64_t h, float eps) {
  return Rsqrt(sum_squares / static_cast<float>(h) + eps);
}

template <typename T, int kW, int kVec>
struct RmsNormBackwardThread {
  float xhat[kVec][kW];
  float g[kVec][kW];

  // Reads x, dy and w; returns this thread's part of Σ g·x̂ (g = dy·w, x̂ = x·rstd).
  HERD_HD float Load(const T* __restrict__ x, const T* __restrict__ dy, const T* __restrict__ w, float rstd, int tid,
                     int threads, int nvec) {
    float wf[kVec][kW] = {};  // zeroed only to quiet the host compiler
    HERD_UNROLL for (int k = 0; k < kVec; ++k) {
      const int v = tid + k * threads;
      if (v >= nvec) continue;
      const int64_t off = static_cast<int64_t>(v) * kW;
      LoadF<T, kW>(x + off, xhat[k]);
      LoadF<T, kW>(dy + off, g[k]);
      LoadF<T, kW>(w + off, wf[k]);
    }
    float dot = 0.0f;
    HERD_UNROLL for (int k = 0; k < kVec; ++k) {
      if (tid + k * threads >= nvec) continue;
      HERD_UNROLL for (int i = 0; i < kW; ++i) {
        xhat[k][i] *= rstd;
        g[k][i] *= wf[k][i];
        dot += g[k][i] * xhat[k][i];
      }
    }
    return dot;
  }

  // dx = rstd · (g − x̂ · mean), mean = Σ g·x̂ / H; plus the row `add` where given (a residual's
  // gradient), in float32 before the one rounding.
  HERD_HD void Store(T* __restrict__ dx, float rstd, float mean, int tid, int threads, int nvec,
                     const T* __restrict__ add = nullptr) const {
    HERD_UNROLL for (int k = 0; k < kVec; ++k) {
      const int v = tid + k * threads;
      if (v >= nvec) continue;
      float out[kW];
      HERD_UNROLL for (int i = 0; i < kW; ++i) out[i] = rstd * (g[k][i] - xhat[k][i] * mean);
      if (add != nullptr) {
        float a[kW];
        LoadF<T, kW>(add + static_cast<int64_t>(v) * kW, a);
        HERD_UNROLL for (int i = 0; i < kW; ++i) out[i] += a[i];
      }
      StoreF<T, kW>(dx + static_cast<int64_t>(v) * kW, out);
    }
  }
};

// ---- RoPE: one (b, t) row per block row; thread (j, head lane) holds vector j of the first half
// of cos/sin and of the second half, and applies them to its heads: cos/sin are read once per row
// and thread, x once. Element i of the first half pairs with element i + D/2. ----

// The block of RopeKernel: x = vectors per half head (threadIdx.x is j), y = head lanes (a thread
// takes heads y, y + blockDim.y, ...), z = rows per block. About 256 threads; within CUDA's limits
// (x·y·z ≤ 1024, z ≤ 64) for any half ≤ 1024.
struct RopeBlock {
  int x = 1, y = 1, z = 1;
};
inline RopeBlock PlanRope(int64_t half, int width, int64_t heads) {
  RopeBlock b;
  b.x = static_cast<int>(half / width);
  const int64_t lanes = 256 / b.x > 1 ? 256 / b.x : 1;
  b.y = static_cast<int>(heads < lanes ? heads : lanes);
  const int rows = 256 / (b.x * b.y);
  b.z = rows < 1 ? 1 : (rows > 64 ? 64 : rows);
  return b;
}

template <typename T, int kW, bool kBackward>
struct RopeThread {
  float c1[kW], c2[kW], s1[kW], s2[kW];

  HERD_HD void LoadAngles(const T* __restrict__ cos_row, const T* __restrict__ sin_row, int j, int half) {
    const int off = j * kW;
    LoadF<T, kW>(cos_row + off, c1);
    LoadF<T, kW>(cos_row + half + off, c2);
    LoadF<T, kW>(sin_row + off, s1);
    LoadF<T, kW>(sin_row + half + off, s2);
  }

  // Forward: out = x·cos + rotate_half(x)·sin, rotate_half(x) = (−x₂, x₁).
  // Backward: out = dy·cos + rotate_halfᵀ(dy·sin), rotate_halfᵀ(s) = (s₂, −s₁).
  HERD_HD void Apply(const T* __restrict__ in_head, T* __restrict__ out_head, int j, int half) const {
    const int off = j * kW;
    float a[kW], b[kW], o1[kW], o2[kW];
    LoadF<T, kW>(in_head + off, a);
    LoadF<T, kW>(in_head + half + off, b);
    HERD_UNROLL for (int i = 0; i < kW; ++i) {
      if constexpr (kBackward) {
        o1[i] = a[i] * c1[i] + b[i] * s2[i];
        o2[i] = b[i] * c2[i] - a[i] * s1[i];
      } else {
        o1[i] = a[i] * c1[i] - b[i] * s1[i];
        o2[i] = b[i] * c2[i] + a[i] * s2[i];
      }
    }
    StoreF<T, kW>(out_head + off, o1);
    StoreF<T, kW>(out_head + half + off, o2);
  }
};

// ---- SwiGLU: elementwise over vectors of kW elements. ----

template <typename T, int kW>
struct SwiGluForwardThread {
  float g[kW], u[kW];
  HERD_HD void Load(const T* __restrict__ gp, const T* __restrict__ up, int64_t off) {
    LoadF<T, kW>(gp + off, g);
    LoadF<T, kW>(up + off, u);
  }
  // silu(g) rounded to T (as at::silu), times u.
  HERD_HD void Store(T* __restrict__ y, int64_t off) const {
    float out[kW];
    HERD_UNROLL for (int i = 0; i < kW; ++i) out[i] = Round<T>(g[i] / (1.0f + Exp(-g[i]))) * u[i];
    StoreF<T, kW>(y + off, out);
  }
};

template <typename T, int kW>
struct SwiGluBackwardThread {
  float d[kW], g[kW], u[kW];
  HERD_HD void Load(const T* __restrict__ dp, const T* __restrict__ gp, const T* __restrict__ up, int64_t off) {
    LoadF<T, kW>(dp + off, d);
    LoadF<T, kW>(gp + off, g);
    LoadF<T, kW>(up + off, u);
  }
  // du = da·g·σ(g), dg = da·u·σ(g)·(1 + g·(1 − σ(g))), in the reference's order of products.
  HERD_HD void Store(T* __restrict__ dg, T* __restrict__ du, int64_t off) const {
    float og[kW], ou[kW];
    HERD_UNROLL for (int i = 0; i < kW; ++i) {
      const float sig = 1.0f / (1.0f + Exp(-g[i]));
      ou[i] = d[i] * g[i] * sig;
      og[i] = d[i] * u[i] * sig * (1.0f + g[i] * (1.0f - sig));
    }
    StoreF<T, kW>(dg + off, og);
    StoreF<T, kW>(du + off, ou);
  }
};

// ---- LoRA dropout masks (model/lora_dropout.h): the same bits as the int64 tensor emulation. ----

// splitmix32's finaliser, in native wrap-around uint32 arithmetic.
HERD_HD inline uint32_t DropoutMix32(uint32_t x) {
  x ^= x >> 16;
  x *= 0x21f0aaadu;
  x ^= x >> 15;
  x *= 0x735a2d97u;
  x ^= x >> 15;
  return x;
}

// The 32-bit hash of pair `counter` of a row with key (lo, hi): the low 16 bits decide the even
// element, the high 16 bits the odd one.
HERD_HD inline uint32_t DropoutPairHash(uint32_t key_lo, uint32_t key_hi, uint64_t counter) {
  const uint32_t h = DropoutMix32(static_cast<uint32_t>(counter) ^ key_lo);
  return DropoutMix32(h ^ key_hi ^ static_cast<uint32_t>(counter >> 32));
}

// round(keep·2^16) clamped to [0, 2^16]: u16 < threshold keeps, for any keep.
inline uint32_t DropoutThreshold(int64_t rounded) {
  return static_cast<uint32_t>(rounded < 0 ? 0 : (rounded > 65536 ? 65536 : rounded));
}

// Pairs 4q … 4q+3 of a row: 8 mask bytes, written as one 8-byte store (rows whose T·features is a
// multiple of 8, features even).
HERD_HD inline void DropoutQuad(uint32_t key_lo, uint32_t key_hi, uint32_t threshold, uint64_t q, uint8_t* out_row) {
  uint32_t word[2] = {0, 0};  // bytes in memory order (little-endian, as both host and GPU are)
  HERD_UNROLL for (int i = 0; i < 4; ++i) {
    const uint32_t h = DropoutPairHash(key_lo, key_hi, 4 * q + i);
    const uint32_t even = (h & 0xffffu) < threshold, odd = (h >> 16) < threshold;
    word[i / 2] |= (even | (odd << 8)) << (16 * (i % 2));
  }
#ifdef __CUDA_ARCH__
  *reinterpret_cast<uint2*>(out_row + 8 * q) = make_uint2(word[0], word[1]);
#else
  std::memcpy(out_row + 8 * q, word, 8);
#endif
}

// Element e = t·features + f of a row, any shape.
HERD_HD inline uint8_t DropoutElement(uint32_t key_lo, uint32_t key_hi, uint32_t threshold, uint64_t e,
                                      uint64_t features) {
  const uint64_t t = e / features, f = e - t * features;
  const uint64_t pairs = (features + 1) / 2;
  const uint32_t h = DropoutPairHash(key_lo, key_hi, t * pairs + f / 2);
  return ((f % 2 == 0) ? (h & 0xffffu) : (h >> 16)) < threshold;
}

}  // namespace herd::engine::kernels

#endif  // HERD_TRAINER_ENGINE_KERNELS_FUSED_OPS_DEVICE_H_
