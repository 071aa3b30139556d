// Model directory scanning.
#include "trainer/agent/model_scan.h"

#include <algorithm>
#include <filesystem>
#include <set>

#include "common/file_util.h"
#include "common/status.h"
#include "common/strings.h"
#include "nlohmann/json.hpp"

namespace herd::agent {
namespace fs = std::filesystem;

namespace {

absl::Status Bad(const std::string& file, std::string_view why) {
  return absl::InvalidArgumentError(herd::StrCat(file, ": ", why));
}

absl::Status ReadInt(const nlohmann::json& j, const std::string& file, const char* key, bool required,
                     int64_t* out) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return required ? Bad(file, herd::StrCat(key, " is missing")) : absl::OkStatus();
  if (!it->is_number_integer() || it->get<int64_t>() <= 0) {
    return Bad(file, herd::StrCat(key, " must be a positive integer, got ", it->dump()));
  }
  *out = it->get<int64_t>();
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<ModelInfo> ReadModelDir(const std::string& dir) {
  ModelInfo m;
  m.path = dir;
  m.name = fs::path(dir).filename().string();
  const std::string config_path = dir + "/config.json";
  HERD_ASSIGN_OR_RETURN(m.config_json, ReadFile(config_path));
  nlohmann::json config = nlohmann::json::parse(m.config_json, nullptr, false);
  if (config.is_discarded() || !config.is_object()) return Bad(config_path, "not a JSON object");
  std::string model_type = config.value("model_type", "");
  if (model_type != "llama") return Bad(config_path, herd::StrCat("model_type is '", model_type, "', Herd trains llama"));
  HERD_RETURN_IF_ERROR(ReadInt(config, config_path, "num_hidden_layers", true, &m.num_layers));
  HERD_RETURN_IF_ERROR(ReadInt(config, config_path, "hidden_size", true, &m.hidden_size));
  HERD_RETURN_IF_ERROR(ReadInt(config, config_path, "num_attention_heads", true, &m.num_heads));
  m.num_kv_heads = m.num_heads;
  HERD_RETURN_IF_ERROR(ReadInt(config, config_path, "num_key_value_heads", false, &m.num_kv_heads));
  HERD_RETURN_IF_ERROR(ReadInt(config, config_path, "vocab_size", true, &m.vocab_size));
  HERD_RETURN_IF_ERROR(ReadInt(config, config_path, "max_position_embeddings", false, &m.max_position_embeddings));
  if (m.num_heads % m.num_kv_heads != 0) {
    return Bad(config_path, "num_attention_heads must be a multiple of num_key_value_heads");
  }

  if (fs::exists(dir + "/tokenizer.json")) {
    m.tokenizer = "bpe";
  } else if (fs::exists(dir + "/tokenizer.model")) {
    m.tokenizer = "sentencepiece";
  } else {
    return Bad(dir, "has neither tokenizer.json nor tokenizer.model");
  }

  const std::string index_path = dir + "/model.safetensors.index.json";
  if (fs::exists(dir + "/model.safetensors")) {
    m.weight_files = {"model.safetensors"};
  } else if (fs::exists(index_path)) {
    HERD_ASSIGN_OR_RETURN(std::string text, ReadFile(index_path));
    nlohmann::json index = nlohmann::json::parse(text, nullptr, false);
    if (index.is_discarded() || !index.contains("weight_map") || !index["weight_map"].is_object()) {
      return Bad(index_path, "has no weight_map object");
    }
    std::set<std::string> shards;
    for (const auto& [tensor, file] : index["weight_map"].items()) {
      if (!file.is_string()) return Bad(index_path, herd::StrCat("weight_map[", tensor, "] is not a file name"));
      std::string name = file.get<std::string>();
      if (name.find('/') != std::string::npos || name == "..") {
        return Bad(index_path, herd::StrCat("shard '", name, "' is not a plain file name"));
      }
      if (!fs::exists(dir + "/" + name)) return Bad(index_path, herd::StrCat("names missing shard ", name));
      shards.insert(name);
    }
    m.weight_files.assign(shards.begin(), shards.end());
  } else {
    return Bad(dir, "has no model.safetensors or model.safetensors.index.json (pickled weights are not read)");
  }
  return m;
}

absl::StatusOr<std::vector<ModelInfo>> ScanModels(const std::string& root) {
  std::error_code ec;
  if (!fs::is_directory(root, ec)) return absl::NotFoundError(herd::StrCat("models folder ", root, " does not exist"));
  std::vector<ModelInfo> models;
  for (const fs::directory_entry& e : fs::directory_iterator(root, ec)) {
    if (!e.is_directory() || !fs::exists(e.path() / "config.json")) continue;
    HERD_ASSIGN_OR_RETURN(ModelInfo m, ReadModelDir(e.path().string()));
    models.push_back(std::move(m));
  }
  if (ec) return absl::InternalError(herd::StrCat("listing ", root, ": ", ec.message()));
  std::sort(models.begin(), models.end(), [](const ModelInfo& a, const ModelInfo& b) { return a.name < b.name; });
  return models;
}

}  // namespace herd::agent
