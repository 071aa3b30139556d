// For the model tests: a small LLaMA with LoRA (B ≠ 0, so every adapter has a gradient) and a
// batch of three rows of 13 tokens that exercises packing, plain rows and untrained positions.
#ifndef HERD_TRAINER_ENGINE_MODEL_SMALL_MODEL_TESTING_H_
#define HERD_TRAINER_ENGINE_MODEL_SMALL_MODEL_TESTING_H_

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/grad_mode.h>

#include <memory>

#include "absl/status/statusor.h"
#include "trainer/engine/model/llama.h"

namespace herd::engine::test_models {

inline constexpr int64_t kSmallVocab = 97;
inline constexpr int64_t kSmallRowTokens = 13;

// H 32, I 48, 3 layers, GQA 4/2 with head_dim 8, untied head, seeded weights; LoRA per `lora`
// with B drawn as 0.05·N(0, 1) from `gen`.
inline absl::StatusOr<std::unique_ptr<LlamaModel>> SmallLoraLlama(at::ScalarType dtype, at::ScalarType lora_dtype,
                                                                  const LoraOptions& lora, at::Generator& gen) {
  LlamaConfig c;
  c.vocab_size = kSmallVocab;
  c.hidden_size = 32;
  c.intermediate_size = 48;
  c.num_layers = 3;
  c.num_heads = 4;
  c.num_kv_heads = 2;
  c.head_dim = 8;
  c.max_position_embeddings = 64;
  auto m = LlamaModel::Random(c, LoadOptions{.dtype = dtype, .lora_dtype = lora_dtype}, /*seed=*/5);
  if (!m.ok()) return m.status();
  if (absl::Status s = (*m)->EnableLora(lora, 7); !s.ok()) return s;
  at::NoGradGuard no_grad;
  for (const LlamaModel::Adapter& ad : (*m)->adapters()) {
    at::Tensor b = ad.b;
    b.copy_(0.05 * at::randn(b.sizes(), gen, at::kDouble));
  }
  return m;
}

// Rows: packed (documents of 5 and 8 tokens; position 4 untrained) or, with packed = false, a
// plain row; a plain row; and a plain row whose last `trained_in_last_row` positions with a next
// token are trained (0: none). Targets are the next tokens, −100 at each row's end.
inline Batch ThreeRowBatch(at::Generator& gen, bool packed, int64_t trained_in_last_row) {
  const int64_t T = kSmallRowTokens;
  Batch b;
  b.input_ids = at::randint(0, kSmallVocab, {3, T}, gen, at::kLong);
  at::Tensor plain_pos = at::arange(T, at::kLong);
  if (packed) {
    at::Tensor packed_pos = at::cat({at::arange(5, at::kLong), at::arange(8, at::kLong)});
    b.position_ids = at::stack({packed_pos, plain_pos, plain_pos});
    b.doc_ids = at::stack({at::cat({at::zeros({5}, at::kLong), at::ones({8}, at::kLong)}), at::zeros({T}, at::kLong),
                           at::zeros({T}, at::kLong)});
  } else {
    b.position_ids = plain_pos.expand({3, T}).contiguous();
  }
  b.targets = at::cat({b.input_ids.narrow(1, 1, T - 1), at::full({3, 1}, -100, at::kLong)}, 1);
  b.targets.index_put_({0, 4}, -100);
  b.targets.select(0, 2).narrow(0, 0, T - 1 - trained_in_last_row).fill_(-100);
  b.sequence_ids = {4, 17, 30};
  return b;
}

}  // namespace herd::engine::test_models

#endif  // HERD_TRAINER_ENGINE_MODEL_SMALL_MODEL_TESTING_H_
