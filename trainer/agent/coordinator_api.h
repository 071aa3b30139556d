// The coordinator calls an assignment's supervisor makes (TrainerService in trainers.proto), as an
// interface: coordinator_client.h implements it over gRPC, tests with a fake. No grpc++ here, so
// the supervisor is tested without a server.
#ifndef HERD_TRAINER_AGENT_COORDINATOR_API_H_
#define HERD_TRAINER_AGENT_COORDINATOR_API_H_

#include <functional>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "herd/v1/trainers.pb.h"

namespace herd::agent {

// The client side of one UploadCheckpoint stream.
class UploadStream {
 public:
  virtual ~UploadStream() = default;
  // Sends one message; false when the stream is broken (Finish says why).
  virtual bool Write(const herd::v1::UploadCheckpointRequest& request) = 0;
  // Half-closes and waits for the coordinator's answer.
  virtual absl::Status Finish() = 0;
};

// Each call returns the coordinator's status as absl::Status (UNAVAILABLE when it cannot be
// reached). Implementations must be safe to call from several threads at once.
class CoordinatorApi {
 public:
  virtual ~CoordinatorApi() = default;

  virtual absl::Status PutRendezvousValue(const herd::v1::PutRendezvousValueRequest& request) = 0;
  // The value; the call itself waits up to request.wait.
  virtual absl::StatusOr<std::string> GetRendezvousValue(const herd::v1::GetRendezvousValueRequest& request) = 0;
  // Streams the blob, calling `on_message` for each message in order; a non-OK status from
  // `on_message` ends the stream and is returned.
  virtual absl::Status FetchBlob(const herd::v1::FetchBlobRequest& request,
                                 const std::function<absl::Status(const herd::v1::FetchBlobResponse&)>& on_message) = 0;
  virtual absl::Status ReportProgress(const herd::v1::ReportProgressRequest& request) = 0;
  virtual std::unique_ptr<UploadStream> UploadCheckpoint() = 0;
  virtual absl::Status ReportEngineExit(const herd::v1::ReportEngineExitRequest& request) = 0;
};

}  // namespace herd::agent

#endif  // HERD_TRAINER_AGENT_COORDINATOR_API_H_
