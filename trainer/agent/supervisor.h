// The agent's work: runs the assignments that heartbeat answers carry, one at a time, each as one
// herd-engine child (assignment_run.h), applies cancellations, and tells the heartbeat loop what
// it holds. The coordinator is reached through CoordinatorApi, so this is tested with a fake.
#ifndef HERD_TRAINER_AGENT_SUPERVISOR_H_
#define HERD_TRAINER_AGENT_SUPERVISOR_H_

#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/time/time.h"
#include "herd/v1/trainers.pb.h"
#include "trainer/agent/coordinator_api.h"
#include "trainer/agent/run_observer.h"

namespace herd::agent {

class AssignmentRun;
class BlobCache;

// A model this trainer registered.
struct HeldModel {
  std::string dir;             // its Hugging Face folder
  std::string weights_sha256;  // the manifest digest registered (ModelRegistration.weights_sha256)
};

struct SupervisorOptions {
  std::string engine_path;                       // herd-engine
  std::string scratch_dir;                       // <scratch>/<job>/g<gen>-r<rank>/ per run, <scratch>/blobs/ cache
  std::string device = "cpu";                    // cpu | cuda:N (the engine sees cuda:N as cuda:0)
  std::string bind_address = "127.0.0.1";        // engines' collective sockets
  std::string advertise_address = "127.0.0.1";   // where peers dial this trainer's engine
  std::map<std::string, HeldModel> models;       // by model name
  int omp_threads = 1;                           // OMP_NUM_THREADS of the engine
  std::map<std::string, std::string> engine_env; // more environment for the engine (NCCL_*)
  absl::Duration hello_timeout = absl::Seconds(120);     // engine_protocol.md §4
  absl::Duration silence_timeout = absl::Seconds(900);   // an engine silent this long is HUNG
  absl::Duration cancel_grace = absl::Seconds(30);       // from `cancel` to SIGKILL
  absl::Duration progress_interval = absl::Seconds(1);   // ReportProgress at least this often
  absl::Duration rendezvous_wait = absl::Seconds(10);    // one GetRendezvousValue wait (≤ 60 s)
  absl::Duration put_retry_for = absl::Seconds(60);      // PutRendezvousValue retries UNAVAILABLE this long
  absl::Duration retry_backoff = absl::Milliseconds(500);  // first pause of every retry loop
  int upload_attempts = 10;                      // per checkpoint (~2 min with backoff)
  absl::Duration report_give_up_on_shutdown = absl::Seconds(10);  // ReportEngineExit retries at SIGTERM
  bool keep_scratch = false;                     // keep scratch folders (debugging)
  int64_t blob_cache_bytes = 0;                  // bound on <scratch>/blobs between assignments; 0 = none
  std::function<void(const std::string&)> log;   // one line per event; default: stderr
  RunObserver* observer = nullptr;               // the agent's metrics (not owned); default: none

  absl::Status Validate() const;
};

class Supervisor {
 public:
  Supervisor(SupervisorOptions options, CoordinatorApi* api);
  ~Supervisor();  // Shutdown()

  // Set after each registration (the id is stable per trainer name).
  void SetTrainerId(const std::string& trainer_id);

  // An assignment from a heartbeat answer: starts it, or ignores it when it is already held or
  // was already reported. While another assignment runs it is refused (false, logged once).
  bool Offer(const herd::v1::Assignment& assignment);
  // A cancellation from a heartbeat answer; ignored unless that assignment runs here.
  void Cancel(const herd::v1::AssignmentRef& ref, const std::string& reason);
  // Every assignment held (received, exit not yet reported), for the next heartbeat.
  std::vector<herd::v1::AssignmentStatus> Held();
  // Cancels what runs, waits until its exit is reported (or given up on), and refuses new work.
  void Shutdown();
  // Waits until nothing is held; false after `timeout`.
  bool WaitIdle(absl::Duration timeout);

 private:
  // Joins a finished run and remembers its ref. Caller holds mu_.
  void ReapLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Log(const std::string& line) const;

  // Constant after construction.
  const SupervisorOptions options_;
  CoordinatorApi* const api_;
  const std::unique_ptr<BlobCache> blobs_;

  std::mutex mu_;
  std::string trainer_id_ ABSL_GUARDED_BY(mu_);
  std::unique_ptr<AssignmentRun> run_ ABSL_GUARDED_BY(mu_);
  std::set<std::string> finished_ ABSL_GUARDED_BY(mu_);   // refs reported, not to be run again
  std::deque<std::string> finished_order_ ABSL_GUARDED_BY(mu_);
  std::set<std::string> refused_ ABSL_GUARDED_BY(mu_);    // refs refused while busy (logged once)
  bool shut_down_ ABSL_GUARDED_BY(mu_) = false;
};

// "job/g2/r0".
std::string RefName(const herd::v1::AssignmentRef& ref);

}  // namespace herd::agent

#endif  // HERD_TRAINER_AGENT_SUPERVISOR_H_
