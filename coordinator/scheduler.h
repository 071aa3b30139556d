// The job queue and who works on what (DESIGN.md §3.5, §3.8): jobs wait in a queue until
// enough idle trainers holding their base model exist; then a world forms (ranks 0..W-1, a
// generation number), the trainers are marked busy in the TrainerRegistry and each gets an
// assignment on its next heartbeat. The scheduler decides and records; it performs no I/O: each
// call returns the transitions (SchedulerEvents) the caller must persist before answering.
// Thread-safe. Lock order: Scheduler, then TrainerRegistry, then RendezvousStore.
//
// Scheduling policy:
//  - Order: higher priority first, then submission order.
//  - Strict FIFO within (base model, priority): a job never starts before an earlier job of the
//    same model and priority, even if it is smaller.
//  - Jobs of other models, and lower priorities, are not blocked by a job that cannot start,
//    except that a waiting job that the live cluster can satisfy holds back the idle trainers it
//    would use (up to W of them), so later jobs cannot starve it by taking them one at a time. A
//    job whose W exceeds the live trainers holding its model holds nothing back.
//  - A world uses one device kind: CUDA when enough idle CUDA trainers hold the model, else CPU.
//    Trainers are taken in name order, and rank r is the r-th of them.
//  - Jobs run side by side on disjoint trainers; a trainer runs one assignment at a time.
//
// Failures and automatic recovery (DESIGN.md §3.8): a rank that fails by its trainer's fault
// (lost trainer, dropped assignment, an engine exit other than COMPLETED, or ERROR with a code
// other than INVALID_ARGUMENT, FAILED_PRECONDITION, OUT_OF_RANGE, RESOURCE_EXHAUSTED,
// UNIMPLEMENTED) ends its world: the job goes RECOVERING (JobRecovering), the other ranks get
// cancellations, and the job is queued again at the front of its priority to form generation + 1
// (same W) on idle trainers. A job fault, or a job that has used max_recoveries recoveries,
// fails the job instead. Either way every trainer is freed once it has let go of the work (exit
// reported, no longer listed, or lease expired).
//
// Adoption after a coordinator restart (DESIGN.md §3.9): Adopt puts a job that was RUNNING back
// in the running set at its old generation, each rank awaiting its trainer, which kept training
// while the coordinator was away. A rank is back when its trainer registers again and lists the
// assignment in a heartbeat (or reports its engine's exit); once all are back the world simply
// continues (WorldAdopted). If a deadline passes with ranks missing, or a trainer comes back
// without listing its assignment, or is lost before doing so, or a rank fails by its trainer's
// fault before the world is whole, the adoption ends: the job goes RECOVERING (JobRecovering),
// the ranks present get cancellations, and the job is queued again (at the place it had in the
// restored queue) to form generation + 1.
#ifndef HERD_COORDINATOR_SCHEDULER_H_
#define HERD_COORDINATOR_SCHEDULER_H_

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "coordinator/clock.h"
#include "coordinator/registry.h"
#include "coordinator/rendezvous.h"

namespace herd::coordinator {

// A job ready to run (prepared, validated) as the scheduler needs it.
struct JobRequest {
  std::string job_id;
  std::string tenant;
  std::string base_model;
  int64_t trainers = 1;           // W: ranks of the world
  int64_t priority = 0;           // higher runs first
  int64_t global_batch_size = 8;  // sequences per optimiser step (for grad_accum_steps)
  int64_t micro_batch_size = 1;   // sequences per forward on one rank
  int64_t last_generation = 0;    // generations already used (a job restored after a restart)
  int64_t recoveries = 0;         // recoveries already used (a job restored after a restart)
  absl::Time submit_time;         // for display; order is the order of Submit calls

  // INVALID_ARGUMENT: empty id or model, W < 1, or global batch not a multiple of micro x W.
  absl::Status Validate() const;
};

// How an engine ended (trainers.proto EngineExitReason).
enum class ExitReason {
  kCompleted, kCancelled, kError, kWatchdog, kCrashed, kHung, kProtocolViolation,
  kStartFailed, kUploadFailed,
};
std::string_view ExitReasonName(ExitReason reason);  // "COMPLETED", ...

struct EngineExit {
  ExitReason reason = ExitReason::kCompleted;
  absl::StatusCode code = absl::StatusCode::kOk;  // failure code; kOk for COMPLETED/CANCELLED
  std::string message;                            // failure message
  int64_t step = 0;                               // last step completed
};

enum class JobEnd { kSucceeded, kFailed, kCancelled };

// A world formed: the job is RUNNING at `generation`.
struct WorldStarted {
  std::string job_id;
  int64_t generation = 0;
  DeviceKind device_kind = DeviceKind::kCpu;
  std::vector<std::string> trainer_ids;  // by rank
  std::vector<Assignment> assignments;   // by rank
};

// A job left the scheduler: FAILED or CANCELLED (persist it), or SUCCEEDED as told by Finish.
struct JobEnded {
  std::string job_id;
  int64_t generation = 0;  // the last one it ran; 0 when it never ran
  JobEnd end = JobEnd::kFailed;
  std::string reason;      // "trainer gpu-3 lost at step 120", "job cancelled by user", ...
  // For failures: whether a trainer, not the job, was at fault (a job fails so only when it is
  // out of recoveries).
  bool trainer_fault = false;
};

// An adopted world is whole again: every rank's trainer came back after a coordinator restart
// and the job keeps running at `generation` (persist a notice; the state stays RUNNING).
struct WorldAdopted {
  std::string job_id;
  int64_t generation = 0;
  std::vector<std::string> trainer_ids;  // by rank
};

// An adoption ended without its whole world: the job is RECOVERING (persist it before any
// WorldStarted of the same call, which may already form its next generation).
struct JobRecovering {
  std::string job_id;
  int64_t generation = 0;                        // the generation given up
  std::vector<std::string> missing_trainer_ids;  // the trainers that did not come back (or none,
                                                 // when a rank failed after all had)
  std::string reason;  // what they did, e.g. "did not come back within 1m of the coordinator's restart"
  // Whether an adoption after the coordinator's restart ended; false for a rank failing in a
  // running world (missing_trainer_ids then names the failed rank's trainer).
  bool after_restart = false;
  std::vector<std::string> trainer_ids;  // the world given up, by rank
};

// What a call changed; the caller persists it (jobs' states, trainers' LOST) before answering.
// Order: lost, recovering, started, adopted, ended.
struct SchedulerEvents {
  std::vector<WorldStarted> started;
  std::vector<JobEnded> ended;
  std::vector<LostTrainer> lost;
  std::vector<JobRecovering> recovering;
  std::vector<WorldAdopted> adopted;

  bool empty() const {
    return started.empty() && ended.empty() && lost.empty() && recovering.empty() && adopted.empty();
  }
};

struct SchedulerOptions {
  // Most jobs waiting in the queue, all tenants together (Submit answers RESOURCE_EXHAUSTED).
  int64_t max_queued_jobs = 10'000;
  // Most automatic recoveries of one job after trainer faults; the next such failure fails it.
  int64_t max_recoveries = 3;

  absl::Status Validate() const;
};

struct QueuedJob {
  JobRequest request;
  int64_t position = 0;  // 0 = next in scheduling order
};

struct RunningJob {
  JobRequest request;
  int64_t generation = 0;
  DeviceKind device_kind = DeviceKind::kCpu;
  std::vector<std::string> trainer_ids;  // by rank
  absl::Time start_time;
  // An adoption in progress: the trainers not back yet, and until when they may come.
  std::vector<std::string> awaiting_trainer_ids;
  std::optional<absl::Time> adoption_deadline;
};

struct RegisterTrainerResult {
  RegisterResult registration;
  SchedulerEvents events;
};

struct HeartbeatResult {
  HeartbeatReply reply;
  SchedulerEvents events;
};

class Scheduler {
 public:
  // `registry`, `clock` and (optional, may be null) `rendezvous` must outlive the scheduler.
  static absl::StatusOr<std::unique_ptr<Scheduler>> Create(const SchedulerOptions& options,
                                                           TrainerRegistry* registry,
                                                           RendezvousStore* rendezvous, Clock* clock);

  // --- Jobs (JobService). ---
  // Queues a job and runs a scheduling pass. ALREADY_EXISTS for a job id the scheduler holds;
  // RESOURCE_EXHAUSTED queue full; Validate()'s errors.
  absl::StatusOr<SchedulerEvents> Submit(const JobRequest& request);
  // The user cancels: a queued job leaves the queue; a running job's trainers get cancellations.
  // NOT_FOUND when the scheduler does not hold the job (unknown or already final).
  absl::StatusOr<SchedulerEvents> Cancel(const std::string& job_id);
  // The job reached a final state outside the scheduler (final adapter published, publication
  // checks failed, data loss): frees its trainers (cancelling any still running unless
  // kSucceeded). NOT_FOUND as for Cancel.
  absl::StatusOr<SchedulerEvents> Finish(const std::string& job_id, JobEnd end, const std::string& reason);

  // After a coordinator restart (JobControl::Restore): the job was RUNNING at `generation` on
  // these trainers (by rank). It is running again at once, each rank awaiting its trainer for
  // up to `grace` (see the top of this file). INVALID_ARGUMENT malformed request, generation
  // or trainer list (empty, an empty or repeated id); ALREADY_EXISTS the scheduler holds the
  // job; FAILED_PRECONDITION a trainer is already busy or expected with other work (nothing
  // is kept: recover the job instead).
  absl::Status Adopt(const JobRequest& request, int64_t generation, std::vector<std::string> trainer_ids_by_rank,
                     absl::Duration grace);

  // --- Trainers (TrainerService). ---
  // Expires leases (so a restarted agent's old session is LOST first), registers, schedules.
  absl::StatusOr<RegisterTrainerResult> RegisterTrainer(const TrainerRegistration& registration,
                                                        const std::set<std::string>& extra_models_in_use = {});
  // TrainerRegistry::Heartbeat, plus: dropped work fails its rank (see Failures above), and a
  // trainer that became idle gets queued work in this very answer.
  absl::StatusOr<HeartbeatResult> Heartbeat(const std::string& trainer_id, const std::string& session_id,
                                            const std::vector<AssignmentStatus>& statuses);
  // An engine ended. The trainer lets go of the work in any case; then FAILED_PRECONDITION when
  // `ref` is not a rank of the job's current generation held by this trainer. The same exit
  // twice is OK. Anything but COMPLETED fails the rank (CANCELLED too, when the scheduler did not
  // ask for it): the job recovers or fails (see Failures above).
  absl::StatusOr<SchedulerEvents> ReportEngineExit(const std::string& trainer_id, const AssignmentRef& ref,
                                                   const EngineExit& exit);
  // OK when `ref` is a rank of the job's current generation held by `trainer_id`;
  // INVALID_ARGUMENT malformed ref; FAILED_PRECONDITION otherwise (stale: stop that engine).
  // Every TrainerService call that names a ref checks this first.
  absl::Status CheckAssignment(const std::string& trainer_id, const AssignmentRef& ref) const;

  // Lease expiry, adoption deadlines and a scheduling pass; call about every second.
  SchedulerEvents Tick();
  // A scheduling pass alone.
  SchedulerEvents Schedule();

  // --- Views. ---
  std::vector<QueuedJob> Queue() const;  // in scheduling order
  int64_t QueueDepth() const;
  std::optional<RunningJob> GetRunning(const std::string& job_id) const;
  std::vector<RunningJob> Running() const;  // by job id
  // Base models of queued and running jobs (a model's files may not change under them).
  std::set<std::string> ModelsInUse() const;

 private:
  struct Rank {
    std::string trainer_id;
    bool exited = false;    // its engine ended (or its trainer was lost)
    bool awaiting = false;  // adopted: its trainer has not listed it (nor reported its exit) yet
  };
  struct Active {
    JobRequest request;
    int64_t generation = 0;
    DeviceKind device_kind = DeviceKind::kCpu;
    std::vector<Rank> ranks;
    absl::Time start_time;
    // Adopted jobs: until when ranks may await, and the queue place taken if it recovers.
    std::optional<absl::Time> adoption_deadline;
    int64_t sequence = 0;
  };
  struct Queued {
    JobRequest request;
    int64_t sequence = 0;
  };
  // Scheduling order: priority descending, then sequence.
  struct QueueKey {
    int64_t neg_priority;
    int64_t sequence;
    friend auto operator<=>(const QueueKey&, const QueueKey&) = default;
  };

  Scheduler(const SchedulerOptions& options, TrainerRegistry* registry, RendezvousStore* rendezvous,
            Clock* clock)
      : options_(options), registry_(registry), rendezvous_(rendezvous), clock_(clock) {}

  void ScheduleLocked(SchedulerEvents& events) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Forms the world; false when the registry refused it (a trainer stopped being idle).
  bool StartLocked(const Queued& job, DeviceKind kind, const std::vector<IdleTrainer>& world,
                   SchedulerEvents& events) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status CheckAssignmentLocked(const std::string& trainer_id, const AssignmentRef& ref) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ExpireLocked(SchedulerEvents& events) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Ends a running job: releases every rank still held (cancelling unless kSucceeded), drops its
  // rendezvous values, records the event. Returns whether a trainer became idle.
  bool EndRunningLocked(const std::string& job_id, JobEnd end, const std::string& reason,
                        bool trainer_fault, SchedulerEvents& events) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Whether `ref` is a rank of a running job, held by `trainer_id` and still awaiting it.
  bool AwaitingLocked(const std::string& trainer_id, const AssignmentRef& ref) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Marks the rank of `ref` back (listed or exited); a world with no rank awaiting is adopted.
  void RankBackLocked(const AssignmentRef& ref, SchedulerEvents& events) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Ends a world for recovery: cancels the ranks present, drops rendezvous values, queues the
  // job for its next generation (an adoption at the place it had, else at the front of its
  // priority), counts a recovery and records JobRecovering. Returns whether a trainer became idle.
  bool RecoverLocked(const std::string& job_id, std::vector<std::string> missing, const std::string& reason,
                     bool after_restart, SchedulerEvents& events) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool EndAdoptionLocked(const std::string& job_id, std::vector<std::string> missing, const std::string& reason,
                         SchedulerEvents& events) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return RecoverLocked(job_id, std::move(missing), reason, /*after_restart=*/true, events);
  }
  // Adoptions whose deadline has passed.
  void ExpireAdoptionsLocked(SchedulerEvents& events) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The rank of `ref` (marked exited) on `trainer_id` has failed: by the trainer's fault and with
  // recoveries left the job recovers, else it fails.
  void RankFailedLocked(const std::string& trainer_id, const AssignmentRef& ref, const std::string& reason,
                        bool trainer_fault,
                        SchedulerEvents& events) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Fails the job of `ref` if `ref` is a live rank of its current generation on `trainer_id`.
  bool FailRankLocked(const std::string& trainer_id, const AssignmentRef& ref, const std::string& reason,
                      bool trainer_fault, SchedulerEvents& events) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  std::set<std::string> ModelsInUseLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  RunningJob RunningViewLocked(const Active& job) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // Constant after construction.
  const SchedulerOptions options_;
  TrainerRegistry* const registry_;
  RendezvousStore* const rendezvous_;  // may be null
  Clock* const clock_;

  mutable absl::Mutex mu_;
  std::map<QueueKey, Queued> queue_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, QueueKey> queued_ids_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, Active> running_ ABSL_GUARDED_BY(mu_);
  int64_t next_sequence_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t next_front_sequence_ ABSL_GUARDED_BY(mu_) = -1;  // recovered jobs: before every submitted one
};

}  // namespace herd::coordinator

#endif  // HERD_COORDINATOR_SCHEDULER_H_
