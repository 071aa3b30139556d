// The coordinator's metrics: families, pre-initialisation and the scrape-time refresh.
#include "coordinator/coordinator_metrics.h"

#include <sys/statvfs.h>

#include <filesystem>
#include <set>
#include <utility>
#include <vector>

#include "common/status.h"
#include "coordinator/store/job_state.h"

namespace herd::coordinator {

namespace fs = std::filesystem;
using metrics::CounterFamily;
using metrics::GaugeFamily;
using metrics::HistogramFamily;

struct CoordinatorMetrics::Families {
  GaugeFamily* jobs;
  GaugeFamily* queue_depth;
  GaugeFamily* trainers;
  GaugeFamily* storage;
  GaugeFamily* free_bytes;
  GaugeFamily* capacity_bytes;
  GaugeFamily* eval_loss;
  GaugeFamily* learning_rate;
  GaugeFamily* grad_norm;
  GaugeFamily* step;
  GaugeFamily* total_steps;
  HistogramFamily* checkpoint_seconds;
  CounterFamily* tenant_tokens;
  HistogramFamily* preparation_seconds;
  CounterFamily* preparation_tokens;
  CounterFamily* decisions;
};

namespace {

constexpr TrainerState kTrainerStates[] = {TrainerState::kIdle, TrainerState::kBusy, TrainerState::kLost};
constexpr const char* kDecisions[] = {"world_formed", "job_finished", "job_failed", "job_cancelled",
                                      "trainer_lost"};

// Bytes of the regular files under `dir` (0 when it does not exist).
int64_t TreeBytes(const std::string& dir) {
  int64_t total = 0;
  std::error_code ec;
  for (fs::recursive_directory_iterator it(dir, fs::directory_options::skip_permission_denied, ec), end;
       !ec && it != end; it.increment(ec)) {
    std::error_code size_ec;
    if (it->is_regular_file(size_ec)) {
      const uintmax_t size = it->file_size(size_ec);
      if (!size_ec) total += static_cast<int64_t>(size);
    }
  }
  return total;
}

int64_t FileBytes(const std::string& path) {
  std::error_code ec;
  const uintmax_t size = fs::file_size(path, ec);
  return ec ? 0 : static_cast<int64_t>(size);
}

}  // namespace

absl::StatusOr<std::unique_ptr<CoordinatorMetrics>> CoordinatorMetrics::Create(metrics::Registry* registry,
                                                                               CoordinatorMetricsSources sources) {
  auto f = std::make_unique<Families>();
  auto gauge = [&](GaugeFamily** out, std::string name, std::string help,
                   std::vector<std::string> labels = {}) -> absl::Status {
    HERD_ASSIGN_OR_RETURN(*out, registry->AddGauge({.name = std::move(name), .help = std::move(help),
                                                    .label_names = std::move(labels)}));
    return absl::OkStatus();
  };
  HERD_RETURN_IF_ERROR(gauge(&f->jobs, "herd_jobs", "Jobs per state, all tenants.", {"state"}));
  HERD_RETURN_IF_ERROR(gauge(&f->queue_depth, "herd_queue_depth", "Jobs waiting for trainers."));
  HERD_RETURN_IF_ERROR(gauge(&f->trainers, "herd_trainers", "Trainers per state (idle, busy, lost).", {"state"}));
  HERD_RETURN_IF_ERROR(gauge(&f->storage, "herd_storage_bytes",
                             "Bytes the coordinator stores, by kind (database, blobs).", {"kind"}));
  HERD_RETURN_IF_ERROR(gauge(&f->free_bytes, "herd_data_dir_free_bytes",
                             "Free bytes on the data dir's file system (available to the coordinator)."));
  HERD_RETURN_IF_ERROR(gauge(&f->capacity_bytes, "herd_data_dir_capacity_bytes",
                             "Size of the data dir's file system in bytes."));
  HERD_RETURN_IF_ERROR(gauge(&f->eval_loss, "herd_eval_loss", "Latest validation loss of a running job.", {"job_id"}));
  HERD_RETURN_IF_ERROR(gauge(&f->learning_rate, "herd_learning_rate",
                             "Learning rate of a running job's latest step.", {"job_id"}));
  HERD_RETURN_IF_ERROR(gauge(&f->grad_norm, "herd_grad_norm",
                             "Gradient norm (before clipping) of a running job's latest step.", {"job_id"}));
  HERD_RETURN_IF_ERROR(gauge(&f->step, "herd_job_step", "Optimiser steps a running job has completed.", {"job_id"}));
  HERD_RETURN_IF_ERROR(gauge(&f->total_steps, "herd_job_total_steps", "Steps a running job runs.", {"job_id"}));
  HERD_ASSIGN_OR_RETURN(auto checkpoint_buckets, metrics::ExponentialBuckets(0.01, 2.5, 12));  // 10 ms .. ~10 min
  HERD_ASSIGN_OR_RETURN(f->checkpoint_seconds,
                        registry->AddHistogram({.name = "herd_checkpoint_seconds",
                                                .help = "Seconds to receive and store one uploaded checkpoint.",
                                                .label_names = {"job_id"},
                                                .buckets = checkpoint_buckets}));
  HERD_ASSIGN_OR_RETURN(f->tenant_tokens,
                        registry->AddCounter({.name = "herd_tenant_trained_tokens_total",
                                              .help = "Trained (labelled) tokens, all jobs of the tenant.",
                                              .label_names = {"tenant"}}));
  HERD_ASSIGN_OR_RETURN(auto preparation_buckets, metrics::ExponentialBuckets(0.1, 2.5, 12));  // 0.1 s .. ~100 min
  HERD_ASSIGN_OR_RETURN(f->preparation_seconds,
                        registry->AddHistogram({.name = "herd_preparation_seconds",
                                                .help = "Seconds of one job's data preparation.",
                                                .buckets = preparation_buckets}));
  HERD_ASSIGN_OR_RETURN(f->preparation_tokens,
                        registry->AddCounter({.name = "herd_preparation_tokens_total",
                                              .help = "Tokens produced by data preparation."}));
  HERD_ASSIGN_OR_RETURN(f->decisions,
                        registry->AddCounter({.name = "herd_scheduler_decisions_total",
                                              .help = "Scheduler decisions persisted, by kind.",
                                              .label_names = {"decision"}}));

  for (store::JobState s : store::kAllJobStates) f->jobs->WithLabels(store::JobStateName(s));
  for (TrainerState s : kTrainerStates) f->trainers->WithLabels(TrainerStateName(s));
  f->queue_depth->WithLabels();
  f->storage->WithLabels("database");
  f->storage->WithLabels("blobs");
  f->free_bytes->WithLabels();
  f->capacity_bytes->WithLabels();
  f->preparation_seconds->WithLabels();
  f->preparation_tokens->WithLabels();
  for (const char* d : kDecisions) f->decisions->WithLabels(d);
  if (sources.tokens != nullptr) {
    if (auto tenants = sources.tokens->ListTenants(); tenants.ok()) {
      for (const std::string& t : *tenants) f->tenant_tokens->WithLabels(t);
    }
  }

  std::unique_ptr<CoordinatorMetrics> m(new CoordinatorMetrics(std::move(sources), std::move(f)));
  registry->AddCollectHook([raw = m.get()] { raw->Collect(); });
  return m;
}

CoordinatorMetrics::CoordinatorMetrics(CoordinatorMetricsSources sources, std::unique_ptr<Families> families)
    : sources_(std::move(sources)), f_(std::move(families)) {}

CoordinatorMetrics::~CoordinatorMetrics() = default;

void CoordinatorMetrics::Collect() {
  absl::MutexLock lock(&mu_);
  if (sources_.jobs != nullptr) {
    if (auto counts = sources_.jobs->CountByState(""); counts.ok()) {
      for (const auto& [state, n] : *counts) f_->jobs->WithLabels(store::JobStateName(state)).Set(n);
    }
  }
  if (sources_.scheduler != nullptr) {
    f_->queue_depth->WithLabels().Set(static_cast<double>(sources_.scheduler->QueueDepth()));
  }
  if (sources_.trainers != nullptr) {
    std::map<TrainerState, int64_t> per_state;
    for (const TrainerInfo& t : sources_.trainers->ListTrainers()) ++per_state[t.state];
    for (TrainerState s : kTrainerStates) f_->trainers->WithLabels(TrainerStateName(s)).Set(per_state[s]);
  }
  CollectJobsLocked();
  CollectStorageLocked();
}

void CoordinatorMetrics::CollectJobsLocked() {
  if (sources_.scheduler == nullptr) return;
  for (const RunningJob& r : sources_.scheduler->Running()) {
    auto [it, added] = jobs_.try_emplace(r.request.job_id);
    if (added) it->second.tenant = r.request.tenant;
  }
  for (auto& [id, series] : jobs_) UpdateJobLocked(id, series);
}

void CoordinatorMetrics::UpdateJobLocked(const std::string& job_id, JobSeries& s) {
  if (sources_.progress == nullptr) return;
  std::optional<JobProgressView> view = sources_.progress->Get(job_id);
  if (!view) return;
  if (view->trained_tokens > s.tokens_counted) {
    if (!s.tenant.empty()) {
      f_->tenant_tokens->WithLabels(s.tenant).Add(static_cast<double>(view->trained_tokens - s.tokens_counted));
    }
    s.tokens_counted = view->trained_tokens;
  }
  if (!s.has_progress) {
    s.learning_rate = f_->learning_rate->WithLabels(job_id);
    s.step = f_->step->WithLabels(job_id);
    s.total_steps = f_->total_steps->WithLabels(job_id);
    s.has_progress = true;
  }
  s.learning_rate.Set(view->learning_rate);
  s.step.Set(static_cast<double>(view->step));
  s.total_steps.Set(static_cast<double>(view->total_steps));
  if (view->eval_loss) {
    if (!s.has_eval) s.eval_loss = f_->eval_loss->WithLabels(job_id);
    s.has_eval = true;
    s.eval_loss.Set(*view->eval_loss);
  }
  for (const ProgressSample& p : sources_.progress->LatestPerRank(job_id)) {
    if (p.rank != 0 || !p.grad_norm) continue;
    if (!s.has_grad_norm) s.grad_norm = f_->grad_norm->WithLabels(job_id);
    s.has_grad_norm = true;
    s.grad_norm.Set(*p.grad_norm);
  }
}

void CoordinatorMetrics::CollectStorageLocked() {
  if (!sources_.database_path.empty()) {
    const std::string& db = sources_.database_path;
    f_->storage->WithLabels("database")
        .Set(static_cast<double>(FileBytes(db) + FileBytes(db + "-wal") + FileBytes(db + "-shm")));
  }
  const absl::Time now = absl::Now();
  if (!sources_.blob_dir.empty() && now - last_blob_scan_ >= sources_.blob_scan_interval) {
    last_blob_scan_ = now;
    f_->storage->WithLabels("blobs").Set(static_cast<double>(TreeBytes(sources_.blob_dir)));
  }
  struct statvfs vfs;
  if (!sources_.data_dir.empty() && ::statvfs(sources_.data_dir.c_str(), &vfs) == 0) {
    f_->free_bytes->WithLabels().Set(static_cast<double>(vfs.f_bavail) * static_cast<double>(vfs.f_frsize));
    f_->capacity_bytes->WithLabels().Set(static_cast<double>(vfs.f_blocks) * static_cast<double>(vfs.f_frsize));
  }
}

void CoordinatorMetrics::OnSchedulerEvents(const SchedulerEvents& events) {
  if (!events.started.empty()) f_->decisions->WithLabels("world_formed").Increment(events.started.size());
  if (!events.lost.empty()) f_->decisions->WithLabels("trainer_lost").Increment(events.lost.size());
  for (const JobEnded& e : events.ended) {
    f_->decisions
        ->WithLabels(e.end == JobEnd::kSucceeded ? "job_finished"
                     : e.end == JobEnd::kCancelled ? "job_cancelled"
                                                   : "job_failed")
        .Increment();
  }
}

void CoordinatorMetrics::OnPrepared(double seconds, int64_t tokens) {
  f_->preparation_seconds->WithLabels().Observe(seconds);
  if (tokens > 0) f_->preparation_tokens->WithLabels().Increment(static_cast<uint64_t>(tokens));
}

void CoordinatorMetrics::OnCheckpointStored(const std::string& job_id, double seconds) {
  f_->checkpoint_seconds->WithLabels(job_id).Observe(seconds);
}

void CoordinatorMetrics::OnJobFinal(const std::string& job_id) {
  absl::MutexLock lock(&mu_);
  auto it = jobs_.find(job_id);
  if (it == jobs_.end() && sources_.progress != nullptr && sources_.jobs != nullptr &&
      sources_.progress->Get(job_id)) {
    // It ran between two scrapes: its tokens still count.
    if (auto job = sources_.jobs->GetById(job_id); job.ok()) {
      it = jobs_.try_emplace(job_id).first;
      it->second.tenant = job->tenant;
    }
  }
  if (it != jobs_.end()) {
    UpdateJobLocked(job_id, it->second);
    jobs_.erase(it);
  }
  for (GaugeFamily* g : {f_->eval_loss, f_->learning_rate, f_->grad_norm, f_->step, f_->total_steps}) {
    g->RemoveWhere("job_id", job_id);
  }
  f_->checkpoint_seconds->RemoveWhere("job_id", job_id);
}

}  // namespace herd::coordinator
