// herd.v1.ClusterService skin (cluster.proto): auth, read the registry/scheduler/store, convert.
#include "coordinator/services/cluster_service.h"

#include <algorithm>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "common/rpc/rpc.h"
#include "common/status.h"
#include "common/strings.h"
#include "coordinator/services/convert.h"
#include "coordinator/services/trainer_service.h"

namespace herd::coordinator::services {
namespace {

namespace v1 = herd::v1;

grpc::Status Grpc(const absl::Status& status) { return rpc::ToGrpc(status); }


v1::TrainerState ToProto(TrainerState s) {
  switch (s) {
    case TrainerState::kIdle: return v1::TRAINER_STATE_IDLE;
    case TrainerState::kBusy: return v1::TRAINER_STATE_BUSY;
    case TrainerState::kLost: return v1::TRAINER_STATE_LOST;
  }
  return v1::TRAINER_STATE_UNSPECIFIED;
}

v1::DeviceKind ToProto(DeviceKind kind) {
  switch (kind) {
    case DeviceKind::kCpu: return v1::DEVICE_KIND_CPU;
    case DeviceKind::kCuda: return v1::DEVICE_KIND_CUDA;
    default: return v1::DEVICE_KIND_UNSPECIFIED;
  }
}

// Page tokens are "p" + the hex of the last name returned: opaque to clients, and since lists
// are by name, stable while trainers come and go.
std::string PageToken(const std::string& last_name) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out = "p";
  for (unsigned char c : last_name) {
    out.push_back(kHex[c >> 4]);
    out.push_back(kHex[c & 15]);
  }
  return out;
}

absl::StatusOr<std::string> ParsePageToken(const std::string& token) {
  const absl::Status bad = absl::InvalidArgumentError("page_token: not a token this list returned");
  if (token.empty()) return std::string();
  if (token[0] != 'p' || token.size() % 2 != 1) return bad;
  std::string out;
  auto nibble = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
  };
  for (size_t i = 1; i < token.size(); i += 2) {
    int hi = nibble(token[i]), lo = nibble(token[i + 1]);
    if (hi < 0 || lo < 0) return bad;
    out.push_back(static_cast<char>(hi * 16 + lo));
  }
  if (out.empty()) return bad;
  return out;
}

absl::StatusOr<int> PageSize(int32_t requested) {
  if (requested < 0) return absl::InvalidArgumentError("page_size: negative");
  if (requested == 0) return 100;
  return std::min(requested, 1000);
}

}  // namespace

grpc::Status ClusterService::ListTrainers(grpc::ServerContext* context, const v1::ListTrainersRequest* request,
                                          v1::ListTrainersResponse* response) {
  auto principal = AuthenticateCaller(*context, store_->tokens(), /*cluster_only=*/false);
  if (!principal.ok()) return Grpc(principal.status());
  auto size = PageSize(request->page_size());
  if (!size.ok()) return Grpc(size.status());
  auto after = ParsePageToken(request->page_token());
  if (!after.ok()) return Grpc(after.status());
  std::set<int> states;
  for (int s : request->states()) {
    if (s == v1::TRAINER_STATE_UNSPECIFIED || !v1::TrainerState_IsValid(s)) {
      return Grpc(absl::InvalidArgumentError("states: UNSPECIFIED or unknown trainer state"));
    }
    states.insert(s);
  }
  const bool cluster = principal->kind == store::TokenKind::kCluster;
  std::map<std::string, std::string> tenant_of_job;  // job id -> tenant, looked up once
  for (const TrainerInfo& t : registry_->ListTrainers()) {
    if (!after->empty() && t.registration.name <= *after) continue;
    const v1::TrainerState state = ToProto(t.state);
    if (!states.empty() && !states.count(state)) continue;
    if (response->trainers_size() == *size) {
      response->set_next_page_token(PageToken(response->trainers(response->trainers_size() - 1).name()));
      break;
    }
    v1::Trainer* out = response->add_trainers();
    out->set_id(t.id);
    out->set_name(t.registration.name);
    out->set_state(state);
    out->mutable_device()->set_kind(ToProto(t.registration.device_kind));
    out->mutable_device()->set_name(t.registration.device_name);
    out->mutable_device()->set_index(t.registration.device_index);
    out->mutable_device()->set_memory_bytes(t.registration.device_memory_bytes);
    out->set_metrics_address(t.registration.metrics_address);
    for (const HeldModel& m : t.registration.models) out->add_models(m.name);
    out->set_agent_version(t.registration.agent_version);
    out->set_engine_version(t.registration.engine_version);
    ToTimestamp(t.register_time, out->mutable_register_time());
    ToTimestamp(t.last_heartbeat_time, out->mutable_last_heartbeat_time());
    if (t.assignment.has_value()) {
      const std::string& job_id = t.assignment->job_id;
      bool visible = cluster;
      if (!visible) {
        auto it = tenant_of_job.find(job_id);
        if (it == tenant_of_job.end()) {
          std::string tenant;
          if (auto running = scheduler_->GetRunning(job_id); running.has_value()) {
            tenant = running->request.tenant;
          } else if (auto job = store_->jobs().GetById(job_id); job.ok()) {
            tenant = job->tenant;
          }
          it = tenant_of_job.emplace(job_id, tenant).first;
        }
        visible = !it->second.empty() && it->second == principal->tenant;
      }
      if (visible) {
        out->set_job_id(job_id);
        out->set_generation(t.assignment->generation);
        out->set_rank(t.assignment->rank);
      }
    }
  }
  return grpc::Status::OK;
}

grpc::Status ClusterService::ListModels(grpc::ServerContext* context, const v1::ListModelsRequest* request,
                                        v1::ListModelsResponse* response) {
  auto principal = AuthenticateCaller(*context, store_->tokens(), /*cluster_only=*/false);
  if (!principal.ok()) return Grpc(principal.status());
  auto size = PageSize(request->page_size());
  if (!size.ok()) return Grpc(size.status());
  auto after = ParsePageToken(request->page_token());
  if (!after.ok()) return Grpc(after.status());
  for (const ModelInfo& m : registry_->ListModels()) {
    if (!after->empty() && m.model.name <= *after) continue;
    if (response->models_size() == *size) {
      response->set_next_page_token(PageToken(response->models(response->models_size() - 1).name()));
      break;
    }
    v1::Model* out = response->add_models();
    out->set_name(m.model.name);
    out->set_weights_sha256(m.model.weights_sha256);
    out->set_weights_size_bytes(m.model.weights_size_bytes);
    for (const std::string& id : m.trainer_ids) out->add_trainer_ids(id);
    const ModelConfigSummary& c = m.model.config;
    v1::ModelConfigSummary* oc = out->mutable_config();
    oc->set_architecture(c.architecture);
    oc->set_num_layers(c.num_layers);
    oc->set_hidden_size(c.hidden_size);
    oc->set_intermediate_size(c.intermediate_size);
    oc->set_num_attention_heads(c.num_attention_heads);
    oc->set_num_key_value_heads(c.num_key_value_heads);
    oc->set_head_dim(c.head_dim);
    oc->set_vocab_size(c.vocab_size);
    oc->set_max_position_embeddings(c.max_position_embeddings);
    oc->set_rope_theta(c.rope_theta);
    oc->set_tie_word_embeddings(c.tie_word_embeddings);
    out->set_tokenizer(m.model.tokenizer == "bpe"             ? v1::TOKENIZER_KIND_BPE
                       : m.model.tokenizer == "sentencepiece" ? v1::TOKENIZER_KIND_SENTENCEPIECE
                                                              : v1::TOKENIZER_KIND_UNSPECIFIED);
    out->set_chat_template(m.model.chat_template == "llama2"   ? v1::CHAT_TEMPLATE_LLAMA2
                           : m.model.chat_template == "llama3" ? v1::CHAT_TEMPLATE_LLAMA3
                                                               : v1::CHAT_TEMPLATE_UNSPECIFIED);
    ToTimestamp(m.create_time, out->mutable_create_time());
  }
  return grpc::Status::OK;
}

grpc::Status ClusterService::GetClusterInfo(grpc::ServerContext* context,
                                            const v1::GetClusterInfoRequest* /*request*/,
                                            v1::ClusterInfo* response) {
  auto principal = AuthenticateCaller(*context, store_->tokens(), /*cluster_only=*/false);
  if (!principal.ok()) return Grpc(principal.status());
  response->set_server_version(HERD_VERSION);
  response->set_api_version("herd.v1");
  ToTimestamp(start_time_, response->mutable_start_time());
  std::map<TrainerState, int64_t> counts = {
      {TrainerState::kIdle, 0}, {TrainerState::kBusy, 0}, {TrainerState::kLost, 0}};
  for (const TrainerInfo& t : registry_->ListTrainers()) ++counts[t.state];
  for (const auto& [state, count] : counts) {
    v1::TrainerStateCount* out = response->add_trainers();
    out->set_state(ToProto(state));
    out->set_count(count);
  }
  response->set_models(static_cast<int64_t>(registry_->ListModels().size()));
  response->set_queue_depth(scheduler_->QueueDepth());
  const std::string tenant = principal->kind == store::TokenKind::kCluster ? "" : principal->tenant;
  auto jobs = store_->jobs().CountByState(tenant);
  if (!jobs.ok()) return Grpc(jobs.status());
  for (const auto& [state, count] : *jobs) {
    if (state == store::JobState::kUnspecified) continue;
    v1::JobStateCount* out = response->add_jobs();
    out->set_state(static_cast<v1::JobState>(static_cast<int>(state)));
    out->set_count(count);
  }
  return grpc::Status::OK;
}

}  // namespace herd::coordinator::services
