// The fused stages (fused_ops.h) three ways: the ATen reference against plain autograd of the same
// formulas (float64/float32 gradients, bfloat16 forward values); the per-thread bodies of the CUDA
// kernels (fused_ops_device.h) run thread by thread on the host against the reference, which
// checks their index arithmetic, vector and scalar paths and rounding without a GPU; and, where a
// GPU is present, the CUDA kernels themselves against the reference on the same device.
#include "trainer/engine/kernels/fused_ops.h"

#include <gtest/gtest.h>
#include <torch/cuda.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "trainer/engine/kernels/fused_ops_device.h"
#include "trainer/engine/kernels/fused_ops_reference.h"
#include "trainer/engine/model/lora_dropout.h"

namespace herd::engine {
namespace {

constexpr double kEps = 1e-5;

// max|a − b| / max|b|, in float64: the measure of DESIGN.md §5.
double RelErr(const at::Tensor& a, const at::Tensor& b) {
  at::Tensor a64 = a.to(at::kCPU, at::kDouble), b64 = b.to(at::kCPU, at::kDouble);
  const double scale = std::max(b64.abs().max().item<double>(), 1e-30);
  return (a64 - b64).abs().max().item<double>() / scale;
}

// Tolerance of a comparison in `dtype`: a few ulps of float32, about one of the 16-bit types.
double Tol(at::ScalarType dtype) {
  switch (dtype) {
    case at::kDouble: return 1e-12;
    case at::kFloat: return 1e-5;
    default: return 1e-2;
  }
}

at::Tensor Rand(std::vector<int64_t> shape, at::ScalarType dtype, at::Device device = at::kCPU) {
  return at::randn(shape, at::TensorOptions().dtype(at::kDouble)).to(device, dtype);
}

// cos/sin [B, T, D] of random positions, cat(freqs, freqs) as the model makes them.
std::pair<at::Tensor, at::Tensor> Angles(int64_t b, int64_t t, int64_t d, at::ScalarType dtype,
                                         at::Device device = at::kCPU) {
  at::Tensor inv = at::pow(10000.0, -at::arange(0, d, 2, at::kDouble) / static_cast<double>(d));  // [D/2]
  at::Tensor pos = at::randint(0, 4096, {b, t, 1}, at::kDouble);
  at::Tensor f = pos * inv;                      // [B, T, D/2]
  at::Tensor emb = at::cat({f, f}, -1);         // [B, T, D]
  return {emb.cos().to(device, dtype), emb.sin().to(device, dtype)};
}

at::Tensor RotateHalf(const at::Tensor& x) {
  const int64_t half = x.size(-1) / 2;
  return at::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
}

// ---- The reference against autograd ----

class ReferenceVsAutograd : public ::testing::TestWithParam<at::ScalarType> {};

TEST_P(ReferenceVsAutograd, RmsNorm) {
  const at::ScalarType dt = GetParam();
  for (int64_t h : {3, 37, 64, 200}) {  // not 1: dx is then all cancellation
    at::Tensor x = Rand({3, 5, h}, dt).requires_grad_(true), w = Rand({h}, dt), dy = Rand({3, 5, h}, dt);
    at::Tensor y_auto = w * (x * at::rsqrt(x.pow(2).mean(-1, true) + kEps));
    y_auto.backward(dy);
    const RmsNormResult r = RmsNormForward(x.detach(), w, kEps);
    EXPECT_LT(RelErr(r.y, y_auto), Tol(dt)) << "h " << h;
    EXPECT_EQ(r.rstd.sizes(), (std::vector<int64_t>{15}));
    EXPECT_LT(RelErr(r.rstd, at::rsqrt(x.detach().pow(2).mean(-1) + kEps).reshape({-1})), Tol(dt));
    EXPECT_LT(RelErr(RmsNormBackward(dy, x.detach(), w, r.rstd), x.grad()), Tol(dt)) << "h " << h;
  }
}

TEST_P(ReferenceVsAutograd, Rope) {
  const at::ScalarType dt = GetParam();
  for (int64_t d : {2, 6, 64}) {
    auto [cos, sin] = Angles(2, 7, d, dt);
    at::Tensor x = Rand({2, 7, 3, d}, dt).requires_grad_(true), dy = Rand({2, 7, 3, d}, dt);
    at::Tensor y_auto = x * cos.unsqueeze(2) + RotateHalf(x) * sin.unsqueeze(2);
    y_auto.backward(dy);
    EXPECT_LT(RelErr(RopeForward(x.detach(), cos, sin), y_auto), Tol(dt)) << "d " << d;
    EXPECT_LT(RelErr(RopeBackward(dy, cos, sin), x.grad()), Tol(dt)) << "d " << d;
  }
}

TEST_P(ReferenceVsAutograd, SwiGlu) {
  const at::ScalarType dt = GetParam();
  at::Tensor g = Rand({5, 43}, dt).requires_grad_(true), u = Rand({5, 43}, dt).requires_grad_(true);
  at::Tensor da = Rand({5, 43}, dt);
  at::Tensor a_auto = at::silu(g) * u;
  a_auto.backward(da);
  EXPECT_LT(RelErr(SwiGluForward(g.detach(), u.detach()), a_auto), Tol(dt));
  auto [dg, du] = SwiGluBackward(da, g.detach(), u.detach());
  EXPECT_LT(RelErr(dg, g.grad()), Tol(dt));
  EXPECT_LT(RelErr(du, u.grad()), Tol(dt));
}

INSTANTIATE_TEST_SUITE_P(Dtypes, ReferenceVsAutograd, ::testing::Values(at::kDouble, at::kFloat));

TEST(ReferenceBf16, ForwardValuesMatchFloatMathRoundedOnce) {
  // transformers' bf16 modules: float32 math, the normalised row rounded, then the weight product.
  at::Tensor x = Rand({4, 96}, at::kBFloat16), w = Rand({96}, at::kBFloat16);
  at::Tensor xf = x.to(at::kFloat);
  at::Tensor hf = w * (xf * at::rsqrt(xf.pow(2).mean(-1, true) + kEps)).to(at::kBFloat16);
  const RmsNormResult r = RmsNormForward(x, w, kEps);
  EXPECT_EQ(r.y.scalar_type(), at::kBFloat16);
  EXPECT_EQ(r.rstd.scalar_type(), at::kFloat);
  EXPECT_LT(RelErr(r.y, hf), 1e-2);
  at::Tensor g = Rand({3, 40}, at::kBFloat16), u = Rand({3, 40}, at::kBFloat16);
  EXPECT_LT(RelErr(SwiGluForward(g, u), (at::silu(g.to(at::kFloat)) * u.to(at::kFloat)).to(at::kBFloat16)), 1e-2);
  auto [cos, sin] = Angles(1, 5, 8, at::kBFloat16);
  at::Tensor xr = Rand({1, 5, 2, 8}, at::kBFloat16);
  at::Tensor c = cos.to(at::kFloat).unsqueeze(2), s = sin.to(at::kFloat).unsqueeze(2);
  at::Tensor ref = (xr.to(at::kFloat) * c + RotateHalf(xr.to(at::kFloat)) * s).to(at::kBFloat16);
  EXPECT_LT(RelErr(RopeForward(xr, cos, sin), ref), 1e-2);
}

TEST(Reference, RejectsBadShapes) {
  EXPECT_THROW(RmsNormForward(at::zeros({2, 4}), at::zeros({5}), kEps), c10::Error);
  EXPECT_THROW(RmsNormBackward(at::zeros({2, 4}), at::zeros({2, 5}), at::zeros({5}), at::zeros({2})), c10::Error);
  EXPECT_THROW(RopeForward(at::zeros({1, 2, 3, 4}), at::zeros({1, 2, 6}), at::zeros({1, 2, 6})), c10::Error);
  EXPECT_THROW(SwiGluForward(at::zeros({2, 4}), at::zeros({2, 5})), c10::Error);
  EXPECT_THROW(SwiGluBackward(at::zeros({2, 5}), at::zeros({2, 4}), at::zeros({2, 4})), c10::Error);
}

// ---- The kernels' per-thread bodies, run on the host ----


// One block per row: every thread's Load, the sum of the partial sums, every thread's Store.
template <typename T>
RmsNormResult EmulateRmsNormForward(const at::Tensor& x, const at::Tensor& w, float eps, bool aligned) {
  const int64_t h = x.size(-1), rows = x.numel() / h;
  const kernels::RowPlan plan = kernels::PlanRow(h, kernels::kVecWidth<T>, aligned);
  EXPECT_TRUE(plan.ok);
  at::Tensor y = at::empty_like(x), rstd = at::empty({rows}, at::kFloat);
  kernels::ForRowPlan<T>(plan, [&](auto kw, auto kvec) {
    constexpr int kW = decltype(kw)::value, kVec = decltype(kvec)::value;
    const int nvec = static_cast<int>(h / kW);
    EXPECT_GE(plan.threads * kVec, nvec) << "the plan leaves part of the row to nobody";
    std::vector<kernels::RmsNormForwardThread<T, kW, kVec>> threads(plan.threads);
    for (int64_t r = 0; r < rows; ++r) {
      float ss = 0;
      for (int t = 0; t < plan.threads; ++t) ss += threads[t].Load(x.const_data_ptr<T>() + r * h, t, plan.threads, nvec);
      const float rs = kernels::RmsNormRstd(ss, h, eps);
      rstd.mutable_data_ptr<float>()[r] = rs;
      for (int t = 0; t < plan.threads; ++t) {
        threads[t].Store(y.mutable_data_ptr<T>() + r * h, w.const_data_ptr<T>(), rs, t, plan.threads, nvec);
      }
    }
  });
  return {y, rstd};
}

template <typename T>
at::Tensor EmulateRmsNormBackward(const at::Tensor& dy, const at::Tensor& x, const at::Tensor& w,
                                  const at::Tensor& rstd, bool aligned, const at::Tensor& add = at::Tensor()) {
  const int64_t h = x.size(-1), rows = x.numel() / h;
  const kernels::RowPlan plan = kernels::PlanRow(h, kernels::kVecWidth<T>, aligned);
  at::Tensor dx = at::empty_like(x);
  kernels::ForRowPlan<T>(plan, [&](auto kw, auto kvec) {
    constexpr int kW = decltype(kw)::value, kVec = decltype(kvec)::value;
    const int nvec = static_cast<int>(h / kW);
    std::vector<kernels::RmsNormBackwardThread<T, kW, kVec>> threads(plan.threads);
    for (int64_t r = 0; r < rows; ++r) {
      const float rs = rstd.const_data_ptr<float>()[r];
      float dot = 0;
      for (int t = 0; t < plan.threads; ++t) {
        dot += threads[t].Load(x.const_data_ptr<T>() + r * h, dy.const_data_ptr<T>() + r * h, w.const_data_ptr<T>(), rs,
                               t, plan.threads, nvec);
      }
      for (int t = 0; t < plan.threads; ++t) {
        threads[t].Store(dx.mutable_data_ptr<T>() + r * h, rs, dot / static_cast<float>(h), t, plan.threads, nvec,
                         add.defined() ? add.const_data_ptr<T>() + r * h : nullptr);
      }
    }
  });
  return dx;
}

// Every (row, j, head) of RopeKernel.
template <typename T, int kW, bool kBackward>
at::Tensor EmulateRope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  const int64_t b = x.size(0), tokens = x.size(1), heads = x.size(2), d = x.size(3), half = d / 2;
  at::Tensor out = at::empty_like(x);
  for (int64_t r = 0; r < b * tokens; ++r) {
    const int64_t bi = r / tokens, ti = r % tokens;
    for (int j = 0; j < half / kW; ++j) {
      kernels::RopeThread<T, kW, kBackward> th;
      th.LoadAngles(cos.const_data_ptr<T>() + bi * cos.stride(0) + ti * cos.stride(1),
                    sin.const_data_ptr<T>() + bi * sin.stride(0) + ti * sin.stride(1), j, static_cast<int>(half));
      for (int64_t h = 0; h < heads; ++h) {
        const int64_t base = (r * heads + h) * d;
        th.Apply(x.const_data_ptr<T>() + base, out.mutable_data_ptr<T>() + base, j, static_cast<int>(half));
      }
    }
  }
  return out;
}

template <typename T, int kW>
at::Tensor EmulateSwiGluForward(const at::Tensor& g, const at::Tensor& u) {
  at::Tensor y = at::empty_like(g);
  for (int64_t v = 0; v < g.numel() / kW; ++v) {
    kernels::SwiGluForwardThread<T, kW> th;
    th.Load(g.const_data_ptr<T>(), u.const_data_ptr<T>(), v * kW);
    th.Store(y.mutable_data_ptr<T>(), v * kW);
  }
  return y;
}

template <typename T, int kW>
std::pair<at::Tensor, at::Tensor> EmulateSwiGluBackward(const at::Tensor& da, const at::Tensor& g, const at::Tensor& u) {
  at::Tensor dg = at::empty_like(g), du = at::empty_like(u);
  for (int64_t v = 0; v < g.numel() / kW; ++v) {
    kernels::SwiGluBackwardThread<T, kW> th;
    th.Load(da.const_data_ptr<T>(), g.const_data_ptr<T>(), u.const_data_ptr<T>(), v * kW);
    th.Store(dg.mutable_data_ptr<T>(), du.mutable_data_ptr<T>(), v * kW);
  }
  return {dg, du};
}

template <typename T>
class DeviceBodies : public ::testing::Test {
 protected:
  static at::ScalarType Dtype() { return c10::CppTypeToScalarType<T>::value; }
};
using StorageTypes = ::testing::Types<float, c10::BFloat16, c10::Half>;
TYPED_TEST_SUITE(DeviceBodies, StorageTypes);

TYPED_TEST(DeviceBodies, RmsNormRowPlansMatchTheReference) {
  using T = TypeParam;
  const at::ScalarType dt = this->Dtype();
  // Rows of one and of several accesses per thread, LLaMA widths, and widths no vector divides.
  for (int64_t h : {8, 37, 256, 2048, 4096, 5000, 8192}) {
    for (bool aligned : {true, false}) {
      if (!aligned && h > 2048) continue;  // one element per access: rows up to 2048 only
      at::Tensor x = Rand({3, h}, dt), w = Rand({h}, dt), dy = Rand({3, h}, dt);
      const RmsNormResult ref = reference::RmsNormForward(x, w, kEps);
      const RmsNormResult got = EmulateRmsNormForward<T>(x, w, kEps, aligned);
      EXPECT_LT(RelErr(got.y, ref.y), Tol(dt)) << "h " << h << " aligned " << aligned;
      EXPECT_LT(RelErr(got.rstd, ref.rstd), 1e-5) << "h " << h;
      EXPECT_LT(RelErr(EmulateRmsNormBackward<T>(dy, x, w, got.rstd, aligned), reference::RmsNormBackward(dy, x, w, ref.rstd)),
                Tol(dt))
          << "h " << h << " aligned " << aligned;
      // With a residual's gradient added in the same pass (the MLP block's backward).
      at::Tensor add = Rand({3, h}, dt);
      EXPECT_LT(RelErr(EmulateRmsNormBackward<T>(dy, x, w, got.rstd, aligned, add),
                       reference::RmsNormBackward(dy, x, w, ref.rstd).to(at::kFloat).add(add.to(at::kFloat))),
                Tol(dt))
          << "with add: h " << h << " aligned " << aligned;
    }
  }
}

TEST(RowPlan, SpreadsRowsOverAtMost512ThreadsOfAtMostFourAccesses) {
  struct Case {
    int64_t h;
    int width;
    bool aligned;
    int want_width, want_per_thread, want_threads;
    bool want_ok;
  };
  const Case cases[] = {
      {2048, 8, true, 8, 1, 256, true},    // 1B in bf16
      {4096, 8, true, 8, 2, 256, true},    // 8B in bf16
      {4096, 4, true, 4, 4, 256, true},    // 8B in float32
      {16384, 8, true, 8, 4, 512, true},   // 405B in bf16
      {16384, 4, true, 4, 4, 1024, false}, // too long for the registers: the reference
      {37, 8, true, 1, 1, 64, true},       // no vector divides the row
      {4096, 8, false, 1, 4, 1024, false}, // misaligned and long
      {8, 8, true, 8, 1, 32, true},
  };
  for (const Case& c : cases) {
    const kernels::RowPlan p = kernels::PlanRow(c.h, c.width, c.aligned);
    EXPECT_EQ(p.width, c.want_width) << c.h;
    EXPECT_EQ(p.per_thread, c.want_per_thread) << c.h;
    EXPECT_EQ(p.ok, c.want_ok) << c.h;
    if (p.ok) {
      EXPECT_EQ(p.threads, c.want_threads) << c.h;
    }
  }
}

TEST(RopeBlock, CoversEveryVectorWithinCudaLimits) {
  for (int64_t half : {1, 3, 4, 8, 16, 32, 64, 300, 1024}) {
    for (int width : {1, 4, 8}) {
      if (half % width != 0) continue;
      for (int64_t heads : {1, 3, 8, 32, 128}) {
        const kernels::RopeBlock b = kernels::PlanRope(half, width, heads);
        EXPECT_EQ(static_cast<int64_t>(b.x) * width, half);
        EXPECT_GE(b.y, 1);
        EXPECT_LE(b.y, heads);
        EXPECT_GE(b.z, 1);
        EXPECT_LE(b.z, 64) << half << " " << width << " " << heads;
        EXPECT_LE(b.x * b.y * b.z, 1024) << half << " " << width << " " << heads;
      }
    }
  }
}

TYPED_TEST(DeviceBodies, RopeMatchesTheReference) {
  using T = TypeParam;
  const at::ScalarType dt = this->Dtype();
  constexpr int kV = kernels::kVecWidth<T>;
  for (int64_t d : {6, 16, 64, 128}) {
    auto [cos, sin] = Angles(2, 5, d, dt);
    at::Tensor x = Rand({2, 5, 3, d}, dt);
    const at::Tensor fwd = reference::RopeForward(x, cos, sin), bwd = reference::RopeBackward(x, cos, sin);
    EXPECT_LT(RelErr((EmulateRope<T, 1, false>(x, cos, sin)), fwd), Tol(dt)) << "d " << d;
    EXPECT_LT(RelErr((EmulateRope<T, 1, true>(x, cos, sin)), bwd), Tol(dt)) << "d " << d;
    if ((d / 2) % kV != 0) continue;
    EXPECT_LT(RelErr((EmulateRope<T, kV, false>(x, cos, sin)), fwd), Tol(dt)) << "d " << d;
    EXPECT_LT(RelErr((EmulateRope<T, kV, true>(x, cos, sin)), bwd), Tol(dt)) << "d " << d;
    // cos/sin shared across the batch (stride 0), as a model may pass them.
    at::Tensor c0 = cos.narrow(0, 0, 1).expand({2, 5, d}), s0 = sin.narrow(0, 0, 1).expand({2, 5, d});
    EXPECT_LT(RelErr((EmulateRope<T, kV, false>(x, c0, s0)), reference::RopeForward(x, c0, s0)), Tol(dt));
  }
}

TYPED_TEST(DeviceBodies, SwiGluMatchesTheReference) {
  using T = TypeParam;
  const at::ScalarType dt = this->Dtype();
  constexpr int kV = kernels::kVecWidth<T>;
  at::Tensor g = Rand({7, 64}, dt) * 4, u = Rand({7, 64}, dt), da = Rand({7, 64}, dt);
  const at::Tensor fwd = reference::SwiGluForward(g, u);
  const auto [dg, du] = reference::SwiGluBackward(da, g, u);
  EXPECT_LT(RelErr((EmulateSwiGluForward<T, kV>(g, u)), fwd), Tol(dt));
  EXPECT_LT(RelErr((EmulateSwiGluForward<T, 1>(g, u)), fwd), Tol(dt));
  for (auto [eg, eu] : {EmulateSwiGluBackward<T, kV>(da, g, u), EmulateSwiGluBackward<T, 1>(da, g, u)}) {
    EXPECT_LT(RelErr(eg, dg), Tol(dt));
    EXPECT_LT(RelErr(eu, du), Tol(dt));
  }
}

TEST(DeviceBodies, DropoutBitsMatchTheTensorEmulation) {
  const DropoutKey key{.seed = 0xdeadbeefcafef00dULL, .step = 77};
  at::Tensor table = DropoutKeyTable(key, {0, 5, int64_t{1} << 40}, 3, 2, 7, at::kCPU);
  for (int64_t features : {1, 37, 64, 2048}) {
    for (int64_t tokens : {1, 3, 16}) {
      for (double keep : {0.0, 0.3, 0.9, 1.0}) {
        at::Tensor keys = table[1][4];  // [3, 2]
        at::Tensor want = reference::DropoutKeepMask(keys, tokens, features, keep).contiguous();
        at::Tensor got = at::empty({3, tokens, features}, at::kBool);
        const uint32_t threshold = kernels::DropoutThreshold(std::llround(keep * 65536.0));
        const uint64_t per_row = static_cast<uint64_t>(tokens * features);
        const bool quads = features % 2 == 0 && per_row % 8 == 0;
        for (int64_t b = 0; b < 3; ++b) {
          const auto lo = static_cast<uint32_t>(keys[b][0].item<int64_t>()), hi = static_cast<uint32_t>(keys[b][1].item<int64_t>());
          auto* row = reinterpret_cast<uint8_t*>(got.mutable_data_ptr<bool>()) + b * per_row;
          if (quads) {
            for (uint64_t q = 0; q < per_row / 8; ++q) kernels::DropoutQuad(lo, hi, threshold, q, row);
          } else {
            for (uint64_t e = 0; e < per_row; ++e) row[e] = kernels::DropoutElement(lo, hi, threshold, e, features);
          }
          // The element path must agree with the quad path wherever both apply.
          if (quads) {
            for (uint64_t e = 0; e < per_row; e += 13) {
              EXPECT_EQ(row[e], kernels::DropoutElement(lo, hi, threshold, e, features));
            }
          }
        }
        EXPECT_TRUE(got.equal(want)) << "features " << features << " tokens " << tokens << " keep " << keep;
      }
    }
  }
}

// ---- The CUDA kernels against the reference on the same GPU ----

class CudaKernels : public ::testing::TestWithParam<at::ScalarType> {
 protected:
  void SetUp() override {
    if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  }
  const at::Device dev_{at::kCUDA, 0};
};

// A contiguous tensor whose data starts one element past a 16-byte boundary: the scalar paths.
at::Tensor Misaligned(const at::Tensor& t) {
  at::Tensor buf = at::empty({t.numel() + 1}, t.options());
  at::Tensor view = buf.narrow(0, 1, t.numel()).view(t.sizes());
  view.copy_(t);
  return view;
}

TEST_P(CudaKernels, RmsNorm) {
  const at::ScalarType dt = GetParam();
  for (int64_t h : {8, 37, 2048, 4096, 20000}) {
    for (bool misaligned : {false, true}) {
      at::Tensor x = Rand({2, 33, h}, dt, dev_), w = Rand({h}, dt, dev_), dy = Rand({2, 33, h}, dt, dev_);
      if (misaligned) x = Misaligned(x);
      const RmsNormResult ref = reference::RmsNormForward(x, w, kEps);
      const RmsNormResult got = RmsNormForward(x, w, kEps);
      EXPECT_EQ(got.y.device(), dev_);
      EXPECT_EQ(got.rstd.scalar_type(), ref.rstd.scalar_type());
      EXPECT_LT(RelErr(got.y, ref.y), Tol(dt)) << "h " << h << " misaligned " << misaligned;
      EXPECT_LT(RelErr(got.rstd, ref.rstd), dt == at::kDouble ? 1e-12 : 1e-5) << "h " << h;
      EXPECT_LT(RelErr(RmsNormBackward(dy, x, w, got.rstd), reference::RmsNormBackward(dy, x, w, ref.rstd)), Tol(dt))
          << "h " << h << " misaligned " << misaligned;
    }
  }
}

TEST_P(CudaKernels, Rope) {
  const at::ScalarType dt = GetParam();
  for (int64_t d : {6, 64, 128}) {
    for (int64_t heads : {1, 8, 32}) {
      auto [cos, sin] = Angles(2, 17, d, dt, dev_);
      at::Tensor x = Rand({2, 17, heads, d}, dt, dev_);
      EXPECT_LT(RelErr(RopeForward(x, cos, sin), reference::RopeForward(x, cos, sin)), Tol(dt)) << d << " " << heads;
      EXPECT_LT(RelErr(RopeBackward(x, cos, sin), reference::RopeBackward(x, cos, sin)), Tol(dt)) << d << " " << heads;
      at::Tensor c0 = cos.narrow(0, 0, 1).expand({2, 17, d}), s0 = sin.narrow(0, 0, 1).expand({2, 17, d});
      EXPECT_LT(RelErr(RopeForward(Misaligned(x), c0, s0), reference::RopeForward(x, c0, s0)), Tol(dt));
    }
  }
}

TEST_P(CudaKernels, SwiGlu) {
  const at::ScalarType dt = GetParam();
  for (int64_t i : {8, 43, 8192}) {
    at::Tensor g = Rand({33, i}, dt, dev_) * 4, u = Rand({33, i}, dt, dev_), da = Rand({33, i}, dt, dev_);
    EXPECT_LT(RelErr(SwiGluForward(g, u), reference::SwiGluForward(g, u)), Tol(dt)) << i;
    auto [dg, du] = SwiGluBackward(da, g, u);
    auto [rg, ru] = reference::SwiGluBackward(da, g, u);
    EXPECT_LT(RelErr(dg, rg), Tol(dt)) << i;
    EXPECT_LT(RelErr(du, ru), Tol(dt)) << i;
    EXPECT_LT(RelErr(SwiGluForward(Misaligned(g), u), reference::SwiGluForward(g, u)), Tol(dt)) << i;
  }
}

INSTANTIATE_TEST_SUITE_P(Dtypes, CudaKernels, ::testing::Values(at::kFloat, at::kBFloat16, at::kHalf, at::kDouble));

TEST(CudaDropout, SameBitsAsTheCpuEmulation) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  const DropoutKey key{.seed = 3, .step = 1};
  at::Tensor table = DropoutKeyTable(key, {9, 2, int64_t{1} << 35}, 3, 2, 7, at::kCPU);
  for (int64_t features : {1, 37, 64, 2048}) {
    for (int64_t tokens : {1, 5, 512}) {
      at::Tensor cpu = DropoutKeepMask(table[1][3], tokens, features, 0.9);
      at::Tensor gpu = DropoutKeepMask(table[1][3].to(at::kCUDA), tokens, features, 0.9);
      EXPECT_EQ(gpu.device().type(), at::kCUDA);
      EXPECT_TRUE(gpu.cpu().equal(cpu)) << features << " " << tokens;
    }
  }
}

}  // namespace
}  // namespace herd::engine
