// The trainer agent's configuration (trainer.yaml); flags override it (herd-trainer --help).
#ifndef HERD_TRAINER_AGENT_AGENT_CONFIG_H_
#define HERD_TRAINER_AGENT_AGENT_CONFIG_H_

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace herd::agent {

struct AgentConfig {
  std::string name;                               // shown in `herd trainers list`; default: hostname-device
  std::string coordinator = "127.0.0.1:7070";     // the coordinator's gRPC address
  std::string models_dir = "models";              // one Hugging Face model directory per folder
  std::string device = "cpu";                     // cpu | cuda:N
  std::string metrics_listen = "127.0.0.1:9401";  // Prometheus /metrics (port 0 = any free port)
  std::string metrics_ready_file = "";            // the bound /metrics port is written here
  std::string scratch_dir = "herd-scratch";       // per-job engine folders
  std::string engine = "";                        // herd-engine path; default: beside this binary
  std::string token_file = "";                    // the cluster token (never on the command line)
  std::string ca_file = "";                       // CA of the coordinator's TLS certificate
  std::string bind_address = "127.0.0.1";         // the engine's collective sockets bind here
  std::string advertise_address = "127.0.0.1";    // where peer engines dial this one
  bool keep_scratch = false;                      // keep finished assignments' scratch folders
  int64_t blob_cache_bytes = int64_t{64} << 30;   // fetched data kept for reuse (LRU); 0 = no bound

  absl::Status Validate() const;
};

absl::StatusOr<AgentConfig> ParseAgentConfig(const std::string& yaml, const std::string& source);
absl::StatusOr<AgentConfig> LoadAgentConfig(const std::string& path);

}  // namespace herd::agent

#endif  // HERD_TRAINER_AGENT_AGENT_CONFIG_H_
