// TrainingFlopsPerToken against ../shared/bench/hf_peft_baseline.py's flops_per_token (values
// computed with that formula), so herd-bench, the engine's MFU and the baseline share one unit.
#include "trainer/engine/model/flops.h"

#include <gtest/gtest.h>

namespace herd::engine {
namespace {

LlamaConfig Shape(int64_t hidden, int layers, int heads, int kv_heads, int64_t intermediate, int64_t vocab) {
  LlamaConfig c;
  c.hidden_size = hidden;
  c.num_layers = layers;
  c.num_heads = heads;
  c.num_kv_heads = kv_heads;
  c.head_dim = hidden / heads;
  c.intermediate_size = intermediate;
  c.vocab_size = vocab;
  return c;
}

const std::vector<Proj> kAll = {Proj::kQ, Proj::kK, Proj::kV, Proj::kO, Proj::kGate, Proj::kUp, Proj::kDown};

TEST(TrainingFlopsTest, MatchesTheBaselinesFormula) {
  // flops_per_token(h, layers, heads, kv, inter, vocab, seq=2048, r=16)
  EXPECT_EQ(TrainingFlopsPerToken(Shape(4096, 32, 32, 8, 14336, 128256), 2048, 16, kAll), 33491517440.0);
  EXPECT_EQ(TrainingFlopsPerToken(Shape(2048, 16, 32, 8, 8192, 128256), 2048, 16, kAll), 5815926784.0);
  EXPECT_EQ(TrainingFlopsPerToken(Shape(4096, 32, 32, 32, 11008, 32000), 2048, 16, kAll), 29889396736.0);
}

TEST(TrainingFlopsTest, OnlyAdaptedProjectionsCountForLora) {
  const LlamaConfig c = Shape(4096, 32, 32, 8, 14336, 128256);
  const double all = TrainingFlopsPerToken(c, 2048, 16, kAll);
  const double qv = TrainingFlopsPerToken(c, 2048, 16, {Proj::kQ, Proj::kV});
  const double none = TrainingFlopsPerToken(c, 2048, 16, {});
  // 6 · r · (in + out) per adapted projection and layer.
  EXPECT_EQ(qv - none, 6.0 * 32 * 16 * ((4096 + 4096) + (4096 + 1024)));
  EXPECT_GT(all, qv);
  // Attention grows with the sequence: 12 · L · H per token of T.
  EXPECT_EQ(TrainingFlopsPerToken(c, 4096, 16, kAll) - all, 12.0 * 32 * 4096 * 2048);
}

}  // namespace
}  // namespace herd::engine
