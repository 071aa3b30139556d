// PEFT adapter and merged-model writers and the adapter reader, over LlamaModel's tensors.
#include "trainer/engine/model/adapter_io.h"

#include <ATen/core/grad_mode.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <map>
#include <vector>

#include "common/file_util.h"
#include "common/safetensors.h"
#include "common/status.h"
#include "common/strings.h"
#include "nlohmann/json.hpp"
#include "trainer/engine/model/adapter_format.h"
#include "trainer/engine/tensor_io.h"

namespace herd::engine {
namespace {

namespace fs = std::filesystem;

// Files of a model directory, besides the weights, that loaders of the merged model read.
constexpr std::string_view kModelSideFiles[] = {
    "config.json",       "generation_config.json", "tokenizer.json",
    "tokenizer.model",   "tokenizer_config.json",  "special_tokens_map.json",
    "added_tokens.json", "chat_template.jinja",    "chat_template.json",
};
constexpr std::string_view kMergedWeightsFile = "model.safetensors";
constexpr std::string_view kMergedIndexFile = "model.safetensors.index.json";

// What save_pretrained writes into every safetensors header; transformers rejects other formats.
void SetPtFormat(SafetensorsWriter& writer) { writer.SetMetadata("format", "pt"); }

absl::Status CheckAdaptersFinite(const LlamaModel& model) {
  if (model.adapters().empty()) {
    return absl::FailedPreconditionError("the model has no LoRA adapters (EnableLora or LoadAdapter first)");
  }
  try {
    for (const LlamaModel::Adapter& ad : model.adapters()) {
      for (bool is_b : {false, true}) {
        const at::Tensor& t = is_b ? ad.b : ad.a;
        if (!at::isfinite(t.detach()).all().item<bool>()) {
          return absl::FailedPreconditionError(
              herd::StrCat("LoRA tensor ", PeftLoraName(ad.layer, ad.proj, is_b), " holds NaN or infinite values"));
        }
      }
    }
  } catch (const std::exception& e) {
    return absl::InternalError(herd::StrCat("checking the LoRA tensors: ", e.what()));
  }
  return absl::OkStatus();
}

AdapterConfig ConfigOf(const LlamaModel& model, const AdapterMetadata& metadata) {
  const LoraOptions& lora = model.lora_options();
  AdapterConfig c;
  c.r = lora.r;
  c.alpha = lora.alpha;
  c.dropout = lora.dropout;
  c.rslora = lora.rslora;
  for (const ProjInfo& p : kProjTable) {  // kProjTable order, whatever order EnableLora got
    if (std::find(lora.targets.begin(), lora.targets.end(), p.proj) != lora.targets.end()) c.targets.push_back(p.proj);
  }
  c.base_model_name_or_path =
      metadata.base_model_name_or_path.empty() ? model.model_dir() : metadata.base_model_name_or_path;
  return c;
}

// The merged weight of one base tensor, W + scale·B·A for adapted projections, in its checkpoint dtype.
at::Tensor MergedTensor(const LlamaModel& model, const std::string& name, const LlamaModel::Adapter* ad) {
  at::Tensor w = model.BaseTensor(name).detach();
  if (ad != nullptr) {
    const at::ScalarType acc = ad->a.scalar_type();  // float32 (float64 in gradient tests)
    w = w.to(acc) + at::matmul(ad->b.detach(), ad->a.detach()) * model.lora_options().scale();  // [out, in]
  }
  return w.to(model.StoredDtype(name));
}

// Writes the weights into `dir`, one file or shards plus an index.
absl::Status WriteMergedWeights(const LlamaModel& model, const fs::path& dir, int64_t max_shard_bytes) {
  std::map<std::string, const LlamaModel::Adapter*> adapter_of;  // HF weight name -> its adapter
  for (const LlamaModel::Adapter& ad : model.adapters()) adapter_of[ProjWeightName(ad.layer, ad.proj)] = &ad;

  // Shard plan first: shard names carry the shard count.
  const std::vector<TensorSpec> specs = BaseTensorSpecs(model.config());
  std::vector<int> shard_of(specs.size());
  int shards = 1;
  int64_t in_shard = 0, total = 0;
  for (size_t i = 0; i < specs.size(); ++i) {
    int64_t bytes = c10::elementSize(model.StoredDtype(specs[i].name));
    for (int64_t d : specs[i].shape) bytes *= d;
    if (in_shard > 0 && in_shard + bytes > max_shard_bytes) {
      ++shards;
      in_shard = 0;
    }
    in_shard += bytes;
    total += bytes;
    shard_of[i] = shards - 1;
  }
  auto shard_name = [&](int s) {
    if (shards == 1) return std::string(kMergedWeightsFile);
    char name[64];
    std::snprintf(name, sizeof(name), "model-%05d-of-%05d.safetensors", s + 1, shards);
    return std::string(name);
  };

  nlohmann::json weight_map = nlohmann::json::object();
  for (int s = 0; s < shards; ++s) {
    SafetensorsWriter writer;
    SetPtFormat(writer);
    for (size_t i = 0; i < specs.size(); ++i) {
      if (shard_of[i] != s) continue;
      auto it = adapter_of.find(specs[i].name);
      at::Tensor merged = MergedTensor(model, specs[i].name, it == adapter_of.end() ? nullptr : it->second);
      HERD_RETURN_IF_ERROR(AddTensor(writer, specs[i].name, merged));
      weight_map[specs[i].name] = shard_name(s);
    }
    HERD_RETURN_IF_ERROR(writer.Write((dir / shard_name(s)).string()));
  }
  if (shards == 1) return absl::OkStatus();
  nlohmann::json index = {{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}};
  return WriteFileAtomic((dir / kMergedIndexFile).string(), index.dump(2) + "\n");
}

absl::Status CopySideFiles(const std::string& from, const fs::path& to) {
  for (std::string_view name : kModelSideFiles) {
    const std::string src = herd::StrCat(from, "/", name);
    if (!fs::exists(src)) continue;
    HERD_ASSIGN_OR_RETURN(std::string bytes, ReadFile(src));
    HERD_RETURN_IF_ERROR(WriteFileAtomic((to / name).string(), bytes));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status SaveAdapter(const LlamaModel& model, const std::string& dir, const AdapterMetadata& metadata) {
  HERD_RETURN_IF_ERROR(CheckAdaptersFinite(model));
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return absl::InternalError(herd::StrCat("creating ", dir, ": ", ec.message()));
  SafetensorsWriter writer;
  SetPtFormat(writer);
  try {
    for (const LlamaModel::Adapter& ad : model.adapters()) {
      HERD_RETURN_IF_ERROR(AddTensor(writer, PeftLoraName(ad.layer, ad.proj, false), ad.a.detach().to(at::kFloat)));
      HERD_RETURN_IF_ERROR(AddTensor(writer, PeftLoraName(ad.layer, ad.proj, true), ad.b.detach().to(at::kFloat)));
    }
  } catch (const std::exception& e) {
    return absl::InternalError(herd::StrCat("saving the adapter to ", dir, ": ", e.what()));
  }
  // Weights first: a directory with adapter_config.json has the matching weights.
  HERD_RETURN_IF_ERROR(writer.Write(herd::StrCat(dir, "/", kAdapterWeightsFile)));
  return WriteFileAtomic(herd::StrCat(dir, "/", kAdapterConfigFile), AdapterConfigJson(ConfigOf(model, metadata)));
}

absl::Status LoadAdapter(LlamaModel& model, const std::string& dir) {
  HERD_ASSIGN_OR_RETURN(AdapterConfig config, ValidateAdapterDir(dir, model.config()));
  LoraOptions lora;
  lora.r = config.r;
  lora.alpha = config.alpha;
  lora.dropout = config.dropout;
  lora.rslora = config.rslora;
  lora.targets = config.targets;
  HERD_RETURN_IF_ERROR(model.EnableLora(lora, /*seed=*/0));
  HERD_ASSIGN_OR_RETURN(auto file, SafetensorsFile::Open(herd::StrCat(dir, "/", kAdapterWeightsFile)));
  try {
    at::NoGradGuard no_grad;
    for (const LlamaModel::Adapter& ad : model.adapters()) {
      for (bool is_b : {false, true}) {
        HERD_ASSIGN_OR_RETURN(at::Tensor t, ReadTensor(*file, PeftLoraName(ad.layer, ad.proj, is_b)));
        at::Tensor param = is_b ? ad.b : ad.a;
        param.copy_(t);  // converts dtype and device; the parameter keeps requires_grad
      }
    }
  } catch (const std::exception& e) {
    return absl::InternalError(herd::StrCat("loading the adapter of ", dir, ": ", e.what()));
  }
  return absl::OkStatus();
}

absl::Status SaveMerged(const LlamaModel& model, const std::string& out_dir, const MergeOptions& options) {
  HERD_RETURN_IF_ERROR(CheckAdaptersFinite(model));
  if (options.max_shard_bytes < 1) return absl::InvalidArgumentError("max_shard_bytes must be positive");
  fs::path out = fs::path(out_dir).lexically_normal();
  if (out.filename().empty()) out = out.parent_path();  // a trailing slash
  std::error_code ec;
  if (fs::exists(out, ec) && !(fs::is_directory(out, ec) && fs::is_empty(out, ec))) {
    return absl::FailedPreconditionError(herd::StrCat(out_dir, " exists and is not an empty directory"));
  }
  const fs::path partial = out.string() + herd::StrCat(".partial-", getpid());
  fs::remove_all(partial, ec);
  fs::create_directories(partial, ec);
  if (ec) return absl::InternalError(herd::StrCat("creating ", partial.string(), ": ", ec.message()));
  absl::Status s;
  try {
    s = WriteMergedWeights(model, partial, options.max_shard_bytes);
  } catch (const std::exception& e) {
    s = absl::InternalError(herd::StrCat("merging the adapter: ", e.what()));
  }
  if (s.ok()) s = CopySideFiles(model.model_dir(), partial);
  if (s.ok()) s = SyncDirectory(partial.string());
  if (s.ok()) {
    fs::rename(partial, out, ec);  // rename(2) replaces an empty directory
    if (ec)
      s = absl::InternalError(herd::StrCat("renaming ", partial.string(), " to ", out.string(), ": ", ec.message()));
  }
  if (s.ok()) s = SyncDirectory(out.parent_path().empty() ? "." : out.parent_path().string());
  if (!s.ok()) fs::remove_all(partial, ec);
  return s;
}

}  // namespace herd::engine
