// RPC metrics over the server interceptor's observer.
#include "common/rpc/rpc_metrics.h"

#include <google/protobuf/descriptor.h>

#include "absl/status/status.h"
#include "common/status.h"
#include "common/strings.h"

namespace herd::rpc {

std::string StatusCodeName(grpc::StatusCode code) {
  // gRPC and absl share the canonical code numbers.
  return absl::StatusCodeToString(static_cast<absl::StatusCode>(code));
}

absl::StatusOr<std::unique_ptr<RpcMetrics>> RpcMetrics::Create(metrics::Registry* registry) {
  HERD_ASSIGN_OR_RETURN(
      metrics::CounterFamily * requests,
      registry->AddCounter({.name = "herd_rpc_requests_total",
                            .help = "RPCs answered, by method (Service/Method) and status code.",
                            .label_names = {"method", "code"}}));
  HERD_ASSIGN_OR_RETURN(
      metrics::HistogramFamily * duration,
      registry->AddHistogram({.name = "herd_rpc_duration_seconds",
                              .help = "Seconds to answer an RPC (a stream: until it ends).",
                              .label_names = {"method"}}));
  return std::unique_ptr<RpcMetrics>(new RpcMetrics(requests, duration));
}

absl::Status RpcMetrics::PreinitializeServices(const std::vector<std::string>& full_service_names) {
  const google::protobuf::DescriptorPool* pool = google::protobuf::DescriptorPool::generated_pool();
  for (const std::string& name : full_service_names) {
    const google::protobuf::ServiceDescriptor* service = pool->FindServiceByName(name);
    if (service == nullptr) return absl::NotFoundError(StrCat("no service ", name, " in the descriptor pool"));
    for (int i = 0; i < service->method_count(); ++i) {
      const std::string method = RpcMethodLabel(StrCat("/", name, "/", service->method(i)->name()));
      requests_->WithLabels(method, "OK");
      duration_->WithLabels(method);
    }
  }
  return absl::OkStatus();
}

void RpcMetrics::OnRpcDone(std::string_view method, grpc::StatusCode code, double seconds) {
  // Rare enough per call (a map lookup under a lock) next to the RPC itself.
  requests_->WithLabels(method, StatusCodeName(code)).Increment();
  duration_->WithLabels(method).Observe(seconds);
}

}  // namespace herd::rpc
