// The agent's side of TrainerService registration and heartbeats (trainers.proto): describes
// the models it holds (metadata files by sha256, the weights' manifest digest), registers with
// the missing-files round trip, and runs the heartbeat loop until told to stop, handing
// assignments and cancellations to the Supervisor and listing what it holds.
#ifndef HERD_TRAINER_AGENT_REGISTRATION_H_
#define HERD_TRAINER_AGENT_REGISTRATION_H_

#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "herd/v1/trainers.grpc.pb.h"
#include "trainer/agent/model_scan.h"
#include "trainer/agent/supervisor.h"

namespace herd::agent {

// The largest message the agent sends or receives: a RegisterTrainer request carries up to
// 16 MiB of file contents (trainers.proto) plus the rest of the request. The coordinator's
// server must accept as much.
inline constexpr int kMaxRequestBytes = (16 << 20) + (1 << 20);

// Metadata files published when present (config.json and one tokenizer are required).
inline constexpr const char* kModelMetadataFiles[] = {
    "config.json",    "generation_config.json", "tokenizer.model",
    "tokenizer.json", "tokenizer_config.json",  "special_tokens_map.json"};

// The registration of one model: its metadata files (sha256 and size, no content) and the
// manifest digest of its weight files (every *.safetensors and model.safetensors.index.json).
// Hashes every weight file: minutes for a large model (no cache yet).
absl::StatusOr<herd::v1::ModelRegistration> DescribeModel(const ModelInfo& model);

// The bearer token in `path`, surrounding whitespace removed. INVALID_ARGUMENT when empty.
absl::StatusOr<std::string> ReadTokenFile(const std::string& path);

struct SessionInfo {
  std::string trainer_id;
  std::string session_id;
  absl::Duration heartbeat_interval = absl::Seconds(5);
  absl::Duration lease = absl::Seconds(15);
};

// One trainer's calls to the coordinator. Not thread-safe.
class TrainerClient {
 public:
  // `request` is the full registration (models described, no contents); `model_dirs` maps a
  // model name to its folder, to send file contents from.
  TrainerClient(std::shared_ptr<grpc::Channel> channel, std::string token,
                herd::v1::RegisterTrainerRequest request, std::map<std::string, std::string> model_dirs);

  // RegisterTrainer, repeating with the contents the coordinator lists as missing (each request
  // under 16 MiB) until a session opens. The coordinator's Status otherwise.
  absl::StatusOr<SessionInfo> Register();
  // One heartbeat of the current session.
  absl::StatusOr<herd::v1::HeartbeatResponse> Heartbeat(const SessionInfo& session,
                                                        const std::vector<herd::v1::AssignmentStatus>& held);

 private:
  std::unique_ptr<grpc::ClientContext> Context(absl::Duration timeout) const;

  // Constant after construction.
  const std::unique_ptr<herd::v1::TrainerService::Stub> stub_;
  const std::string token_;
  const herd::v1::RegisterTrainerRequest request_;
  const std::map<std::string, std::string> model_dirs_;
};

// Registers (retrying UNAVAILABLE and ALREADY_EXISTS with backoff), then heartbeats every
// interval, registering again on NOT_FOUND (the supervisor's engine keeps running) and retrying
// UNAVAILABLE, until `stop` is notified (OK) or the coordinator refuses the trainer for good
// (INVALID_ARGUMENT, FAILED_PRECONDITION, RESOURCE_EXHAUSTED, UNAUTHENTICATED,
// PERMISSION_DENIED: returned). Each heartbeat lists `supervisor.Held()`; its answer's
// cancellations, then assignments, go to the supervisor. Logs to `log`.
absl::Status RunAgentLoop(TrainerClient& client, Supervisor& supervisor, absl::Notification& stop,
                          std::ostream& log);

}  // namespace herd::agent

#endif  // HERD_TRAINER_AGENT_REGISTRATION_H_
