#include "coordinator/scheduler.h"

#include <algorithm>
#include <utility>

#include "common/sharding.h"
#include "common/strings.h"

namespace herd::coordinator {
namespace {

constexpr DeviceKind kPreference[] = {DeviceKind::kCuda, DeviceKind::kCpu};

// Exit codes by which an engine says a retry would fail the same way (trainers.proto,
// ReportEngineExit): the job is at fault, not the trainer.
bool JobFault(const EngineExit& exit) {
  if (exit.reason != ExitReason::kError) return false;
  switch (exit.code) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kOutOfRange:
    case absl::StatusCode::kResourceExhausted:
    case absl::StatusCode::kUnimplemented:
      return true;
    default:
      return false;
  }
}

}  // namespace

std::string_view ExitReasonName(ExitReason reason) {
  switch (reason) {
    case ExitReason::kCompleted: return "COMPLETED";
    case ExitReason::kCancelled: return "CANCELLED";
    case ExitReason::kError: return "ERROR";
    case ExitReason::kWatchdog: return "WATCHDOG";
    case ExitReason::kCrashed: return "CRASHED";
    case ExitReason::kHung: return "HUNG";
    case ExitReason::kProtocolViolation: return "PROTOCOL_VIOLATION";
    case ExitReason::kStartFailed: return "START_FAILED";
    case ExitReason::kUploadFailed: return "UPLOAD_FAILED";
  }
  return "UNKNOWN";
}

absl::Status JobRequest::Validate() const {
  if (job_id.empty()) return absl::InvalidArgumentError("job id is empty");
  if (base_model.empty()) return absl::InvalidArgumentError(StrCat("job ", job_id, ": base_model is empty"));
  if (trainers < 1) return absl::InvalidArgumentError(StrCat("job ", job_id, ": trainers must be at least 1"));
  if (micro_batch_size < 1 || global_batch_size < 1) {
    return absl::InvalidArgumentError(StrCat("job ", job_id, ": batch sizes must be at least 1"));
  }
  if (global_batch_size % (micro_batch_size * trainers) != 0) {
    return absl::InvalidArgumentError(StrCat(
        "job ", job_id, ": global_batch_size ", global_batch_size, " is not a multiple of micro_batch_size ",
        micro_batch_size, " x trainers ", trainers));
  }
  if (last_generation < 0) return absl::InvalidArgumentError(StrCat("job ", job_id, ": last_generation < 0"));
  return absl::OkStatus();
}

absl::Status SchedulerOptions::Validate() const {
  if (max_queued_jobs < 1) return absl::InvalidArgumentError("max_queued_jobs must be at least 1");
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Scheduler>> Scheduler::Create(const SchedulerOptions& options,
                                                             TrainerRegistry* registry,
                                                             RendezvousStore* rendezvous, Clock* clock) {
  if (absl::Status s = options.Validate(); !s.ok()) return s;
  if (registry == nullptr || clock == nullptr) {
    return absl::InvalidArgumentError("scheduler needs a registry and a clock");
  }
  return std::unique_ptr<Scheduler>(new Scheduler(options, registry, rendezvous, clock));
}

// --- Jobs. ---

absl::StatusOr<SchedulerEvents> Scheduler::Submit(const JobRequest& request) {
  if (absl::Status s = request.Validate(); !s.ok()) return s;
  absl::MutexLock lock(&mu_);
  if (queued_ids_.contains(request.job_id) || running_.contains(request.job_id)) {
    return absl::AlreadyExistsError(StrCat("job ", request.job_id, " is already queued or running"));
  }
  if (static_cast<int64_t>(queue_.size()) >= options_.max_queued_jobs) {
    return absl::ResourceExhaustedError(
        StrCat("the queue holds ", queue_.size(), " jobs, the most allowed; retry later"));
  }
  const QueueKey key{-request.priority, next_sequence_++};
  queue_.emplace(key, Queued{request, key.sequence});
  queued_ids_.emplace(request.job_id, key);
  SchedulerEvents events;
  ScheduleLocked(events);
  return events;
}

absl::StatusOr<SchedulerEvents> Scheduler::Cancel(const std::string& job_id) {
  return Finish(job_id, JobEnd::kCancelled, "job cancelled by user");
}

absl::StatusOr<SchedulerEvents> Scheduler::Finish(const std::string& job_id, JobEnd end,
                                                  const std::string& reason) {
  absl::MutexLock lock(&mu_);
  SchedulerEvents events;
  if (auto q = queued_ids_.find(job_id); q != queued_ids_.end()) {
    if (end == JobEnd::kSucceeded) {
      return absl::FailedPreconditionError(StrCat("job ", job_id, " is queued; it cannot have succeeded"));
    }
    const int64_t last_generation = queue_.at(q->second).request.last_generation;
    queue_.erase(q->second);
    queued_ids_.erase(q);
    events.ended.push_back(JobEnded{job_id, last_generation, end, reason, false});
    ScheduleLocked(events);  // later jobs of its model may now go first
    return events;
  }
  if (!running_.contains(job_id)) {
    return absl::NotFoundError(StrCat("job ", job_id, " is not queued or running"));
  }
  EndRunningLocked(job_id, end, reason, false, events);
  ScheduleLocked(events);
  return events;
}

// --- Trainers. ---

absl::StatusOr<RegisterTrainerResult> Scheduler::RegisterTrainer(const TrainerRegistration& registration,
                                                                 const std::set<std::string>& extra_models_in_use) {
  absl::MutexLock lock(&mu_);
  std::set<std::string> in_use = ModelsInUseLocked();
  in_use.insert(extra_models_in_use.begin(), extra_models_in_use.end());
  absl::StatusOr<RegisterResult> registered = registry_->Register(registration, in_use);
  if (!registered.ok()) return registered.status();
  RegisterTrainerResult result{*std::move(registered), {}};
  ScheduleLocked(result.events);
  return result;
}

absl::StatusOr<HeartbeatResult> Scheduler::Heartbeat(const std::string& trainer_id, const std::string& session_id,
                                                     const std::vector<AssignmentStatus>& statuses) {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<HeartbeatReply> reply = registry_->Heartbeat(trainer_id, session_id, statuses);
  if (!reply.ok()) return reply.status();
  HeartbeatResult result{*std::move(reply), {}};
  bool changed = result.reply.freed;
  for (const AssignmentRef& ref : result.reply.dropped) {
    const std::optional<TrainerInfo> t = registry_->GetTrainer(trainer_id);
    changed |= FailRankLocked(
        trainer_id, ref,
        StrCat("trainer ", t ? t->registration.name : trainer_id, " stopped running rank ", ref.rank,
               " without reporting an exit"),
        true, result.events);
  }
  if (!changed) return result;
  ScheduleLocked(result.events);
  for (const WorldStarted& world : result.events.started) {
    if (std::find(world.trainer_ids.begin(), world.trainer_ids.end(), trainer_id) != world.trainer_ids.end()) {
      std::vector<Assignment> fresh = registry_->DeliverPending(trainer_id);
      result.reply.assignments.insert(result.reply.assignments.end(), fresh.begin(), fresh.end());
    }
  }
  return result;
}

absl::StatusOr<SchedulerEvents> Scheduler::ReportEngineExit(const std::string& trainer_id,
                                                            const AssignmentRef& ref, const EngineExit& exit) {
  if (absl::Status s = ref.Validate(); !s.ok()) return s;
  absl::MutexLock lock(&mu_);
  // Whatever the job's state, the trainer no longer runs this engine. A trainer freed on the
  // error path below is picked up by the next Tick.
  const bool freed = registry_->ResolveExit(trainer_id, ref);
  if (absl::Status s = CheckAssignmentLocked(trainer_id, ref); !s.ok()) return s;
  SchedulerEvents events;
  Active& job = running_.at(ref.job_id);
  Rank& rank = job.ranks[ref.rank];
  if (rank.exited) return events;  // reported before: safe to retry
  rank.exited = true;
  if (exit.reason != ExitReason::kCompleted) {
    const std::optional<TrainerInfo> t = registry_->GetTrainer(trainer_id);
    std::string why = StrCat("rank ", ref.rank, " on trainer ", t ? t->registration.name : trainer_id,
                             " ended ", ExitReasonName(exit.reason));
    if (exit.reason == ExitReason::kCancelled) why += " without being cancelled";
    if (!exit.message.empty()) why += StrCat(": ", exit.message);
    why += StrCat(" (step ", exit.step, ")");
    EndRunningLocked(ref.job_id, JobEnd::kFailed, why, !JobFault(exit), events);
  }
  if (freed || !events.ended.empty()) ScheduleLocked(events);
  return events;
}

absl::Status Scheduler::CheckAssignment(const std::string& trainer_id, const AssignmentRef& ref) const {
  absl::MutexLock lock(&mu_);
  return CheckAssignmentLocked(trainer_id, ref);
}

absl::Status Scheduler::CheckAssignmentLocked(const std::string& trainer_id, const AssignmentRef& ref) const {
  if (absl::Status s = ref.Validate(); !s.ok()) return s;
  auto it = running_.find(ref.job_id);
  if (it == running_.end()) {
    return absl::FailedPreconditionError(StrCat("job ", ref.job_id, " is not running (unknown, queued or final)"));
  }
  const Active& job = it->second;
  if (ref.generation != job.generation) {
    return absl::FailedPreconditionError(StrCat("generation ", ref.generation, " of job ", ref.job_id,
                                                " is not current (current: ", job.generation, ")"));
  }
  if (ref.rank >= static_cast<int>(job.ranks.size()) || job.ranks[ref.rank].trainer_id != trainer_id) {
    return absl::FailedPreconditionError(StrCat("rank ", ref.rank, " of job ", ref.job_id, " generation ",
                                                ref.generation, " is not held by trainer ", trainer_id));
  }
  return absl::OkStatus();
}

SchedulerEvents Scheduler::Tick() {
  absl::MutexLock lock(&mu_);
  SchedulerEvents events;
  for (LostTrainer& lost : registry_->ExpireLeases()) {
    if (lost.assignment) {
      FailRankLocked(lost.trainer_id, *lost.assignment,
                     StrCat("trainer ", lost.name, " lost at step ", lost.step), true, events);
    }
    events.lost.push_back(std::move(lost));
  }
  ScheduleLocked(events);
  return events;
}

SchedulerEvents Scheduler::Schedule() {
  absl::MutexLock lock(&mu_);
  SchedulerEvents events;
  ScheduleLocked(events);
  return events;
}

// --- The pass. ---

void Scheduler::ScheduleLocked(SchedulerEvents& events) {
  if (queue_.empty()) return;
  const std::vector<LiveTrainer> live = registry_->LiveTrainers();  // by name
  std::set<std::string> taken;                                       // started or held back
  std::set<std::pair<std::string, int64_t>> blocked;                 // (model, priority)
  std::vector<QueueKey> started;
  for (const auto& [key, job] : queue_) {
    const JobRequest& r = job.request;
    if (blocked.contains({r.base_model, r.priority})) continue;  // strict FIFO there
    std::map<DeviceKind, std::vector<IdleTrainer>> idle;
    std::map<DeviceKind, int64_t> holders;
    for (const LiveTrainer& t : live) {
      if (!t.trainer.weights_by_model.contains(r.base_model)) continue;
      ++holders[t.trainer.device_kind];
      if (t.idle && !taken.contains(t.trainer.id)) idle[t.trainer.device_kind].push_back(t.trainer);
    }
    bool placed = false;
    for (DeviceKind kind : kPreference) {
      std::vector<IdleTrainer>& candidates = idle[kind];
      if (static_cast<int64_t>(candidates.size()) < r.trainers) continue;
      candidates.resize(r.trainers);
      placed = StartLocked(job, kind, candidates, events);
      if (placed) {
        for (const IdleTrainer& t : candidates) taken.insert(t.id);
        started.push_back(key);
      }
      break;
    }
    if (placed) continue;
    blocked.insert({r.base_model, r.priority});
    // Hold back what it would use, if the live cluster can ever satisfy it.
    for (DeviceKind kind : kPreference) {
      if (holders[kind] < r.trainers) continue;
      const std::vector<IdleTrainer>& candidates = idle[kind];
      for (size_t i = 0; i < candidates.size() && static_cast<int64_t>(i) < r.trainers; ++i) {
        taken.insert(candidates[i].id);
      }
      break;
    }
  }
  for (const QueueKey& key : started) {
    queued_ids_.erase(queue_.at(key).request.job_id);
    queue_.erase(key);
  }
}

bool Scheduler::StartLocked(const Queued& job, DeviceKind kind, const std::vector<IdleTrainer>& world,
                            SchedulerEvents& events) {
  const JobRequest& r = job.request;
  const absl::Time now = clock_->Now();
  ShardShape shape;
  shape.global_batch = r.global_batch_size;
  shape.micro_batch = r.micro_batch_size;
  shape.world_size = r.trainers;
  WorldStarted started{r.job_id, r.last_generation + 1, kind, {}, {}};
  for (size_t rank = 0; rank < world.size(); ++rank) {
    Assignment a;
    a.ref = AssignmentRef{r.job_id, started.generation, static_cast<int>(rank)};
    a.world_size = static_cast<int>(world.size());
    a.base_model = r.base_model;
    a.weights_sha256 = world[0].weights_by_model.at(r.base_model);
    a.device_kind = kind;
    a.grad_accum_steps = shape.GradAccum();
    a.create_time = now;
    started.trainer_ids.push_back(world[rank].id);
    started.assignments.push_back(std::move(a));
  }
  if (!registry_->AssignWorld(started.trainer_ids, started.assignments).ok()) return false;
  if (rendezvous_ != nullptr) {
    // Cannot fail: the scheduler alone moves generations forward.
    (void)rendezvous_->BeginGeneration(r.job_id, started.generation);
  }
  Active active{r, started.generation, kind, {}, now};
  for (const std::string& id : started.trainer_ids) active.ranks.push_back(Rank{id});
  running_[r.job_id] = std::move(active);
  events.started.push_back(std::move(started));
  return true;
}

bool Scheduler::EndRunningLocked(const std::string& job_id, JobEnd end, const std::string& reason,
                                 bool trainer_fault, SchedulerEvents& events) {
  auto it = running_.find(job_id);
  if (it == running_.end()) return false;
  Active job = std::move(it->second);
  running_.erase(it);
  const std::string cancel_reason = end == JobEnd::kCancelled ? reason : StrCat("job ended: ", reason);
  bool freed = false;
  for (size_t rank = 0; rank < job.ranks.size(); ++rank) {
    if (job.ranks[rank].exited) continue;
    const AssignmentRef ref{job_id, job.generation, static_cast<int>(rank)};
    freed |= registry_->Release(job.ranks[rank].trainer_id, ref, cancel_reason, end != JobEnd::kSucceeded);
  }
  if (rendezvous_ != nullptr) rendezvous_->EndJob(job_id);
  events.ended.push_back(JobEnded{job_id, job.generation, end, reason, end == JobEnd::kFailed && trainer_fault});
  return freed;
}

bool Scheduler::FailRankLocked(const std::string& trainer_id, const AssignmentRef& ref, const std::string& reason,
                               bool trainer_fault, SchedulerEvents& events) {
  auto it = running_.find(ref.job_id);
  if (it == running_.end() || it->second.generation != ref.generation) return false;
  Active& job = it->second;
  if (ref.rank >= static_cast<int>(job.ranks.size())) return false;
  Rank& rank = job.ranks[ref.rank];
  if (rank.trainer_id != trainer_id || rank.exited) return false;
  rank.exited = true;
  EndRunningLocked(ref.job_id, JobEnd::kFailed, reason, trainer_fault, events);
  return true;
}

// --- Views. ---

std::set<std::string> Scheduler::ModelsInUseLocked() const {
  std::set<std::string> models;
  for (const auto& [key, job] : queue_) models.insert(job.request.base_model);
  for (const auto& [id, job] : running_) models.insert(job.request.base_model);
  return models;
}

std::set<std::string> Scheduler::ModelsInUse() const {
  absl::MutexLock lock(&mu_);
  return ModelsInUseLocked();
}

std::vector<QueuedJob> Scheduler::Queue() const {
  absl::MutexLock lock(&mu_);
  std::vector<QueuedJob> out;
  for (const auto& [key, job] : queue_) {
    out.push_back(QueuedJob{job.request, static_cast<int64_t>(out.size())});
  }
  return out;
}

int64_t Scheduler::QueueDepth() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int64_t>(queue_.size());
}

RunningJob Scheduler::RunningViewLocked(const Active& job) const {
  RunningJob view{job.request, job.generation, job.device_kind, {}, job.start_time};
  for (const Rank& r : job.ranks) view.trainer_ids.push_back(r.trainer_id);
  return view;
}

std::optional<RunningJob> Scheduler::GetRunning(const std::string& job_id) const {
  absl::MutexLock lock(&mu_);
  auto it = running_.find(job_id);
  if (it == running_.end()) return std::nullopt;
  return RunningViewLocked(it->second);
}

std::vector<RunningJob> Scheduler::Running() const {
  absl::MutexLock lock(&mu_);
  std::vector<RunningJob> out;
  for (const auto& [id, job] : running_) out.push_back(RunningViewLocked(job));
  return out;
}

}  // namespace herd::coordinator
