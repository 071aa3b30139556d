// The one table of LLaMA tensor names (STYLE.md, after llama.cpp): Hugging Face checkpoint names,
// their shapes, and the PEFT adapter keys, used by the loader, the adapter writer and the merged
// exporter alike, so no tensor name is spelled twice.
#ifndef HERD_TRAINER_ENGINE_MODEL_TENSOR_NAMES_H_
#define HERD_TRAINER_ENGINE_MODEL_TENSOR_NAMES_H_

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "trainer/engine/model/llama_config.h"

namespace herd::engine {

// The seven linear projections of a decoder layer, in the order of kLoraTargets (job_spec.h).
enum class Proj { kQ = 0, kK, kV, kO, kGate, kUp, kDown };
inline constexpr int kNumProj = 7;

struct ProjInfo {
  Proj proj;
  std::string_view name;   // "q_proj": the name LoRA target_modules use
  std::string_view block;  // "self_attn" or "mlp"
};
inline constexpr std::array<ProjInfo, kNumProj> kProjTable = {{
    {Proj::kQ, "q_proj", "self_attn"},
    {Proj::kK, "k_proj", "self_attn"},
    {Proj::kV, "v_proj", "self_attn"},
    {Proj::kO, "o_proj", "self_attn"},
    {Proj::kGate, "gate_proj", "mlp"},
    {Proj::kUp, "up_proj", "mlp"},
    {Proj::kDown, "down_proj", "mlp"},
}};

const ProjInfo& Info(Proj proj);
std::optional<Proj> ProjFromName(std::string_view name);

// [out_features, in_features] of a projection's weight.
std::array<int64_t, 2> ProjShape(const LlamaConfig& config, Proj proj);

// Hugging Face checkpoint names.
std::string ProjWeightName(int layer, Proj proj);     // model.layers.{i}.self_attn.q_proj.weight
std::string InputNormName(int layer);                 // model.layers.{i}.input_layernorm.weight
std::string PostAttentionNormName(int layer);         // model.layers.{i}.post_attention_layernorm.weight
inline constexpr std::string_view kEmbedName = "model.embed_tokens.weight";
inline constexpr std::string_view kFinalNormName = "model.norm.weight";
inline constexpr std::string_view kLmHeadName = "lm_head.weight";

// Every base tensor a checkpoint of `config` holds, with its shape (lm_head only when untied).
struct TensorSpec {
  std::string name;
  std::vector<int64_t> shape;
};
std::vector<TensorSpec> BaseTensorSpecs(const LlamaConfig& config);

// PEFT adapter keys (DESIGN.md §5): base_model.model.model.layers.{i}.self_attn.q_proj.lora_A.weight
std::string PeftLoraName(int layer, Proj proj, bool is_b);

}  // namespace herd::engine

#endif  // HERD_TRAINER_ENGINE_MODEL_TENSOR_NAMES_H_
