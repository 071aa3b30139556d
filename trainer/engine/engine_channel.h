// The engine's end of the agent protocol (proto/herd/v1/engine_protocol.md): protocol lines on
// the original stdout (which is then pointed at stderr, so library chatter cannot corrupt the
// channel), a reader thread on stdin that sees `cancel` and EOF while the main thread trains, and
// rendezvous requests answered by the agent.
#ifndef HERD_TRAINER_ENGINE_ENGINE_CHANNEL_H_
#define HERD_TRAINER_ENGINE_ENGINE_CHANNEL_H_

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <condition_variable>
#include <optional>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "common/engine_protocol.h"
#include "nlohmann/json.hpp"
#include "trainer/engine/dist/rendezvous.h"

namespace herd::engine {

class EngineChannel {
 public:
  // Takes over fds 0 and 1 as described above and starts the reader thread.
  static absl::StatusOr<std::unique_ptr<EngineChannel>> Start();
  ~EngineChannel();

  // Writes one message (envelope added by the caller via ProtocolMessage). Thread-safe.
  absl::Status Send(const nlohmann::json& message);
  // Blocks for the assignment. CANCELLED if `cancel` came first; INVALID_ARGUMENT if malformed.
  absl::StatusOr<EngineAssignment> WaitAssignment();
  // A rendezvous request; waits for the agent's answer with the same key.
  absl::StatusOr<std::string> Rendezvous(const std::string& type, const std::string& key,
                                         const nlohmann::json& fields, absl::Duration timeout);
  // True after `cancel` or SIGTERM.
  bool cancelled() const { return cancelled_.load(); }
  void MarkCancelled() { cancelled_ = true; }

 private:
  EngineChannel() = default;
  void ReadLoop();

  int proto_fd_ = -1;
  std::mutex write_mu_;
  std::thread reader_;
  std::atomic<bool> cancelled_{false};

  std::mutex mu_;
  std::condition_variable cv_;
  std::optional<nlohmann::json> assignment_;          // guarded by mu_
  std::string bad_line_;                              // guarded by mu_
  std::map<std::string, nlohmann::json> answers_;     // guarded by mu_
};

// Rendezvous through the agent: put and get become rendezvous_put / rendezvous_get lines.
class ChannelRendezvous final : public Rendezvous {
 public:
  explicit ChannelRendezvous(EngineChannel& channel) : channel_(channel) {}
  absl::Status Put(const std::string& key, const std::string& value) override;
  absl::StatusOr<std::string> Get(const std::string& key, absl::Duration timeout) override;

 private:
  EngineChannel& channel_;
};

}  // namespace herd::engine

#endif  // HERD_TRAINER_ENGINE_ENGINE_CHANNEL_H_
