// config.json parsing for LLaMA models.
#include "trainer/engine/model/llama_config.h"

#include "common/file_util.h"
#include "common/status.h"
#include "common/strings.h"
#include "nlohmann/json.hpp"

namespace herd::engine {
namespace {

using nlohmann::json;

absl::Status Bad(std::string_view source, std::string_view field, std::string_view why) {
  return absl::InvalidArgumentError(herd::StrCat(source, ": ", field, ": ", why));
}

absl::Status GetInt(const json& j, std::string_view source, const char* key, bool required, int64_t* out) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return required ? Bad(source, key, "missing") : absl::OkStatus();
  if (!it->is_number_integer()) return Bad(source, key, herd::StrCat("expected an integer, got ", it->dump()));
  *out = it->get<int64_t>();
  return absl::OkStatus();
}

absl::Status GetDouble(const json& j, std::string_view source, const char* key, double* out) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_number()) return Bad(source, key, herd::StrCat("expected a number, got ", it->dump()));
  *out = it->get<double>();
  return absl::OkStatus();
}

absl::Status ParseRope(const json& r, std::string_view source, std::string_view where, LlamaConfig* c) {
  if (!r.is_object()) return Bad(source, where, "expected an object");
  std::string type = r.value("rope_type", r.value("type", std::string("default")));
  c->rope_scaling.type = type;
  HERD_RETURN_IF_ERROR(GetDouble(r, source, "rope_theta", &c->rope_theta));
  if (type == "default") return absl::OkStatus();
  HERD_RETURN_IF_ERROR(GetDouble(r, source, "factor", &c->rope_scaling.factor));
  if (type == "linear") return absl::OkStatus();
  if (type == "llama3") {
    HERD_RETURN_IF_ERROR(GetDouble(r, source, "low_freq_factor", &c->rope_scaling.low_freq_factor));
    HERD_RETURN_IF_ERROR(GetDouble(r, source, "high_freq_factor", &c->rope_scaling.high_freq_factor));
    HERD_RETURN_IF_ERROR(GetInt(r, source, "original_max_position_embeddings", true,
                                &c->rope_scaling.original_max_position_embeddings));
    return absl::OkStatus();
  }
  return Bad(source, where, herd::StrCat("rope_type '", type, "' is not supported (default, linear, llama3)"));
}

}  // namespace

absl::Status LlamaConfig::Validate() const {
  auto bad = [](std::string_view field, std::string_view why) {
    return absl::InvalidArgumentError(herd::StrCat(field, ": ", why));
  };
  if (vocab_size < 1) return bad("vocab_size", "must be positive");
  if (hidden_size < 1) return bad("hidden_size", "must be positive");
  if (intermediate_size < 1) return bad("intermediate_size", "must be positive");
  if (num_layers < 1) return bad("num_hidden_layers", "must be positive");
  if (num_heads < 1) return bad("num_attention_heads", "must be positive");
  if (num_kv_heads < 1 || num_heads % num_kv_heads != 0) {
    return bad("num_key_value_heads", "must divide num_attention_heads");
  }
  if (head_dim < 2 || head_dim % 2 != 0) return bad("head_dim", "must be even and positive");
  if (!(rms_norm_eps > 0)) return bad("rms_norm_eps", "must be positive");
  if (!(rope_theta > 0)) return bad("rope_theta", "must be positive");
  if (!(rope_scaling.factor > 0)) return bad("rope_scaling.factor", "must be positive");
  if (rope_scaling.type == "llama3" && !(rope_scaling.high_freq_factor > rope_scaling.low_freq_factor)) {
    return bad("rope_scaling.high_freq_factor", "must exceed low_freq_factor");
  }
  return absl::OkStatus();
}

absl::StatusOr<LlamaConfig> ParseLlamaConfig(std::string_view text, std::string_view source) {
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError(herd::StrCat(source, ": not a JSON object"));
  }
  std::string model_type = j.value("model_type", std::string());
  if (model_type != "llama") {
    return Bad(source, "model_type", herd::StrCat("'", model_type, "' is not llama"));
  }
  LlamaConfig c;
  HERD_RETURN_IF_ERROR(GetInt(j, source, "vocab_size", true, &c.vocab_size));
  HERD_RETURN_IF_ERROR(GetInt(j, source, "hidden_size", true, &c.hidden_size));
  HERD_RETURN_IF_ERROR(GetInt(j, source, "intermediate_size", true, &c.intermediate_size));
  HERD_RETURN_IF_ERROR(GetInt(j, source, "num_hidden_layers", true, &c.num_layers));
  HERD_RETURN_IF_ERROR(GetInt(j, source, "num_attention_heads", true, &c.num_heads));
  c.num_kv_heads = c.num_heads;
  HERD_RETURN_IF_ERROR(GetInt(j, source, "num_key_value_heads", false, &c.num_kv_heads));
  c.head_dim = c.num_heads > 0 ? c.hidden_size / c.num_heads : 0;
  HERD_RETURN_IF_ERROR(GetInt(j, source, "head_dim", false, &c.head_dim));
  HERD_RETURN_IF_ERROR(GetInt(j, source, "max_position_embeddings", false, &c.max_position_embeddings));
  HERD_RETURN_IF_ERROR(GetDouble(j, source, "rms_norm_eps", &c.rms_norm_eps));
  HERD_RETURN_IF_ERROR(GetDouble(j, source, "rope_theta", &c.rope_theta));
  if (auto it = j.find("rope_scaling"); it != j.end() && !it->is_null()) {
    HERD_RETURN_IF_ERROR(ParseRope(*it, source, "rope_scaling", &c));
  }
  if (auto it = j.find("rope_parameters"); it != j.end() && !it->is_null()) {
    HERD_RETURN_IF_ERROR(ParseRope(*it, source, "rope_parameters", &c));
  }
  if (auto it = j.find("tie_word_embeddings"); it != j.end() && it->is_boolean()) c.tie_word_embeddings = *it;
  HERD_RETURN_IF_ERROR(GetInt(j, source, "bos_token_id", false, &c.bos_token_id));
  if (auto it = j.find("eos_token_id"); it != j.end()) {
    if (it->is_number_integer()) {
      c.eos_token_ids = {it->get<int64_t>()};
    } else if (it->is_array()) {
      for (const auto& e : *it) {
        if (!e.is_number_integer()) return Bad(source, "eos_token_id", "expected integers");
        c.eos_token_ids.push_back(e.get<int64_t>());
      }
    }
  }
  if (std::string act = j.value("hidden_act", std::string("silu")); act != "silu") {
    return Bad(source, "hidden_act", herd::StrCat("'", act, "' is not silu"));
  }
  if (j.value("attention_bias", false) || j.value("mlp_bias", false)) {
    return Bad(source, "attention_bias", "biases are not supported");
  }
  absl::Status valid = c.Validate();
  if (!valid.ok()) return Annotate(valid, source);
  return c;
}

absl::StatusOr<LlamaConfig> LoadLlamaConfig(const std::string& model_dir) {
  const std::string path = model_dir + "/config.json";
  HERD_ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  return ParseLlamaConfig(text, path);
}

}  // namespace herd::engine
