// herd.v1.JobService.WatchJob (jobs.proto).
#include "coordinator/services/job_service.h"

#include "absl/status/status.h"
#include "common/rpc/rpc.h"

namespace herd::coordinator::services {

grpc::Status JobService::WatchJob(grpc::ServerContext* /*context*/, const herd::v1::WatchJobRequest* /*request*/,
                                  grpc::ServerWriter<herd::v1::WatchJobResponse>* /*writer*/) {
  return rpc::ToGrpc(absl::UnimplementedError("WatchJob is not built yet"));
}

}  // namespace herd::coordinator::services
