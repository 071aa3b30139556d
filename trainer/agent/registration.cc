// Registration and the heartbeat loop of herd-trainer (trainers.proto).
#include "trainer/agent/registration.h"

#include <algorithm>
#include <filesystem>
#include <map>
#include <set>
#include <utility>

#include "common/file_util.h"
#include "common/rpc/rpc.h"
#include "common/sha256.h"
#include "common/status.h"
#include "common/strings.h"

namespace herd::agent {
namespace fs = std::filesystem;
namespace v1 = herd::v1;

namespace {

// Room left for the rest of a request when packing file contents under the 16 MiB limit.
constexpr int64_t kContentBudgetBytes = (int64_t{16} << 20) - (int64_t{256} << 10);
constexpr int64_t kMaxFileBytes = int64_t{16} << 20;

absl::Duration FromProto(const google::protobuf::Duration& d) {
  return absl::Seconds(d.seconds()) + absl::Nanoseconds(d.nanos());
}

// Whether a refusal will not change by retrying (the operator must act).
bool Permanent(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kResourceExhausted:
    case absl::StatusCode::kUnauthenticated:
    case absl::StatusCode::kPermissionDenied:
    case absl::StatusCode::kUnimplemented:
      return true;
    default:
      return false;
  }
}

}  // namespace

absl::StatusOr<v1::ModelRegistration> DescribeModel(const ModelInfo& model) {
  v1::ModelRegistration out;
  out.set_name(model.name);
  for (const char* name : kModelMetadataFiles) {
    const std::string path = StrCat(model.path, "/", name);
    std::error_code ec;
    if (!fs::is_regular_file(path, ec)) continue;
    const auto size = static_cast<int64_t>(fs::file_size(path, ec));
    if (ec) return absl::UnavailableError(StrCat(path, ": ", ec.message()));
    if (size > kMaxFileBytes) return absl::ResourceExhaustedError(StrCat(path, ": over 16 MiB"));
    HERD_ASSIGN_OR_RETURN(std::string sha, Sha256File(path));
    v1::ModelFile* f = out.add_files();
    f->set_name(name);
    f->set_size_bytes(size);
    f->set_sha256(sha);
  }
  // Manifest digest (common.proto): "<sha256>  <name>\n" per file, sorted by name.
  std::set<std::string> weights(model.weight_files.begin(), model.weight_files.end());
  if (fs::exists(model.path + "/model.safetensors.index.json")) weights.insert("model.safetensors.index.json");
  std::string manifest;
  int64_t total = 0;
  for (const std::string& name : weights) {
    const std::string path = StrCat(model.path, "/", name);
    HERD_ASSIGN_OR_RETURN(std::string sha, Sha256File(path));
    std::error_code ec;
    total += static_cast<int64_t>(fs::file_size(path, ec));
    manifest += StrCat(sha, "  ", name, "\n");
  }
  out.set_weights_sha256(Sha256Hex(manifest));
  out.set_weights_size_bytes(total);
  return out;
}

absl::StatusOr<std::string> ReadTokenFile(const std::string& path) {
  HERD_ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  auto space = [](unsigned char c) { return std::isspace(c) != 0; };
  while (!text.empty() && space(text.back())) text.pop_back();
  size_t start = 0;
  while (start < text.size() && space(text[start])) ++start;
  text.erase(0, start);
  if (text.empty()) return absl::InvalidArgumentError(StrCat(path, ": the token file is empty"));
  return text;
}

TrainerClient::TrainerClient(std::shared_ptr<grpc::Channel> channel, std::string token,
                             v1::RegisterTrainerRequest request, std::map<std::string, std::string> model_dirs)
    : stub_(v1::TrainerService::NewStub(channel)),
      token_(std::move(token)),
      request_(std::move(request)),
      model_dirs_(std::move(model_dirs)) {}

std::unique_ptr<grpc::ClientContext> TrainerClient::Context(absl::Duration timeout) const {
  auto ctx = std::make_unique<grpc::ClientContext>();
  ctx->AddMetadata("authorization", "Bearer " + token_);
  ctx->set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  return ctx;
}

absl::StatusOr<SessionInfo> TrainerClient::Register() {
  std::set<std::string> missing;  // sha256 the coordinator asked for
  // Each round sends the contents of as many missing files as fit; a file once sent is not
  // asked for again, so the rounds end.
  for (int round = 0; round < 1000; ++round) {
    v1::RegisterTrainerRequest request = request_;
    int64_t budget = kContentBudgetBytes;
    std::set<std::string> sent;
    for (v1::ModelRegistration& model : *request.mutable_models()) {
      for (v1::ModelFile& file : *model.mutable_files()) {
        if (!missing.count(file.sha256()) || sent.count(file.sha256())) continue;
        if (file.size_bytes() > budget && !sent.empty()) continue;  // next round
        auto dir = model_dirs_.find(model.name());
        if (dir == model_dirs_.end()) return absl::InternalError(StrCat("no folder for model ", model.name()));
        HERD_ASSIGN_OR_RETURN(std::string content, ReadFile(StrCat(dir->second, "/", file.name())));
        if (Sha256Hex(content) != file.sha256()) {
          return absl::FailedPreconditionError(
              StrCat(dir->second, "/", file.name(), " changed since the models were scanned; restart the agent"));
        }
        budget -= file.size_bytes();
        sent.insert(file.sha256());
        file.set_content(std::move(content));
      }
    }
    v1::RegisterTrainerResponse response;
    grpc::Status s = stub_->RegisterTrainer(Context(absl::Seconds(60)).get(), request, &response);
    if (!s.ok()) return rpc::FromGrpc(s);
    if (response.missing_file_sha256().empty()) {
      if (response.session_id().empty()) return absl::InternalError("RegisterTrainer opened no session");
      SessionInfo session;
      session.trainer_id = response.trainer_id();
      session.session_id = response.session_id();
      if (response.has_heartbeat_interval()) session.heartbeat_interval = FromProto(response.heartbeat_interval());
      if (response.has_lease_duration()) session.lease = FromProto(response.lease_duration());
      return session;
    }
    missing.clear();
    for (const std::string& sha : response.missing_file_sha256()) missing.insert(sha);
  }
  return absl::InternalError("RegisterTrainer kept asking for files");
}

absl::StatusOr<v1::HeartbeatResponse> TrainerClient::Heartbeat(const SessionInfo& session,
                                                               const std::vector<v1::AssignmentStatus>& held) {
  v1::HeartbeatRequest request;
  request.set_trainer_id(session.trainer_id);
  request.set_session_id(session.session_id);
  for (const v1::AssignmentStatus& a : held) *request.add_assignments() = a;
  v1::HeartbeatResponse response;
  // A heartbeat slower than the lease is as good as lost.
  grpc::Status s = stub_->Heartbeat(Context(std::max(session.lease, absl::Seconds(1))).get(), request, &response);
  if (!s.ok()) return rpc::FromGrpc(s);
  return response;
}

absl::Status RunAgentLoop(TrainerClient& client, Supervisor& supervisor, absl::Notification& stop,
                          std::ostream& log) {
  constexpr absl::Duration kMinBackoff = absl::Milliseconds(500), kMaxBackoff = absl::Seconds(30);
  std::set<std::string> seen;  // cancellations already logged
  while (!stop.HasBeenNotified()) {
    // Register, with backoff while the coordinator is away or the old lease still runs.
    absl::Duration backoff = kMinBackoff;
    absl::StatusOr<SessionInfo> session;
    while (!stop.HasBeenNotified()) {
      session = client.Register();
      if (session.ok()) break;
      if (Permanent(session.status().code())) return session.status();
      log << "herd-trainer: register: " << session.status() << "; retrying in " << backoff << std::endl;
      stop.WaitForNotificationWithTimeout(backoff);
      backoff = std::min(backoff * 2, kMaxBackoff);
    }
    if (stop.HasBeenNotified()) break;
    log << "herd-trainer: registered as " << session->trainer_id << ", heartbeat every "
        << session->heartbeat_interval << std::endl;
    supervisor.SetTrainerId(session->trainer_id);

    // Heartbeat until the session ends.
    absl::Duration interval = session->heartbeat_interval;
    absl::Time last_ok = absl::Now();
    while (!stop.HasBeenNotified()) {
      auto reply = client.Heartbeat(*session, supervisor.Held());
      if (reply.ok()) {
        last_ok = absl::Now();
        if (reply->has_heartbeat_interval() && FromProto(reply->heartbeat_interval()) > absl::ZeroDuration()) {
          interval = FromProto(reply->heartbeat_interval());
        }
        // Cancellations first (trainers.proto): one may free this trainer for an assignment.
        for (const v1::Cancellation& c : reply->cancellations()) {
          if (seen.insert(RefName(c.ref())).second) {
            log << "herd-trainer: cancellation of " << RefName(c.ref()) << ": " << c.reason() << std::endl;
          }
          supervisor.Cancel(c.ref(), c.reason());
        }
        for (const v1::Assignment& a : reply->assignments()) supervisor.Offer(a);
      } else if (reply.status().code() == absl::StatusCode::kNotFound) {
        log << "herd-trainer: session ended (" << reply.status().message() << "); registering again" << std::endl;
        break;
      } else if (Permanent(reply.status().code())) {
        return reply.status();
      } else {
        log << "herd-trainer: heartbeat: " << reply.status() << std::endl;
        // Past the lease the coordinator has declared this trainer LOST: register again.
        if (absl::Now() - last_ok > session->lease) break;
      }
      stop.WaitForNotificationWithTimeout(interval);
    }
  }
  log << "herd-trainer: stopping" << std::endl;
  return absl::OkStatus();
}

}  // namespace herd::agent
