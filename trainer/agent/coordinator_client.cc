// TrainerService client calls of the agent's supervisor.
#include "trainer/agent/coordinator_client.h"

#include <utility>

#include "common/rpc/rpc.h"

namespace herd::agent {
namespace v1 = herd::v1;

namespace {

// Unary calls that answer at once.
constexpr absl::Duration kCallTimeout = absl::Seconds(30);
// A blob or checkpoint stream may carry gigabytes over a slow link; this only ends one that
// has stalled for good.
constexpr absl::Duration kStreamTimeout = absl::Hours(6);

absl::Duration FromProto(const google::protobuf::Duration& d) {
  return absl::Seconds(d.seconds()) + absl::Nanoseconds(d.nanos());
}

class GrpcUploadStream final : public UploadStream {
 public:
  GrpcUploadStream(std::unique_ptr<grpc::ClientContext> context, v1::TrainerService::Stub* stub)
      : context_(std::move(context)), writer_(stub->UploadCheckpoint(context_.get(), &response_)) {}

  bool Write(const v1::UploadCheckpointRequest& request) override { return writer_->Write(request); }

  absl::Status Finish() override {
    writer_->WritesDone();
    return rpc::FromGrpc(writer_->Finish());
  }

 private:
  std::unique_ptr<grpc::ClientContext> context_;
  google::protobuf::Empty response_;
  std::unique_ptr<grpc::ClientWriter<v1::UploadCheckpointRequest>> writer_;
};

}  // namespace

GrpcCoordinator::GrpcCoordinator(std::shared_ptr<grpc::Channel> channel, std::string token)
    : stub_(v1::TrainerService::NewStub(channel)), token_(std::move(token)) {}

std::unique_ptr<grpc::ClientContext> GrpcCoordinator::Context(absl::Duration timeout) const {
  auto ctx = std::make_unique<grpc::ClientContext>();
  ctx->AddMetadata("authorization", "Bearer " + token_);
  if (timeout != absl::InfiniteDuration()) ctx->set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  return ctx;
}

absl::Status GrpcCoordinator::PutRendezvousValue(const v1::PutRendezvousValueRequest& request) {
  google::protobuf::Empty response;
  return rpc::FromGrpc(stub_->PutRendezvousValue(Context(kCallTimeout).get(), request, &response));
}

absl::StatusOr<std::string> GrpcCoordinator::GetRendezvousValue(const v1::GetRendezvousValueRequest& request) {
  v1::GetRendezvousValueResponse response;
  // The client's deadline must be longer than the server's wait (trainers.proto).
  grpc::Status s = stub_->GetRendezvousValue(Context(FromProto(request.wait()) + kCallTimeout).get(), request,
                                             &response);
  if (!s.ok()) return rpc::FromGrpc(s);
  return std::move(*response.mutable_value());
}

absl::Status GrpcCoordinator::FetchBlob(const v1::FetchBlobRequest& request,
                                        const std::function<absl::Status(const v1::FetchBlobResponse&)>& on_message) {
  auto ctx = Context(kStreamTimeout);
  std::unique_ptr<grpc::ClientReader<v1::FetchBlobResponse>> reader = stub_->FetchBlob(ctx.get(), request);
  v1::FetchBlobResponse message;
  while (reader->Read(&message)) {
    if (absl::Status s = on_message(message); !s.ok()) {
      ctx->TryCancel();
      (void)reader->Finish();  // drains the cancelled call; its status is not ours
      return s;
    }
  }
  return rpc::FromGrpc(reader->Finish());
}

absl::Status GrpcCoordinator::ReportProgress(const v1::ReportProgressRequest& request) {
  google::protobuf::Empty response;
  return rpc::FromGrpc(stub_->ReportProgress(Context(kCallTimeout).get(), request, &response));
}

std::unique_ptr<UploadStream> GrpcCoordinator::UploadCheckpoint() {
  return std::make_unique<GrpcUploadStream>(Context(kStreamTimeout), stub_.get());
}

absl::Status GrpcCoordinator::ReportEngineExit(const v1::ReportEngineExitRequest& request) {
  google::protobuf::Empty response;
  // A final report may come after the publication checks of a large adapter.
  return rpc::FromGrpc(stub_->ReportEngineExit(Context(absl::Minutes(2)).get(), request, &response));
}

}  // namespace herd::agent
