// Model FLOPs of a LoRA training step, the unit herd-bench, the engine's MFU and
// ../shared/bench/hf_peft_baseline.py (`flops_per_token`) all report: per token
// 4N + 12·L·H·T + 6·N_lora, with N the weights in matmuls (the seven projections of every layer and
// the output head), L layers, H = heads × head dim, T the sequence length, N_lora the adapters'
// parameters. The frozen base computes no weight gradients (4N, not 6N); attention is counted in
// full (not halved for causality), as the baseline counts it.
#ifndef HERD_TRAINER_ENGINE_MODEL_FLOPS_H_
#define HERD_TRAINER_ENGINE_MODEL_FLOPS_H_

#include <cstdint>
#include <vector>

#include "trainer/engine/model/llama_config.h"
#include "trainer/engine/model/tensor_names.h"

namespace herd::engine {

// FLOPs to train one token of a `seq`-token row with rank-`r` adapters on `targets`.
double TrainingFlopsPerToken(const LlamaConfig& config, int64_t seq, int64_t r, const std::vector<Proj>& targets);

}  // namespace herd::engine

#endif  // HERD_TRAINER_ENGINE_MODEL_FLOPS_H_
