// An engine's rendezvous_put / rendezvous_get (engine_protocol.md §6.3-6.4) relayed to the
// coordinator's Put/GetRendezvousValue: a put retried while the coordinator is unreachable, a get
// repeated in waits of at most 60 s until the engine's timeout_seconds. The answer is the body
// of the engine's `rendezvous` line: the value, or an error with the code the engine expects.
#ifndef HERD_TRAINER_AGENT_RENDEZVOUS_RELAY_H_
#define HERD_TRAINER_AGENT_RENDEZVOUS_RELAY_H_

#include <functional>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "herd/v1/trainers.pb.h"
#include "nlohmann/json.hpp"
#include "trainer/agent/coordinator_api.h"

namespace herd::agent {

struct RendezvousRelayOptions {
  std::string trainer_id;
  herd::v1::AssignmentRef ref;
  absl::Duration wait_chunk = absl::Seconds(10);    // one GetRendezvousValue wait (at most 60 s)
  absl::Duration put_retry_for = absl::Seconds(60); // a put retries UNAVAILABLE this long
  absl::Duration retry_backoff = absl::Milliseconds(500);
  // Sleeps up to `d`; true when the engine no longer needs an answer (cancelled, gone).
  std::function<bool(absl::Duration d)> pause;
  // A call answered FAILED_PRECONDITION: the generation was replaced.
  std::function<void(const absl::Status&)> on_stale;
};

// The `rendezvous` body ({"value": …} or {"error": {"code", "message"}}, without key) for the
// engine's `request`; nullopt when `pause` said no answer is needed any more.
std::optional<nlohmann::json> RelayRendezvous(CoordinatorApi& api, const RendezvousRelayOptions& options,
                                              const nlohmann::json& request);

}  // namespace herd::agent

#endif  // HERD_TRAINER_AGENT_RENDEZVOUS_RELAY_H_
