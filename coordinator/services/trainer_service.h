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

#include <string>

#include <grpcpp/grpcpp.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
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

// Writes what a Scheduler call changed (SchedulerEvents) to the store: worlds formed
// (JobStore::FormWorld), jobs failed or cancelled (JobStore::Transition), trainers LOST
// (TrainerStore::SetState). Every event is attempted; the first error is returned.
absl::Status PersistSchedulerEvents(store::Store& store, const SchedulerEvents& events);

// Calls Scheduler::Tick (lease expiry, a scheduling pass) every `period` and persists what it
// changed, logging write failures, until `stop` is notified. Run it on its own thread.
void RunSchedulerTicks(Scheduler& scheduler, store::Store& store, absl::Notification& stop,
                       absl::Duration period = absl::Seconds(1));

class TrainerService final : public herd::v1::TrainerService::Service {
 public:
  // None is owned; all outlive the service. `rendezvous` is the one `scheduler` was made with.
  TrainerService(store::Store* store, Scheduler* scheduler, RendezvousStore* rendezvous)
      : store_(store), scheduler_(scheduler), rendezvous_(rendezvous) {}

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
  // FetchBlob, ReportProgress, UploadCheckpoint, ReportEngineExit: the generated defaults
  // (UNIMPLEMENTED) until they are built.

 private:
  absl::Status Register(const herd::v1::RegisterTrainerRequest& request,
                        herd::v1::RegisterTrainerResponse& response);

  // Constant after construction.
  store::Store* const store_;
  Scheduler* const scheduler_;
  RendezvousStore* const rendezvous_;
};

}  // namespace herd::coordinator::services

#endif  // HERD_COORDINATOR_SERVICES_TRAINER_SERVICE_H_
