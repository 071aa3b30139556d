// The chunk cross-entropy (cross_entropy.h) three ways: the ATen reference against float64
// log_softmax, argmax and autograd of at::cross_entropy_loss on small shapes (V no vector width
// divides, ties, ±80 and ±1000 logits); the CUDA kernel's per-thread bodies (cross_entropy_device.h)
// run thread by thread on the host against the reference, which checks the row split, the
// reduction and the gradient's indices and rounding without a GPU; and, where a GPU is present, the
// kernel itself against the reference on the same device, at every block size, aligned and not.
#include "trainer/engine/kernels/cross_entropy.h"

#include <gtest/gtest.h>
#include <torch/cuda.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <ostream>
#include <vector>

#include "trainer/engine/kernels/cross_entropy_check.h"
#include "trainer/engine/kernels/cross_entropy_device.h"
#ifdef HERD_WITH_CUDA
#include "trainer/engine/kernels/cross_entropy_cuda.h"
#endif

namespace herd::engine {
namespace {

at::Tensor Logits(int64_t m, int64_t v, at::ScalarType dtype, double scale = 3.0) {
  return (at::randn({m, v}, at::kDouble) * scale).to(dtype);
}

at::Tensor Targets(int64_t m, int64_t v) { return at::randint(0, v, {m}, at::kLong); }

// The float64 truth on the values as stored: loss, hit and softmax − onehot.
struct Truth {
  at::Tensor loss, hit, grad;
};
Truth Float64Truth(const at::Tensor& logits, const at::Tensor& targets) {
  at::Tensor x = logits.to(at::kDouble);
  at::Tensor logp = at::log_softmax(x, 1);
  at::Tensor t = targets.unsqueeze(1);
  return {-logp.gather(1, t).squeeze(1), x.argmax(1) == targets,
          logp.exp().scatter_add(1, t, at::full({x.size(0), 1}, -1.0, x.options()))};
}

double MaxAbs(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kCPU, at::kDouble) - b.to(at::kCPU, at::kDouble)).abs().max().item<double>();
}

// Tolerances against the float64 truth: the loss's absolute error (math in float32 over ~15-unit
// values), and the gradient's as a fraction of one unit (values in [−1, 1], one rounding to dtype).
double LossTol(at::ScalarType s) { return s == at::kDouble ? 1e-12 : 2e-5; }
double GradTol(at::ScalarType s) {
  switch (s) {
    case at::kDouble: return 1e-14;
    case at::kFloat: return 1e-6;
    case at::kHalf: return 1.0 / 2048;
    default: return 1.0 / 256;
  }
}

struct Case {
  at::ScalarType dtype;
  int64_t m, v;
};
void PrintTo(const Case& c, std::ostream* os) { *os << c.dtype << " [" << c.m << ", " << c.v << "]"; }

class ReferenceTable : public ::testing::TestWithParam<Case> {};

TEST_P(ReferenceTable, MatchesFloat64LogSoftmaxArgmaxAndSoftmaxMinusOnehot) {
  const Case c = GetParam();
  at::manual_seed(7);
  at::Tensor x = Logits(c.m, c.v, c.dtype), t = Targets(c.m, c.v);
  t[0] = x[0].argmax().item<int64_t>();  // at least one hit
  const Truth want = Float64Truth(x, t);
  at::Tensor g = x.clone();
  const CrossEntropyChunkResult r = CrossEntropyChunk(g, t, /*grad=*/true);
  EXPECT_EQ(r.loss.scalar_type(), c.dtype == at::kDouble ? at::kDouble : at::kFloat);
  EXPECT_EQ(r.hit.scalar_type(), at::kBool);
  EXPECT_LE(MaxAbs(r.loss, want.loss), LossTol(c.dtype));
  EXPECT_TRUE(r.hit.equal(want.hit));
  EXPECT_TRUE(r.hit[0].item<bool>());
  EXPECT_EQ(g.scalar_type(), c.dtype);
  EXPECT_LE(MaxAbs(g, want.grad), GradTol(c.dtype));

  at::Tensor n = x.clone();
  const CrossEntropyChunkResult rn = CrossEntropyChunk(n, t, /*grad=*/false);
  EXPECT_TRUE(n.equal(x)) << "without grad the logits stay as they were";
  EXPECT_TRUE(rn.loss.equal(r.loss));
  EXPECT_TRUE(rn.hit.equal(r.hit));
}

INSTANTIATE_TEST_SUITE_P(Shapes, ReferenceTable,
                         ::testing::Values(Case{at::kFloat, 6, 1003}, Case{at::kBFloat16, 6, 1003},
                                           Case{at::kHalf, 6, 1003}, Case{at::kDouble, 6, 1003},
                                           Case{at::kFloat, 3, 7}, Case{at::kBFloat16, 4, 37}, Case{at::kFloat, 2, 1},
                                           Case{at::kBFloat16, 2, 8}));

TEST(Reference, GradientIsAutogradOfSummedCrossEntropyInFloat64) {
  at::manual_seed(3);
  at::Tensor x = Logits(5, 211, at::kDouble), t = Targets(5, 211);
  at::Tensor leaf = x.clone().requires_grad_(true);
  at::Tensor loss = at::cross_entropy_loss(leaf, t, /*weight=*/{}, at::Reduction::Sum);
  loss.backward();
  at::Tensor g = x.clone();
  const CrossEntropyChunkResult r = CrossEntropyChunk(g, t, /*grad=*/true);
  EXPECT_NEAR(r.loss.sum().item<double>(), loss.item<double>(), 1e-11);
  EXPECT_LE(MaxAbs(g, leaf.grad()), 1e-14);
}

TEST(Reference, ArgmaxTiesGoToTheFirstIndex) {
  for (const at::ScalarType dt : {at::kFloat, at::kBFloat16}) {
    at::Tensor x = at::zeros({3, 19}, dt);
    for (int64_t r = 0; r < 3; ++r) {
      x[r][4] = 2.0;
      x[r][11] = 2.0;
    }
    at::Tensor t = at::tensor({int64_t{4}, int64_t{11}, int64_t{0}});
    at::Tensor g = x.clone();
    const CrossEntropyChunkResult r = CrossEntropyChunk(g, t, /*grad=*/false);
    EXPECT_TRUE(r.hit[0].item<bool>());
    EXPECT_FALSE(r.hit[1].item<bool>());
    EXPECT_FALSE(r.hit[2].item<bool>());
  }
}

TEST(Reference, LargeLogitsStayFinite) {
  at::manual_seed(5);
  for (const double big : {80.0, 1000.0}) {
    for (const at::ScalarType dt : {at::kFloat, at::kBFloat16}) {
      at::Tensor x = Logits(4, 97, at::kDouble);
      x.select(1, 3).fill_(big);
      x.select(1, 50).fill_(-big);
      x[1][60] = big;  // two at the top in row 1
      x = x.to(dt);
      at::Tensor t = at::tensor({int64_t{3}, int64_t{60}, int64_t{50}, int64_t{7}});
      const Truth want = Float64Truth(x, t);
      at::Tensor g = x.clone();
      const CrossEntropyChunkResult r = CrossEntropyChunk(g, t, /*grad=*/true);
      EXPECT_TRUE(at::isfinite(r.loss).all().item<bool>()) << big;
      EXPECT_TRUE(at::isfinite(g).all().item<bool>()) << big;
      EXPECT_LE(MaxAbs(r.loss, want.loss), 1e-5 * big);
      EXPECT_TRUE(r.hit.equal(want.hit));
      // float32's lse near `big` is only good to its last place, ~6e-8 · big: so is exp(l − lse).
      EXPECT_LE(MaxAbs(g, want.grad), GradTol(dt) + 1e-7 * big);
    }
  }
}

TEST(Reference, RejectsBadInputs) {
  at::Tensor x = at::randn({4, 10}), t = at::zeros({4}, at::kLong);
  at::Tensor bad_shape = at::randn({4, 10, 1});
  EXPECT_THROW(CrossEntropyChunk(bad_shape, t, false), c10::Error);
  at::Tensor ints = at::zeros({4, 10}, at::kInt);
  EXPECT_THROW(CrossEntropyChunk(ints, t, false), c10::Error);
  EXPECT_THROW(CrossEntropyChunk(x, t.to(at::kInt), false), c10::Error);
  EXPECT_THROW(CrossEntropyChunk(x, at::zeros({3}, at::kLong), false), c10::Error);
  at::Tensor strided = at::randn({10, 4}).t();
  EXPECT_THROW(CrossEntropyChunk(strided, t, false), c10::Error);
  EXPECT_THROW(CrossEntropyChunk(x, at::full({4}, 10, at::kLong), false), c10::Error);  // gather: out of range
}

TEST(Check, CpuReferenceAgainstFloat64) {
  const nlohmann::json j = CheckCrossEntropyKernel("cpu");
  EXPECT_TRUE(j.value("ok", false)) << j.dump();
  EXPECT_EQ(j["cases"].size(), 2u);
  RecordProperty("result", j.dump());
}

// ---- the kernel's per-thread bodies, run on the host ----

// One block of `threads` on each row, as the kernel runs it: every thread's pass 1, the warps'
// butterflies, the merge over warps, then every thread's pass 2.
template <typename T>
CrossEntropyChunkResult EmulateKernel(at::Tensor& logits, const at::Tensor& targets, bool grad, int threads) {
  using kernels::CeRunning;
  const int64_t m = logits.size(0);
  const int v = static_cast<int>(logits.size(1));
  at::Tensor loss = at::empty({m}, at::kFloat), hit = at::empty({m}, at::kBool);
  for (int64_t b = 0; b < m; ++b) {
    T* row = logits.data_ptr<T>() + b * v;
    const kernels::CeRowPlan plan = kernels::PlanCeRow(row, v);
    const int64_t target64 = targets[b].item<int64_t>();
    const bool in_range = target64 >= 0 && target64 < v;
    const int target = in_range ? static_cast<int>(target64) : -1;
    const float target_logit = in_range ? static_cast<float>(row[target]) : 0.0f;
    std::vector<CeRunning> st(threads);
    for (int tid = 0; tid < threads; ++tid) st[tid] = kernels::CePass1(row, v, plan, tid, threads);
    for (int o = 16; o > 0; o >>= 1) {
      std::vector<CeRunning> next = st;
      for (int tid = 0; tid < threads; ++tid) kernels::CeMerge(next[tid], st[tid ^ o]);
      st = next;
    }
    CeRunning r = st[0];
    for (int w = 1; w < threads / 32; ++w) kernels::CeMerge(r, st[w * 32]);
    const float lse = kernels::CeLse(r);
    loss[b] = in_range ? lse - target_logit : std::numeric_limits<float>::quiet_NaN();
    hit[b] = kernels::CeArgmax(r) == target;
    if (grad) {
      for (int tid = 0; tid < threads; ++tid) kernels::CePass2(row, v, plan, tid, threads, lse, target);
    }
  }
  return {loss, hit};
}

CrossEntropyChunkResult Emulate(at::Tensor& logits, const at::Tensor& targets, bool grad, int threads) {
  switch (logits.scalar_type()) {
    case at::kFloat: return EmulateKernel<float>(logits, targets, grad, threads);
    case at::kBFloat16: return EmulateKernel<c10::BFloat16>(logits, targets, grad, threads);
    default: return EmulateKernel<c10::Half>(logits, targets, grad, threads);
  }
}

// `x` copied into a buffer that starts `offset` elements past an allocation (16-byte aligned).
at::Tensor AtOffset(const at::Tensor& x, int64_t offset) {
  return at::empty({x.numel() + offset}, x.options()).narrow(0, offset, x.numel()).view(x.sizes()).copy_(x);
}

// Kernel (or its emulation) against the reference: loss, hits, gradient, and logits untouched
// without the gradient.
void ExpectMatchesReference(const at::Tensor& x, const at::Tensor& t, const CrossEntropyChunkResult& r,
                            const at::Tensor& grad, const CrossEntropyChunkResult& rn, const at::Tensor& nograd) {
  at::Tensor ref_grad = x.clone();
  const CrossEntropyChunkResult want = reference::CrossEntropyChunk(ref_grad, t, true);
  const double scale = want.loss.abs().clamp_min(1.0).max().item<double>();
  EXPECT_LE(MaxAbs(r.loss, want.loss), (x.scalar_type() == at::kFloat ? 1e-5 : 1e-4) * scale);
  EXPECT_TRUE(r.hit.equal(want.hit));
  // float32: lse may differ in its last place (sums in another order), ~1e-6 of each p.
  EXPECT_LE(MaxAbs(grad, ref_grad), x.scalar_type() == at::kFloat ? 4e-6 : GradTol(x.scalar_type()));
  EXPECT_TRUE(nograd.equal(x));
  EXPECT_TRUE(rn.loss.equal(r.loss));
  EXPECT_TRUE(rn.hit.equal(r.hit));
}

class DeviceBodies : public ::testing::TestWithParam<Case> {};

TEST_P(DeviceBodies, MatchTheReferenceAlignedOrNotAtEveryBlockSize) {
  const Case c = GetParam();
  at::manual_seed(13);
  at::Tensor x = Logits(c.m, c.v, c.dtype), t = Targets(c.m, c.v);
  t[0] = x[0].argmax().item<int64_t>();
  x[c.m - 1][c.v / 2] = x[c.m - 1].max().item<double>() + 1.0;  // a tie across threads in the last row
  x[c.m - 1][c.v - 1] = x[c.m - 1][c.v / 2];
  for (const int threads : {256, 512, 1024}) {
    for (const int64_t offset : {0, 1, 3}) {
      SCOPED_TRACE(::testing::Message() << c.dtype << " V " << c.v << " threads " << threads << " offset " << offset);
      at::Tensor g = AtOffset(x, offset), n = AtOffset(x, offset);
      const CrossEntropyChunkResult r = Emulate(g, t, true, threads);
      const CrossEntropyChunkResult rn = Emulate(n, t, false, threads);
      ExpectMatchesReference(x, t, r, g, rn, n);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, DeviceBodies,
                         ::testing::Values(Case{at::kFloat, 3, 1}, Case{at::kBFloat16, 3, 5}, Case{at::kHalf, 4, 37},
                                           Case{at::kFloat, 4, 1003}, Case{at::kBFloat16, 4, 1003},
                                           Case{at::kBFloat16, 3, 8192 * 4 + 8}, Case{at::kFloat, 2, 128256},
                                           Case{at::kBFloat16, 2, 128256}));

TEST(DeviceBodiesEdges, RowsOfMinusInfAndBadTargets) {
  at::Tensor x = at::zeros({3, 4099}, at::kDouble);
  x[0].fill_(-INFINITY);
  x[0][2000] = 1.0;        // one finite value among −inf
  x[1].fill_(-INFINITY);   // all −inf: NaN loss, argmax 0 (as ATen)
  x[2].normal_(0, 3);
  for (const at::ScalarType dt : {at::kFloat, at::kBFloat16}) {
    at::Tensor xd = x.to(dt);
    at::Tensor t = at::tensor({int64_t{2000}, int64_t{0}, int64_t{5}});
    at::Tensor ref = xd.clone();
    const CrossEntropyChunkResult want = reference::CrossEntropyChunk(ref, t, true);
    at::Tensor k = xd.clone();
    const CrossEntropyChunkResult r = Emulate(k, t, true, 256);
    EXPECT_TRUE(r.hit.equal(want.hit)) << r.hit << want.hit;
    EXPECT_NEAR(r.loss[0].item<float>(), 0.0f, 1e-6);
    EXPECT_TRUE(std::isnan(r.loss[1].item<float>()) && std::isnan(want.loss[1].item<float>()));
    EXPECT_LE(MaxAbs(r.loss[2], want.loss[2]), 1e-4);
    EXPECT_TRUE(k[0].equal(ref[0]));  // zeros, and 0 at the target

    // A target outside [0, V): no read outside the row, a NaN loss, no hit, no −1 in the gradient.
    at::Tensor bad = at::tensor({int64_t{-1}, int64_t{4099}, int64_t{5}});
    at::Tensor k2 = xd.clone();
    const CrossEntropyChunkResult r2 = Emulate(k2, bad, true, 1024);
    EXPECT_TRUE(std::isnan(r2.loss[0].item<float>()));
    EXPECT_TRUE(std::isnan(r2.loss[1].item<float>()));
    EXPECT_FALSE(r2.hit[0].item<bool>());
    EXPECT_FALSE(r2.hit[1].item<bool>());
    EXPECT_GE(k2[0].min().item<double>(), 0.0);
  }
}

// ---- the CUDA kernel, where there is a GPU ----

#ifdef HERD_WITH_CUDA
class CudaKernel : public ::testing::TestWithParam<Case> {
 protected:
  void SetUp() override {
    if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  }
};

// The kernel on `x` (a CUDA tensor), aligned and at odd offsets, against the reference.
void ExpectKernelMatchesReference(const at::Tensor& x, const at::Tensor& t, int threads) {
  for (const int64_t offset : {0, 1, 3}) {
    SCOPED_TRACE(::testing::Message() << x.sizes() << " " << x.scalar_type() << " threads " << threads << " offset "
                                      << offset);
    at::Tensor g = AtOffset(x, offset), n = AtOffset(x, offset);
    auto r = cuda_kernels::CrossEntropyChunk(g, t, true, threads);
    auto rn = cuda_kernels::CrossEntropyChunk(n, t, false, threads);
    ASSERT_TRUE(r.has_value() && rn.has_value());
    ExpectMatchesReference(x, t, *r, g, *rn, n);
  }
}

TEST_P(CudaKernel, MatchesTheReferenceAtEveryBlockSize) {
  const Case c = GetParam();
  at::manual_seed(11);
  at::Tensor x = Logits(c.m, c.v, c.dtype).cuda(), t = Targets(c.m, c.v).cuda();
  t[0] = x[0].argmax();
  for (const int threads : {256, 512, 1024}) ExpectKernelMatchesReference(x, t, threads);
}

INSTANTIATE_TEST_SUITE_P(Shapes, CudaKernel,
                         ::testing::Values(Case{at::kFloat, 3, 1}, Case{at::kBFloat16, 5, 7}, Case{at::kHalf, 4, 37},
                                           Case{at::kFloat, 8, 1003}, Case{at::kBFloat16, 8, 1003},
                                           Case{at::kBFloat16, 4, 128256}, Case{at::kFloat, 4, 128256},
                                           Case{at::kHalf, 3, 32768 + 5}));

TEST(CudaKernelEdges, TiesLargeValuesRowsOfMinusInfAndBadTargets) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  for (const at::ScalarType dt : {at::kFloat, at::kBFloat16}) {
    at::Tensor x = at::zeros({5, 4099}, at::kDouble);
    x[0][100] = 3.0;
    x[0][4000] = 3.0;  // tie across threads: the first wins
    x[1].fill_(-INFINITY);
    x[1][2000] = 1.0;  // one finite value among −inf
    x[2].fill_(-INFINITY);  // all −inf: NaN loss, argmax 0 (as ATen)
    x[3].normal_(0, 3);
    x[3][17] = 80.0;
    x[3][18] = -80.0;
    x[4].normal_(0, 3);
    x = x.to(dt).cuda();
    at::Tensor t = at::tensor({int64_t{100}, int64_t{2000}, int64_t{0}, int64_t{17}, int64_t{5}}).cuda();
    for (const int threads : {256, 1024}) {
      at::Tensor ref = x.clone();
      const CrossEntropyChunkResult want = reference::CrossEntropyChunk(ref, t, false);
      at::Tensor k = x.clone();
      auto r = cuda_kernels::CrossEntropyChunk(k, t, true, threads);
      ASSERT_TRUE(r.has_value());
      EXPECT_TRUE(r->hit.equal(want.hit)) << r->hit << want.hit;
      at::Tensor finite = at::isfinite(want.loss);
      EXPECT_TRUE(finite.equal(at::isfinite(r->loss)));
      EXPECT_LE(MaxAbs(r->loss.masked_select(finite), want.loss.masked_select(finite)), 1e-4);

      // A target outside [0, V): no read outside the row, a NaN loss and no hit.
      at::Tensor bad = at::tensor({int64_t{-1}, int64_t{4099}, int64_t{0}, int64_t{0}, int64_t{0}}).cuda();
      at::Tensor k2 = x.clone();
      auto r2 = cuda_kernels::CrossEntropyChunk(k2, bad, false, threads);
      ASSERT_TRUE(r2.has_value());
      EXPECT_TRUE(std::isnan(r2->loss[0].item<float>()));
      EXPECT_TRUE(std::isnan(r2->loss[1].item<float>()));
      EXPECT_FALSE(r2->hit[0].item<bool>());
    }
  }
}

TEST(CudaKernelEdges, DeclinesFloat64AndTheDispatchFallsBack) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  at::Tensor x = at::randn({3, 50}, at::TensorOptions().dtype(at::kDouble).device(at::kCUDA));
  at::Tensor t = at::zeros({3}, at::TensorOptions().dtype(at::kLong).device(at::kCUDA));
  EXPECT_FALSE(cuda_kernels::CrossEntropyChunk(x, t, false).has_value());
  const CrossEntropyChunkResult r = CrossEntropyChunk(x, t, false);
  EXPECT_EQ(r.loss.scalar_type(), at::kDouble);
}
#endif

}  // namespace
}  // namespace herd::engine
