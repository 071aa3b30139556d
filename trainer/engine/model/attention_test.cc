// CausalAttention against references (DESIGN.md §5, §12): on CPU the SDPA-with-recompute path
// against plain autograd through scaled_dot_product_attention (float32) and against a naive
// softmax(q·kᵀ)·v with an explicit mask built here from the document lengths (float64), forward and
// dq/dk/dv, for plain rows (MHA, GQA, MQA) and packed rows (documents of different lengths,
// single-token documents); MakeAttentionLayout's cu_seqlens, max_seqlen and mask. The CUDA cases
// (flash varlen in bf16 against fp32 SDPA on the same GPU) skip where there is no GPU.
#include "trainer/engine/model/attention.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/grad_mode.h>
#include <gtest/gtest.h>
#include <torch/cuda.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

namespace herd::engine {
namespace {

double RelErr(const at::Tensor& x, const at::Tensor& ref) {
  const double scale = ref.abs().max().item<double>();
  return (x.to(ref.scalar_type()) - ref).abs().max().item<double>() / std::max(scale, 1e-30);
}

// [B, T] int64 doc ids from per-row document lengths; ids restart at 0 in every row, so the same
// id appears in several rows (rows never share a document regardless).
at::Tensor DocIds(const std::vector<std::vector<int64_t>>& lengths, int64_t T) {
  std::vector<int64_t> ids;
  for (const auto& row : lengths) {
    int64_t n = 0;
    for (size_t d = 0; d < row.size(); ++d) {
      for (int64_t i = 0; i < row[d]; ++i) ids.push_back(static_cast<int64_t>(d));
      n += row[d];
    }
    EXPECT_EQ(n, T) << "a test row's documents must fill it";
  }
  return at::tensor(ids, at::kLong).view({static_cast<int64_t>(lengths.size()), T});
}

// [B, 1, T, T] bool, causal within each document, straight from the lengths.
at::Tensor MaskFromLengths(const std::vector<std::vector<int64_t>>& lengths, int64_t T) {
  at::Tensor m = at::zeros({static_cast<int64_t>(lengths.size()), 1, T, T}, at::kBool);
  for (size_t b = 0; b < lengths.size(); ++b) {
    int64_t start = 0;
    for (int64_t len : lengths[b]) {
      for (int64_t i = start; i < start + len; ++i) {
        for (int64_t j = start; j <= i; ++j) m[b][0][i][j] = true;
      }
      start += len;
    }
  }
  return m;
}

// softmax(scale · q·kᵀ masked) · v with K/V expanded to Nq heads. [B, T, N, D] in and out.
at::Tensor NaiveAttention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& mask,
                          double scale) {
  const int64_t group = q.size(2) / k.size(2);
  at::Tensor qt = q.transpose(1, 2);                              // [B, Nq, T, D]
  at::Tensor kt = k.repeat_interleave(group, 2).transpose(1, 2);  // [B, Nq, T, D]
  at::Tensor vt = v.repeat_interleave(group, 2).transpose(1, 2);
  at::Tensor s = at::matmul(qt, kt.transpose(-1, -2)) * scale;  // [B, Nq, T, T]
  s = s.masked_fill(mask.logical_not(), -std::numeric_limits<double>::infinity());
  return at::matmul(at::softmax(s, -1), vt).transpose(1, 2);  // [B, T, Nq, D]
}

// Plain autograd through SDPA, the way the model called it before CausalAttention.
at::Tensor PlainSdpa(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& mask,
                     double scale) {
  const int64_t Nq = q.size(2), Nkv = k.size(2);
  at::Tensor qt = q.transpose(1, 2), kt = k.transpose(1, 2), vt = v.transpose(1, 2);
  at::Tensor o;
  if (mask.defined()) {
    o = at::scaled_dot_product_attention(qt, kt.repeat_interleave(Nq / Nkv, 1), vt.repeat_interleave(Nq / Nkv, 1), mask,
                                         0.0, false, scale);
  } else {
    o = at::scaled_dot_product_attention(qt, kt, vt, std::nullopt, 0.0, true, scale, Nkv != Nq);
  }
  return o.transpose(1, 2);
}

struct Case {
  std::string name;
  int64_t heads, kv_heads;
  std::vector<std::vector<int64_t>> docs;  // per-row document lengths; empty: plain rows
};

const int64_t kB = 2, kT = 8, kD = 8;
const std::vector<Case> kCases = {
    {"plain_mha", 4, 4, {}},
    {"plain_gqa", 4, 2, {}},
    {"plain_mqa", 4, 1, {}},
    {"packed_gqa", 4, 2, {{3, 1, 4}, {2, 5, 1}}},
    {"packed_mqa", 4, 1, {{5, 3}, {8}}},
    {"single_token_docs", 4, 2, {{1, 1, 1, 1, 1, 1, 1, 1}, {1, 6, 1}}},
};

struct Grads {
  at::Tensor out, dq, dk, dv;
};

template <typename Fn>
Grads RunWithGrad(Fn fn, const at::Tensor& q0, const at::Tensor& k0, const at::Tensor& v0, const at::Tensor& g) {
  at::Tensor q = q0.clone().set_requires_grad(true);
  at::Tensor k = k0.clone().set_requires_grad(true);
  at::Tensor v = v0.clone().set_requires_grad(true);
  at::Tensor out = fn(q, k, v);
  (out * g).sum().backward();
  return {out.detach(), q.grad(), k.grad(), v.grad()};
}

void CheckCase(const Case& c, at::ScalarType dtype, double tolerance, bool naive) {
  SCOPED_TRACE(c.name + (dtype == at::kDouble ? " float64" : " float32"));
  auto gen = at::make_generator<at::CPUGeneratorImpl>(17);
  const auto opts = at::TensorOptions().dtype(dtype);
  at::Tensor q = at::randn({kB, kT, c.heads, kD}, gen, opts);
  at::Tensor k = at::randn({kB, kT, c.kv_heads, kD}, gen, opts);
  at::Tensor v = at::randn({kB, kT, c.kv_heads, kD}, gen, opts);
  at::Tensor g = at::randn({kB, kT, c.heads, kD}, gen, opts);
  const double scale = 1.0 / std::sqrt(static_cast<double>(kD));
  const bool packed = !c.docs.empty();
  AttentionLayout layout = MakeAttentionLayout(packed ? DocIds(c.docs, kT) : at::Tensor(), kB, kT, at::kCPU);

  Grads got =
      RunWithGrad([&](auto& a, auto& b, auto& d) { return CausalAttention(a, b, d, layout, scale); }, q, k, v, g);
  EXPECT_TRUE(got.out.is_contiguous());
  EXPECT_EQ(got.out.sizes(), q.sizes());
  at::Tensor ref_mask = packed ? MaskFromLengths(c.docs, kT) : at::Tensor();
  Grads ref;
  if (naive) {
    at::Tensor m = packed ? ref_mask : at::ones({kT, kT}, at::kBool).tril().expand({kB, 1, kT, kT});
    ref = RunWithGrad([&](auto& a, auto& b, auto& d) { return NaiveAttention(a, b, d, m, scale); }, q, k, v, g);
  } else {
    ref = RunWithGrad([&](auto& a, auto& b, auto& d) { return PlainSdpa(a, b, d, ref_mask, scale); }, q, k, v, g);
  }
  EXPECT_LT(RelErr(got.out, ref.out), tolerance);
  EXPECT_LT(RelErr(got.dq, ref.dq), tolerance);
  EXPECT_LT(RelErr(got.dk, ref.dk), tolerance);
  EXPECT_LT(RelErr(got.dv, ref.dv), tolerance);
}

TEST(CausalAttentionTest, MatchesPlainAutogradSdpaFloat32) {
  for (const Case& c : kCases) CheckCase(c, at::kFloat, 2e-6, /*naive=*/false);
}

TEST(CausalAttentionTest, MatchesNaiveSoftmaxFloat64) {
  for (const Case& c : kCases) CheckCase(c, at::kDouble, 1e-12, /*naive=*/true);
}

TEST(CausalAttentionTest, DocumentsDoNotSeeEachOther) {
  // Changing the second document of row 0 changes nothing in the first, nor in row 1.
  const std::vector<std::vector<int64_t>> docs = {{3, 5}, {8}};
  AttentionLayout layout = MakeAttentionLayout(DocIds(docs, kT), kB, kT, at::kCPU);
  at::Tensor q = at::randn({kB, kT, 4, kD}, at::kDouble), k = at::randn({kB, kT, 2, kD}, at::kDouble);
  at::Tensor v = at::randn({kB, kT, 2, kD}, at::kDouble);
  at::Tensor out = CausalAttention(q, k, v, layout, 0.3);
  at::Tensor k2 = k.clone(), v2 = v.clone();
  k2[0].narrow(0, 3, 5).normal_();
  v2[0].narrow(0, 3, 5).normal_();
  at::Tensor out2 = CausalAttention(q, k2, v2, layout, 0.3);
  EXPECT_TRUE(at::equal(out[0].narrow(0, 0, 3), out2[0].narrow(0, 0, 3)));
  EXPECT_TRUE(at::equal(out[1], out2[1]));
  EXPECT_FALSE(at::equal(out[0].narrow(0, 3, 5), out2[0].narrow(0, 3, 5)));
}

TEST(CausalAttentionTest, GradientOnlyWhereAsked) {
  AttentionLayout layout = MakeAttentionLayout(at::Tensor(), kB, kT, at::kCPU);
  at::Tensor q = at::randn({kB, kT, 4, kD}).set_requires_grad(true);
  at::Tensor k = at::randn({kB, kT, 2, kD});
  at::Tensor v = at::randn({kB, kT, 2, kD}).set_requires_grad(true);
  CausalAttention(q, k, v, layout, 0.5).sum().backward();
  EXPECT_TRUE(q.grad().defined());
  EXPECT_FALSE(k.grad().defined());
  EXPECT_TRUE(v.grad().defined());
  at::NoGradGuard no_grad;
  EXPECT_FALSE(CausalAttention(q, k, v, layout, 0.5).requires_grad());
}

TEST(CausalAttentionTest, RefusesBadInput) {
  AttentionLayout plain = MakeAttentionLayout(at::Tensor(), kB, kT, at::kCPU);
  at::Tensor q = at::randn({kB, kT, 4, kD}), kv = at::randn({kB, kT, 3, kD});
  EXPECT_THROW(CausalAttention(q, kv, kv, plain, 1.0), c10::Error);  // 4 % 3 != 0
  at::Tensor kv2 = at::randn({kB, kT, 2, kD});
  EXPECT_THROW(CausalAttention(q.narrow(1, 0, 4), kv2.narrow(1, 0, 4), kv2.narrow(1, 0, 4), plain, 1.0),
               c10::Error);  // T differs from the layout's
  EXPECT_THROW(CausalAttention(q, kv2, kv2, plain, 1.0, AttentionBackend::kFlash), c10::Error);  // CPU
}

TEST(CausalAttentionTest, PackedLayoutWithoutMaskRebuildsItOffTheFlashPath) {
  // Layouts made for the flash kernel carry no mask; should the SDPA path get one (no flash on
  // this device, or the kernel refused), the mask comes from cu_seqlens.
  const std::vector<std::vector<int64_t>> docs = {{4, 4}, {1, 2, 5}};
  AttentionLayout no_mask = MakeAttentionLayout(DocIds(docs, kT), kB, kT, at::kCPU, /*with_mask=*/false);
  AttentionLayout masked = MakeAttentionLayout(DocIds(docs, kT), kB, kT, at::kCPU);
  ASSERT_FALSE(no_mask.mask.defined());
  at::Tensor q = at::randn({kB, kT, 4, kD}, at::kDouble), kv = at::randn({kB, kT, 2, kD}, at::kDouble);
  EXPECT_TRUE(at::equal(CausalAttention(q, kv, kv, no_mask, 0.4), CausalAttention(q, kv, kv, masked, 0.4)));
}

TEST(AttentionLayoutTest, PlainRows) {
  AttentionLayout l = MakeAttentionLayout(at::Tensor(), 3, 5, at::kCPU);
  EXPECT_FALSE(l.packed);
  EXPECT_FALSE(l.mask.defined());
  EXPECT_EQ(l.max_seqlen, 5);
  EXPECT_EQ(l.cu_seqlens.scalar_type(), at::kInt);
  EXPECT_TRUE(at::equal(l.cu_seqlens, at::tensor({0, 5, 10, 15}, at::kInt)));
}

TEST(AttentionLayoutTest, PackedRows) {
  // Row 1 starts with the id row 0 ended on (still a new document); row 2 reuses id 0 after 9.
  at::Tensor ids = at::tensor({0, 0, 0, 1, 1, 2, 2, 3, 3, 3, 3, 3, 7, 9, 9, 0, 0, 0}, at::kLong).view({3, 6});
  AttentionLayout l = MakeAttentionLayout(ids, 3, 6, at::kCPU);
  EXPECT_TRUE(l.packed);
  EXPECT_EQ(l.cu_seqlens.scalar_type(), at::kInt);
  EXPECT_TRUE(at::equal(l.cu_seqlens, at::tensor({0, 3, 5, 6, 7, 12, 13, 15, 18}, at::kInt))) << l.cu_seqlens;
  EXPECT_EQ(l.max_seqlen, 5);
  ASSERT_TRUE(l.mask.defined());
  EXPECT_TRUE(at::equal(l.mask, MaskFromLengths({{3, 2, 1}, {1, 5}, {1, 2, 3}}, 6)));
}

TEST(AttentionLayoutTest, OneDocumentPerRowAndSingleTokens) {
  AttentionLayout one = MakeAttentionLayout(at::zeros({2, 4}, at::kLong), 2, 4, at::kCPU);
  EXPECT_TRUE(at::equal(one.cu_seqlens, at::tensor({0, 4, 8}, at::kInt)));
  EXPECT_EQ(one.max_seqlen, 4);
  AttentionLayout singles = MakeAttentionLayout(at::arange(6, at::kLong).view({2, 3}), 2, 3, at::kCPU);
  EXPECT_TRUE(at::equal(singles.cu_seqlens, at::arange(7, at::kInt)));
  EXPECT_EQ(singles.max_seqlen, 1);
  EXPECT_THROW(MakeAttentionLayout(at::zeros({2, 5}, at::kLong), 2, 4, at::kCPU), c10::Error);
  EXPECT_THROW(MakeAttentionLayout(at::zeros({2, 4}, at::kFloat), 2, 4, at::kCPU), c10::Error);
}

// The flash varlen path (bf16) against fp32 SDPA on the same GPU, on the 1B head layout (32/8, D 64):
// plain rows, packed rows, and a batch of one-token documents only (max_seqlen 1).
TEST(CausalAttentionCudaTest, FlashMatchesFloat32Sdpa) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  const at::Device dev(at::kCUDA, 0);
  ASSERT_TRUE(FlashAttentionApplies(dev, at::kBFloat16, 64));
  const int64_t B = 2, Nq = 32, Nkv = 8, D = 64;
  struct Batch {
    std::string name;
    int64_t T;
    std::vector<std::vector<int64_t>> docs;  // empty: plain rows
  };
  const std::vector<Batch> batches = {{"plain", 256, {}},
                                      {"packed", 256, {{100, 1, 27, 128}, {256}}},
                                      {"single_tokens", 4, {{1, 1, 1, 1}, {1, 1, 1, 1}}}};
  for (const Batch& c : batches) {
    SCOPED_TRACE(c.name);
    const int64_t T = c.T;
    auto opts = at::TensorOptions().dtype(at::kFloat).device(dev);
    at::Tensor q = at::randn({B, T, Nq, D}, opts), k = at::randn({B, T, Nkv, D}, opts);
    at::Tensor v = at::randn({B, T, Nkv, D}, opts), g = at::randn({B, T, Nq, D}, opts);
    AttentionLayout l = MakeAttentionLayout(c.docs.empty() ? at::Tensor() : DocIds(c.docs, T), B, T, dev);
    const double scale = 0.125;
    auto run = [&](at::ScalarType dt) {
      return RunWithGrad([&](auto& a, auto& b, auto& d) { return CausalAttention(a, b, d, l, scale); }, q.to(dt),
                         k.to(dt), v.to(dt), g.to(dt));
    };
    Grads flash = run(at::kBFloat16), ref = run(at::kFloat);
    EXPECT_LT(RelErr(flash.out, ref.out), 2e-2);
    EXPECT_LT(RelErr(flash.dq, ref.dq), 3e-2);
    EXPECT_LT(RelErr(flash.dk, ref.dk), 3e-2);
    EXPECT_LT(RelErr(flash.dv, ref.dv), 3e-2);
  }
}

}  // namespace
}  // namespace herd::engine
