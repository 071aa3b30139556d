// herd.v1.TrainerService skin (trainers.proto), the trainer's side of the cluster: registration,
// heartbeats and rendezvous (auth, convert, call the Scheduler or the RendezvousStore, persist,
// convert back). The work RPCs of an assignment are in trainer_work.cc.
#include "coordinator/services/trainer_service.h"

#include <algorithm>
#include <cctype>
#include <map>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/log.h"
#include "common/rpc/rpc.h"
#include "common/sha256.h"
#include "common/status.h"
#include "common/strings.h"
#include "coordinator/services/auth.h"
#include "coordinator/services/convert.h"
#include "coordinator/services/trainer_convert.h"
#include "datasets/examples.h"
#include "nlohmann/json.hpp"

namespace herd::coordinator::services {
namespace {

namespace v1 = herd::v1;

constexpr int64_t kMaxRequestBytes = int64_t{16} << 20;  // trainers.proto: 16 MiB
constexpr int64_t kMaxFileBytes = int64_t{16} << 20;

grpc::Status Grpc(const absl::Status& status) { return rpc::ToGrpc(status); }



DeviceKind FromProto(v1::DeviceKind kind) {
  switch (kind) {
    case v1::DEVICE_KIND_CPU: return DeviceKind::kCpu;
    case v1::DEVICE_KIND_CUDA: return DeviceKind::kCuda;
    default: return DeviceKind::kUnspecified;
  }
}

v1::DeviceKind ToProto(DeviceKind kind) {
  switch (kind) {
    case DeviceKind::kCpu: return v1::DEVICE_KIND_CPU;
    case DeviceKind::kCuda: return v1::DEVICE_KIND_CUDA;
    default: return v1::DEVICE_KIND_UNSPECIFIED;
  }
}


absl::StatusOr<AssignmentPhase> FromProto(v1::AssignmentPhase phase) {
  switch (phase) {
    case v1::ASSIGNMENT_PHASE_PREPARING: return AssignmentPhase::kPreparing;
    case v1::ASSIGNMENT_PHASE_RENDEZVOUS: return AssignmentPhase::kRendezvous;
    case v1::ASSIGNMENT_PHASE_TRAINING: return AssignmentPhase::kTraining;
    case v1::ASSIGNMENT_PHASE_FINISHING: return AssignmentPhase::kFinishing;
    default: return absl::InvalidArgumentError("assignments[].phase is UNSPECIFIED");
  }
}


int JsonInt(const nlohmann::json& j, const char* key, int fallback = 0) {
  auto it = j.find(key);
  return it != j.end() && it->is_number_integer() ? it->get<int>() : fallback;
}

// The shape of a model from its config.json (cluster.proto ModelConfigSummary).
absl::StatusOr<ModelConfigSummary> ParseModelConfig(const std::string& model, const std::string& text) {
  nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) {
    return absl::InvalidArgumentError(StrCat("models[", model, "]: config.json is not a JSON object"));
  }
  ModelConfigSummary c;
  if (auto it = j.find("architectures"); it != j.end() && it->is_array() && !it->empty() &&
                                         (*it)[0].is_string()) {
    c.architecture = (*it)[0].get<std::string>();
  }
  c.num_layers = JsonInt(j, "num_hidden_layers");
  c.hidden_size = JsonInt(j, "hidden_size");
  c.intermediate_size = JsonInt(j, "intermediate_size");
  c.num_attention_heads = JsonInt(j, "num_attention_heads");
  c.num_key_value_heads = JsonInt(j, "num_key_value_heads", c.num_attention_heads);
  c.head_dim = JsonInt(j, "head_dim", c.num_attention_heads > 0 ? c.hidden_size / c.num_attention_heads : 0);
  c.vocab_size = JsonInt(j, "vocab_size");
  c.max_position_embeddings = JsonInt(j, "max_position_embeddings");
  auto number = [](const nlohmann::json& o, const char* key) -> double {
    auto it = o.find(key);
    return it != o.end() && it->is_number() ? it->get<double>() : 0.0;
  };
  c.rope_theta = number(j, "rope_theta");
  if (auto it = j.find("rope_parameters"); c.rope_theta == 0 && it != j.end() && it->is_object()) {
    c.rope_theta = number(*it, "rope_theta");
  }
  if (c.rope_theta == 0) c.rope_theta = 10000.0;  // the LLaMA default when absent
  if (auto it = j.find("tie_word_embeddings"); it != j.end() && it->is_boolean()) {
    c.tie_word_embeddings = it->get<bool>();
  }
  if (c.num_layers <= 0 || c.hidden_size <= 0 || c.num_attention_heads <= 0 || c.vocab_size <= 0) {
    return absl::InvalidArgumentError(StrCat(
        "models[", model,
        "]: config.json lacks num_hidden_layers, hidden_size, num_attention_heads or vocab_size"));
  }
  return c;
}

// "llama2" | "llama3" | "" from tokenizer_config.json's chat_template (a string, or a list of
// {name, template} whose "default" entry counts).
std::string DetectTemplate(const std::string& tokenizer_config) {
  nlohmann::json j = nlohmann::json::parse(tokenizer_config, nullptr, false);
  if (!j.is_object()) return "";
  auto it = j.find("chat_template");
  if (it == j.end()) return "";
  std::string jinja;
  if (it->is_string()) {
    jinja = it->get<std::string>();
  } else if (it->is_array()) {
    for (const auto& entry : *it) {
      if (entry.is_object() && entry.value("name", "") == "default" && entry.contains("template") &&
          entry["template"].is_string()) {
        jinja = entry["template"].get<std::string>();
      }
    }
  }
  auto detected = datasets::DetectChatTemplate(jinja);
  if (!detected.ok()) return "";
  switch (*detected) {
    case datasets::ChatTemplate::kLlama2: return "llama2";
    case datasets::ChatTemplate::kLlama3: return "llama3";
    default: return "";
  }
}

std::string_view StateWord(TrainerState state) {
  switch (state) {
    case TrainerState::kIdle: return "IDLE";
    case TrainerState::kBusy: return "BUSY";
    case TrainerState::kLost: return "LOST";
  }
  return "LOST";
}


}  // namespace

AssignmentRef FromProto(const v1::AssignmentRef& ref) {
  return AssignmentRef{.job_id = ref.job_id(), .generation = ref.generation(), .rank = ref.rank()};
}

void ToProto(const AssignmentRef& ref, v1::AssignmentRef* out) {
  out->set_job_id(ref.job_id);
  out->set_generation(ref.generation);
  out->set_rank(ref.rank);
}

// The scheduling part of an assignment (TrainerService::FillAssignment adds the job's part).
void ToProto(const Assignment& a, v1::Assignment* out) {
  ToProto(a.ref, out->mutable_ref());
  out->set_world_size(a.world_size);
  out->set_base_model(a.base_model);
  out->set_weights_sha256(a.weights_sha256);
  out->set_grad_accum_steps(static_cast<int32_t>(a.grad_accum_steps));
  out->set_device_kind(ToProto(a.device_kind));
  ToTimestamp(a.create_time, out->mutable_create_time());
}

// The scheduler has already acted when a write of its outcome fails: the caller retries (the
// registry resends assignments; a registration retried meets ALREADY_EXISTS until the lease
// runs out). Never a code that tells the agent to give up.
absl::Status Unrecorded(std::string_view what, const absl::Status& status) {
  HERD_LOG(Error) << "could not record " << what << ": " << status;
  return absl::UnavailableError(StrCat("could not record ", what, ": ", status.message(), "; retry"));
}

absl::StatusOr<store::Principal> AuthenticateCaller(const grpc::ServerContext& context,
                                                    const store::TokenStore& tokens, bool cluster_only) {
  HERD_ASSIGN_OR_RETURN(store::Principal principal, AuthenticateCall(context, tokens));
  if (cluster_only && principal.kind != store::TokenKind::kCluster) {
    return absl::PermissionDeniedError("TrainerService takes the cluster token, not a user token");
  }
  return principal;
}

absl::Status TrainerService::Register(const v1::RegisterTrainerRequest& request,
                                      v1::RegisterTrainerResponse& response) {
  if (static_cast<int64_t>(request.ByteSizeLong()) > kMaxRequestBytes) {
    return absl::ResourceExhaustedError("RegisterTrainer request is over 16 MiB: send fewer file contents per request");
  }
  if (request.models_size() > 64) {
    return absl::ResourceExhaustedError(StrCat("models: ", request.models_size(), " models, at most 64"));
  }
  const store::BlobStore& blobs = store_->blobs();
  // Store the contents sent; list the ones still missing.
  std::set<std::string> missing;
  for (const v1::ModelRegistration& model : request.models()) {
    if (model.files_size() > 32) {
      return absl::ResourceExhaustedError(
          StrCat("models[", model.name(), "]: ", model.files_size(), " files, at most 32"));
    }
    for (const v1::ModelFile& file : model.files()) {
      const std::string where = StrCat("models[", model.name(), "].files[", file.name(), "]");
      if (file.size_bytes() < 0 || file.size_bytes() > kMaxFileBytes) {
        return file.size_bytes() < 0 ? absl::InvalidArgumentError(StrCat(where, ": negative size"))
                                     : absl::ResourceExhaustedError(StrCat(where, ": over 16 MiB"));
      }
      if (file.has_content()) {
        if (static_cast<int64_t>(file.content().size()) != file.size_bytes() ||
            Sha256Hex(file.content()) != file.sha256()) {
          return absl::InvalidArgumentError(StrCat(where, ": content does not match its size_bytes and sha256"));
        }
        HERD_RETURN_IF_ERROR(blobs.Put(file.content()).status());
      } else if (!blobs.Has(file.sha256())) {
        missing.insert(file.sha256());
      }
    }
  }
  if (!missing.empty()) {
    for (const std::string& sha : missing) response.add_missing_file_sha256(sha);
    return absl::OkStatus();
  }

  TrainerRegistration reg;
  reg.name = request.name();
  reg.device_kind = FromProto(request.device().kind());
  reg.device_name = request.device().name();
  reg.device_index = request.device().index();
  reg.device_memory_bytes = request.device().memory_bytes();
  reg.metrics_address = request.metrics_address();
  reg.agent_version = request.agent_version();
  reg.engine_version = request.engine_version();
  std::vector<store::ModelRecord> records;
  for (const v1::ModelRegistration& model : request.models()) {
    HeldModel held;
    held.name = model.name();
    held.weights_sha256 = model.weights_sha256();
    held.weights_size_bytes = model.weights_size_bytes();
    store::ModelRecord record;
    record.name = model.name();
    record.weights_sha256 = model.weights_sha256();
    record.weights_size_bytes = model.weights_size_bytes();
    for (const v1::ModelFile& file : model.files()) {
      held.files[file.name()] = file.sha256();
      record.files.push_back({.name = file.name(), .blob = {.sha256 = file.sha256(), .size_bytes = file.size_bytes()}});
    }
    // Validate() names a missing config.json or tokenizer; parse what is there.
    if (auto it = held.files.find("config.json"); it != held.files.end()) {
      HERD_ASSIGN_OR_RETURN(std::string text, blobs.Read(it->second));
      HERD_ASSIGN_OR_RETURN(held.config, ParseModelConfig(model.name(), text));
    }
    held.tokenizer = held.files.count("tokenizer.json") ? "bpe" : "sentencepiece";
    if (auto it = held.files.find("tokenizer_config.json"); it != held.files.end()) {
      HERD_ASSIGN_OR_RETURN(std::string text, blobs.Read(it->second));
      held.chat_template = DetectTemplate(text);
    }
    reg.models.push_back(std::move(held));
    records.push_back(std::move(record));
  }

  // TODO(jobs): pass the base models of VALIDATING jobs (not yet in the scheduler) as
  // extra_models_in_use, so their files cannot change under preparation.
  HERD_ASSIGN_OR_RETURN(RegisterTrainerResult result, scheduler_->RegisterTrainer(reg));
  const RegisterResult& r = result.registration;

  // Persist: the models (the registry has accepted any change), the trainer, then the events.
  for (const store::ModelRecord& record : records) {
    if (auto put = store_->trainers().PutModel(record, /*replace=*/true); !put.ok()) {
      return Unrecorded(StrCat("model ", record.name), put.status());
    }
  }
  store::TrainerRecord trainer;
  trainer.id = r.trainer_id;  // one id per trainer in memory and on disk
  trainer.name = reg.name;
  trainer.state = std::string(StateWord(r.trainer.state));
  trainer.device = {.kind = reg.device_kind == DeviceKind::kCuda ? "CUDA" : "CPU",
                    .name = reg.device_name,
                    .index = reg.device_index,
                    .memory_bytes = reg.device_memory_bytes};
  trainer.metrics_address = reg.metrics_address;
  trainer.agent_version = reg.agent_version;
  trainer.engine_version = reg.engine_version;
  for (const HeldModel& m : reg.models) trainer.models.push_back(m.name);
  if (auto put = store_->trainers().Register(trainer); !put.ok()) {
    return Unrecorded(StrCat("trainer ", trainer.name), put.status());
  }
  if (absl::Status s = Persist(result.events); !s.ok()) {
    return Unrecorded("scheduler events", s);
  }

  response.set_trainer_id(r.trainer_id);
  response.set_session_id(r.session_id);
  ToDurationProto(r.heartbeat_interval, response.mutable_heartbeat_interval());
  ToDurationProto(r.lease, response.mutable_lease_duration());
  return absl::OkStatus();
}

grpc::Status TrainerService::RegisterTrainer(grpc::ServerContext* context,
                                             const v1::RegisterTrainerRequest* request,
                                             v1::RegisterTrainerResponse* response) {
  if (auto p = AuthenticateCaller(*context, store_->tokens(), true); !p.ok()) return Grpc(p.status());
  return Grpc(Register(*request, *response));
}

grpc::Status TrainerService::Heartbeat(grpc::ServerContext* context, const v1::HeartbeatRequest* request,
                                       v1::HeartbeatResponse* response) {
  if (auto p = AuthenticateCaller(*context, store_->tokens(), true); !p.ok()) return Grpc(p.status());
  std::vector<AssignmentStatus> statuses;
  for (const v1::AssignmentStatus& s : request->assignments()) {
    auto phase = FromProto(s.phase());
    if (!phase.ok()) return Grpc(phase.status());
    statuses.push_back({.ref = FromProto(s.ref()), .phase = *phase, .step = s.step()});
  }
  auto result = scheduler_->Heartbeat(request->trainer_id(), request->session_id(), statuses);
  if (!result.ok()) return Grpc(result.status());
  if (absl::Status s = Persist(result->events); !s.ok()) {
    return Grpc(Unrecorded("scheduler events", s));
  }
  for (const Cancellation& c : result->reply.cancellations) {
    v1::Cancellation* out = response->add_cancellations();
    ToProto(c.ref, out->mutable_ref());
    out->set_reason(c.reason);
  }
  for (const Assignment& a : result->reply.assignments) {
    v1::Assignment out;
    if (absl::Status s = FillAssignment(a, &out); !s.ok()) {
      // Resent with the next answer; the job's row should be readable by then.
      HERD_LOG(Error) << "assignment " << a.ref.ToString() << " not sent: " << s;
      continue;
    }
    *response->add_assignments() = std::move(out);
  }
  ToDurationProto(result->reply.heartbeat_interval, response->mutable_heartbeat_interval());
  return grpc::Status::OK;
}

grpc::Status TrainerService::PutRendezvousValue(grpc::ServerContext* context,
                                                const v1::PutRendezvousValueRequest* request,
                                                google::protobuf::Empty* /*response*/) {
  if (auto p = AuthenticateCaller(*context, store_->tokens(), true); !p.ok()) return Grpc(p.status());
  const AssignmentRef ref = FromProto(request->ref());
  if (absl::Status s = scheduler_->CheckAssignment(request->trainer_id(), ref); !s.ok()) return Grpc(s);
  // Values are in memory only (trainers.proto): a restart mid-rendezvous is recovered instead.
  return Grpc(rendezvous_->Put(ref.job_id, ref.generation, request->key(), request->value()).status());
}

grpc::Status TrainerService::GetRendezvousValue(grpc::ServerContext* context,
                                                const v1::GetRendezvousValueRequest* request,
                                                v1::GetRendezvousValueResponse* response) {
  if (auto p = AuthenticateCaller(*context, store_->tokens(), true); !p.ok()) return Grpc(p.status());
  const AssignmentRef ref = FromProto(request->ref());
  if (absl::Status s = scheduler_->CheckAssignment(request->trainer_id(), ref); !s.ok()) return Grpc(s);
  absl::Duration wait = absl::Seconds(request->wait().seconds()) + absl::Nanoseconds(request->wait().nanos());
  // Wait no longer than the caller will (the store's wait cannot see a cancelled call).
  const absl::Duration left = absl::FromChrono(context->deadline()) - absl::Now();
  if (wait > absl::ZeroDuration() && wait <= absl::Seconds(60) && left < wait) {
    wait = std::max(left, absl::ZeroDuration());
    if (wait == absl::ZeroDuration()) return Grpc(absl::DeadlineExceededError("the call's deadline has passed"));
  }
  auto value = rendezvous_->Get(ref.job_id, ref.generation, request->key(), wait);
  if (!value.ok()) return Grpc(value.status());
  response->set_value(*value);
  return grpc::Status::OK;
}

}  // namespace herd::coordinator::services
