// The /metrics HTTP endpoint of the coordinator and the agents (DESIGN.md §7): GET /metrics
// answers Registry::Render() in the Prometheus text format, GET /healthz answers "ok", anything
// else 404. Served by Debian's cpp-httplib on its own small thread pool; plain HTTP (metrics
// carry no secrets; put a proxy in front for TLS).
// Note: constructing httplib's server sets SIGPIPE to SIG_IGN for the whole process (and so for
// children it execs, unless they reset it); writes to a closed pipe then fail with EPIPE.
#ifndef HERD_COMMON_METRICS_HTTP_ENDPOINT_H_
#define HERD_COMMON_METRICS_HTTP_ENDPOINT_H_

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "common/metrics/metrics.h"

namespace httplib {
class Server;
}

namespace herd::metrics {

struct MetricsServerOptions {
  // "host:port" ("[v6]:port" for IPv6). The host is bound exactly as given: loopback unless
  // configured otherwise; a wildcard ("0.0.0.0", "[::]") only when written here. Port 0 picks a
  // free port (tests, DESIGN.md §12); the coordinator's default is 9400, agents' 9401+.
  std::string listen = "127.0.0.1:0";
  // When set, the bound port and a newline are written here (atomically) once connections are
  // accepted.
  std::string ready_file;
  // Threads answering requests. Scrapes are rare; two keep a slow client from blocking one.
  int threads = 2;
  // Per-connection read and write timeout.
  int io_timeout_seconds = 10;

  absl::Status Validate() const;
};

// Answers /healthz: OK -> 200 "ok"; an error -> 503 with its message. Called per request, on
// the server's threads: must be thread-safe and quick.
using HealthCheck = std::function<absl::Status()>;

class MetricsServer {
 public:
  // Binds, starts serving `registry` (which must outlive the server) and writes the ready file.
  // INVALID_ARGUMENT for bad options; UNAVAILABLE when the address cannot be bound.
  static absl::StatusOr<std::unique_ptr<MetricsServer>> Start(const MetricsServerOptions& options,
                                                              const Registry* registry,
                                                              HealthCheck health = nullptr);
  ~MetricsServer();  // Stop()
  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;

  // Stops accepting, waits for requests in flight, and joins the threads. Idempotent.
  void Stop();

  const std::string& host() const { return host_; }
  int port() const { return port_; }
  // "host:port" as Prometheus targets spell it ("[::1]:9400" for IPv6), for the service
  // discovery file.
  std::string address() const;

 private:
  MetricsServer(std::string host, int port, std::unique_ptr<httplib::Server> server);

  const std::string host_;
  const int port_;
  const std::unique_ptr<httplib::Server> server_;
  std::atomic<bool> loop_exited_{false};  // set by thread_ when the accept loop returns

  absl::Mutex stop_mu_;
  std::thread thread_ ABSL_GUARDED_BY(stop_mu_);  // runs the accept loop; joined by Stop()
};

}  // namespace herd::metrics

#endif  // HERD_COMMON_METRICS_HTTP_ENDPOINT_H_
