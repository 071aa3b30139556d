// tokenizer_config.json parsing (the tokenizer-independent half of tokenizer.h).
#include "datasets/tokenizer.h"

#include "common/file_util.h"
#include "common/sha256.h"
#include "common/strings.h"
#include "nlohmann/json.hpp"

namespace herd::datasets {
namespace {

using nlohmann::json;

absl::Status Bad(std::string_view source, std::string_view key, std::string_view why) {
  return absl::InvalidArgumentError(herd::StrCat(source, ": ", key, ": ", why));
}

// A token is a string, an AddedToken object ({"content": ..., "__type": "AddedToken"}) or null.
absl::Status GetToken(const json& j, std::string_view key, std::string_view source,
                      std::string* out) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return absl::OkStatus();
  if (it->is_string()) {
    *out = it->get<std::string>();
    return absl::OkStatus();
  }
  if (it->is_object() && it->contains("content") && (*it)["content"].is_string()) {
    *out = (*it)["content"].get<std::string>();
    return absl::OkStatus();
  }
  return Bad(source, key, "must be a string or an object with a string \"content\"");
}

absl::Status GetChatTemplate(const json& j, std::string_view source, std::string* out) {
  auto it = j.find("chat_template");
  if (it == j.end() || it->is_null()) return absl::OkStatus();
  if (it->is_string()) {
    *out = it->get<std::string>();
    return absl::OkStatus();
  }
  if (it->is_array()) {
    for (const json& t : *it) {
      if (t.is_object() && t.value("name", "") == "default" && t.contains("template") &&
          t["template"].is_string()) {
        *out = t["template"].get<std::string>();
        return absl::OkStatus();
      }
    }
    return Bad(source, "chat_template", "is a list of templates without one named \"default\"");
  }
  return Bad(source, "chat_template", "must be a string or a list of {name, template}");
}

}  // namespace

absl::StatusOr<TokenizerConfig> ParseTokenizerConfig(std::string_view text,
                                                     std::string_view source) {
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError(herd::StrCat(source, ": not a JSON object"));
  }
  TokenizerConfig config;
  config.present = true;
  config.sha256 = Sha256Hex(text);
  if (absl::Status s = GetToken(j, "bos_token", source, &config.bos_token); !s.ok()) return s;
  if (absl::Status s = GetToken(j, "eos_token", source, &config.eos_token); !s.ok()) return s;
  if (auto it = j.find("legacy"); it != j.end() && !it->is_null()) {
    if (!it->is_boolean()) return Bad(source, "legacy", "must be true or false");
    config.legacy = it->get<bool>();
  }
  if (absl::Status s = GetChatTemplate(j, source, &config.chat_template); !s.ok()) return s;
  return config;
}

absl::StatusOr<TokenizerConfig> ReadTokenizerConfig(const std::string& model_dir) {
  const std::string path = model_dir + "/tokenizer_config.json";
  absl::StatusOr<std::string> text = ReadFile(path);
  if (absl::IsNotFound(text.status())) return TokenizerConfig{};
  if (!text.ok()) return text.status();
  return ParseTokenizerConfig(*text, path);
}

absl::StatusOr<std::string> Tokenizer::TokenBytes(int32_t id) const {
  const int32_t one[] = {id};
  return Decode(one);
}

}  // namespace herd::datasets
