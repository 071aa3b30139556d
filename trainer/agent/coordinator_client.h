// CoordinatorApi over gRPC: the TrainerService calls an assignment's supervisor makes, each with
// the cluster token and a deadline.
#ifndef HERD_TRAINER_AGENT_COORDINATOR_CLIENT_H_
#define HERD_TRAINER_AGENT_COORDINATOR_CLIENT_H_

#include <memory>
#include <string>

#include <grpcpp/grpcpp.h>

#include "absl/time/time.h"
#include "herd/v1/trainers.grpc.pb.h"
#include "trainer/agent/coordinator_api.h"

namespace herd::agent {

class GrpcCoordinator final : public CoordinatorApi {
 public:
  GrpcCoordinator(std::shared_ptr<grpc::Channel> channel, std::string token);

  absl::Status PutRendezvousValue(const herd::v1::PutRendezvousValueRequest& request) override;
  absl::StatusOr<std::string> GetRendezvousValue(const herd::v1::GetRendezvousValueRequest& request) override;
  absl::Status FetchBlob(const herd::v1::FetchBlobRequest& request,
                         const std::function<absl::Status(const herd::v1::FetchBlobResponse&)>& on_message) override;
  absl::Status ReportProgress(const herd::v1::ReportProgressRequest& request) override;
  std::unique_ptr<UploadStream> UploadCheckpoint() override;
  absl::Status ReportEngineExit(const herd::v1::ReportEngineExitRequest& request) override;

 private:
  // A context with the token and `timeout` as deadline (none when infinite).
  std::unique_ptr<grpc::ClientContext> Context(absl::Duration timeout) const;

  // Constant after construction.
  const std::unique_ptr<herd::v1::TrainerService::Stub> stub_;
  const std::string token_;
};

}  // namespace herd::agent

#endif  // HERD_TRAINER_AGENT_COORDINATOR_CLIENT_H_
