// Preparer: herd-prepare as a child, its JSON report turned into a PreparationPlan.
#include "coordinator/preparation.h"

#include <filesystem>
#include <string_view>

#include "common/sharding.h"
#include "common/status.h"
#include "common/strings.h"
#include "common/subprocess.h"
#include "nlohmann/json.hpp"

namespace herd::coordinator {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

int64_t Int(const json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_number_integer() ? it->get<int64_t>() : 0;
}

std::string Upper(std::string s) {
  for (char& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return s;
}

std::string Lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// Runs herd-prepare once; returns its report.
absl::StatusOr<json> RunPrepare(const PreparerOptions& options, std::vector<std::string> args) {
  args.insert(args.begin(), options.herd_prepare);
  HERD_ASSIGN_OR_RETURN(SubprocessResult r, RunSubprocess({.argv = args, .timeout = options.timeout}));
  if (!r.ok()) {
    // herd-prepare's exit codes follow DESIGN.md §11: 2 = the input is at fault.
    if (r.exit_code == 2 || r.exit_code == 3) return absl::InvalidArgumentError(PrepareFailureReason(r));
    return absl::InternalError(PrepareFailureReason(r));
  }
  json report = json::parse(r.stdout_text, nullptr, /*allow_exceptions=*/false);
  if (!report.is_object()) {
    return absl::InternalError(StrCat("herd-prepare printed no JSON report: ", r.stdout_text.substr(0, 200)));
  }
  return report;
}

std::vector<std::string> CommonArgs(const JobSpec& spec, const std::string& model_dir) {
  std::vector<std::string> args = {"--model", model_dir,
                                   "--max-seq-len", std::to_string(spec.training.max_seq_len),
                                   "--seed", std::to_string(spec.training.seed),
                                   "--chat-template", spec.chat_template.empty() ? "auto" : spec.chat_template,
                                   "--format", spec.format.empty() ? "auto" : spec.format};
  if (spec.train_on_inputs) args.push_back("--train-on-inputs");
  if (!spec.training.packing) args.push_back("--no-packing");
  return args;
}

}  // namespace

std::string PrepareFailureReason(const SubprocessResult& r) {
  std::string text = r.stderr_text;
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  constexpr std::string_view kPrefix = "herd-prepare: ";
  if (text.rfind(kPrefix, 0) == 0) text = text.substr(kPrefix.size());
  if (text.size() > 3000) text = "..." + text.substr(text.size() - 3000);
  if (text.empty()) {
    text = r.signal ? StrCat("herd-prepare was killed by signal ", r.signal)
                    : StrCat("herd-prepare exited with code ", r.exit_code);
  }
  return text;
}

absl::Status PreparerOptions::Validate() const {
  if (herd_prepare.empty()) return absl::InvalidArgumentError("preparation: no herd-prepare program configured");
  if (work_dir.empty()) return absl::InvalidArgumentError("preparation: no work folder configured");
  if (timeout <= absl::ZeroDuration()) return absl::InvalidArgumentError("preparation: timeout must be positive");
  return absl::OkStatus();
}

std::string PreparationPlan::ToProtoJson() const {
  json j = {
      {"format", StrCat("RECORD_FORMAT_", Upper(format))},
      {"records", records},
      {"records_truncated", records_truncated},
      {"records_dropped", records_dropped},
      {"tokens", tokens},
      {"trained_tokens", trained_tokens},
      {"sequences", sequences},
      {"packing_efficiency", packing_efficiency},
      {"validation_records", validation_records},
      {"validation_sequences", validation_sequences},
      {"steps_per_epoch", steps_per_epoch},
      {"total_steps", total_steps},
      {"world_size", world_size},
      {"grad_accum_steps", grad_accum_steps},
      {"warnings", warnings},
  };
  if (!chat_template.empty()) j["chat_template"] = StrCat("CHAT_TEMPLATE_", Upper(chat_template));
  return j.dump();
}

absl::StatusOr<PreparationPlan> PreparationPlan::FromProtoJson(const std::string& text) {
  json j = json::parse(text, nullptr, false);
  if (!j.is_object()) return absl::InternalError("stored preparation plan is not a JSON object");
  PreparationPlan p;
  auto name = [&](const char* key, std::string_view prefix) {
    std::string v = j.value(key, "");
    return v.rfind(prefix, 0) == 0 ? Lower(v.substr(prefix.size())) : std::string();
  };
  p.format = name("format", "RECORD_FORMAT_");
  p.chat_template = name("chat_template", "CHAT_TEMPLATE_");
  p.records = Int(j, "records");
  p.records_truncated = Int(j, "records_truncated");
  p.records_dropped = Int(j, "records_dropped");
  p.tokens = Int(j, "tokens");
  p.trained_tokens = Int(j, "trained_tokens");
  p.sequences = Int(j, "sequences");
  p.packing_efficiency = j.value("packing_efficiency", 0.0);
  p.validation_records = Int(j, "validation_records");
  p.validation_sequences = Int(j, "validation_sequences");
  p.steps_per_epoch = Int(j, "steps_per_epoch");
  p.total_steps = Int(j, "total_steps");
  p.world_size = static_cast<int32_t>(Int(j, "world_size"));
  p.grad_accum_steps = static_cast<int32_t>(Int(j, "grad_accum_steps"));
  if (auto it = j.find("warnings"); it != j.end() && it->is_array()) {
    for (const json& w : *it) {
      if (w.is_string()) p.warnings.push_back(w.get<std::string>());
    }
  }
  return p;
}

absl::Status FillSchedule(const JobSpec& spec, PreparationPlan& plan) {
  ShardShape shape{.num_sequences = plan.sequences,
                   .epochs = spec.training.epochs,
                   .global_batch = spec.training.global_batch_size,
                   .micro_batch = spec.training.micro_batch_size,
                   .world_size = spec.resources.trainers,
                   .seed = static_cast<uint64_t>(spec.training.seed)};
  HERD_RETURN_IF_ERROR(shape.Validate());
  const int64_t g = spec.training.global_batch_size;
  plan.steps_per_epoch = (plan.sequences + g - 1) / g;
  plan.total_steps = shape.TotalSteps();
  if (spec.training.max_steps) plan.total_steps = std::min(plan.total_steps, *spec.training.max_steps);
  plan.world_size = static_cast<int32_t>(spec.resources.trainers);
  plan.grad_accum_steps = static_cast<int32_t>(shape.GradAccum());
  if (plan.total_steps < 1) return absl::InvalidArgumentError("the prepared data makes no training step");
  return absl::OkStatus();
}

absl::StatusOr<PreparationOutput> Preparer::Prepare(const PreparationInput& in, const std::string& scratch) const {
  HERD_RETURN_IF_ERROR(options_.Validate());
  // The model directory herd-prepare reads: links to the published files.
  const std::string model_dir = StrCat(scratch, "/model");
  std::error_code ec;
  fs::create_directories(model_dir, ec);
  if (ec) return absl::UnavailableError(StrCat("cannot create ", model_dir, ": ", ec.message()));
  for (const auto& [name, path] : in.model_files) {
    if (name.find('/') != std::string::npos || name == ".." || name == ".") {
      return absl::InternalError(StrCat("model file name ", name, " is not a plain name"));
    }
    fs::create_symlink(path, StrCat(model_dir, "/", name), ec);
    if (ec) return absl::UnavailableError(StrCat("cannot link ", name, " into ", model_dir, ": ", ec.message()));
  }

  PreparationOutput out;
  out.train_path = StrCat(scratch, "/train.prepared");
  const double split = in.validation_path.empty() ? in.spec.validation_split : 0.0;
  std::vector<std::string> args = CommonArgs(in.spec, model_dir);
  args.insert(args.end(), {"--data", in.dataset_path, "--out", out.train_path, "--validation-split",
                           StrCat(split)});
  if (split > 0) args.insert(args.end(), {"--validation-out", StrCat(scratch, "/validation.prepared")});
  if (in.skip_invalid) args.push_back("--skip-invalid");
  HERD_ASSIGN_OR_RETURN(json report, RunPrepare(options_, args));

  PreparationPlan& plan = out.plan;
  plan.format = report.value("format", "");
  const bool templated = plan.format == "chat" || plan.format == "alpaca";
  plan.chat_template = templated ? report.value("chat_template", "") : "";
  if (plan.chat_template == "auto") plan.chat_template = "";
  const json& train = report["train"];
  plan.records = Int(report, "train_records");
  plan.records_truncated = Int(train, "truncated");
  plan.records_dropped = Int(train, "dropped_too_long") + Int(train, "dropped_untrained");
  plan.tokens = Int(train, "tokens");
  plan.trained_tokens = Int(train, "trained_tokens");
  plan.sequences = Int(train, "sequences");
  const int64_t slots = Int(train, "slots");
  plan.packing_efficiency = slots > 0 ? static_cast<double>(plan.tokens) / static_cast<double>(slots) : 0.0;
  if (split > 0 && report["validation"].is_object()) {
    out.validation_path = StrCat(scratch, "/validation.prepared");
    plan.validation_records = Int(report, "validation_records");
    plan.validation_sequences = Int(report["validation"], "sequences");
  }
  if (!in.validation_path.empty()) {
    std::vector<std::string> vargs = CommonArgs(in.spec, model_dir);
    const std::string vpath = StrCat(scratch, "/validation.prepared");
    vargs.insert(vargs.end(), {"--data", in.validation_path, "--out", vpath, "--validation-split", "0"});
    if (in.validation_skip_invalid) vargs.push_back("--skip-invalid");
    auto vreport = RunPrepare(options_, vargs);
    if (!vreport.ok()) {
      return absl::Status(vreport.status().code(), StrCat("validation dataset: ", vreport.status().message()));
    }
    out.validation_path = vpath;
    plan.validation_records = Int(*vreport, "train_records");
    plan.validation_sequences = Int((*vreport)["train"], "sequences");
  }
  if (plan.sequences == 0) {
    return absl::InvalidArgumentError(StrCat("no training record is left after preparation (max_seq_len ",
                                             in.spec.training.max_seq_len, ")"));
  }
  HERD_RETURN_IF_ERROR(FillSchedule(in.spec, plan));
  if (plan.records > 0 && plan.records_truncated * 10 >= plan.records) {
    plan.warnings.push_back(StrCat(plan.records_truncated * 100 / plan.records, "% of records were truncated to ",
                                   in.spec.training.max_seq_len, " tokens"));
  }
  if (plan.records_dropped > 0) {
    plan.warnings.push_back(StrCat(plan.records_dropped, " records were dropped (too long or nothing to train on)"));
  }
  if (plan.sequences < in.spec.training.global_batch_size) {
    plan.warnings.push_back(StrCat("only ", plan.sequences, " sequences for a global batch of ",
                                   in.spec.training.global_batch_size));
  }
  return out;
}

}  // namespace herd::coordinator
