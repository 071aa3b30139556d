// Checkpoint folders: write, seal, read back.
#include "trainer/engine/train/checkpoint.h"

#include <cstdio>
#include <filesystem>

#include "common/file_util.h"
#include "common/sha256.h"
#include "common/status.h"
#include "common/strings.h"
#include "trainer/engine/model/adapter_io.h"

namespace herd::engine {
namespace fs = std::filesystem;

namespace {

constexpr char kOptimizerFile[] = "optimizer.safetensors";
constexpr char kStateFile[] = "trainer_state.json";

std::string StepName(int64_t step) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "step-%08lld", static_cast<long long>(step));
  return buf;
}

}  // namespace

nlohmann::json ResumeFingerprint(const TrainConfig& c, const LlamaModel& model) {
  const LlamaConfig& m = model.config();
  return {
      {"model", {{"name", c.model_name}, {"layers", m.num_layers}, {"hidden_size", m.hidden_size}, {"vocab_size", m.vocab_size}}},
      {"lora", {{"r", c.lora.r}, {"alpha", c.lora.alpha}, {"dropout", c.lora.dropout},
                {"target_modules", c.lora.ExpandedTargets()}, {"rslora", c.lora.rslora}}},
      {"training", {{"seed", c.training.seed}, {"global_batch_size", c.training.global_batch_size},
                    {"learning_rate", c.training.learning_rate}, {"lr_scheduler", c.training.lr_scheduler},
                    {"warmup_ratio", c.training.warmup_ratio}, {"weight_decay", c.training.weight_decay},
                    {"max_grad_norm", c.training.max_grad_norm}, {"max_seq_len", c.training.max_seq_len},
                    {"epochs", c.training.epochs}}},
  };
}

absl::StatusOr<CheckpointReport> WriteCheckpoint(const LlamaModel& model, const AdamW& optimizer,
                                                 const TrainerState& state, const std::string& model_name,
                                                 const std::string& root, bool final) {
  const std::string dir = herd::StrCat(root, "/", StepName(state.step));
  const std::string tmp = dir + ".tmp";
  std::error_code ec;
  fs::remove_all(tmp, ec);
  fs::create_directories(tmp, ec);
  if (ec) return absl::UnavailableError(herd::StrCat("cannot create ", tmp, ": ", ec.message()));

  HERD_RETURN_IF_ERROR(SaveAdapter(model, tmp, AdapterMetadata{.base_model_name_or_path = model_name}));
  SafetensorsWriter opt;
  HERD_RETURN_IF_ERROR(optimizer.Save(opt));
  HERD_RETURN_IF_ERROR(opt.Write(herd::StrCat(tmp, "/", kOptimizerFile)));
  nlohmann::json js = {{"step", state.step},          {"total_steps", state.total_steps},
                       {"epoch", state.epoch},        {"generation", state.generation},
                       {"world_size", state.world_size}, {"fingerprint", state.fingerprint},
                       {"format", "herd-trainer-state-1"}};
  HERD_RETURN_IF_ERROR(WriteFileAtomic(herd::StrCat(tmp, "/", kStateFile), js.dump(2) + "\n"));

  fs::remove_all(dir, ec);  // a folder for this step from an earlier, superseded attempt
  if (std::rename(tmp.c_str(), dir.c_str()) != 0) {
    return absl::UnavailableError(herd::StrCat("cannot rename ", tmp, " to ", dir));
  }
  HERD_RETURN_IF_ERROR(SyncDirectory(root));

  CheckpointReport report{.step = state.step, .final = final, .dir = dir, .files = {}};
  for (const char* name : {"adapter_config.json", "adapter_model.safetensors", kOptimizerFile, kStateFile}) {
    const std::string path = herd::StrCat(dir, "/", name);
    HERD_ASSIGN_OR_RETURN(std::string digest, Sha256File(path));
    report.files.push_back({name, static_cast<int64_t>(fs::file_size(path, ec)), digest});
  }
  return report;
}

absl::StatusOr<TrainerState> ReadTrainerState(const std::string& dir, const nlohmann::json& expected) {
  const std::string state_path = herd::StrCat(dir, "/", kStateFile);
  HERD_ASSIGN_OR_RETURN(std::string text, ReadFile(state_path));
  nlohmann::json js = nlohmann::json::parse(text, nullptr, false);
  if (js.is_discarded() || !js.is_object() || !js.contains("step") || !js.contains("fingerprint")) {
    return absl::DataLossError(herd::StrCat(state_path, ": not a Herd trainer state"));
  }
  const nlohmann::json& got = js["fingerprint"];
  for (const auto& [section, fields] : expected.items()) {
    for (const auto& [key, value] : fields.items()) {
      const nlohmann::json* was = got.contains(section) && got[section].contains(key) ? &got[section][key] : nullptr;
      if (was == nullptr || *was != value) {
        return absl::FailedPreconditionError(herd::StrCat(
            "checkpoint ", dir, " was made with ", section, ".", key, " = ", was ? was->dump() : "(absent)",
            ", this job has ", value.dump()));
      }
    }
  }
  TrainerState state;
  state.step = js["step"].get<int64_t>();
  state.total_steps = js.value("total_steps", int64_t{0});
  state.epoch = js.value("epoch", 0.0);
  state.generation = js.value("generation", int64_t{0});
  state.world_size = js.value("world_size", int64_t{0});
  state.fingerprint = got;
  return state;
}

absl::Status LoadOptimizerState(const std::string& dir, AdamW& optimizer) {
  HERD_ASSIGN_OR_RETURN(auto file, SafetensorsFile::Open(herd::StrCat(dir, "/", kOptimizerFile)));
  return optimizer.Load(*file);
}

}  // namespace herd::engine
