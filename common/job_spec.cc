// Job file parsing and validation.
#include "common/job_spec.h"

#include <algorithm>
#include <cmath>

#include "common/strings.h"

#include "common/file_util.h"
#include "common/status.h"
#include "common/yaml_util.h"
#include "yaml-cpp/yaml.h"

namespace herd {
namespace {

absl::Status Bad(std::string_view field, std::string_view reason) {
  return absl::InvalidArgumentError(herd::StrCat(field, ": ", reason));
}

bool OneOf(const std::string& value, std::initializer_list<std::string_view> allowed) {
  return std::find(allowed.begin(), allowed.end(), value) != allowed.end();
}

}  // namespace

std::vector<std::string> LoraSpec::ExpandedTargets() const {
  std::vector<std::string> out;
  bool all = std::find(target_modules.begin(), target_modules.end(), "all-linear") !=
             target_modules.end();
  for (std::string_view t : kLoraTargets) {
    if (all || std::find(target_modules.begin(), target_modules.end(), t) != target_modules.end()) {
      out.emplace_back(t);
    }
  }
  return out;
}

absl::Status JobSpec::Validate() const {
  if (base_model.empty()) return Bad("base_model", "required");
  if (dataset.empty()) return Bad("dataset", "required");
  if (!(validation_split >= 0.0 && validation_split < 1.0)) {
    return Bad("validation_split", "must be in [0, 1)");
  }
  if (!OneOf(format, {"auto", "text", "prompt_completion", "chat", "alpaca", "tokenized"})) {
    return Bad("format", herd::StrCat("'", format,
                                      "' is not one of text, prompt_completion, chat, alpaca, "
                                      "tokenized, auto"));
  }
  if (!OneOf(chat_template, {"auto", "llama2", "llama3"})) {
    return Bad("chat_template", herd::StrCat("'", chat_template, "' is not one of llama2, llama3, auto"));
  }
  if (lora.r < 1 || lora.r > 4096) return Bad("lora.r", "must be in [1, 4096]");
  if (!(lora.alpha > 0)) return Bad("lora.alpha", "must be > 0");
  if (!(lora.dropout >= 0.0 && lora.dropout < 1.0)) return Bad("lora.dropout", "must be in [0, 1)");
  if (lora.target_modules.empty()) return Bad("lora.target_modules", "must not be empty");
  for (const std::string& t : lora.target_modules) {
    if (t != "all-linear" &&
        std::find(std::begin(kLoraTargets), std::end(kLoraTargets), t) == std::end(kLoraTargets)) {
      return Bad("lora.target_modules",
                 herd::StrCat("unknown module '", t, "' (use all-linear or any of ",
                              herd::StrJoin(kLoraTargets, ", "), ")"));
    }
  }
  const TrainingSpec& t = training;
  if (t.epochs < 1) return Bad("training.epochs", "must be >= 1");
  if (t.max_steps && *t.max_steps < 1) return Bad("training.max_steps", "must be >= 1 or null");
  if (t.micro_batch_size < 1) return Bad("training.micro_batch_size", "must be >= 1");
  if (t.global_batch_size < 1) return Bad("training.global_batch_size", "must be >= 1");
  if (t.global_batch_size % t.micro_batch_size != 0) {
    return Bad("training.global_batch_size", "must be a multiple of micro_batch_size");
  }
  if (!(t.learning_rate > 0 && t.learning_rate < 1)) {
    return Bad("training.learning_rate", "must be in (0, 1)");
  }
  if (!OneOf(t.lr_scheduler, {"cosine", "linear", "constant"})) {
    return Bad("training.lr_scheduler", herd::StrCat("'", t.lr_scheduler, "' is not one of cosine, linear, constant"));
  }
  if (!(t.warmup_ratio >= 0 && t.warmup_ratio < 1)) return Bad("training.warmup_ratio", "must be in [0, 1)");
  if (!(t.weight_decay >= 0)) return Bad("training.weight_decay", "must be >= 0");
  if (!(t.max_grad_norm >= 0)) return Bad("training.max_grad_norm", "must be >= 0 (0 disables clipping)");
  if (t.max_seq_len < 16 || t.max_seq_len > (1 << 20)) {
    return Bad("training.max_seq_len", "must be in [16, 1048576]");
  }
  if (checkpoints.every_steps < 1) return Bad("checkpoints.every_steps", "must be >= 1");
  if (checkpoints.keep < 1) return Bad("checkpoints.keep", "must be >= 1");
  if (resources.trainers < 1 || resources.trainers > 4096) {
    return Bad("resources.trainers", "must be in [1, 4096]");
  }
  if (t.global_batch_size % (t.micro_batch_size * resources.trainers) != 0) {
    return Bad("training.global_batch_size",
               herd::StrCat("must be a multiple of micro_batch_size x resources.trainers (",
                            t.micro_batch_size * resources.trainers, ")"));
  }
  return absl::OkStatus();
}

absl::StatusOr<JobSpec> ParseJobSpec(std::string_view yaml_text, std::string_view source) {
  HERD_ASSIGN_OR_RETURN(YAML::Node root, ParseYaml(yaml_text, source));
  JobSpec spec;
  YamlFields f(root, std::string(source));
  HERD_RETURN_IF_ERROR(f.Read("name", &spec.name));
  HERD_RETURN_IF_ERROR(f.Read("base_model", &spec.base_model));
  HERD_RETURN_IF_ERROR(f.Read("dataset", &spec.dataset));
  HERD_RETURN_IF_ERROR(f.Read("validation_dataset", &spec.validation_dataset));
  HERD_RETURN_IF_ERROR(f.Read("validation_split", &spec.validation_split));
  HERD_RETURN_IF_ERROR(f.Read("format", &spec.format));
  HERD_RETURN_IF_ERROR(f.Read("chat_template", &spec.chat_template));
  HERD_RETURN_IF_ERROR(f.Read("train_on_inputs", &spec.train_on_inputs));

  HERD_ASSIGN_OR_RETURN(YamlFields lora, f.Child("lora"));
  HERD_RETURN_IF_ERROR(lora.Read("r", &spec.lora.r));
  HERD_RETURN_IF_ERROR(lora.Read("alpha", &spec.lora.alpha));
  HERD_RETURN_IF_ERROR(lora.Read("dropout", &spec.lora.dropout));
  HERD_RETURN_IF_ERROR(lora.Read("target_modules", &spec.lora.target_modules));
  HERD_RETURN_IF_ERROR(lora.Read("rslora", &spec.lora.rslora));
  HERD_RETURN_IF_ERROR(lora.Finish());

  HERD_ASSIGN_OR_RETURN(YamlFields tr, f.Child("training"));
  TrainingSpec& t = spec.training;
  HERD_RETURN_IF_ERROR(tr.Read("epochs", &t.epochs));
  HERD_RETURN_IF_ERROR(tr.Read("max_steps", &t.max_steps));
  HERD_RETURN_IF_ERROR(tr.Read("micro_batch_size", &t.micro_batch_size));
  HERD_RETURN_IF_ERROR(tr.Read("global_batch_size", &t.global_batch_size));
  HERD_RETURN_IF_ERROR(tr.Read("learning_rate", &t.learning_rate));
  HERD_RETURN_IF_ERROR(tr.Read("lr_scheduler", &t.lr_scheduler));
  HERD_RETURN_IF_ERROR(tr.Read("warmup_ratio", &t.warmup_ratio));
  HERD_RETURN_IF_ERROR(tr.Read("weight_decay", &t.weight_decay));
  HERD_RETURN_IF_ERROR(tr.Read("max_grad_norm", &t.max_grad_norm));
  HERD_RETURN_IF_ERROR(tr.Read("max_seq_len", &t.max_seq_len));
  HERD_RETURN_IF_ERROR(tr.Read("packing", &t.packing));
  HERD_RETURN_IF_ERROR(tr.Read("seed", &t.seed));
  HERD_RETURN_IF_ERROR(tr.Read("activation_checkpointing", &t.activation_checkpointing));
  HERD_RETURN_IF_ERROR(tr.Finish());

  HERD_ASSIGN_OR_RETURN(YamlFields ck, f.Child("checkpoints"));
  HERD_RETURN_IF_ERROR(ck.Read("every_steps", &spec.checkpoints.every_steps));
  HERD_RETURN_IF_ERROR(ck.Read("keep", &spec.checkpoints.keep));
  HERD_RETURN_IF_ERROR(ck.Finish());

  HERD_ASSIGN_OR_RETURN(YamlFields rs, f.Child("resources"));
  HERD_RETURN_IF_ERROR(rs.Read("trainers", &spec.resources.trainers));
  HERD_RETURN_IF_ERROR(rs.Read("priority", &spec.resources.priority));
  HERD_RETURN_IF_ERROR(rs.Finish());
  HERD_RETURN_IF_ERROR(f.Finish());
  return spec;
}

absl::StatusOr<JobSpec> LoadJobSpec(const std::string& path) {
  HERD_ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  return ParseJobSpec(text, path);
}

std::string JobSpecToYaml(const JobSpec& s) {
  YAML::Emitter out;
  out << YAML::BeginMap;
  out << YAML::Key << "name" << YAML::Value << s.name;
  out << YAML::Key << "base_model" << YAML::Value << s.base_model;
  out << YAML::Key << "dataset" << YAML::Value << s.dataset;
  out << YAML::Key << "validation_dataset" << YAML::Value;
  if (s.validation_dataset.empty()) out << YAML::Null; else out << s.validation_dataset;
  out << YAML::Key << "validation_split" << YAML::Value << s.validation_split;
  out << YAML::Key << "format" << YAML::Value << s.format;
  out << YAML::Key << "chat_template" << YAML::Value << s.chat_template;
  out << YAML::Key << "train_on_inputs" << YAML::Value << s.train_on_inputs;
  out << YAML::Key << "lora" << YAML::Value << YAML::BeginMap
      << YAML::Key << "r" << YAML::Value << s.lora.r
      << YAML::Key << "alpha" << YAML::Value << s.lora.alpha
      << YAML::Key << "dropout" << YAML::Value << s.lora.dropout
      << YAML::Key << "target_modules" << YAML::Value << YAML::Flow << s.lora.target_modules
      << YAML::Key << "rslora" << YAML::Value << s.lora.rslora << YAML::EndMap;
  const TrainingSpec& t = s.training;
  out << YAML::Key << "training" << YAML::Value << YAML::BeginMap
      << YAML::Key << "epochs" << YAML::Value << t.epochs
      << YAML::Key << "max_steps" << YAML::Value;
  if (t.max_steps) out << *t.max_steps; else out << YAML::Null;
  out << YAML::Key << "micro_batch_size" << YAML::Value << t.micro_batch_size
      << YAML::Key << "global_batch_size" << YAML::Value << t.global_batch_size
      << YAML::Key << "learning_rate" << YAML::Value << t.learning_rate
      << YAML::Key << "lr_scheduler" << YAML::Value << t.lr_scheduler
      << YAML::Key << "warmup_ratio" << YAML::Value << t.warmup_ratio
      << YAML::Key << "weight_decay" << YAML::Value << t.weight_decay
      << YAML::Key << "max_grad_norm" << YAML::Value << t.max_grad_norm
      << YAML::Key << "max_seq_len" << YAML::Value << t.max_seq_len
      << YAML::Key << "packing" << YAML::Value << t.packing
      << YAML::Key << "seed" << YAML::Value << t.seed
      << YAML::Key << "activation_checkpointing" << YAML::Value << t.activation_checkpointing << YAML::EndMap;
  out << YAML::Key << "checkpoints" << YAML::Value << YAML::BeginMap
      << YAML::Key << "every_steps" << YAML::Value << s.checkpoints.every_steps
      << YAML::Key << "keep" << YAML::Value << s.checkpoints.keep << YAML::EndMap;
  out << YAML::Key << "resources" << YAML::Value << YAML::BeginMap
      << YAML::Key << "trainers" << YAML::Value << s.resources.trainers
      << YAML::Key << "priority" << YAML::Value << s.resources.priority << YAML::EndMap;
  out << YAML::EndMap;
  return std::string(out.c_str()) + "\n";
}

}  // namespace herd
