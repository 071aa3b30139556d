// herd.v1.TrainerService: the gRPC skin the herd-trainer agents call (trainers.proto). Each
// method checks the cluster token, converts the request, calls the Scheduler (which drives the
// TrainerRegistry) or the RendezvousStore, persists what changed, and converts the answer and
// the Status.
//
// Built: RegisterTrainer (with the missing-files round trip), Heartbeat, PutRendezvousValue,
// GetRendezvousValue. FetchBlob, ReportProgress, UploadCheckpoint and ReportEngineExit answer
// UNIMPLEMENTED for now.
#ifndef HERD_COORDINATOR_SERVICES_TRAINER_SERVICE_H_
#define HERD_COORDINATOR_SERVICES_TRAINER_SERVICE_H_

#include <functional>
#include <map>
#include <string>

#include <grpcpp/grpcpp.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "coordinator/job_control.h"
#include "coordinator/progress_board.h"
#include "coordinator/registry.h"
#include "coordinator/rendezvous.h"
#include "coordinator/scheduler.h"
#include "coordinator/store/store.h"
#include "coordinator/store/token_store.h"
#include "herd/v1/trainers.grpc.pb.h"

namespace herd::coordinator::services {

// The principal of the bearer token the call carries. UNAUTHENTICATED for a missing, malformed,
// unknown or revoked token. With `cluster_only`, a user token is PERMISSION_DENIED.
absl::StatusOr<store::Principal> AuthenticateCaller(const grpc::ServerContext& context,
                                                    const store::TokenStore& tokens,
                                                    bool cluster_only);

// PersistSchedulerEvents and RunSchedulerTicks are in coordinator/job_control.h.

struct TrainerServiceOptions {
  // Deadline of one collective before an engine's watchdog aborts it (Assignment).
  absl::Duration collective_timeout = absl::Minutes(10);
  // Most bytes of one uploaded checkpoint (trainers.proto: RESOURCE_EXHAUSTED above).
  int64_t max_checkpoint_bytes = int64_t{16} << 30;
  // Told the seconds from an upload's header to its stored files (metrics). Default: none.
  std::function<void(const std::string& job_id, double seconds)> on_checkpoint_stored;
};

class TrainerService final : public herd::v1::TrainerService::Service {
 public:
  // None is owned; all outlive the service. `rendezvous` is the one `scheduler` was made with.
  // Without `control` (tests of registration alone) the work RPCs answer UNAVAILABLE and
  // scheduler events are persisted without JobControl's extras; without `progress` progress is
  // dropped.
  TrainerService(store::Store* store, Scheduler* scheduler, RendezvousStore* rendezvous,
                 JobControl* control = nullptr, ProgressBoard* progress = nullptr,
                 TrainerServiceOptions options = {})
      : store_(store), scheduler_(scheduler), rendezvous_(rendezvous), control_(control), progress_(progress),
        options_(options) {}

  grpc::Status RegisterTrainer(grpc::ServerContext* context,
                               const herd::v1::RegisterTrainerRequest* request,
                               herd::v1::RegisterTrainerResponse* response) override;
  grpc::Status Heartbeat(grpc::ServerContext* context, const herd::v1::HeartbeatRequest* request,
                         herd::v1::HeartbeatResponse* response) override;
  grpc::Status PutRendezvousValue(grpc::ServerContext* context,
                                  const herd::v1::PutRendezvousValueRequest* request,
                                  google::protobuf::Empty* response) override;
  grpc::Status GetRendezvousValue(grpc::ServerContext* context,
                                  const herd::v1::GetRendezvousValueRequest* request,
                                  herd::v1::GetRendezvousValueResponse* response) override;
  grpc::Status FetchBlob(grpc::ServerContext* context, const herd::v1::FetchBlobRequest* request,
                         grpc::ServerWriter<herd::v1::FetchBlobResponse>* writer) override;
  grpc::Status ReportProgress(grpc::ServerContext* context, const herd::v1::ReportProgressRequest* request,
                              google::protobuf::Empty* response) override;
  grpc::Status UploadCheckpoint(grpc::ServerContext* context,
                                grpc::ServerReader<herd::v1::UploadCheckpointRequest>* reader,
                                google::protobuf::Empty* response) override;
  grpc::Status ReportEngineExit(grpc::ServerContext* context, const herd::v1::ReportEngineExitRequest* request,
                                google::protobuf::Empty* response) override;

 private:
  absl::Status Register(const herd::v1::RegisterTrainerRequest& request,
                        herd::v1::RegisterTrainerResponse& response);
  // The scheduler's part of an assignment plus the job's spec, data, schedule and resume point.
  absl::Status FillAssignment(const Assignment& a, herd::v1::Assignment* out) const;
  absl::Status Persist(const SchedulerEvents& events);
  absl::Status Upload(grpc::ServerReader<herd::v1::UploadCheckpointRequest>& reader);
  absl::Status Progress(const herd::v1::ReportProgressRequest& request);

  // Constant after construction.
  store::Store* const store_;
  Scheduler* const scheduler_;
  RendezvousStore* const rendezvous_;
  JobControl* const control_;
  ProgressBoard* const progress_;
  const TrainerServiceOptions options_;

  absl::Mutex mu_;
  std::map<std::string, int64_t> last_eval_step_ ABSL_GUARDED_BY(mu_);  // EVALUATED events written
};

}  // namespace herd::coordinator::services

#endif  // HERD_COORDINATOR_SERVICES_TRAINER_SERVICE_H_
