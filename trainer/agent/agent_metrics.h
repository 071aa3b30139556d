// The agent's Prometheus metrics (docs/metrics.md, herd-trainer table; DESIGN.md §7): its
// engine's progress per job and rank, fed by the assignment runs through RunObserver, and the
// engine's exits. A job's series are dropped when its run ends. The GPU-only series (device
// memory, MFU) exist only on a CUDA trainer. Thread-safe.
#ifndef HERD_TRAINER_AGENT_AGENT_METRICS_H_
#define HERD_TRAINER_AGENT_AGENT_METRICS_H_

#include <map>
#include <memory>
#include <string>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "common/metrics/metrics.h"
#include "trainer/agent/run_observer.h"

namespace herd::agent {

class AgentMetrics final : public RunObserver {
 public:
  // Registers the families in `registry` (which outlives this object) and pre-initialises
  // herd_engine_running and every exit reason. `gpu`: the trainer drives a CUDA device.
  // ALREADY_EXISTS when a family is registered already.
  static absl::StatusOr<std::unique_ptr<AgentMetrics>> Create(metrics::Registry* registry, bool gpu);

  void OnEngineStarted(const herd::v1::AssignmentRef& ref) override;
  void OnProgress(const herd::v1::AssignmentRef& ref, const herd::v1::ProgressPoint& point) override;
  void OnRunEnded(const herd::v1::AssignmentRef& ref, herd::v1::EngineExitReason reason) override;

 private:
  struct Families {
    metrics::GaugeFamily* loss;
    metrics::CounterFamily* tokens;
    metrics::HistogramFamily* step_seconds;
    metrics::HistogramFamily* allreduce_seconds;
    metrics::HistogramFamily* data_wait_seconds;
    metrics::GaugeFamily* last_progress;
    metrics::GaugeFamily* device_memory;  // null on the CPU
    metrics::GaugeFamily* mfu;            // null on the CPU
    metrics::GaugeFamily* engine_running;
    metrics::CounterFamily* exits;
  };
  // One rank's series, kept so that a progress line needs no label lookups.
  struct RankSeries {
    metrics::Gauge loss;
    metrics::Counter tokens;
    metrics::Histogram step_seconds, allreduce_seconds, data_wait_seconds;
    metrics::Gauge last_progress, device_memory, mfu;
    bool has_loss = false, has_mfu = false;
  };

  explicit AgentMetrics(const Families& f) : f_(f) {}

  // Constant after construction.
  const Families f_;

  absl::Mutex mu_;
  std::map<std::pair<std::string, int>, RankSeries> ranks_ ABSL_GUARDED_BY(mu_);  // (job_id, rank)
};

// "COMPLETED" for ENGINE_EXIT_REASON_COMPLETED: the exit label.
std::string ExitReasonLabel(herd::v1::EngineExitReason reason);

}  // namespace herd::agent

#endif  // HERD_TRAINER_AGENT_AGENT_METRICS_H_
