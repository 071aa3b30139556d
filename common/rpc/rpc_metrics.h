// The RPC metrics of a server (docs/metrics.md): herd_rpc_requests_total{method,code} and
// herd_rpc_duration_seconds{method}, fed by StartServer's interceptor through RpcObserver. Kept
// apart from herd_rpc so that the CLI and other clients do not link the metrics library.
#ifndef HERD_COMMON_RPC_RPC_METRICS_H_
#define HERD_COMMON_RPC_RPC_METRICS_H_

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "common/metrics/metrics.h"
#include "common/rpc/rpc.h"

namespace herd::rpc {

class RpcMetrics final : public RpcObserver {
 public:
  // Registers both families in `registry` (which outlives this object). ALREADY_EXISTS when
  // they are registered already.
  static absl::StatusOr<std::unique_ptr<RpcMetrics>> Create(metrics::Registry* registry);

  // Pre-initialises {method, "OK"} and the duration series of every method of the services
  // named (full protobuf names, "herd.v1.JobService"), found in the generated descriptor pool.
  // NOT_FOUND names a service the pool does not hold.
  absl::Status PreinitializeServices(const std::vector<std::string>& full_service_names);

  void OnRpcDone(std::string_view method, grpc::StatusCode code, double seconds) override;

 private:
  RpcMetrics(metrics::CounterFamily* requests, metrics::HistogramFamily* duration)
      : requests_(requests), duration_(duration) {}

  metrics::CounterFamily* const requests_;
  metrics::HistogramFamily* const duration_;
};

// "OK", "NOT_FOUND", ... (the canonical names, as absl spells them).
std::string StatusCodeName(grpc::StatusCode code);

}  // namespace herd::rpc

#endif  // HERD_COMMON_RPC_RPC_METRICS_H_
