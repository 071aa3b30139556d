// A LLaMA model's shape, read from a Hugging Face config.json. Accepts both the
// rope_theta/rope_scaling keys of real LLaMA-3.1 directories and the rope_parameters object that
// transformers 5 writes (DESIGN.md §5). No torch here: the agent's tools read it too.
#ifndef HERD_TRAINER_ENGINE_MODEL_LLAMA_CONFIG_H_
#define HERD_TRAINER_ENGINE_MODEL_LLAMA_CONFIG_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace herd::engine {

struct RopeScaling {
  std::string type = "default";  // default | llama3 | linear
  double factor = 1.0;
  double low_freq_factor = 1.0;   // llama3
  double high_freq_factor = 4.0;  // llama3
  int64_t original_max_position_embeddings = 8192;  // llama3
};

struct LlamaConfig {
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_layers = 0;
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;   // = num_heads when absent (MHA); 1 is MQA
  int64_t head_dim = 0;       // = hidden_size / num_heads when absent
  int64_t max_position_embeddings = 2048;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;
  bool tie_word_embeddings = false;
  int64_t bos_token_id = -1;
  std::vector<int64_t> eos_token_ids;  // config.json may give one id or a list

  absl::Status Validate() const;
};

// `source` names the text in errors (the config.json path).
absl::StatusOr<LlamaConfig> ParseLlamaConfig(std::string_view json_text, std::string_view source);
// Reads <model_dir>/config.json.
absl::StatusOr<LlamaConfig> LoadLlamaConfig(const std::string& model_dir);

}  // namespace herd::engine

#endif  // HERD_TRAINER_ENGINE_MODEL_LLAMA_CONFIG_H_
