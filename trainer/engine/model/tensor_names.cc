// Tensor names and shapes of LLaMA checkpoints and PEFT adapters.
#include "trainer/engine/model/tensor_names.h"

#include "common/strings.h"

namespace herd::engine {

const ProjInfo& Info(Proj proj) { return kProjTable[static_cast<int>(proj)]; }

std::optional<Proj> ProjFromName(std::string_view name) {
  for (const ProjInfo& p : kProjTable) {
    if (p.name == name) return p.proj;
  }
  return std::nullopt;
}

std::array<int64_t, 2> ProjShape(const LlamaConfig& c, Proj proj) {
  const int64_t q = c.num_heads * c.head_dim;
  const int64_t kv = c.num_kv_heads * c.head_dim;
  switch (proj) {
    case Proj::kQ: return {q, c.hidden_size};
    case Proj::kK: return {kv, c.hidden_size};
    case Proj::kV: return {kv, c.hidden_size};
    case Proj::kO: return {c.hidden_size, q};
    case Proj::kGate: return {c.intermediate_size, c.hidden_size};
    case Proj::kUp: return {c.intermediate_size, c.hidden_size};
    case Proj::kDown: return {c.hidden_size, c.intermediate_size};
  }
  return {0, 0};
}

std::string ProjWeightName(int layer, Proj proj) {
  const ProjInfo& p = Info(proj);
  return herd::StrCat("model.layers.", layer, ".", p.block, ".", p.name, ".weight");
}

std::string InputNormName(int layer) { return herd::StrCat("model.layers.", layer, ".input_layernorm.weight"); }

std::string PostAttentionNormName(int layer) {
  return herd::StrCat("model.layers.", layer, ".post_attention_layernorm.weight");
}

std::vector<TensorSpec> BaseTensorSpecs(const LlamaConfig& c) {
  std::vector<TensorSpec> specs;
  specs.push_back({std::string(kEmbedName), {c.vocab_size, c.hidden_size}});
  for (int i = 0; i < c.num_layers; ++i) {
    specs.push_back({InputNormName(i), {c.hidden_size}});
    for (const ProjInfo& p : kProjTable) {
      auto shape = ProjShape(c, p.proj);
      specs.push_back({ProjWeightName(i, p.proj), {shape[0], shape[1]}});
    }
    specs.push_back({PostAttentionNormName(i), {c.hidden_size}});
  }
  specs.push_back({std::string(kFinalNormName), {c.hidden_size}});
  if (!c.tie_word_embeddings) specs.push_back({std::string(kLmHeadName), {c.vocab_size, c.hidden_size}});
  return specs;
}

std::string PeftLoraName(int layer, Proj proj, bool is_b) {
  const ProjInfo& p = Info(proj);
  return herd::StrCat("base_model.model.model.layers.", layer, ".", p.block, ".", p.name,
                      is_b ? ".lora_B.weight" : ".lora_A.weight");
}

}  // namespace herd::engine
