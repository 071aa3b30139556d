// JobSpec <-> canonical JSON (job_spec_json.h).
#include "coordinator/store/job_spec_json.h"

#include "common/strings.h"
#include "nlohmann/json.hpp"

namespace herd::coordinator::store {

using Json = nlohmann::json;

std::string JobSpecToJson(const JobSpec& s) {
  const TrainingSpec& t = s.training;
  Json j = {
      {"name", s.name},
      {"base_model", s.base_model},
      {"dataset", s.dataset},
      {"validation_dataset", s.validation_dataset},
      {"validation_split", s.validation_split},
      {"format", s.format},
      {"chat_template", s.chat_template},
      {"train_on_inputs", s.train_on_inputs},
      {"lora",
       {{"r", s.lora.r},
        {"alpha", s.lora.alpha},
        {"dropout", s.lora.dropout},
        {"target_modules", s.lora.target_modules},
        {"rslora", s.lora.rslora}}},
      {"training",
       {{"epochs", t.epochs},
        {"max_steps", t.max_steps ? Json(*t.max_steps) : Json(nullptr)},
        {"micro_batch_size", t.micro_batch_size},
        {"global_batch_size", t.global_batch_size},
        {"learning_rate", t.learning_rate},
        {"lr_scheduler", t.lr_scheduler},
        {"warmup_ratio", t.warmup_ratio},
        {"weight_decay", t.weight_decay},
        {"max_grad_norm", t.max_grad_norm},
        {"max_seq_len", t.max_seq_len},
        {"packing", t.packing},
        {"seed", t.seed}}},
      {"checkpoints", {{"every_steps", s.checkpoints.every_steps}, {"keep", s.checkpoints.keep}}},
      {"resources", {{"trainers", s.resources.trainers}, {"priority", s.resources.priority}}},
  };
  // Written only when on, so a spec that leaves it off has the text rows stored before the
  // field existed had, and an idempotent retry across an upgrade still matches.
  if (t.activation_checkpointing) j["training"]["activation_checkpointing"] = true;
  // nlohmann's objects are std::map: keys come out sorted. Invalid UTF-8 is replaced rather
  // than thrown on (no exception leaves the store).
  return j.dump(-1, ' ', false, Json::error_handler_t::replace);
}

namespace {

template <typename T>
void Get(const Json& obj, const char* key, T* out) {
  auto it = obj.find(key);
  if (it != obj.end() && !it->is_null()) *out = it->get<T>();
}

const Json& Child(const Json& obj, const char* key) {
  static const Json kEmpty = Json::object();
  auto it = obj.find(key);
  return it != obj.end() && it->is_object() ? *it : kEmpty;
}

}  // namespace

absl::StatusOr<JobSpec> JobSpecFromJson(std::string_view json) {
  Json j = Json::parse(json.begin(), json.end(), nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) {
    return absl::DataLossError(herd::StrCat("stored job spec is not a JSON object: ",
                                            json.substr(0, 80)));
  }
  JobSpec s;
  try {
    Get(j, "name", &s.name);
    Get(j, "base_model", &s.base_model);
    Get(j, "dataset", &s.dataset);
    Get(j, "validation_dataset", &s.validation_dataset);
    Get(j, "validation_split", &s.validation_split);
    Get(j, "format", &s.format);
    Get(j, "chat_template", &s.chat_template);
    Get(j, "train_on_inputs", &s.train_on_inputs);
    const Json& lora = Child(j, "lora");
    Get(lora, "r", &s.lora.r);
    Get(lora, "alpha", &s.lora.alpha);
    Get(lora, "dropout", &s.lora.dropout);
    Get(lora, "target_modules", &s.lora.target_modules);
    Get(lora, "rslora", &s.lora.rslora);
    const Json& t = Child(j, "training");
    Get(t, "epochs", &s.training.epochs);
    if (auto it = t.find("max_steps"); it != t.end() && !it->is_null()) {
      s.training.max_steps = it->get<int64_t>();
    }
    Get(t, "micro_batch_size", &s.training.micro_batch_size);
    Get(t, "global_batch_size", &s.training.global_batch_size);
    Get(t, "learning_rate", &s.training.learning_rate);
    Get(t, "lr_scheduler", &s.training.lr_scheduler);
    Get(t, "warmup_ratio", &s.training.warmup_ratio);
    Get(t, "weight_decay", &s.training.weight_decay);
    Get(t, "max_grad_norm", &s.training.max_grad_norm);
    Get(t, "max_seq_len", &s.training.max_seq_len);
    Get(t, "packing", &s.training.packing);
    Get(t, "seed", &s.training.seed);
    Get(t, "activation_checkpointing", &s.training.activation_checkpointing);
    const Json& c = Child(j, "checkpoints");
    Get(c, "every_steps", &s.checkpoints.every_steps);
    Get(c, "keep", &s.checkpoints.keep);
    const Json& r = Child(j, "resources");
    Get(r, "trainers", &s.resources.trainers);
    Get(r, "priority", &s.resources.priority);
  } catch (const Json::exception& e) {
    return absl::DataLossError(herd::StrCat("stored job spec has a field of the wrong type: ",
                                            e.what()));
  }
  return s;
}

}  // namespace herd::coordinator::store
