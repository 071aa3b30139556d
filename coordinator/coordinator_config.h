// The coordinator's configuration (coordinator.yaml), with defaults for a one-box setup and a
// Validate() that names the field at fault. Flags override the file (herd-coordinator --help).
#ifndef HERD_COORDINATOR_COORDINATOR_CONFIG_H_
#define HERD_COORDINATOR_COORDINATOR_CONFIG_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace herd::coordinator {

struct TlsConfig {
  std::string cert_file;       // PEM; "" = plaintext (then loopback only, DESIGN.md §8)
  std::string key_file;
  std::string client_ca_file;  // require client certificates (mTLS for agents)
};

struct CoordinatorConfig {
  std::string listen = "127.0.0.1:7070";          // gRPC for users and trainers
  std::string metrics_listen = "127.0.0.1:9400";  // Prometheus /metrics
  std::string data_dir = "herd-data";             // SQLite database + blob store
  std::string ready_file;                         // the bound gRPC port is written here
  std::string metrics_ready_file;                 // the bound /metrics port is written here
  // Prometheus file-based service discovery of the trainers' /metrics (docs/metrics.md);
  // "" = <data_dir>/prometheus/trainers.json.
  std::string file_sd_path;
  bool allow_insecure_remote = false;             // plaintext on a non-loopback address
  TlsConfig tls;
  int trainer_grace_seconds = 60;   // after a restart, how long RUNNING jobs wait for trainers
  int heartbeat_seconds = 5;        // trainers heartbeat this often
  int trainer_lease_seconds = 15;   // a trainer silent this long is LOST (trainers.proto)
  int64_t max_upload_bytes = int64_t{50} << 30;  // per dataset
  std::string prepare_program;      // herd-prepare; "" = the one beside herd-coordinator
  int collective_timeout_seconds = 600;  // an engine's watchdog aborts a collective after this
  int max_recoveries = 3;  // automatic recoveries of one job after trainer faults (DESIGN.md §3.8)

  absl::Status Validate() const;
  // file_sd_path, or its default under data_dir.
  std::string EffectiveFileSdPath() const;
};

// Reads coordinator.yaml; absent fields keep their defaults, unknown fields are errors.
absl::StatusOr<CoordinatorConfig> LoadCoordinatorConfig(const std::string& path);
absl::StatusOr<CoordinatorConfig> ParseCoordinatorConfig(const std::string& yaml, const std::string& source);

}  // namespace herd::coordinator

#endif  // HERD_COORDINATOR_COORDINATOR_CONFIG_H_
