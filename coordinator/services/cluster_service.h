// herd.v1.ClusterService: the read-only view of the cluster (cluster.proto) over the
// TrainerRegistry, the Scheduler and the JobStore. Any valid user token or the cluster token.
// What a trainer works on is shown only to the job's tenant and to the cluster token.
#ifndef HERD_COORDINATOR_SERVICES_CLUSTER_SERVICE_H_
#define HERD_COORDINATOR_SERVICES_CLUSTER_SERVICE_H_

#include <grpcpp/grpcpp.h>

#include "absl/time/time.h"
#include "coordinator/registry.h"
#include "coordinator/scheduler.h"
#include "coordinator/store/store.h"
#include "herd/v1/cluster.grpc.pb.h"

namespace herd::coordinator::services {

class ClusterService final : public herd::v1::ClusterService::Service {
 public:
  // None is owned; all outlive the service. `start_time` is when the coordinator started.
  ClusterService(store::Store* store, Scheduler* scheduler, const TrainerRegistry* registry,
                 absl::Time start_time = absl::Now())
      : store_(store), scheduler_(scheduler), registry_(registry), start_time_(start_time) {}

  grpc::Status ListTrainers(grpc::ServerContext* context, const herd::v1::ListTrainersRequest* request,
                            herd::v1::ListTrainersResponse* response) override;
  grpc::Status ListModels(grpc::ServerContext* context, const herd::v1::ListModelsRequest* request,
                          herd::v1::ListModelsResponse* response) override;
  grpc::Status GetClusterInfo(grpc::ServerContext* context, const herd::v1::GetClusterInfoRequest* request,
                              herd::v1::ClusterInfo* response) override;

 private:
  // Constant after construction.
  store::Store* const store_;
  Scheduler* const scheduler_;
  const TrainerRegistry* const registry_;
  const absl::Time start_time_;
};

}  // namespace herd::coordinator::services

#endif  // HERD_COORDINATOR_SERVICES_CLUSTER_SERVICE_H_
