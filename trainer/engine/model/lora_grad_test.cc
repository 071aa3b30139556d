// LoRA gradients checked against central finite differences, in float64 end to end: a tiny random
// model written here (config.json + safetensors, no Python), B != 0 so A's gradient is not zero,
// the mean token loss of Loss(), autograd's dL/dA and dL/dB against (L(θ+ε) − L(θ−ε)) / 2ε on a
// sample of entries of every adapter tensor. Covers GQA and MQA, tied and untied heads, a packed
// batch with untrained positions, rsLoRA and (deterministic) LoRA dropout.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/grad_mode.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>

#include "common/file_util.h"
#include "common/safetensors.h"
#include "common/strings.h"
#include "trainer/engine/model/llama.h"
#include "trainer/engine/tensor_io.h"

namespace herd::engine {
namespace {

namespace fs = std::filesystem;

struct GradCase {
  std::string name;
  int64_t kv_heads;
  bool tied;
  std::vector<Proj> targets;
  int r;
  double alpha;
  bool rslora;
  double dropout;  // > 0: the forward runs with a DropoutKey, as in training
};
void PrintTo(const GradCase& c, std::ostream* os) { *os << c.name; }

// A random LLaMA checkpoint under `dir`: config.json and model.safetensors (float64).
void WriteTinyModel(const fs::path& dir, const GradCase& c) {
  fs::create_directories(dir);
  const std::string config = herd::StrCat(
      R"({"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 29, "hidden_size": 16, )",
      R"("intermediate_size": 24, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": )",
      c.kv_heads, R"(, "max_position_embeddings": 64, "rms_norm_eps": 1e-05, "rope_theta": 10000.0, )",
      R"("tie_word_embeddings": )", c.tied ? "true" : "false", "}");
  ASSERT_TRUE(WriteFileAtomic((dir / "config.json").string(), config).ok());
  auto parsed = LoadLlamaConfig(dir.string());
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  auto gen = at::make_generator<at::CPUGeneratorImpl>(1234);
  SafetensorsWriter writer;
  for (const TensorSpec& spec : BaseTensorSpecs(*parsed)) {
    at::Tensor t = at::randn(spec.shape, gen, at::kDouble);
    // Norm weights near 1, the rest large enough that every term of the forward matters.
    t = spec.name.find("norm") != std::string::npos ? 1.0 + 0.2 * t : 0.3 * t;
    ASSERT_TRUE(AddTensor(writer, spec.name, t).ok());
  }
  ASSERT_TRUE(writer.Write((dir / "model.safetensors").string()).ok());
}

class LoraGradTest : public testing::TestWithParam<GradCase> {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / herd::StrCat("herd_lora_grad_", getpid(), "_", GetParam().name);
    fs::remove_all(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  fs::path dir_;
};

TEST_P(LoraGradTest, AutogradMatchesFiniteDifferences) {
  const GradCase& c = GetParam();
  WriteTinyModel(dir_, c);
  if (HasFatalFailure()) return;
  LoadOptions load;
  load.dtype = at::kDouble;
  load.lora_dtype = at::kDouble;
  auto loaded = LlamaModel::Load(dir_.string(), load);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  LlamaModel& model = **loaded;
  LoraOptions lora;
  lora.r = c.r;
  lora.alpha = c.alpha;
  lora.rslora = c.rslora;
  lora.dropout = c.dropout;
  lora.targets = c.targets;
  ASSERT_TRUE(model.EnableLora(lora, /*seed=*/7).ok());
  auto gen = at::make_generator<at::CPUGeneratorImpl>(99);
  {
    at::NoGradGuard no_grad;
    for (const LlamaModel::Adapter& ad : model.adapters()) {
      at::Tensor b = ad.b;
      b.copy_(0.2 * at::randn(b.sizes(), gen, at::kDouble));
    }
  }

  // Two rows: one packed with two documents, one plain; a few untrained positions.
  const int64_t T = 11;
  Batch batch;
  batch.input_ids = at::randint(0, 29, {2, T}, gen, at::kLong);
  batch.position_ids = at::cat({at::arange(4, at::kLong), at::arange(7, at::kLong)}).unsqueeze(0);
  batch.position_ids = at::cat({batch.position_ids, at::arange(T, at::kLong).unsqueeze(0)});
  batch.doc_ids = at::cat(
      {at::cat({at::zeros({4}, at::kLong), at::ones({7}, at::kLong)}).unsqueeze(0), at::zeros({1, T}, at::kLong)});
  batch.targets = at::cat({batch.input_ids.narrow(1, 1, T - 1), at::full({2, 1}, -100, at::kLong)}, 1);
  batch.targets.index_put_({0, 3}, -100);  // the first document's last token has no label
  batch.targets.index_put_({1, 0}, -100);
  batch.sequence_ids = {5, 9};
  const DropoutKey key{/*seed=*/11, /*step=*/4};
  const DropoutKey* dropout = c.dropout > 0 ? &key : nullptr;

  auto mean_loss = [&]() {
    LlamaModel::LossSums sums = model.Loss(model.Hidden(batch, dropout), batch.targets, /*chunk_tokens=*/5);
    return sums.loss_sum / static_cast<double>(sums.tokens);  // scalar float64
  };

  at::Tensor loss = mean_loss();
  ASSERT_EQ(loss.scalar_type(), at::kDouble);
  loss.backward();
  for (const TensorSpec& spec : BaseTensorSpecs(model.config())) {
    EXPECT_FALSE(model.BaseTensor(spec.name).requires_grad()) << spec.name;
  }

  at::NoGradGuard no_grad;
  const double eps = 3e-5;  // rounding dominates below, truncation above
  double worst = 0;
  int checked = 0;
  for (const LlamaModel::Adapter& ad : model.adapters()) {
    for (bool is_b : {false, true}) {
      const at::Tensor& p = is_b ? ad.b : ad.a;
      const std::string name = PeftLoraName(ad.layer, ad.proj, is_b);
      ASSERT_TRUE(p.grad().defined()) << name;
      at::Tensor grad = p.grad().contiguous();
      const double grad_scale = grad.abs().max().item<double>();
      ASSERT_GT(grad_scale, 0) << name << " has a zero gradient";
      double* values = p.data_ptr<double>();
      for (int k = 0; k < 4; ++k) {
        const int64_t i = (k * 7919 + ad.layer * 104729 + (is_b ? 31 : 0)) % p.numel();
        const double saved = values[i];
        values[i] = saved + eps;
        const double plus = mean_loss().item<double>();
        values[i] = saved - eps;
        const double minus = mean_loss().item<double>();
        values[i] = saved;
        const double fd = (plus - minus) / (2 * eps);
        const double autograd = grad.data_ptr<double>()[i];
        // Relative to the entry, floored at a thousandth of the tensor's largest gradient so an
        // entry that happens to be near zero is not judged on rounding alone.
        const double err = std::abs(fd - autograd) / std::max(std::abs(autograd), 1e-3 * grad_scale);
        worst = std::max(worst, err);
        ++checked;
        EXPECT_LT(err, 1e-6) << name << "[" << i << "]: autograd " << autograd << ", finite difference " << fd;
      }
    }
  }
  EXPECT_GT(checked, 0);
  std::cout << c.name << ": " << checked << " entries, worst relative error " << worst << "\n";
}

INSTANTIATE_TEST_SUITE_P(
    Cases, LoraGradTest,
    testing::Values(GradCase{"all_linear_gqa",
                             2,
                             false,
                             {Proj::kQ, Proj::kK, Proj::kV, Proj::kO, Proj::kGate, Proj::kUp, Proj::kDown},
                             3,
                             5.0,
                             false,
                             0.0},
                    GradCase{
                        "rslora_dropout_mqa_tied", 1, true, {Proj::kV, Proj::kQ, Proj::kDown}, 2, 3.0, true, 0.25}),
    [](const testing::TestParamInfo<GradCase>& info) { return info.param.name; });

}  // namespace
}  // namespace herd::engine
