// A job's life at the coordinator outside the gRPC skins (DESIGN.md §3): preparation of new
// jobs on a worker thread, submission to the Scheduler, persisting what the Scheduler decided,
// cancellation, the publication checks of the final adapter, and picking up where things were
// after a restart. Domain code: no grpc++ includes; the services call it.
//
// Restart (DESIGN.md §3.9): VALIDATING jobs are prepared again, QUEUED jobs are queued again in
// their old order, and a job that was RUNNING is adopted by the Scheduler at its old generation:
// it stays RUNNING if all its trainers register again and list their assignments within
// restart_grace (their engines never stopped). Otherwise it goes RECOVERING with an event naming
// the trainers that did not come back, and is queued to form its next generation, resuming from
// its newest stored checkpoint (the old engines still running are cancelled). A job with a
// stored final adapter is published.
#ifndef HERD_COORDINATOR_JOB_CONTROL_H_
#define HERD_COORDINATOR_JOB_CONTROL_H_

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "common/job_spec.h"
#include "coordinator/preparation.h"
#include "coordinator/scheduler.h"
#include "coordinator/store/checkpoint_store.h"
#include "coordinator/store/store.h"

namespace herd::coordinator {

// Persists what a Scheduler call decided: trainers LOST, adoptions given up (RECOVERING, naming
// the trainers missing), worlds formed (RUNNING, with the step they resume from), adopted
// worlds whole again (a notice), jobs FAILED or CANCELLED. Returns the first error (the rest
// is still tried).
absl::Status PersistSchedulerEvents(store::Store& store, const SchedulerEvents& events);

// Lease expiry and scheduling passes every `period` until `stop`; persists their outcome with
// `persist` when given (JobControl::Persist, so that ended jobs reach on_final), else with
// PersistSchedulerEvents. `each_tick`, when given, runs after every pass (the discovery file).
void RunSchedulerTicks(Scheduler& scheduler, store::Store& store, absl::Notification& stop,
                       absl::Duration period = absl::Seconds(1),
                       std::function<absl::Status(const SchedulerEvents&)> persist = nullptr,
                       std::function<void()> each_tick = nullptr);

// The scheduler's view of a stored job.
JobRequest MakeJobRequest(const store::JobRecord& job);

struct JobControlOptions {
  PreparerOptions preparer;
  // Called (on the caller's thread) whenever a job reaches a final state through this class.
  std::function<void(const std::string& job_id)> on_final;
  // Called (before on_final) when a job's final adapter of `step` is published: every rank has
  // finished that step (ProgressBoard::CompleteThrough). Default: none.
  std::function<void(const std::string& job_id, int64_t step)> on_published;
  // Called with every set of scheduler events Persist() records (metrics). Default: none.
  std::function<void(const SchedulerEvents& events)> on_events;
  // Called when a job's preparation succeeded: its wall time and the tokens it produced
  // (metrics). Default: none.
  std::function<void(double seconds, int64_t tokens)> on_prepared;
  // After a restart, how long a RUNNING job waits for its trainers to come back before it goes
  // RECOVERING (CoordinatorConfig trainer_grace_seconds); zero recovers at once.
  absl::Duration restart_grace = absl::Seconds(60);
};

class JobControl {
 public:
  // Neither is owned; both outlive this object.
  JobControl(store::Store* store, Scheduler* scheduler, JobControlOptions options);
  ~JobControl();  // stops the worker

  // Starts the preparation worker.
  void Start();
  // Stops it; a preparation in flight is killed with its process group and re-run at the next
  // start (the job is still VALIDATING).
  void Stop();

  // After a restart (see the top of this file). Call before serving.
  absl::Status Restore();

  // CreateJob's checks that need the cluster: the base model has been registered, and
  // max_seq_len fits its max positions. FAILED_PRECONDITION otherwise.
  absl::Status CheckSpec(const JobSpec& spec) const;
  // Queues a VALIDATING job for preparation.
  void Prepare(const std::string& job_id);
  // Prepares synchronously and keeps nothing (CreateJob dry_run). FAILED_PRECONDITION with the
  // reason when preparation fails; NOT_FOUND datasets unknown to the tenant.
  absl::StatusOr<PreparationPlan> DryRun(std::string_view tenant, const JobSpec& spec) const;
  // CancelJob: CANCELLED at once (store), then the scheduler lets go of it.
  absl::StatusOr<store::JobRecord> Cancel(std::string_view tenant, std::string_view id, std::string_view reason);

  // The final adapter of `job_id` arrived (files stored as blobs): checks it (every tensor
  // present, finite, shaped as the model and LoRA config say), stores it, PUBLISHING, SUCCEEDED.
  // INVALID_ARGUMENT when the checks fail (the job is FAILED); the store's errors otherwise.
  absl::Status PublishFinal(const std::string& job_id, const store::NewCheckpoint& checkpoint);

  // Persist() plus on_final for jobs that ended.
  absl::Status Persist(const SchedulerEvents& events);

  // For tests: blocks until no preparation is queued or running.
  void WaitForIdle();

 private:
  absl::StatusOr<PreparationInput> Inputs(std::string_view tenant, const JobSpec& spec) const;
  // Prepares one job and moves it to QUEUED (submitting it) or FAILED.
  void PrepareOne(const std::string& job_id);
  // A QUEUED job to the scheduler (FAILED when it refuses).
  void Submit(const store::JobRecord& queued);
  // The prepared-data cache (DESIGN.md §4): a stored preparation with the same content key,
  // with the schedule recomputed for `spec`; nullopt when none (or its blobs are gone).
  std::optional<store::PreparedInfo> CachedPreparation(const std::string& key, const JobSpec& spec) const;
  void RememberPreparation(const std::string& key, const store::PreparedInfo& info) const;
  void WorkerLoop();
  void Ended(const std::string& job_id);

  // Constant after construction.
  store::Store* const store_;
  Scheduler* const scheduler_;
  const JobControlOptions options_;
  const Preparer preparer_;

  absl::Mutex mu_;
  std::deque<std::string> pending_ ABSL_GUARDED_BY(mu_);
  bool busy_ ABSL_GUARDED_BY(mu_) = false;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::atomic<bool> cancel_{false};  // kills a preparation in flight
  std::thread worker_;
};

}  // namespace herd::coordinator

#endif  // HERD_COORDINATOR_JOB_CONTROL_H_
