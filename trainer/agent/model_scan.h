// The models a trainer holds: every folder under --models that is a Hugging Face LLaMA model
// directory. Registration publishes these (DESIGN.md §3.3), so a model that would fail later is
// reported here, naming the folder and the file at fault.
#ifndef HERD_TRAINER_AGENT_MODEL_SCAN_H_
#define HERD_TRAINER_AGENT_MODEL_SCAN_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace herd::agent {

struct ModelInfo {
  std::string name;       // the folder's name; what job files call base_model
  std::string path;
  std::string config_json;  // config.json as published
  int64_t num_layers = 0, hidden_size = 0, num_heads = 0, num_kv_heads = 0, vocab_size = 0;
  int64_t max_position_embeddings = 0;
  std::string tokenizer;  // "sentencepiece" (tokenizer.model) or "bpe" (tokenizer.json)
  std::vector<std::string> weight_files;  // model.safetensors, or the shards the index names
};

// Reads one model directory.
absl::StatusOr<ModelInfo> ReadModelDir(const std::string& dir);

// Every model under `root` (one level deep), sorted by name. A folder that is not a model
// directory at all (no config.json) is skipped; one that is broken is an error.
absl::StatusOr<std::vector<ModelInfo>> ScanModels(const std::string& root);

}  // namespace herd::agent

#endif  // HERD_TRAINER_AGENT_MODEL_SCAN_H_
