// adapter_config.json and the adapter publish check, without torch.
#include "trainer/engine/model/adapter_format.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <optional>
#include <span>

#include "common/file_util.h"
#include "common/safetensors.h"
#include "common/status.h"
#include "common/strings.h"
#include "nlohmann/json.hpp"

namespace herd::engine {
namespace {

using nlohmann::json;

absl::Status Bad(std::string_view source, std::string_view field, std::string_view why) {
  return absl::InvalidArgumentError(herd::StrCat(source, ": ", field, ": ", why));
}

// True when the key is absent, null, false, or an empty list/object/string: PEFT's "not used".
bool Unset(const json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return true;
  if (it->is_boolean()) return !it->get<bool>();
  if (it->is_array() || it->is_object() || it->is_string()) return it->empty();
  return false;
}

// Bit-level finiteness, so the check needs no float16/bfloat16 arithmetic: a value is finite
// unless its exponent bits are all ones.
template <typename Bits>
bool AllFinite(std::span<const uint8_t> data, Bits exponent_mask) {
  for (size_t off = 0; off + sizeof(Bits) <= data.size(); off += sizeof(Bits)) {
    Bits v;
    std::memcpy(&v, data.data() + off, sizeof(Bits));
    if ((v & exponent_mask) == exponent_mask) return false;
  }
  return true;
}

bool AllFinite(const SafetensorsTensor& t) {
  switch (t.dtype) {
    case Dtype::kF64:
      return AllFinite<uint64_t>(t.data, 0x7FF0000000000000ULL);
    case Dtype::kF32:
      return AllFinite<uint32_t>(t.data, 0x7F800000U);
    case Dtype::kF16:
      return AllFinite<uint16_t>(t.data, 0x7C00U);
    case Dtype::kBF16:
      return AllFinite<uint16_t>(t.data, 0x7F80U);
    default:
      return false;
  }
}

std::string TargetNames(const std::vector<Proj>& targets) {
  std::vector<std::string_view> names;
  for (Proj p : targets) names.push_back(Info(p).name);
  return herd::StrJoin(names, ",");
}

}  // namespace

absl::StatusOr<std::vector<Proj>> ParseTargetModules(const std::vector<std::string>& names) {
  if (names.empty()) return absl::InvalidArgumentError("target_modules is empty");
  bool wanted[kNumProj] = {};
  for (const std::string& name : names) {
    if (name == kAllLinear) {
      for (bool& w : wanted) w = true;
      continue;
    }
    std::optional<Proj> proj = ProjFromName(name);
    if (!proj.has_value()) {
      std::vector<std::string_view> known = {kAllLinear};
      for (const ProjInfo& p : kProjTable) known.push_back(p.name);
      return absl::InvalidArgumentError(
          herd::StrCat("target_modules: unknown module '", name, "' (expected ", herd::StrJoin(known, ", "), ")"));
    }
    wanted[static_cast<int>(*proj)] = true;
  }
  std::vector<Proj> out;
  for (const ProjInfo& p : kProjTable) {
    if (wanted[static_cast<int>(p.proj)]) out.push_back(p.proj);
  }
  return out;
}

std::string AdapterConfigJson(const AdapterConfig& c) {
  json targets = json::array();
  for (Proj p : c.targets) targets.push_back(std::string(Info(p).name));
  json j;
  // The fields of DESIGN.md §5, then the defaults PEFT has written since 0.9 (older and newer
  // PEFT versions accept all of them without warnings).
  j["peft_type"] = "LORA";
  j["task_type"] = "CAUSAL_LM";
  j["base_model_name_or_path"] = c.base_model_name_or_path;
  j["r"] = c.r;
  if (c.alpha == std::floor(c.alpha) && std::abs(c.alpha) < 1e15) {
    j["lora_alpha"] = static_cast<int64_t>(c.alpha);  // PEFT declares it an int
  } else {
    j["lora_alpha"] = c.alpha;
  }
  j["lora_dropout"] = c.dropout;
  j["target_modules"] = targets;
  j["bias"] = "none";
  j["use_rslora"] = c.rslora;
  j["fan_in_fan_out"] = false;
  j["inference_mode"] = true;
  j["use_dora"] = false;
  j["init_lora_weights"] = true;
  j["modules_to_save"] = nullptr;
  j["layers_to_transform"] = nullptr;
  j["layers_pattern"] = nullptr;
  j["rank_pattern"] = json::object();
  j["alpha_pattern"] = json::object();
  j["revision"] = nullptr;
  return j.dump(2) + "\n";
}

absl::StatusOr<AdapterConfig> ParseAdapterConfig(std::string_view text, std::string_view source) {
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object())
    return absl::InvalidArgumentError(herd::StrCat(source, ": not a JSON object"));
  AdapterConfig c;
  if (j.value("peft_type", json()) != "LORA") return Bad(source, "peft_type", "expected \"LORA\"");
  if (!Unset(j, "task_type") && j["task_type"] != "CAUSAL_LM")
    return Bad(source, "task_type", "expected \"CAUSAL_LM\"");
  if (!j.contains("r") || !j["r"].is_number_integer() || j["r"].get<int64_t>() < 1 ||
      j["r"].get<int64_t>() > std::numeric_limits<int>::max()) {
    return Bad(source, "r", "expected a positive integer");
  }
  c.r = j["r"].get<int>();
  if (!j.contains("lora_alpha") || !j["lora_alpha"].is_number()) return Bad(source, "lora_alpha", "expected a number");
  c.alpha = j["lora_alpha"].get<double>();
  if (j.contains("lora_dropout") && !j["lora_dropout"].is_null()) {
    if (!j["lora_dropout"].is_number()) return Bad(source, "lora_dropout", "expected a number");
    c.dropout = j["lora_dropout"].get<double>();
    if (!(c.dropout >= 0 && c.dropout < 1)) return Bad(source, "lora_dropout", "must be in [0, 1)");
  }
  if (j.contains("use_rslora") && !j["use_rslora"].is_null()) {
    if (!j["use_rslora"].is_boolean()) return Bad(source, "use_rslora", "expected true or false");
    c.rslora = j["use_rslora"].get<bool>();
  }
  std::vector<std::string> names;
  const json& targets = j.value("target_modules", json());
  if (targets.is_string() && targets == kAllLinear) {
    names.push_back(std::string(kAllLinear));
  } else if (targets.is_array()) {
    for (const json& t : targets) {
      if (!t.is_string()) return Bad(source, "target_modules", "expected a list of module names");
      names.push_back(t.get<std::string>());
    }
  } else {
    return Bad(source, "target_modules", "expected \"all-linear\" or a list of module names");
  }
  auto parsed = ParseTargetModules(names);
  if (!parsed.ok()) return Annotate(parsed.status(), source);
  c.targets = *std::move(parsed);
  if (!Unset(j, "bias") && j["bias"] != "none") return Bad(source, "bias", "only \"none\" is supported");
  // Settings that change what the tensors mean; Herd would compute something else.
  for (const char* key : {"fan_in_fan_out", "use_dora", "lora_bias", "rank_pattern", "alpha_pattern", "modules_to_save",
                          "layers_to_transform", "exclude_modules", "target_parameters", "trainable_token_indices",
                          "layer_replication"}) {
    if (!Unset(j, key))
      return Bad(source, key, herd::StrCat("is set to ", j[key].dump(), "; Herd does not support it"));
  }
  if (j.contains("base_model_name_or_path") && j["base_model_name_or_path"].is_string()) {
    c.base_model_name_or_path = j["base_model_name_or_path"].get<std::string>();
  }
  return c;
}

std::vector<AdapterTensorSpec> AdapterTensorSpecs(const LlamaConfig& model, const AdapterConfig& adapter) {
  std::vector<AdapterTensorSpec> specs;
  for (int i = 0; i < model.num_layers; ++i) {
    for (const ProjInfo& p : kProjTable) {
      if (std::find(adapter.targets.begin(), adapter.targets.end(), p.proj) == adapter.targets.end()) continue;
      auto [out, in] = ProjShape(model, p.proj);
      specs.push_back({PeftLoraName(i, p.proj, /*is_b=*/false), i, p.proj, false, {adapter.r, in}});
      specs.push_back({PeftLoraName(i, p.proj, /*is_b=*/true), i, p.proj, true, {out, adapter.r}});
    }
  }
  return specs;
}

absl::StatusOr<AdapterConfig> ValidateAdapterDir(const std::string& dir, const LlamaConfig& model) {
  const std::string config_path = herd::StrCat(dir, "/", kAdapterConfigFile);
  HERD_ASSIGN_OR_RETURN(std::string text, ReadFile(config_path));
  HERD_ASSIGN_OR_RETURN(AdapterConfig config, ParseAdapterConfig(text, config_path));
  HERD_ASSIGN_OR_RETURN(auto file, SafetensorsFile::Open(herd::StrCat(dir, "/", kAdapterWeightsFile)));
  const std::string& source = file->source();
  std::vector<AdapterTensorSpec> specs = AdapterTensorSpecs(model, config);
  for (const AdapterTensorSpec& spec : specs) {
    const SafetensorsTensor* t = file->Find(spec.name);
    if (t == nullptr) {
      return absl::InvalidArgumentError(herd::StrCat(source, ": tensor ", spec.name, " is missing (",
                                                     kAdapterConfigFile, " targets ", TargetNames(config.targets),
                                                     ")"));
    }
    if (t->dtype != Dtype::kF32 && t->dtype != Dtype::kF64 && t->dtype != Dtype::kF16 && t->dtype != Dtype::kBF16) {
      return absl::InvalidArgumentError(
          herd::StrCat(source, ": tensor ", spec.name, " has dtype ", DtypeName(t->dtype), ", expected a float type"));
    }
    if (t->shape != spec.shape) {
      return absl::InvalidArgumentError(herd::StrCat(source, ": tensor ", spec.name, " has shape [",
                                                     herd::StrJoin(t->shape, ", "), "], expected [",
                                                     herd::StrJoin(spec.shape, ", "), "] (r=", config.r, ")"));
    }
    if (t->numel() == 0) return absl::InvalidArgumentError(herd::StrCat(source, ": tensor ", spec.name, " is empty"));
    if (!AllFinite(*t)) {
      return absl::InvalidArgumentError(herd::StrCat(source, ": tensor ", spec.name, " holds NaN or infinite values"));
    }
  }
  if (file->tensors().size() != specs.size()) {
    for (const SafetensorsTensor& t : file->tensors()) {
      bool expected = false;
      for (const AdapterTensorSpec& spec : specs) expected = expected || spec.name == t.name;
      if (!expected) {
        return absl::InvalidArgumentError(herd::StrCat(source, ": unexpected tensor ", t.name, " (", kAdapterConfigFile,
                                                       " targets ", TargetNames(config.targets), " on ",
                                                       model.num_layers, " layers)"));
      }
    }
  }
  return config;
}

}  // namespace herd::engine
