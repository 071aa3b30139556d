// The coordinator's Prometheus metrics (docs/metrics.md, coordinator table; DESIGN.md §7) apart
// from the RPC ones (common/rpc/rpc_metrics.h): jobs, queue and trainers per state, storage,
// live progress of running jobs, tenants' trained tokens, preparation, checkpoints and scheduler
// decisions. Gauges are refreshed from the domain classes at each scrape (a Registry collect
// hook); events are counted through the On* calls main wires to JobControl and TrainerService.
// Domain code: no grpc++ includes. Thread-safe.
#ifndef HERD_COORDINATOR_COORDINATOR_METRICS_H_
#define HERD_COORDINATOR_COORDINATOR_METRICS_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/metrics/metrics.h"
#include "coordinator/progress_board.h"
#include "coordinator/registry.h"
#include "coordinator/scheduler.h"
#include "coordinator/store/job_store.h"
#include "coordinator/store/token_store.h"

namespace herd::coordinator {

// Where the gauges come from. None is owned; all outlive the metrics. A null source leaves its
// gauges at their pre-initialised zeros (tests).
struct CoordinatorMetricsSources {
  store::JobStore* jobs = nullptr;            // herd_jobs; a finished job's tenant
  store::TokenStore* tokens = nullptr;        // tenants, to pre-initialise their token counters
  const Scheduler* scheduler = nullptr;       // herd_queue_depth; the running jobs
  const TrainerRegistry* trainers = nullptr;  // herd_trainers
  const ProgressBoard* progress = nullptr;    // per-job progress, trained tokens
  std::string database_path;                  // herd.db (its -wal and -shm files are added)
  std::string blob_dir;                       // <data_dir>/blobs
  std::string data_dir;                       // statvfs of its file system
  // Walking the blob folder costs a stat per blob: done at most this often (0 = every scrape).
  absl::Duration blob_scan_interval = absl::Seconds(30);
};

class CoordinatorMetrics {
 public:
  // Registers every family in `registry` (which outlives this object and must not be scraped
  // after it is destroyed), pre-initialises the known label values, and adds Collect as a
  // collect hook. ALREADY_EXISTS when a family is registered already.
  static absl::StatusOr<std::unique_ptr<CoordinatorMetrics>> Create(metrics::Registry* registry,
                                                                    CoordinatorMetricsSources sources);
  ~CoordinatorMetrics();
  CoordinatorMetrics(const CoordinatorMetrics&) = delete;
  CoordinatorMetrics& operator=(const CoordinatorMetrics&) = delete;

  // Refreshes the gauges and the tenants' token counters from the sources.
  void Collect();

  // What a Scheduler call decided (JobControl persists it): herd_scheduler_decisions_total.
  void OnSchedulerEvents(const SchedulerEvents& events);
  // One job's data preparation succeeded.
  void OnPrepared(double seconds, int64_t tokens);
  // An uploaded checkpoint of `job_id` was received and stored.
  void OnCheckpointStored(const std::string& job_id, double seconds);
  // The job reached a final state: counts its last trained tokens and drops its series. Call
  // before the progress board forgets it.
  void OnJobFinal(const std::string& job_id);

 private:
  // The series of one running job, kept so that a scrape needs no label lookups.
  struct JobSeries {
    std::string tenant;
    int64_t tokens_counted = 0;  // the board's trained_tokens already added to the tenant
    bool has_progress = false;   // learning_rate/step/total_steps created
    metrics::Gauge learning_rate, step, total_steps, eval_loss, grad_norm;
    bool has_eval = false, has_grad_norm = false;
  };
  struct Families;

  CoordinatorMetrics(CoordinatorMetricsSources sources, std::unique_ptr<Families> families);
  void CollectJobsLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void CollectStorageLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Adds the board's new trained tokens of `job_id` to its tenant and refreshes its gauges.
  void UpdateJobLocked(const std::string& job_id, JobSeries& series) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // Constant after construction.
  const CoordinatorMetricsSources sources_;
  const std::unique_ptr<Families> f_;

  absl::Mutex mu_;
  std::map<std::string, JobSeries> jobs_ ABSL_GUARDED_BY(mu_);  // running (or recovering) jobs
  absl::Time last_blob_scan_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
};

}  // namespace herd::coordinator

#endif  // HERD_COORDINATOR_COORDINATOR_METRICS_H_
