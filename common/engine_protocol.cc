// Assignment (de)serialisation and line framing of the engine protocol.
#include "common/engine_protocol.h"

#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "common/status.h"
#include "common/strings.h"

namespace herd {
namespace {

using nlohmann::json;

// Reads typed fields out of a JSON object, naming the dotted path of anything missing or wrong.
class Fields {
 public:
  Fields(const json& j, std::string prefix) : j_(j), prefix_(std::move(prefix)) {}

  template <typename T>
  absl::Status Get(const char* key, T* out, bool required = true) const {
    auto it = j_.find(key);
    if (it == j_.end() || it->is_null()) {
      return required ? absl::InvalidArgumentError(herd::StrCat("assignment: ", prefix_, key, " is missing"))
                      : absl::OkStatus();
    }
    try {
      if constexpr (std::is_same_v<T, bool>) {
        if (!it->is_boolean()) throw std::runtime_error("not a bool");
      } else if constexpr (std::is_integral_v<T>) {
        if (!it->is_number_integer()) throw std::runtime_error("not an integer");
      } else if constexpr (std::is_floating_point_v<T>) {
        if (!it->is_number()) throw std::runtime_error("not a number");
      } else if constexpr (std::is_same_v<T, std::string>) {
        if (!it->is_string()) throw std::runtime_error("not a string");
      }
      *out = it->get<T>();
    } catch (const std::exception& e) {
      return absl::InvalidArgumentError(herd::StrCat("assignment: ", prefix_, key, " is ", it->type_name(),
                                                     ", expected another type"));
    }
    return absl::OkStatus();
  }
  absl::StatusOr<Fields> Child(const char* key) const {
    auto it = j_.find(key);
    if (it == j_.end() || !it->is_object()) {
      return absl::InvalidArgumentError(herd::StrCat("assignment: ", prefix_, key, " must be an object"));
    }
    return Fields(*it, herd::StrCat(prefix_, key, "."));
  }

 private:
  const json& j_;
  std::string prefix_;
};

}  // namespace

json ProtocolMessage(const std::string& type, json fields) {
  fields["v"] = kEngineProtocolVersion;
  fields["type"] = type;
  return fields;
}

json AssignmentToJson(const EngineAssignment& a) {
  const TrainingSpec& t = a.training;
  json j = ProtocolMessage("assignment");
  j["job_id"] = a.job_id;
  j["generation"] = a.generation;
  j["rank"] = a.rank;
  j["world_size"] = a.world_size;
  j["device"] = a.device;
  j["model"] = {{"name", a.model_name}, {"dir", a.model_dir}};
  j["data"] = {{"train", a.train_data},
               {"validation", a.validation_data.empty() ? json(nullptr) : json(a.validation_data)}};
  j["lora"] = {{"r", a.lora.r}, {"alpha", a.lora.alpha}, {"dropout", a.lora.dropout},
               {"target_modules", a.lora.ExpandedTargets()}, {"rslora", a.lora.rslora}};
  j["training"] = {{"epochs", t.epochs}, {"max_steps", t.max_steps ? json(*t.max_steps) : json(nullptr)},
                   {"micro_batch_size", t.micro_batch_size}, {"global_batch_size", t.global_batch_size},
                   {"learning_rate", t.learning_rate}, {"lr_scheduler", t.lr_scheduler},
                   {"warmup_ratio", t.warmup_ratio}, {"weight_decay", t.weight_decay},
                   {"max_grad_norm", t.max_grad_norm}, {"max_seq_len", t.max_seq_len},
                   {"packing", t.packing}, {"seed", t.seed}};
  j["schedule"] = {{"total_steps", a.total_steps}, {"steps_per_epoch", a.steps_per_epoch},
                   {"grad_accum_steps", a.grad_accum_steps}, {"eval_every_steps", a.eval_every_steps},
                   {"checkpoint_every_steps", a.checkpoint_every_steps}};
  j["resume"] = a.resume_step ? json{{"step", *a.resume_step}, {"dir", a.resume_dir}} : json(nullptr);
  j["init_adapter"] = a.init_adapter_dir.empty() ? json(nullptr) : json(a.init_adapter_dir);
  j["scratch_dir"] = a.scratch_dir;
  j["collective"] = {{"backend", a.collective_backend}, {"bind_address", a.bind_address},
                     {"advertise_address", a.advertise_address}, {"timeout_seconds", a.collective_timeout_seconds}};
  j["silence_timeout_seconds"] = a.silence_timeout_seconds;
  j["cancel_grace_seconds"] = a.cancel_grace_seconds;
  j["activation_checkpointing"] = t.activation_checkpointing;
  if (!a.weights_dtype.empty()) j["weights_dtype"] = a.weights_dtype;
  return j;
}

absl::StatusOr<EngineAssignment> AssignmentFromJson(const json& j) {
  EngineAssignment a;
  Fields f(j, "");
  HERD_RETURN_IF_ERROR(f.Get("job_id", &a.job_id));
  HERD_RETURN_IF_ERROR(f.Get("generation", &a.generation));
  HERD_RETURN_IF_ERROR(f.Get("rank", &a.rank));
  HERD_RETURN_IF_ERROR(f.Get("world_size", &a.world_size));
  HERD_RETURN_IF_ERROR(f.Get("device", &a.device));
  HERD_ASSIGN_OR_RETURN(Fields model, f.Child("model"));
  HERD_RETURN_IF_ERROR(model.Get("name", &a.model_name));
  HERD_RETURN_IF_ERROR(model.Get("dir", &a.model_dir));
  HERD_ASSIGN_OR_RETURN(Fields data, f.Child("data"));
  HERD_RETURN_IF_ERROR(data.Get("train", &a.train_data));
  HERD_RETURN_IF_ERROR(data.Get("validation", &a.validation_data, /*required=*/false));
  HERD_ASSIGN_OR_RETURN(Fields lora, f.Child("lora"));
  HERD_RETURN_IF_ERROR(lora.Get("r", &a.lora.r));
  HERD_RETURN_IF_ERROR(lora.Get("alpha", &a.lora.alpha));
  HERD_RETURN_IF_ERROR(lora.Get("dropout", &a.lora.dropout));
  HERD_RETURN_IF_ERROR(lora.Get("target_modules", &a.lora.target_modules));
  HERD_RETURN_IF_ERROR(lora.Get("rslora", &a.lora.rslora));
  HERD_ASSIGN_OR_RETURN(Fields tr, f.Child("training"));
  TrainingSpec& t = a.training;
  HERD_RETURN_IF_ERROR(tr.Get("epochs", &t.epochs));
  int64_t max_steps = 0;
  HERD_RETURN_IF_ERROR(tr.Get("max_steps", &max_steps, /*required=*/false));
  if (max_steps > 0) t.max_steps = max_steps;
  HERD_RETURN_IF_ERROR(tr.Get("micro_batch_size", &t.micro_batch_size));
  HERD_RETURN_IF_ERROR(tr.Get("global_batch_size", &t.global_batch_size));
  HERD_RETURN_IF_ERROR(tr.Get("learning_rate", &t.learning_rate));
  HERD_RETURN_IF_ERROR(tr.Get("lr_scheduler", &t.lr_scheduler));
  HERD_RETURN_IF_ERROR(tr.Get("warmup_ratio", &t.warmup_ratio));
  HERD_RETURN_IF_ERROR(tr.Get("weight_decay", &t.weight_decay));
  HERD_RETURN_IF_ERROR(tr.Get("max_grad_norm", &t.max_grad_norm));
  HERD_RETURN_IF_ERROR(tr.Get("max_seq_len", &t.max_seq_len));
  HERD_RETURN_IF_ERROR(tr.Get("packing", &t.packing));
  HERD_RETURN_IF_ERROR(tr.Get("seed", &t.seed));
  HERD_ASSIGN_OR_RETURN(Fields sched, f.Child("schedule"));
  HERD_RETURN_IF_ERROR(sched.Get("total_steps", &a.total_steps));
  HERD_RETURN_IF_ERROR(sched.Get("steps_per_epoch", &a.steps_per_epoch, false));
  HERD_RETURN_IF_ERROR(sched.Get("grad_accum_steps", &a.grad_accum_steps, false));
  HERD_RETURN_IF_ERROR(sched.Get("eval_every_steps", &a.eval_every_steps));
  HERD_RETURN_IF_ERROR(sched.Get("checkpoint_every_steps", &a.checkpoint_every_steps));
  if (auto it = j.find("resume"); it != j.end() && !it->is_null()) {
    HERD_ASSIGN_OR_RETURN(Fields resume, f.Child("resume"));
    int64_t step = 0;
    HERD_RETURN_IF_ERROR(resume.Get("step", &step));
    HERD_RETURN_IF_ERROR(resume.Get("dir", &a.resume_dir));
    a.resume_step = step;
  }
  HERD_RETURN_IF_ERROR(f.Get("init_adapter", &a.init_adapter_dir, /*required=*/false));
  HERD_RETURN_IF_ERROR(f.Get("scratch_dir", &a.scratch_dir));
  HERD_ASSIGN_OR_RETURN(Fields coll, f.Child("collective"));
  HERD_RETURN_IF_ERROR(coll.Get("backend", &a.collective_backend));
  HERD_RETURN_IF_ERROR(coll.Get("bind_address", &a.bind_address));
  HERD_RETURN_IF_ERROR(coll.Get("advertise_address", &a.advertise_address));
  HERD_RETURN_IF_ERROR(coll.Get("timeout_seconds", &a.collective_timeout_seconds));
  HERD_RETURN_IF_ERROR(f.Get("silence_timeout_seconds", &a.silence_timeout_seconds, false));
  HERD_RETURN_IF_ERROR(f.Get("cancel_grace_seconds", &a.cancel_grace_seconds, false));
  HERD_RETURN_IF_ERROR(f.Get("activation_checkpointing", &t.activation_checkpointing, false));
  HERD_RETURN_IF_ERROR(f.Get("weights_dtype", &a.weights_dtype, false));
  if (!a.weights_dtype.empty() && a.weights_dtype != "bf16" && a.weights_dtype != "fp32") {
    return absl::InvalidArgumentError(
        herd::StrCat("assignment: weights_dtype '", a.weights_dtype, "' is not bf16 or fp32"));
  }
  if (a.world_size < 1 || a.rank < 0 || a.rank >= a.world_size) {
    return absl::InvalidArgumentError(herd::StrCat("assignment: rank ", a.rank, " of world_size ", a.world_size));
  }
  if (a.collective_backend != "tcp" && a.collective_backend != "nccl") {
    return absl::InvalidArgumentError(herd::StrCat("assignment: collective.backend '", a.collective_backend,
                                                   "' is not tcp or nccl"));
  }
  return a;
}

absl::Status WriteProtocolLine(int fd, const json& message) {
  std::string line = message.dump(-1, ' ', false, json::error_handler_t::replace) + "\n";
  size_t off = 0;
  while (off < line.size()) {
    ssize_t n = ::write(fd, line.data() + off, line.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return absl::UnavailableError(herd::StrCat("protocol write: ", std::strerror(errno)));
    off += static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

absl::StatusCode StatusCodeFromName(std::string_view name) {
  for (int c = 0; c <= static_cast<int>(absl::StatusCode::kUnauthenticated); ++c) {
    const auto code = static_cast<absl::StatusCode>(c);
    if (absl::StatusCodeToString(code) == name) return code;
  }
  return absl::StatusCode::kUnknown;
}

absl::StatusOr<json> ParseProtocolLine(const std::string& line) {
  if (line.size() > kMaxProtocolLineBytes) return absl::InvalidArgumentError("protocol line longer than 1 MiB");
  json j = json::parse(line, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return absl::InvalidArgumentError("protocol line is not a JSON object");
  if (!j.contains("v") || !j["v"].is_number_integer() || !j.contains("type") || !j["type"].is_string()) {
    return absl::InvalidArgumentError("protocol line lacks an integer v or a string type");
  }
  if (j["v"].get<int>() != kEngineProtocolVersion) {
    return absl::InvalidArgumentError(herd::StrCat("protocol version ", j["v"].get<int>(), " is not ",
                                                   kEngineProtocolVersion));
  }
  return j;
}

}  // namespace herd
