// herd.v1.JobService: the gRPC skin over JobStore (jobs.proto, DESIGN.md §3 step 2). Each method
// authenticates the caller's user token, converts the request, calls the store and converts the
// answer and the Status. Another tenant's job answers NOT_FOUND exactly like a missing one (the
// store's tenant-checked methods guarantee it).
//
// With a JobControl, CreateJob hands new jobs to preparation and answers dry runs, and CancelJob
// stops running work; with a ProgressBoard, GetJob and WatchJob carry live progress.
#ifndef HERD_COORDINATOR_SERVICES_JOB_SERVICE_H_
#define HERD_COORDINATOR_SERVICES_JOB_SERVICE_H_

#include <grpcpp/grpcpp.h>

#include "absl/status/statusor.h"
#include "common/job_spec.h"
#include "coordinator/store/job_store.h"
#include "coordinator/store/token_store.h"
#include "herd/v1/jobs.grpc.pb.h"

namespace herd::coordinator {
class ProgressBoard;  // coordinator/progress_board.h
class JobControl;     // coordinator/job_control.h
}  // namespace herd::coordinator

namespace herd::coordinator::services {

class JobService final : public herd::v1::JobService::Service {
 public:
  // None is owned; all outlive the service. `progress` (live progress for GetJob/WatchJob) and
  // `control` (preparation, scheduling, cancellation) may be null in tests of the store paths.
  JobService(store::JobStore* jobs, const store::TokenStore* tokens, ProgressBoard* progress = nullptr,
             JobControl* control = nullptr)
      : jobs_(jobs), tokens_(tokens), progress_(progress), control_(control) {}

  grpc::Status CreateJob(grpc::ServerContext* context, const herd::v1::CreateJobRequest* request,
                         herd::v1::Job* response) override;
  grpc::Status GetJob(grpc::ServerContext* context, const herd::v1::GetJobRequest* request,
                      herd::v1::Job* response) override;
  grpc::Status ListJobs(grpc::ServerContext* context, const herd::v1::ListJobsRequest* request,
                        herd::v1::ListJobsResponse* response) override;
  grpc::Status CancelJob(grpc::ServerContext* context, const herd::v1::CancelJobRequest* request,
                         herd::v1::Job* response) override;
  grpc::Status ListJobEvents(grpc::ServerContext* context,
                             const herd::v1::ListJobEventsRequest* request,
                             herd::v1::ListJobEventsResponse* response) override;
  // In job_watch.cc.
  grpc::Status WatchJob(grpc::ServerContext* context, const herd::v1::WatchJobRequest* request,
                        grpc::ServerWriter<herd::v1::WatchJobResponse>* writer) override;

 private:
  // Constant after construction.
  store::JobStore* const jobs_;
  const store::TokenStore* const tokens_;
  ProgressBoard* const progress_;
  JobControl* const control_;
};

}  // namespace herd::coordinator::services

#endif  // HERD_COORDINATOR_SERVICES_JOB_SERVICE_H_
