// JobSpec <-> herd.v1.JobSpec.
#include "common/rpc/job_spec_proto.h"

#include <algorithm>
#include <string>
#include <string_view>

#include "common/status.h"
#include "common/strings.h"

namespace herd::rpc {
namespace {

// Job-file spellings of the wire enums, indexed by enum value; [0] is what UNSPECIFIED means.
constexpr std::string_view kFormats[] = {"auto", "text", "prompt_completion", "chat", "alpaca",
                                         "tokenized"};
constexpr std::string_view kChatTemplates[] = {"auto", "llama2", "llama3"};
constexpr std::string_view kLrSchedulers[] = {"cosine", "cosine", "linear", "constant"};

template <size_t N>
absl::StatusOr<std::string> EnumName(std::string_view field, int value,
                                     const std::string_view (&names)[N]) {
  if (value < 0 || value >= static_cast<int>(N)) {
    return absl::InvalidArgumentError(herd::StrCat(field, ": unknown value ", value));
  }
  return std::string(names[value]);
}

template <size_t N>
int EnumValue(std::string_view name, const std::string_view (&names)[N]) {
  // The last match, so "cosine" maps to LR_SCHEDULER_COSINE rather than UNSPECIFIED.
  for (int i = static_cast<int>(N) - 1; i >= 0; --i) {
    if (names[i] == name) return i;
  }
  return 0;
}

}  // namespace

absl::StatusOr<JobSpec> JobSpecFromProto(const herd::v1::JobSpec& in) {
  JobSpec spec;  // starts with every default of DESIGN.md §11
  spec.name = in.name();
  spec.base_model = in.base_model();
  spec.dataset = in.dataset_id();
  spec.validation_dataset = in.validation_dataset_id();
  if (in.has_validation_split()) spec.validation_split = in.validation_split();
  HERD_ASSIGN_OR_RETURN(spec.format, EnumName("spec.format", in.format(), kFormats));
  HERD_ASSIGN_OR_RETURN(spec.chat_template,
                        EnumName("spec.chat_template", in.chat_template(), kChatTemplates));
  if (in.has_train_on_inputs()) spec.train_on_inputs = in.train_on_inputs();
  if (in.overlong_records() == herd::v1::OVERLONG_POLICY_DROP) {
    return absl::UnimplementedError("spec.overlong_records: DROP is not supported yet; leave it unset (truncate)");
  }
  if (in.overlong_records() != herd::v1::OVERLONG_POLICY_UNSPECIFIED &&
      in.overlong_records() != herd::v1::OVERLONG_POLICY_TRUNCATE) {
    return absl::InvalidArgumentError(
        herd::StrCat("spec.overlong_records: unknown value ", static_cast<int>(in.overlong_records())));
  }

  const herd::v1::LoraConfig& l = in.lora();
  if (l.has_r()) spec.lora.r = l.r();
  if (l.has_alpha()) spec.lora.alpha = l.alpha();
  if (l.has_dropout()) spec.lora.dropout = l.dropout();
  if (l.has_rslora()) spec.lora.rslora = l.rslora();
  if (l.target_modules_size() > 0) {
    spec.lora.target_modules.assign(l.target_modules().begin(), l.target_modules().end());
    for (int i = 0; i < l.target_modules_size(); ++i) {
      if (std::count(l.target_modules().begin(), l.target_modules().end(), l.target_modules(i)) > 1) {
        return absl::InvalidArgumentError(
            herd::StrCat("spec.lora.target_modules: '", l.target_modules(i), "' is listed twice"));
      }
    }
    if (l.target_modules_size() > 1 &&
        std::count(l.target_modules().begin(), l.target_modules().end(), "all-linear") > 0) {
      return absl::InvalidArgumentError(
          "spec.lora.target_modules: all-linear must be the only value when given");
    }
  }

  const herd::v1::TrainingConfig& t = in.training();
  TrainingSpec& ts = spec.training;
  if (t.has_epochs()) ts.epochs = t.epochs();
  if (t.has_max_steps()) ts.max_steps = t.max_steps();
  if (t.has_micro_batch_size()) ts.micro_batch_size = t.micro_batch_size();
  if (t.has_global_batch_size()) ts.global_batch_size = t.global_batch_size();
  if (t.has_learning_rate()) ts.learning_rate = t.learning_rate();
  HERD_ASSIGN_OR_RETURN(ts.lr_scheduler,
                        EnumName("spec.training.lr_scheduler", t.lr_scheduler(), kLrSchedulers));
  if (t.has_warmup_ratio()) ts.warmup_ratio = t.warmup_ratio();
  if (t.has_weight_decay()) ts.weight_decay = t.weight_decay();
  if (t.has_max_grad_norm()) ts.max_grad_norm = t.max_grad_norm();
  if (t.has_max_seq_len()) ts.max_seq_len = t.max_seq_len();
  if (t.has_packing()) ts.packing = t.packing();
  if (t.has_seed()) ts.seed = t.seed();
  if (t.has_activation_checkpointing()) ts.activation_checkpointing = t.activation_checkpointing();

  if (in.checkpoints().has_every_steps()) spec.checkpoints.every_steps = in.checkpoints().every_steps();
  if (in.checkpoints().has_keep()) spec.checkpoints.keep = in.checkpoints().keep();
  if (in.resources().has_trainers()) spec.resources.trainers = in.resources().trainers();
  if (in.resources().has_priority()) spec.resources.priority = in.resources().priority();

  // Validate before expanding, so an unknown module is reported by name.
  HERD_RETURN_IF_ERROR(spec.Validate());
  spec.lora.target_modules = spec.lora.ExpandedTargets();
  return spec;
}

void JobSpecToProto(const JobSpec& in, herd::v1::JobSpec* out) {
  out->set_name(in.name);
  out->set_base_model(in.base_model);
  out->set_dataset_id(in.dataset);
  out->set_validation_dataset_id(in.validation_dataset);
  out->set_validation_split(in.validation_split);
  out->set_format(static_cast<herd::v1::RecordFormat>(EnumValue(in.format, kFormats)));
  out->set_chat_template(static_cast<herd::v1::ChatTemplate>(EnumValue(in.chat_template, kChatTemplates)));
  out->set_train_on_inputs(in.train_on_inputs);
  out->set_overlong_records(herd::v1::OVERLONG_POLICY_TRUNCATE);
  herd::v1::LoraConfig* l = out->mutable_lora();
  l->set_r(in.lora.r);
  l->set_alpha(in.lora.alpha);
  l->set_dropout(in.lora.dropout);
  for (const std::string& m : in.lora.ExpandedTargets()) l->add_target_modules(m);
  l->set_rslora(in.lora.rslora);
  herd::v1::TrainingConfig* t = out->mutable_training();
  t->set_epochs(static_cast<int32_t>(in.training.epochs));
  if (in.training.max_steps) t->set_max_steps(*in.training.max_steps);
  t->set_micro_batch_size(static_cast<int32_t>(in.training.micro_batch_size));
  t->set_global_batch_size(static_cast<int32_t>(in.training.global_batch_size));
  t->set_learning_rate(in.training.learning_rate);
  t->set_lr_scheduler(static_cast<herd::v1::LrScheduler>(EnumValue(in.training.lr_scheduler, kLrSchedulers)));
  t->set_warmup_ratio(in.training.warmup_ratio);
  t->set_weight_decay(in.training.weight_decay);
  t->set_max_grad_norm(in.training.max_grad_norm);
  t->set_max_seq_len(static_cast<int32_t>(in.training.max_seq_len));
  t->set_packing(in.training.packing);
  t->set_seed(in.training.seed);
  t->set_activation_checkpointing(in.training.activation_checkpointing);
  out->mutable_checkpoints()->set_every_steps(in.checkpoints.every_steps);
  out->mutable_checkpoints()->set_keep(static_cast<int32_t>(in.checkpoints.keep));
  out->mutable_resources()->set_trainers(static_cast<int32_t>(in.resources.trainers));
  out->mutable_resources()->set_priority(static_cast<int32_t>(in.resources.priority));
}

}  // namespace herd::rpc
