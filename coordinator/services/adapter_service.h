// herd.v1.AdapterService: the gRPC skin over CheckpointStore and BlobStore (adapters.proto,
// DESIGN.md §3.10). Each method authenticates the caller's user token, checks and converts the
// request, asks the checkpoint store which checkpoint is meant and streams its adapter files
// (adapter_config.json, adapter_model.safetensors) back to back from the blob store.
#ifndef HERD_COORDINATOR_SERVICES_ADAPTER_SERVICE_H_
#define HERD_COORDINATOR_SERVICES_ADAPTER_SERVICE_H_

#include <cstddef>

#include <grpcpp/grpcpp.h>

#include "coordinator/store/blob_store.h"
#include "coordinator/store/checkpoint_store.h"
#include "coordinator/store/token_store.h"
#include "herd/v1/adapters.grpc.pb.h"

namespace herd::coordinator::services {

class AdapterService final : public herd::v1::AdapterService::Service {
 public:
  // Bytes per DataChunk of a download (common.proto: at most 1 MiB).
  static constexpr size_t kChunkBytes = size_t{1} << 20;

  // None is owned; all outlive the service.
  AdapterService(const store::CheckpointStore* checkpoints, const store::BlobStore* blobs,
                 const store::TokenStore* tokens)
      : checkpoints_(checkpoints), blobs_(blobs), tokens_(tokens) {}

  grpc::Status ListCheckpoints(grpc::ServerContext* context,
                               const herd::v1::ListCheckpointsRequest* request,
                               herd::v1::ListCheckpointsResponse* response) override;
  grpc::Status DownloadAdapter(grpc::ServerContext* context,
                               const herd::v1::DownloadAdapterRequest* request,
                               grpc::ServerWriter<herd::v1::DownloadAdapterResponse>* writer) override;

 private:
  // Constant after construction.
  const store::CheckpointStore* const checkpoints_;
  const store::BlobStore* const blobs_;
  const store::TokenStore* const tokens_;
};

}  // namespace herd::coordinator::services

#endif  // HERD_COORDINATOR_SERVICES_ADAPTER_SERVICE_H_
