#include "coordinator/scheduler.h"

#include <algorithm>
#include <set>
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
  if (recoveries < 0) return absl::InvalidArgumentError(StrCat("job ", job_id, ": recoveries < 0"));
  return absl::OkStatus();
}

absl::Status SchedulerOptions::Validate() const {
  if (max_queued_jobs < 1) return absl::InvalidArgumentError("max_queued_jobs must be at least 1");
  if (max_recoveries < 0) return absl::InvalidArgumentError("max_recoveries must not be negative");
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

absl::Status Scheduler::Adopt(const JobRequest& request, int64_t generation,
                              std::vector<std::string> trainer_ids_by_rank, absl::Duration grace) {
  if (absl::Status s = request.Validate(); !s.ok()) return s;
  if (generation < 1) {
    return absl::InvalidArgumentError(StrCat("job ", request.job_id, ": generation ", generation, " < 1"));
  }
  if (static_cast<int64_t>(trainer_ids_by_rank.size()) != request.trainers) {
    return absl::InvalidArgumentError(StrCat("job ", request.job_id, ": ", trainer_ids_by_rank.size(),
                                             " trainers to adopt for a world of ", request.trainers));
  }
  std::set<std::string> seen;
  for (const std::string& id : trainer_ids_by_rank) {
    if (id.empty() || !seen.insert(id).second) {
      return absl::InvalidArgumentError(StrCat("job ", request.job_id, ": trainer id \"", id,
                                               "\" is empty or holds two ranks"));
    }
  }
  absl::MutexLock lock(&mu_);
  if (queued_ids_.contains(request.job_id) || running_.contains(request.job_id)) {
    return absl::AlreadyExistsError(StrCat("job ", request.job_id, " is already queued or running"));
  }
  const absl::Time now = clock_->Now();
  ShardShape shape;
  shape.global_batch = request.global_batch_size;
  shape.micro_batch = request.micro_batch_size;
  shape.world_size = request.trainers;
  Active active{request, generation, DeviceKind::kCpu, {}, now, now + grace, next_sequence_++};
  active.request.last_generation = generation;
  for (size_t rank = 0; rank < trainer_ids_by_rank.size(); ++rank) {
    Assignment a;
    a.ref = AssignmentRef{request.job_id, generation, static_cast<int>(rank)};
    a.world_size = static_cast<int>(trainer_ids_by_rank.size());
    a.base_model = request.base_model;
    a.grad_accum_steps = shape.GradAccum();
    a.create_time = now;
    if (absl::Status s = registry_->ExpectAdoption(trainer_ids_by_rank[rank], a); !s.ok()) {
      for (size_t taken = 0; taken < active.ranks.size(); ++taken) {
        const AssignmentRef ref{request.job_id, generation, static_cast<int>(taken)};
        registry_->Release(active.ranks[taken].trainer_id, ref, "adoption abandoned", /*send_cancel=*/false);
      }
      return s;
    }
    active.ranks.push_back(Rank{trainer_ids_by_rank[rank], false, true});
  }
  if (rendezvous_ != nullptr) {
    // Cannot fail: nothing else has begun a generation of this job in this process.
    (void)rendezvous_->BeginGeneration(request.job_id, generation);
  }
  running_[request.job_id] = std::move(active);
  return absl::OkStatus();
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
  for (const AssignmentRef& ref : result.reply.adopted) RankBackLocked(ref, result.events);
  for (const AssignmentRef& ref : result.reply.dropped) {
    if (AwaitingLocked(trainer_id, ref)) {
      EndAdoptionLocked(ref.job_id, {trainer_id},
                        StrCat("came back without running rank ", ref.rank, " of generation ", ref.generation),
                        result.events);
      changed = true;  // the job is queued again
      continue;
    }
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
  if (exit.reason == ExitReason::kCompleted) RankBackLocked(ref, events);
  if (exit.reason != ExitReason::kCompleted) {
    const std::optional<TrainerInfo> t = registry_->GetTrainer(trainer_id);
    std::string why = StrCat("rank ", ref.rank, " on trainer ", t ? t->registration.name : trainer_id,
                             " ended ", ExitReasonName(exit.reason));
    if (exit.reason == ExitReason::kCancelled) why += " without being cancelled";
    if (!exit.message.empty()) why += StrCat(": ", exit.message);
    why += StrCat(" (step ", exit.step, ")");
    RankFailedLocked(trainer_id, ref, why, !JobFault(exit), events);
  }
  if (freed || !events.ended.empty() || !events.recovering.empty()) ScheduleLocked(events);
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
    if (lost.assignment && AwaitingLocked(lost.trainer_id, *lost.assignment)) {
      EndAdoptionLocked(lost.assignment->job_id, {lost.trainer_id},
                        "came back but was lost before it listed its assignment", events);
    } else if (lost.assignment) {
      FailRankLocked(lost.trainer_id, *lost.assignment,
                     StrCat("rank ", lost.assignment->rank, " on trainer ", lost.name, " lost at step ", lost.step),
                     true, events);
    }
    events.lost.push_back(std::move(lost));
  }
  ExpireAdoptionsLocked(events);
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

bool Scheduler::AwaitingLocked(const std::string& trainer_id, const AssignmentRef& ref) const {
  auto it = running_.find(ref.job_id);
  if (it == running_.end() || it->second.generation != ref.generation) return false;
  const std::vector<Rank>& ranks = it->second.ranks;
  return ref.rank >= 0 && ref.rank < static_cast<int>(ranks.size()) && ranks[ref.rank].trainer_id == trainer_id &&
         ranks[ref.rank].awaiting;
}

void Scheduler::RankBackLocked(const AssignmentRef& ref, SchedulerEvents& events) {
  auto it = running_.find(ref.job_id);
  if (it == running_.end() || it->second.generation != ref.generation) return;
  Active& job = it->second;
  if (ref.rank < 0 || ref.rank >= static_cast<int>(job.ranks.size()) || !job.ranks[ref.rank].awaiting) return;
  Rank& rank = job.ranks[ref.rank];
  rank.awaiting = false;
  // The world's device kind was not stored; its trainers tell it as they come back.
  if (std::optional<TrainerInfo> t = registry_->GetTrainer(rank.trainer_id); t) {
    job.device_kind = t->registration.device_kind;
  }
  if (std::any_of(job.ranks.begin(), job.ranks.end(), [](const Rank& r) { return r.awaiting; })) return;
  job.adoption_deadline.reset();
  WorldAdopted adopted{ref.job_id, job.generation, {}};
  for (const Rank& r : job.ranks) adopted.trainer_ids.push_back(r.trainer_id);
  events.adopted.push_back(std::move(adopted));
}

bool Scheduler::RecoverLocked(const std::string& job_id, std::vector<std::string> missing,
                              const std::string& reason, bool after_restart, SchedulerEvents& events) {
  auto it = running_.find(job_id);
  if (it == running_.end()) return false;
  Active job = std::move(it->second);
  running_.erase(it);
  std::vector<std::string> names;
  for (const std::string& id : missing) {
    const std::optional<TrainerInfo> t = registry_->GetTrainer(id);
    names.push_back(t ? t->registration.name : id);
  }
  const std::string cancel_reason =
      after_restart ? StrCat("generation ", job.generation, " is replaced after the coordinator's restart: ",
                             names.empty() ? "" : StrCat(StrJoin(names, ", "), " "), reason)
                    : StrCat("generation ", job.generation, " is replaced: ", reason);
  bool freed = false;
  for (size_t rank = 0; rank < job.ranks.size(); ++rank) {
    if (job.ranks[rank].exited) continue;
    const AssignmentRef ref{job_id, job.generation, static_cast<int>(rank)};
    freed |= registry_->Release(job.ranks[rank].trainer_id, ref, cancel_reason, /*send_cancel=*/true);
  }
  if (rendezvous_ != nullptr) rendezvous_->EndJob(job_id);
  // Back in the queue (an adopted job at the place it took when adopted, else at the front of its
  // priority); the next world is generation + 1.
  JobRequest request = job.request;
  request.last_generation = job.generation;
  ++request.recoveries;
  const QueueKey key{-request.priority, after_restart ? job.sequence : next_front_sequence_--};
  queue_.emplace(key, Queued{request, key.sequence});
  queued_ids_.emplace(job_id, key);
  JobRecovering recovering{job_id, job.generation, std::move(missing), reason, after_restart, {}};
  for (const Rank& r : job.ranks) recovering.trainer_ids.push_back(r.trainer_id);
  events.recovering.push_back(std::move(recovering));
  return freed;
}

void Scheduler::ExpireAdoptionsLocked(SchedulerEvents& events) {
  const absl::Time now = clock_->Now();
  std::vector<std::pair<std::string, std::vector<std::string>>> due;
  std::vector<std::string> reasons;
  for (const auto& [id, job] : running_) {
    if (!job.adoption_deadline || now < *job.adoption_deadline) continue;
    std::vector<std::string> missing;
    for (const Rank& r : job.ranks) {
      if (r.awaiting) missing.push_back(r.trainer_id);
    }
    due.emplace_back(id, std::move(missing));
    reasons.push_back(StrCat("did not come back within ",
                             absl::FormatDuration(*job.adoption_deadline - job.start_time),
                             " of the coordinator's restart"));
  }
  for (size_t i = 0; i < due.size(); ++i) EndAdoptionLocked(due[i].first, std::move(due[i].second), reasons[i], events);
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
  RankFailedLocked(trainer_id, ref, reason, trainer_fault, events);
  return true;
}

void Scheduler::RankFailedLocked(const std::string& trainer_id, const AssignmentRef& ref, const std::string& reason,
                                 bool trainer_fault, SchedulerEvents& events) {
  Active& job = running_.at(ref.job_id);
  if (!trainer_fault) {
    EndRunningLocked(ref.job_id, JobEnd::kFailed, reason, trainer_fault, events);
    return;
  }
  if (job.request.recoveries >= options_.max_recoveries) {
    EndRunningLocked(ref.job_id, JobEnd::kFailed,
                     StrCat(reason, "; out of recoveries (", job.request.recoveries, " of ", options_.max_recoveries,
                            " used)"),
                     trainer_fault, events);
    return;
  }
  if (!job.adoption_deadline) {
    // A running world lost a rank by its trainer's fault: the next generation forms on idle trainers.
    RecoverLocked(ref.job_id, {trainer_id}, reason, /*after_restart=*/false, events);
    return;
  }
  // An adopted world that did not come back whole: recover it rather than fail the job.
  job.ranks[ref.rank].awaiting = false;
  std::vector<std::string> missing;
  for (const Rank& r : job.ranks) {
    if (r.awaiting) missing.push_back(r.trainer_id);
  }
  const std::string why = missing.empty() ? reason : StrCat("had not come back when ", reason);
  EndAdoptionLocked(ref.job_id, std::move(missing), why, events);
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
  RunningJob view{job.request, job.generation, job.device_kind, {}, job.start_time, {}, job.adoption_deadline};
  for (const Rank& r : job.ranks) {
    view.trainer_ids.push_back(r.trainer_id);
    if (r.awaiting) view.awaiting_trainer_ids.push_back(r.trainer_id);
  }
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
