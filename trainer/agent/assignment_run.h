// One assignment's life on this trainer, on a thread of its own: scratch folder, blob fetches,
// the weights check, one herd-engine child, the relay of its lines to the coordinator
// (engine_protocol.md §10), the exit report (§7), and cleanup. The Supervisor owns these.
#ifndef HERD_TRAINER_AGENT_ASSIGNMENT_RUN_H_
#define HERD_TRAINER_AGENT_ASSIGNMENT_RUN_H_

#include <atomic>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "herd/v1/trainers.pb.h"
#include "nlohmann/json.hpp"
#include "trainer/agent/blob_cache.h"
#include "trainer/agent/coordinator_api.h"
#include "trainer/agent/supervisor.h"

namespace herd::agent {

class EngineConversation;
class EngineProcess;
class Relay;

class AssignmentRun {
 public:
  // `options`, `api` and `blobs` outlive the run.
  AssignmentRun(const SupervisorOptions& options, CoordinatorApi& api, BlobCache& blobs, std::string trainer_id,
                herd::v1::Assignment assignment);
  ~AssignmentRun();  // Join()

  void Start();
  // Stop the engine (`cancel`, SIGKILL after the grace) and report CANCELLED. Thread-safe;
  // later calls are no-ops. `shutdown`: the agent is exiting, so reporting retries are bounded.
  void Cancel(const std::string& reason, bool shutdown = false);
  herd::v1::AssignmentStatus Status() const;
  // Whether the exit has been reported (or given up on) and the scratch folder removed.
  bool done() const { return done_.load(); }
  void Join();

 private:
  struct Event {
    nlohmann::json message;  // null: end of the engine's stdout (or a framing violation)
    std::string violation;
    std::string answered_key;  // set instead: a rendezvous answer went out
  };

  void Main();
  // Scratch folder, fetches, model check; the assignment as the engine reads it.
  absl::StatusOr<nlohmann::json> Prepare();
  // Runs the engine to its end; the exit report (reason, failure, codes, step).
  herd::v1::ReportEngineExitRequest Supervise(const nlohmann::json& assignment_line);
  void HandleRendezvous(const nlohmann::json& request);
  void ReportExit(herd::v1::ReportEngineExitRequest report);
  void Push(Event event);
  // Sleeps `d`; true (early) when the run is cancelled or the engine is gone.
  bool Pause(absl::Duration d);
  // A relayed call answered FAILED_PRECONDITION: stop the engine as for a cancellation.
  void MarkStale(const absl::Status& s);
  bool stopping() const;
  void Log(const std::string& line) const;

  // Constant after construction.
  const SupervisorOptions& options_;
  CoordinatorApi& api_;
  BlobCache& blobs_;
  const std::string trainer_id_;
  const herd::v1::Assignment assignment_;
  const std::string scratch_;  // absolute

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Event> events_ ABSL_GUARDED_BY(mu_);
  std::string cancel_reason_ ABSL_GUARDED_BY(mu_);  // non-empty once cancelled
  bool shutdown_ ABSL_GUARDED_BY(mu_) = false;
  bool stale_ ABSL_GUARDED_BY(mu_) = false;         // a call answered FAILED_PRECONDITION
  bool engine_gone_ ABSL_GUARDED_BY(mu_) = false;   // the engine process has ended
  std::unique_ptr<EngineProcess> engine_;           // owned by the run thread; Send() is thread-safe
  std::vector<std::thread> rendezvous_threads_;     // run thread only
  std::atomic<int> phase_{herd::v1::ASSIGNMENT_PHASE_PREPARING};
  std::atomic<int64_t> step_{0};
  std::atomic<bool> done_{false};
  std::thread thread_;
};

}  // namespace herd::agent

#endif  // HERD_TRAINER_AGENT_ASSIGNMENT_RUN_H_
