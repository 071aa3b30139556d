// The lean decoder layers (model/decoder_ops.h) against the plain autograd graph of the same model
// (LlamaModel::set_reference_layers): loss and every LoRA gradient, in float64 (to 1e-10), float32
// and bf16 weights, with packed and plain rows, LoRA dropout, a subset of adapted projections,
// activation checkpointing and evaluation. Differences are max|x − ref| / max|ref|.
#include "trainer/engine/model/decoder_ops.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/grad_mode.h>
#include <gtest/gtest.h>

#include <iostream>

#include "common/strings.h"
#include "trainer/engine/model/llama.h"
#include "trainer/engine/model/small_model_testing.h"

namespace herd::engine {
namespace {

double RelErr(const at::Tensor& x, const at::Tensor& ref) {
  const double scale = ref.abs().max().item<double>();
  return (x.to(at::kDouble) - ref.to(at::kDouble)).abs().max().item<double>() / std::max(scale, 1e-30);
}

double Cosine(const at::Tensor& a, const at::Tensor& b) {
  at::Tensor x = a.to(at::kDouble).flatten(), y = b.to(at::kDouble).flatten();
  return (x * y).sum().item<double>() / std::sqrt((x * x).sum().item<double>() * (y * y).sum().item<double>());
}

struct Options {
  at::ScalarType dtype = at::kDouble;
  double dropout = 0;
  bool packed = true;
  std::vector<Proj> targets = {Proj::kQ, Proj::kK, Proj::kV, Proj::kO, Proj::kGate, Proj::kUp, Proj::kDown};
};

// The small LLaMA of small_model_testing.h, rows packed or plain, the last row with two trained
// positions.
class LeanLayersTest : public testing::Test {
 protected:
  void Build(const Options& o) {
    const at::ScalarType lora_dtype = o.dtype == at::kDouble ? at::kDouble : at::kFloat;
    auto gen = at::make_generator<at::CPUGeneratorImpl>(11);
    auto m = test_models::SmallLoraLlama(o.dtype, lora_dtype, {.r = 4, .alpha = 8, .dropout = o.dropout, .targets = o.targets},
                                     gen);
    ASSERT_TRUE(m.ok()) << m.status();
    model_ = std::move(*m);
    batch_ = test_models::ThreeRowBatch(gen, o.packed, /*trained_in_last_row=*/2);
  }

  struct Result {
    at::Tensor loss;
    at::Tensor hidden;
    std::vector<at::Tensor> grads;
  };
  Result Run(bool reference, bool checkpoint, const DropoutKey* key) {
    model_->set_reference_layers(reference);
    for (const at::Tensor& p : model_->LoraParameters()) p.mutable_grad() = at::Tensor();
    at::Tensor hidden = model_->Hidden(batch_, key, checkpoint);
    LlamaModel::LossSums sums = model_->Loss(hidden, batch_.targets, 5);
    Result r;
    r.loss = sums.loss_sum.detach();
    r.hidden = hidden.detach();
    (sums.loss_sum / 17.0).backward();
    for (const at::Tensor& p : model_->LoraParameters()) {
      EXPECT_TRUE(p.grad().defined());
      r.grads.push_back(p.grad().defined() ? p.grad().clone() : at::zeros_like(p));
    }
    model_->set_reference_layers(false);
    return r;
  }

  // Every value within `tolerance` (relative to the largest), or, for bf16, every gradient's
  // direction within `min_cosine` of the reference.
  void ExpectClose(const Result& got, const Result& ref, const std::string& what, double tolerance,
                   double min_cosine = 1.0) {
    double worst = RelErr(got.loss, ref.loss);
    EXPECT_LT(worst, tolerance) << what << ": loss " << got.loss.item<double>() << " vs " << ref.loss.item<double>();
    EXPECT_LT(RelErr(got.hidden, ref.hidden), tolerance) << what << ": hidden states";
    ASSERT_EQ(got.grads.size(), ref.grads.size());
    double worst_cos = 1;
    for (size_t i = 0; i < got.grads.size(); ++i) {
      ASSERT_GT(ref.grads[i].abs().max().item<double>(), 0) << what << ": parameter " << i << " has a zero gradient";
      EXPECT_EQ(got.grads[i].scalar_type(), ref.grads[i].scalar_type());
      if (min_cosine < 1.0) {
        const double c = Cosine(got.grads[i], ref.grads[i]);
        worst_cos = std::min(worst_cos, c);
        EXPECT_GT(c, min_cosine) << what << ": gradient of LoRA parameter " << i;
      } else {
        const double err = RelErr(got.grads[i], ref.grads[i]);
        worst = std::max(worst, err);
        EXPECT_LT(err, tolerance) << what << ": gradient of LoRA parameter " << i;
      }
    }
    std::cout << what << ": worst relative difference " << worst << ", worst gradient cosine " << worst_cos << "\n";
  }

  std::unique_ptr<LlamaModel> model_;
  Batch batch_;
};

TEST_F(LeanLayersTest, Float64MatchesThePlainGraph) {
  for (bool packed : {true, false}) {
    Build({.packed = packed});
    if (HasFatalFailure()) return;
    const Result ref = Run(/*reference=*/true, false, nullptr);
    ExpectClose(Run(false, false, nullptr), ref, herd::StrCat("float64, packed ", packed), 1e-10);
  }
}

TEST_F(LeanLayersTest, Float64WithDropoutMatches) {
  Build({.dropout = 0.3});
  if (HasFatalFailure()) return;
  const DropoutKey key{.seed = 42, .step = 3};
  const Result ref = Run(/*reference=*/true, false, &key);
  const Result no_dropout = Run(true, false, nullptr);
  EXPECT_GT(RelErr(ref.loss, no_dropout.loss), 1e-6) << "dropout did not change the loss";
  ExpectClose(Run(false, false, &key), ref, "float64, dropout 0.3", 1e-10);
  ExpectClose(Run(false, true, &key), ref, "float64, dropout 0.3, checkpointed", 1e-10);
}

TEST_F(LeanLayersTest, SomeProjectionsWithoutAdapters) {
  // PEFT's default for LLaMA: q and v only; and an MLP-only variant.
  for (const std::vector<Proj>& targets :
       {std::vector<Proj>{Proj::kQ, Proj::kV}, std::vector<Proj>{Proj::kGate, Proj::kDown}, std::vector<Proj>{Proj::kO}}) {
    Build({.targets = targets});
    if (HasFatalFailure()) return;
    const Result ref = Run(true, false, nullptr);
    ExpectClose(Run(false, false, nullptr), ref, herd::StrCat(targets.size(), " adapted projections"), 1e-10);
  }
}

TEST_F(LeanLayersTest, Float32Matches) {
  Build({.dtype = at::kFloat, .dropout = 0.1});
  if (HasFatalFailure()) return;
  const DropoutKey key{.seed = 1, .step = 0};
  const Result ref = Run(true, false, &key);
  ExpectClose(Run(false, false, &key), ref, "float32, dropout 0.1", 2e-5);
}

TEST_F(LeanLayersTest, Bfloat16WeightsAgreeWithThePlainGraph) {
  // The GPU's dtypes on the CPU. The plain graph runs the LoRA path in float32 and the lean one
  // in bf16 with float32 gradients, so they agree to bf16 precision, not bit for bit.
  Build({.dtype = at::kBFloat16});
  if (HasFatalFailure()) return;
  const Result ref = Run(true, false, nullptr);
  const Result lean = Run(false, false, nullptr);
  EXPECT_EQ(lean.loss.scalar_type(), at::kFloat);
  ExpectClose(lean, ref, "bf16", /*tolerance=*/2e-2, /*min_cosine=*/0.999);
  // Checkpointing reruns the very same lean layers: bit for bit.
  const Result ckpt = Run(false, true, nullptr);
  EXPECT_TRUE(at::equal(ckpt.loss, lean.loss));
  for (size_t i = 0; i < ckpt.grads.size(); ++i) EXPECT_TRUE(at::equal(ckpt.grads[i], lean.grads[i])) << i;
}

TEST_F(LeanLayersTest, KeptOrRemadeMlpActivationGivesTheSameBits) {
  // The backward reads SwiGLU(g, u) for down's A gradient: kept from the forward by default, made
  // again when set_keep_mlp_activations(false) saves its memory. Same kernel, same inputs: same bits.
  for (const at::ScalarType dtype : {at::kBFloat16, at::kFloat}) {
    Build({.dtype = dtype, .dropout = 0.2});
    if (HasFatalFailure()) return;
    const DropoutKey key{.seed = 5, .step = 1};
    const Result kept = Run(false, false, &key);
    model_->set_keep_mlp_activations(false);
    const Result remade = Run(false, false, &key);
    EXPECT_TRUE(at::equal(remade.loss, kept.loss)) << dtype;
    for (size_t i = 0; i < kept.grads.size(); ++i) EXPECT_TRUE(at::equal(remade.grads[i], kept.grads[i])) << dtype << " " << i;
  }
}

TEST_F(LeanLayersTest, EvaluationBuildsNoGraph) {
  Build({.dtype = at::kFloat});
  if (HasFatalFailure()) return;
  at::Tensor ref, lean;
  {
    at::NoGradGuard no_grad;
    model_->set_reference_layers(true);
    ref = model_->Hidden(batch_, nullptr, false);
    model_->set_reference_layers(false);
    lean = model_->Hidden(batch_, nullptr, false);
  }
  EXPECT_FALSE(lean.requires_grad());
  EXPECT_LT(RelErr(lean, ref), 2e-6);
}

TEST(LeanLayerTest, GroupsFoldIntoPaddedWeightsWithoutDropout) {
  struct Case {
    std::vector<Proj> targets;
    double dropout;
    std::vector<Proj> folded;
  };
  const std::vector<Proj> all = {Proj::kQ, Proj::kK, Proj::kV, Proj::kO, Proj::kGate, Proj::kUp, Proj::kDown};
  // q/k/v and gate/up fold as groups of two or more ([W | B blocks]); down alone ([W ; A]).
  for (const Case& c : {Case{all, 0.0, {Proj::kQ, Proj::kK, Proj::kV, Proj::kGate, Proj::kUp, Proj::kDown}},
                        Case{all, 0.1, {}},  // each projection masks its own input: nothing folds
                        Case{{Proj::kQ, Proj::kV, Proj::kDown}, 0.0, {Proj::kQ, Proj::kV, Proj::kDown}},
                        Case{{Proj::kQ, Proj::kGate}, 0.0, {}}}) {  // one adapter a group: nothing to share
    auto gen = at::make_generator<at::CPUGeneratorImpl>(3);
    auto m = test_models::SmallLoraLlama(at::kFloat, at::kFloat, {.r = 4, .alpha = 8, .dropout = c.dropout, .targets = c.targets},
                                         gen);
    ASSERT_TRUE(m.ok()) << m.status();
    auto plain = LlamaModel::Random((*m)->config(), LoadOptions{.dtype = at::kFloat}, /*seed=*/5);
    ASSERT_TRUE(plain.ok()) << plain.status();
    for (int i = 0; i < (*m)->config().num_layers; ++i) {
      for (const ProjInfo& p : kProjTable) {
        const bool want = std::find(c.folded.begin(), c.folded.end(), p.proj) != c.folded.end();
        EXPECT_EQ((*m)->AdapterFolds(i, p.proj), want) << "layer " << i << " " << p.name << " dropout " << c.dropout;
        // However stored, the base weight reads back as it was, plain [out, in].
        const at::Tensor w = (*m)->BaseTensor(ProjWeightName(i, p.proj));
        EXPECT_TRUE(w.is_contiguous());
        EXPECT_TRUE(at::equal(w, (*plain)->BaseTensor(ProjWeightName(i, p.proj)))) << ProjWeightName(i, p.proj);
      }
    }
  }
}

TEST(LeanLayerTest, GradientOnlyWhereAsked) {
  // A frozen layer input gets no gradient (the first layer's input, the embeddings, is frozen),
  // and a layer whose input needs one gets the plain graph's.
  const int64_t B = 2, T = 5, H = 16, I = 24, Nq = 4, Nkv = 2, D = 4, r = 2;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(3);
  auto rnd = [&](at::IntArrayRef s) { return at::randn(s, gen, at::kDouble) * 0.3; };
  DecoderWeights w;
  w.input_norm = 1 + rnd({H});
  w.post_norm = 1 + rnd({H});
  const int64_t out[kNumProj] = {Nq * D, Nkv * D, Nkv * D, H, I, I, H};
  const int64_t in[kNumProj] = {H, H, H, Nq * D, H, H, I};
  for (int k = 0; k < kNumProj; ++k) {
    w.w[k] = rnd({out[k], in[k]});
    w.lora_a[k] = rnd({r, in[k]}).set_requires_grad(true);
    w.lora_b[k] = rnd({out[k], r}).set_requires_grad(true);
  }
  DecoderShape shape{.heads = Nq, .kv_heads = Nkv, .head_dim = D, .rms_eps = 1e-6, .lora_scale = 2};
  at::Tensor pos = at::arange(T, at::kDouble).unsqueeze(-1) * at::rand({D / 2}, gen, at::kDouble).unsqueeze(0);
  at::Tensor emb = at::cat({pos, pos}, -1).unsqueeze(0).expand({B, T, D}).contiguous();
  DecoderInputs inputs{.cos = emb.cos(), .sin = emb.sin(),
                       .attention = MakeAttentionLayout(at::Tensor(), B, T, at::kCPU)};
  at::Tensor x = rnd({B, T, H});
  at::Tensor y = LeanDecoderLayer(x, w, shape, inputs);
  y.pow(2).sum().backward();
  for (int k = 0; k < kNumProj; ++k) EXPECT_TRUE(w.lora_a[k].grad().defined()) << k;

  at::Tensor xg = x.clone().set_requires_grad(true);
  LeanDecoderLayer(xg, w, shape, inputs).pow(2).sum().backward();
  ASSERT_TRUE(xg.grad().defined());
  // Finite differences along one direction.
  at::Tensor dir = rnd({B, T, H});
  const double eps = 1e-6;
  at::NoGradGuard no_grad;
  const double f1 = LeanDecoderLayer(x + eps * dir, w, shape, inputs).pow(2).sum().item<double>();
  const double f0 = LeanDecoderLayer(x - eps * dir, w, shape, inputs).pow(2).sum().item<double>();
  const double numeric = (f1 - f0) / (2 * eps);
  const double analytic = (xg.grad() * dir).sum().item<double>();
  EXPECT_NEAR(analytic, numeric, 1e-6 * std::max(1.0, std::abs(numeric)));
}

}  // namespace
}  // namespace herd::engine
