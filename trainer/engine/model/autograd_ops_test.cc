// The memory-saving paths give the plain path's numbers (float32, CPU): the chunked head +
// cross-entropy against full-vocabulary logits and autograd's cross-entropy (chunk sizes that do
// and do not divide the token count, a row without labels), and per-layer activation
// checkpointing against the plain forward (with and without LoRA dropout). Loss and every LoRA
// gradient are compared as max|x − ref| / max|ref|.
#include "trainer/engine/model/autograd_ops.h"

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

constexpr double kTolerance = 2e-6;  // float32 summation-order differences, relative

double RelErr(const at::Tensor& x, const at::Tensor& ref) {
  const double scale = ref.abs().max().item<double>();
  return (x - ref).abs().max().item<double>() / std::max(scale, 1e-30);
}

TEST(ChunkedCrossEntropyTest, MatchesFullLogitsForEveryChunkSize) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(3);
  const int64_t N = 23, H = 16, V = 37;
  at::Tensor base = at::randn({N, H}, gen, at::kFloat);
  at::Tensor head = at::randn({V, H}, gen, at::kFloat);
  at::Tensor targets = at::randint(0, V, {N}, gen, at::kLong);

  at::Tensor ref_rows = base.clone().set_requires_grad(true);
  at::Tensor logits = at::linear(ref_rows, head);
  at::Tensor ref_loss = at::cross_entropy_loss(logits, targets, {}, at::Reduction::Sum, -100);
  const int64_t ref_correct = (logits.argmax(-1) == targets).sum().item<int64_t>();
  (ref_loss * 0.37).backward();

  for (int64_t chunk : {1, 4, 7, 23, 1024}) {
    at::Tensor rows = base.clone().set_requires_grad(true);
    ChunkedCrossEntropyResult r = ChunkedCrossEntropy(rows, head, targets, chunk, at::kFloat);
    (r.loss_sum * 0.37).backward();
    EXPECT_LT(RelErr(r.loss_sum, ref_loss), kTolerance) << "chunk " << chunk;
    EXPECT_EQ(r.correct.item<int64_t>(), ref_correct) << "chunk " << chunk;
    EXPECT_FALSE(r.correct.requires_grad());
    EXPECT_LT(RelErr(rows.grad(), ref_rows.grad()), kTolerance) << "chunk " << chunk;
  }
}

TEST(ChunkedCrossEntropyTest, RefusesATrainableHead) {
  at::Tensor rows = at::randn({3, 4}).set_requires_grad(true);
  at::Tensor head = at::randn({5, 4}).set_requires_grad(true);
  EXPECT_THROW(ChunkedCrossEntropy(rows, head, at::zeros({3}, at::kLong), 2, at::kFloat), c10::Error);
}

TEST(CheckpointedTest, NoGradModeIsPlainCall) {
  at::Tensor w = at::randn({4}).set_requires_grad(true);
  at::NoGradGuard no_grad;
  at::Tensor y = Checkpointed([&](const at::Tensor& x) { return x * w; }, at::ones({4}), {w});
  EXPECT_FALSE(y.requires_grad());
}

// A small LLaMA (GQA, untied head) with LoRA on all seven projections and B != 0, and a batch of
// three rows: packed (two documents), plain causal, and one without any label.
class ModelPathsTest : public testing::Test {
 protected:
  void Build(double dropout) {
    LoraOptions lora{.r = 4, .alpha = 8, .dropout = dropout};
    for (const ProjInfo& p : kProjTable) lora.targets.push_back(p.proj);
    auto gen = at::make_generator<at::CPUGeneratorImpl>(11);
    auto m = test_models::SmallLoraLlama(dtype_, at::kFloat, lora, gen);
    ASSERT_TRUE(m.ok()) << m.status();
    model_ = std::move(*m);
    batch_ = test_models::ThreeRowBatch(gen, /*packed=*/true, /*trained_in_last_row=*/0);  // a row without labels
  }

  struct Result {
    at::Tensor loss;
    int64_t tokens = 0, correct = 0;
    std::vector<at::Tensor> grads;
  };
  // Loss and LoRA gradients through Hidden + Loss (chunk > 0) or full logits (chunk == 0).
  Result Run(bool checkpoint, int64_t chunk, const DropoutKey* key) {
    for (const at::Tensor& p : model_->LoraParameters()) p.mutable_grad() = at::Tensor();
    at::Tensor hidden = model_->Hidden(batch_, key, checkpoint);
    Result r;
    if (chunk > 0) {
      LlamaModel::LossSums sums = model_->Loss(hidden, batch_.targets, chunk);
      r.loss = sums.loss_sum;
      r.tokens = sums.tokens;
      r.correct = sums.correct.item<int64_t>();
    } else {
      at::Tensor logits = model_->Logits(hidden).view({-1, model_->config().vocab_size});
      at::Tensor t = batch_.targets.reshape({-1});
      r.loss = at::cross_entropy_loss(logits, t, {}, at::Reduction::Sum, -100);
      r.tokens = (t != -100).sum().item<int64_t>();
      r.correct = ((logits.argmax(-1) == t).logical_and(t != -100)).sum().item<int64_t>();
    }
    (r.loss / 31.0).backward();
    for (const at::Tensor& p : model_->LoraParameters()) {
      EXPECT_TRUE(p.grad().defined());
      r.grads.push_back(p.grad().defined() ? p.grad().clone() : at::zeros_like(p));
    }
    return r;
  }

  void ExpectSame(const Result& got, const Result& ref, const std::string& what, double tolerance = kTolerance) {
    EXPECT_EQ(got.tokens, ref.tokens) << what;
    EXPECT_EQ(got.correct, ref.correct) << what;
    double worst = RelErr(got.loss, ref.loss);
    EXPECT_LT(worst, tolerance) << what << ": loss " << got.loss.item<double>() << " vs " << ref.loss.item<double>();
    ASSERT_EQ(got.grads.size(), ref.grads.size());
    for (size_t i = 0; i < got.grads.size(); ++i) {
      ASSERT_GT(ref.grads[i].abs().max().item<double>(), 0) << what << ": parameter " << i << " has a zero gradient";
      const double err = RelErr(got.grads[i], ref.grads[i]);
      worst = std::max(worst, err);
      EXPECT_LT(err, tolerance) << what << ": gradient of LoRA parameter " << i;
    }
    std::cout << what << ": worst relative difference " << worst << "\n";
  }

  at::ScalarType dtype_ = at::kFloat;  // base weights; LoRA stays float32
  std::unique_ptr<LlamaModel> model_;
  Batch batch_;
};

TEST_F(ModelPathsTest, ChunkedLossMatchesFullLogits) {
  Build(/*dropout=*/0.0);
  if (HasFatalFailure()) return;
  const Result ref = Run(/*checkpoint=*/false, /*chunk=*/0, nullptr);
  EXPECT_EQ(ref.tokens, 2 * 13 - 3);
  for (int64_t chunk : {1, 5, 16, 23, 1024}) {
    ExpectSame(Run(false, chunk, nullptr), ref, herd::StrCat("chunk ", chunk));
  }
}

TEST_F(ModelPathsTest, CheckpointingMatchesPlainForward) {
  Build(/*dropout=*/0.0);
  if (HasFatalFailure()) return;
  const Result ref = Run(/*checkpoint=*/false, /*chunk=*/0, nullptr);
  ExpectSame(Run(true, 0, nullptr), ref, "checkpointed, full logits");
  ExpectSame(Run(true, 7, nullptr), ref, "checkpointed, chunk 7");
}

TEST_F(ModelPathsTest, CheckpointingRedrawsTheSameDropoutMasks) {
  Build(/*dropout=*/0.3);
  if (HasFatalFailure()) return;
  const DropoutKey key{.seed = 42, .step = 3};
  const Result ref = Run(/*checkpoint=*/false, /*chunk=*/0, &key);
  const Result no_dropout = Run(false, 0, nullptr);
  EXPECT_GT(RelErr(ref.loss, no_dropout.loss), 1e-4) << "dropout did not change the loss";
  ExpectSame(Run(true, 5, &key), ref, "checkpointed with dropout, chunk 5");
}

TEST_F(ModelPathsTest, UnpackedBatchMatches) {
  // No doc_ids: plain causal attention (is_causal, grouped K/V read as they are).
  Build(/*dropout=*/0.1);
  if (HasFatalFailure()) return;
  batch_.doc_ids = at::Tensor();
  batch_.position_ids = at::arange(13, at::kLong).expand({3, 13}).contiguous();
  const DropoutKey key{.seed = 1, .step = 0};
  const Result ref = Run(/*checkpoint=*/false, /*chunk=*/0, &key);
  ExpectSame(Run(true, 6, &key), ref, "unpacked, checkpointed with dropout, chunk 6");
}

TEST_F(ModelPathsTest, Bfloat16WeightsAsOnTheGpu) {
  // The GPU's dtypes (bf16 base, fp32 LoRA, fp32 loss) on the CPU: checkpointing is exact, and
  // chunking differs from autograd only by where the bf16 roundings of the head's gradient fall.
  dtype_ = at::kBFloat16;
  Build(/*dropout=*/0.0);
  if (HasFatalFailure()) return;
  const Result ref = Run(/*checkpoint=*/false, /*chunk=*/0, nullptr);
  EXPECT_EQ(ref.loss.scalar_type(), at::kFloat);
  ExpectSame(Run(true, 0, nullptr), ref, "bf16, checkpointed, full logits", /*tolerance=*/1e-30);
  ExpectSame(Run(true, 7, nullptr), ref, "bf16, checkpointed, chunk 7", /*tolerance=*/2e-2);
}

TEST_F(ModelPathsTest, EvalPathsAgree) {
  Build(/*dropout=*/0.0);
  if (HasFatalFailure()) return;
  at::NoGradGuard no_grad;
  at::Tensor plain = model_->Hidden(batch_, nullptr, false);
  at::Tensor ckpt = model_->Hidden(batch_, nullptr, true);
  EXPECT_TRUE(at::equal(plain, ckpt));
  LlamaModel::LossSums sums = model_->Loss(plain, batch_.targets, 4);
  EXPECT_EQ(sums.tokens, 23);
  EXPECT_FALSE(sums.loss_sum.requires_grad());
}

// Trained positions found on the host before the step (Batch::trained, no device wait) give the
// loss, count and accuracy that Loss finds on its own, gradients included.
TEST_F(ModelPathsTest, TrainedPositionsFromTheHostMatchLossOwn) {
  Build(/*dropout=*/0.0);
  if (HasFatalFailure()) return;
  at::Tensor trained = TrainedPositions(batch_.targets.cpu(), batch_.targets.device());
  EXPECT_EQ(trained.scalar_type(), at::kLong);
  EXPECT_EQ(trained.size(0), 23);
  EXPECT_TRUE(at::equal(trained, (batch_.targets.reshape({-1}) != -100).nonzero().squeeze(1)));
  std::vector<at::Tensor> grads[2];
  double loss[2];
  int64_t correct[2], tokens[2];
  for (int given = 0; given < 2; ++given) {
    for (const at::Tensor& p : model_->LoraParameters()) p.mutable_grad() = at::Tensor();
    LlamaModel::LossSums sums = model_->Loss(model_->Hidden(batch_, nullptr, false), batch_.targets, 5,
                                             given ? trained : at::Tensor());
    sums.loss_sum.backward();
    loss[given] = sums.loss_sum.item<double>();
    correct[given] = sums.correct.item<int64_t>();
    tokens[given] = sums.tokens;
    for (const at::Tensor& p : model_->LoraParameters()) grads[given].push_back(p.grad().clone());
  }
  EXPECT_EQ(loss[0], loss[1]);
  EXPECT_EQ(correct[0], correct[1]);
  EXPECT_EQ(tokens[0], tokens[1]);
  for (size_t i = 0; i < grads[0].size(); ++i) EXPECT_TRUE(at::equal(grads[0][i], grads[1][i])) << "parameter " << i;
}

TEST_F(ModelPathsTest, BatchWithoutLabelsHasZeroLossAndGradients) {
  Build(/*dropout=*/0.0);
  if (HasFatalFailure()) return;
  batch_.targets.fill_(-100);
  LlamaModel::LossSums sums = model_->Loss(model_->Hidden(batch_, nullptr, true), batch_.targets);
  EXPECT_EQ(sums.tokens, 0);
  EXPECT_EQ(sums.loss_sum.item<double>(), 0.0);
  sums.loss_sum.backward();  // the trainer backpropagates every micro-batch
  for (const at::Tensor& p : model_->LoraParameters()) {
    if (p.grad().defined()) {
      EXPECT_EQ(p.grad().abs().max().item<double>(), 0.0);
    }
  }
}

}  // namespace
}  // namespace herd::engine
