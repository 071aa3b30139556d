// herd.v1.DatasetService: the gRPC skin over DatasetUploads and Inspector (datasets.proto). Each method
// authenticates the caller's user token, converts the request, calls the domain class and
// converts the answer and the Status.
#ifndef HERD_COORDINATOR_SERVICES_DATASET_SERVICE_H_
#define HERD_COORDINATOR_SERVICES_DATASET_SERVICE_H_

#include <grpcpp/grpcpp.h>

#include <memory>

#include "coordinator/dataset_uploads.h"
#include "coordinator/inspection.h"
#include "coordinator/store/token_store.h"
#include "herd/v1/datasets.grpc.pb.h"

namespace herd::coordinator::services {

class DatasetService final : public herd::v1::DatasetService::Service {
 public:
  // Neither is owned; both outlive the service. `inspection` is what InspectDataset needs (the
  // store with the published models, herd-prepare, a work folder); without a store that call
  // answers FAILED_PRECONDITION.
  DatasetService(DatasetUploads* uploads, const store::TokenStore* tokens,
                 InspectorOptions inspection = {})
      : uploads_(uploads), tokens_(tokens), inspector_(std::move(inspection)) {}

  grpc::Status StartUpload(grpc::ServerContext* context, const herd::v1::StartUploadRequest* request,
                           herd::v1::Upload* response) override;
  grpc::Status QueryUpload(grpc::ServerContext* context, const herd::v1::QueryUploadRequest* request,
                           herd::v1::Upload* response) override;
  grpc::Status UploadDataset(grpc::ServerContext* context,
                             grpc::ServerReader<herd::v1::UploadDatasetRequest>* reader,
                             herd::v1::Dataset* response) override;
  grpc::Status GetDataset(grpc::ServerContext* context, const herd::v1::GetDatasetRequest* request,
                          herd::v1::Dataset* response) override;
  grpc::Status ListDatasets(grpc::ServerContext* context,
                            const herd::v1::ListDatasetsRequest* request,
                            herd::v1::ListDatasetsResponse* response) override;
  grpc::Status DeleteDataset(grpc::ServerContext* context,
                             const herd::v1::DeleteDatasetRequest* request,
                             google::protobuf::Empty* response) override;
  grpc::Status InspectDataset(grpc::ServerContext* context,
                              const herd::v1::InspectDatasetRequest* request,
                              herd::v1::InspectDatasetResponse* response) override;

 private:
  // Constant after construction.
  DatasetUploads* const uploads_;
  const store::TokenStore* const tokens_;
  const Inspector inspector_;
};

}  // namespace herd::coordinator::services

#endif  // HERD_COORDINATOR_SERVICES_DATASET_SERVICE_H_
