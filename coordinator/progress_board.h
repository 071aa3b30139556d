// Live training progress of running jobs, aggregated over their ranks (DESIGN.md §1, §3 step 7):
// in memory only, fed by TrainerService.ReportProgress, read by GetJob, WatchJob and the metrics
// exporters. A step counts once every rank of the current world has reported it; the job's
// progress (common.proto JobProgress) is then the step's rank-0 loss and learning rate, its
// tokens summed over the ranks, and a tokens/s rate averaged over the last few steps.
//
// Generations: a new world may resume from a checkpoint step below the step the job had
// reached. NewGeneration resets the per-rank cursors and moves the job's step back to the
// resume step (the steps after it are trained again); trained_tokens keeps counting, since the
// tokens were consumed.
//
// Thread-safe. No gRPC, no protobuf: the services convert (services/job_convert.h).
#ifndef HERD_COORDINATOR_PROGRESS_BOARD_H_
#define HERD_COORDINATOR_PROGRESS_BOARD_H_

#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace herd::coordinator {

// One rank's point (common.proto ProgressPoint); `time` is when it arrived.
struct ProgressSample {
  int rank = 0;
  int64_t step = 0;
  int64_t total_steps = 0;
  double epoch = 0;
  std::optional<double> loss;
  double learning_rate = 0;
  std::optional<double> grad_norm;
  int64_t tokens = 0;          // input tokens this rank processed in this step
  int64_t trained_tokens = 0;  // labelled tokens of the whole global batch (same on every rank)
  double step_seconds = 0;
  double allreduce_seconds = 0;
  double data_wait_seconds = 0;
  int64_t device_memory_bytes = 0;
  std::optional<double> mfu;
  absl::Time time;
};

// One evaluation (common.proto EvalPoint; rank 0 only).
struct EvalSample {
  int64_t step = 0;
  std::optional<double> eval_loss;
  double token_accuracy = 0;
  absl::Time time;
};

// A job's progress as users see it (common.proto JobProgress), plus a change counter.
struct JobProgressView {
  int64_t step = 0;
  int64_t total_steps = 0;
  double epoch = 0;
  std::optional<double> loss;
  double learning_rate = 0;
  double tokens_per_second = 0;
  int64_t trained_tokens = 0;
  std::optional<double> eval_loss;
  std::optional<double> eval_token_accuracy;
  absl::Time update_time;  // arrival of the latest point that changed the view
  // Increases on every change; board-wide, so it never goes back even for a job that was
  // forgotten and reported again.
  int64_t version = 0;
  // (step, loss) of counted steps, newest last, at most kMaxLossHistory.
  std::vector<std::pair<int64_t, double>> loss_history;
};

class ProgressBoard {
 public:
  static constexpr size_t kMaxLossHistory = 10'000;
  // Steps tokens_per_second is averaged over.
  static constexpr size_t kRateWindowSteps = 10;
  // Steps kept waiting for their slowest rank; older ones are dropped (a rank that stopped
  // reporting must not grow the board without bound).
  static constexpr size_t kMaxPendingSteps = 10'000;
  // Forgotten job ids remembered, so that a wait on one ends at once.
  static constexpr size_t kMaxForgotten = 1'000;

  ProgressBoard() = default;
  ProgressBoard(const ProgressBoard&) = delete;
  ProgressBoard& operator=(const ProgressBoard&) = delete;

  // Points of ranks of a `world_size`-rank world, each rank's by increasing step. A point at or
  // below a step its rank already reported, at or below the job's counted step, or with a rank
  // outside [0, world_size) is ignored, so retries are safe. A `world_size` other than the
  // current world's starts a new generation at the job's current step (callers that know the
  // resume step call NewGeneration first). Evals update eval_loss/eval_token_accuracy when not
  // older than the latest one seen.
  void Report(const std::string& job_id, int world_size, const std::vector<ProgressSample>& points,
              const std::vector<EvalSample>& evals);
  // Steps the job will run (from the preparation plan); a point's non-zero total_steps wins.
  void SetTotalSteps(const std::string& job_id, int64_t total_steps);
  // A new world of `world_size` ranks resumes from `resume_step` (0 = from scratch): per-rank
  // cursors and steps waiting for ranks are reset, the step goes to `resume_step`, and the loss
  // history after it is dropped (those steps are trained again).
  void NewGeneration(const std::string& job_id, int world_size, int64_t resume_step);

  // The job's view; nullopt when the board knows nothing of it.
  std::optional<JobProgressView> Get(const std::string& job_id) const;
  // The job's version (0 when unknown): a cheap "has it changed" for pollers.
  int64_t Version(const std::string& job_id) const;
  // Blocks until the job's version exceeds `after_version` (returns the view), the job is
  // forgotten (nullopt, at once for a job forgotten recently), or `deadline` passes (the current
  // view, nullopt when unknown).
  std::optional<JobProgressView> WaitForChange(const std::string& job_id, int64_t after_version,
                                               absl::Time deadline) const;
  // Every rank has finished the steps up to `step`: the job's final adapter, taken after the
  // last step's all-reduce, was published. Steps up to it that rank 0 reported are counted even
  // where another rank's report has not arrived yet (it may come after the job ended, and be
  // dropped with it); rank 0 carries the global figures.
  void CompleteThrough(const std::string& job_id, int64_t step);
  // Drops the job (it reached a final state); wakes its waiters. A later Report of it starts
  // afresh.
  void Forget(const std::string& job_id);

  // The latest sample of each rank of the current world that has reported, by rank (metrics).
  std::vector<ProgressSample> LatestPerRank(const std::string& job_id) const;

 private:
  // A step some but not all ranks have reported.
  struct PendingStep {
    int ranks_reported = 0;
    int64_t tokens = 0;         // summed over the ranks so far
    double max_step_seconds = 0;  // ranks run in lockstep: the slowest one is the step's time
    std::optional<ProgressSample> rank0;
    absl::Time latest_time;
  };
  struct JobEntry {
    int world_size = 0;
    std::map<int, ProgressSample> latest;  // rank -> its newest point this generation
    std::map<int64_t, PendingStep> pending;
    // (tokens over ranks, step seconds) of the latest counted steps, newest last.
    std::deque<std::pair<int64_t, double>> rate_window;
    int64_t eval_step = -1;  // step of the latest eval applied
    JobProgressView view;
  };

  JobEntry& EntryLocked(const std::string& job_id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ResetWorldLocked(JobEntry& e, int world_size, int64_t resume_step)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Counts `step` (every rank reported it) into the view.
  void CountStepLocked(JobEntry& e, int64_t step, const PendingStep& p)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void TouchLocked(JobEntry& e) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    e.view.version = ++last_version_;
  }

  mutable absl::Mutex mu_;
  std::map<std::string, JobEntry> jobs_ ABSL_GUARDED_BY(mu_);
  int64_t last_version_ ABSL_GUARDED_BY(mu_) = 0;
  // Recently forgotten jobs, oldest first in forgotten_order_.
  std::set<std::string> forgotten_ ABSL_GUARDED_BY(mu_);
  std::deque<std::string> forgotten_order_ ABSL_GUARDED_BY(mu_);
};

}  // namespace herd::coordinator

#endif  // HERD_COORDINATOR_PROGRESS_BOARD_H_
