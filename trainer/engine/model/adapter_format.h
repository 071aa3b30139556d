// The PEFT LoRA adapter directory (DESIGN.md §5) without torch: adapter_config.json written and
// parsed, the tensors an adapter must hold, and the check the coordinator runs before publishing
// (every tensor present, non-empty, finite, shaped as the configs say). The torch side that moves
// tensors in and out of a model is adapter_io.h.
#ifndef HERD_TRAINER_ENGINE_MODEL_ADAPTER_FORMAT_H_
#define HERD_TRAINER_ENGINE_MODEL_ADAPTER_FORMAT_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "trainer/engine/model/llama_config.h"
#include "trainer/engine/model/tensor_names.h"

namespace herd::engine {

inline constexpr std::string_view kAdapterConfigFile = "adapter_config.json";
inline constexpr std::string_view kAdapterWeightsFile = "adapter_model.safetensors";
// What target_modules may say instead of listing the seven projections.
inline constexpr std::string_view kAllLinear = "all-linear";

// The settings of adapter_config.json that Herd reads and writes.
struct AdapterConfig {
  int r = 16;
  double alpha = 32;                    // lora_alpha
  double dropout = 0.0;                 // lora_dropout
  bool rslora = false;                  // use_rslora: scale alpha / sqrt(r) instead of alpha / r
  std::vector<Proj> targets;            // target_modules, in kProjTable order
  std::string base_model_name_or_path;  // informational; PEFT's Auto* classes load it
};

// "all-linear" or projection names ("q_proj", ...), in kProjTable order without duplicates.
// INVALID_ARGUMENT naming an unknown entry, or when the list is empty.
absl::StatusOr<std::vector<Proj>> ParseTargetModules(const std::vector<std::string>& names);

// adapter_config.json as PEFT 0.21 writes it for these settings (inference_mode true).
std::string AdapterConfigJson(const AdapterConfig& config);
// Parses adapter_config.json, also one PEFT wrote. Rejects what Herd cannot reproduce (DoRA,
// bias other than "none", fan_in_fan_out, per-module rank/alpha patterns, modules_to_save,
// layer subsets). `source` names the file in errors.
absl::StatusOr<AdapterConfig> ParseAdapterConfig(std::string_view json_text, std::string_view source);

// One tensor of adapter_model.safetensors.
struct AdapterTensorSpec {
  std::string name;  // PeftLoraName
  int layer = 0;
  Proj proj = Proj::kQ;
  bool is_b = false;
  std::vector<int64_t> shape;  // lora_A [r, in], lora_B [out, r]
};
// Every tensor an adapter of `adapter` on a model of `model` holds: layer by layer, kProjTable
// order, A before B (the order of LlamaModel::LoraParameters).
std::vector<AdapterTensorSpec> AdapterTensorSpecs(const LlamaConfig& model, const AdapterConfig& adapter);

// Reads <dir>/adapter_config.json and checks <dir>/adapter_model.safetensors against it and the
// base model's config: every expected tensor present, no others, a float dtype, the expected
// shape, every value finite. INVALID_ARGUMENT (NOT_FOUND for a missing file) naming the file and
// the tensor. Returns the parsed config, for the caller to compare with the job's LoRA settings.
absl::StatusOr<AdapterConfig> ValidateAdapterDir(const std::string& dir, const LlamaConfig& model);

}  // namespace herd::engine

#endif  // HERD_TRAINER_ENGINE_MODEL_ADAPTER_FORMAT_H_
