// Relays an assignment's results to the coordinator on a thread of its own, so the engine's lines
// are never held up by the network: progress and eval points batched into ReportProgress (at
// least once per interval; the newest 10,000 kept while the coordinator is unreachable) and rank
// 0's checkpoints streamed with UploadCheckpoint (retried on UNAVAILABLE, DATA_LOSS, ABORTED),
// each folder deleted once acknowledged. Pending progress is always sent before a checkpoint,
// so the coordinator sees the last step before the final checkpoint ends the job.
#ifndef HERD_TRAINER_AGENT_RELAY_H_
#define HERD_TRAINER_AGENT_RELAY_H_

#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/time/time.h"
#include "herd/v1/trainers.pb.h"
#include "nlohmann/json.hpp"
#include "trainer/agent/coordinator_api.h"

namespace herd::agent {

struct RelayOptions {
  std::string trainer_id;
  herd::v1::AssignmentRef ref;
  absl::Duration interval = absl::Seconds(1);         // ReportProgress at least this often
  size_t max_buffered = 10000;                        // newest points kept while unreachable
  int upload_attempts = 10;                           // per checkpoint
  absl::Duration retry_backoff = absl::Milliseconds(500);  // first pause between upload attempts
  std::function<void(const absl::Status&)> on_stale;  // a call answered FAILED_PRECONDITION
  std::function<void(const std::string&)> log;
};

class Relay {
 public:
  Relay(RelayOptions options, CoordinatorApi& api);
  ~Relay();  // Stop()

  void AddProgress(herd::v1::ProgressPoint point);
  void AddEval(herd::v1::EvalPoint point);
  // A `checkpoint` line of rank 0 (engine_protocol.md §6.7).
  void AddCheckpoint(const nlohmann::json& checkpoint);

  // Sends what is pending, uploads every queued checkpoint, and stops the thread. The final
  // checkpoint's upload status, if one was queued.
  std::optional<absl::Status> Finish();
  // Stops the thread soon, dropping what is pending (cancelled or stale assignment).
  void Stop();

 private:
  void Loop();
  // One ReportProgress round: everything pending in batches; false on a failure (kept for later).
  bool SendProgress();
  absl::Status Upload(const nlohmann::json& checkpoint);
  absl::Status UploadOnce(const herd::v1::CheckpointHeader& header, const std::string& dir);
  void Log(const std::string& line) const;

  // Constant after construction.
  const RelayOptions options_;
  CoordinatorApi& api_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<herd::v1::ProgressPoint> points_ ABSL_GUARDED_BY(mu_);
  std::deque<herd::v1::EvalPoint> evals_ ABSL_GUARDED_BY(mu_);
  std::deque<nlohmann::json> checkpoints_ ABSL_GUARDED_BY(mu_);
  bool finishing_ ABSL_GUARDED_BY(mu_) = false;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool stale_ ABSL_GUARDED_BY(mu_) = false;
  std::optional<absl::Status> final_status_ ABSL_GUARDED_BY(mu_);
  std::thread thread_;
};

// The manifest digest of common.proto over `files` (name, sha256): sha256 of the lines
// "<sha256>  <name>\n" sorted by name.
std::string ManifestDigest(const herd::v1::Manifest& manifest);

}  // namespace herd::agent

#endif  // HERD_TRAINER_AGENT_RELAY_H_
