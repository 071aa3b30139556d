// The agent's metrics: families and the updates from its engines' progress.
#include "trainer/agent/agent_metrics.h"

#include <google/protobuf/util/time_util.h>

#include "common/status.h"
#include "common/strings.h"

namespace herd::agent {

std::string ExitReasonLabel(herd::v1::EngineExitReason reason) {
  std::string name = herd::v1::EngineExitReason_Name(reason);
  constexpr std::string_view kPrefix = "ENGINE_EXIT_REASON_";
  if (name.rfind(kPrefix, 0) == 0) name.erase(0, kPrefix.size());
  return name;
}

absl::StatusOr<std::unique_ptr<AgentMetrics>> AgentMetrics::Create(metrics::Registry* registry, bool gpu) {
  const std::vector<std::string> kJobRank = {"job_id", "rank"};
  Families f{};
  HERD_ASSIGN_OR_RETURN(f.loss, registry->AddGauge({.name = "herd_train_loss",
                                                    .help = "Training loss of the latest step.",
                                                    .label_names = kJobRank}));
  HERD_ASSIGN_OR_RETURN(f.tokens, registry->AddCounter({.name = "herd_train_tokens_total",
                                                        .help = "Input tokens this rank processed.",
                                                        .label_names = kJobRank}));
  HERD_ASSIGN_OR_RETURN(auto step_buckets, metrics::ExponentialBuckets(0.01, 2, 14));       // 10 ms .. 82 s
  HERD_ASSIGN_OR_RETURN(auto phase_buckets, metrics::ExponentialBuckets(0.0005, 3, 12));    // 0.5 ms .. 89 s
  HERD_ASSIGN_OR_RETURN(f.step_seconds, registry->AddHistogram({.name = "herd_step_seconds",
                                                                .help = "Wall time of one optimiser step.",
                                                                .label_names = kJobRank,
                                                                .buckets = step_buckets}));
  HERD_ASSIGN_OR_RETURN(f.allreduce_seconds,
                        registry->AddHistogram({.name = "herd_allreduce_seconds",
                                                .help = "Seconds in the gradient all-reduce per step.",
                                                .label_names = kJobRank,
                                                .buckets = phase_buckets}));
  HERD_ASSIGN_OR_RETURN(f.data_wait_seconds,
                        registry->AddHistogram({.name = "herd_data_wait_seconds",
                                                .help = "Seconds waiting for input data per step.",
                                                .label_names = kJobRank,
                                                .buckets = phase_buckets}));
  HERD_ASSIGN_OR_RETURN(f.last_progress, registry->AddGauge({.name = "herd_last_progress_timestamp_seconds",
                                                             .help = "Unix time of the latest step.",
                                                             .label_names = kJobRank}));
  if (gpu) {
    HERD_ASSIGN_OR_RETURN(f.device_memory,
                          registry->AddGauge({.name = "herd_device_memory_bytes",
                                              .help = "Peak device memory allocated during the latest step.",
                                              .label_names = kJobRank}));
    HERD_ASSIGN_OR_RETURN(f.mfu, registry->AddGauge({.name = "herd_mfu_ratio",
                                                     .help = "Model FLOPs utilisation of the latest step.",
                                                     .label_names = kJobRank}));
  }
  HERD_ASSIGN_OR_RETURN(f.engine_running, registry->AddGauge({.name = "herd_engine_running",
                                                              .help = "1 while an engine runs, else 0."}));
  HERD_ASSIGN_OR_RETURN(f.exits, registry->AddCounter({.name = "herd_engine_exits_total",
                                                       .help = "Engine exits by reason.",
                                                       .label_names = {"reason"}}));
  f.engine_running->WithLabels();
  const google::protobuf::EnumDescriptor* reasons = herd::v1::EngineExitReason_descriptor();
  for (int i = 0; i < reasons->value_count(); ++i) {
    const auto reason = static_cast<herd::v1::EngineExitReason>(reasons->value(i)->number());
    if (reason != herd::v1::ENGINE_EXIT_REASON_UNSPECIFIED) f.exits->WithLabels(ExitReasonLabel(reason));
  }
  return std::unique_ptr<AgentMetrics>(new AgentMetrics(f));
}

void AgentMetrics::OnEngineStarted(const herd::v1::AssignmentRef& /*ref*/) {
  f_.engine_running->WithLabels().Set(1);
}

void AgentMetrics::OnProgress(const herd::v1::AssignmentRef& ref, const herd::v1::ProgressPoint& p) {
  absl::MutexLock lock(&mu_);
  const std::string rank = std::to_string(p.rank());
  auto [it, added] = ranks_.try_emplace({ref.job_id(), p.rank()});
  RankSeries& s = it->second;
  if (added) {
    s.tokens = f_.tokens->WithLabels(ref.job_id(), rank);
    s.step_seconds = f_.step_seconds->WithLabels(ref.job_id(), rank);
    s.allreduce_seconds = f_.allreduce_seconds->WithLabels(ref.job_id(), rank);
    s.data_wait_seconds = f_.data_wait_seconds->WithLabels(ref.job_id(), rank);
    s.last_progress = f_.last_progress->WithLabels(ref.job_id(), rank);
    if (f_.device_memory != nullptr) s.device_memory = f_.device_memory->WithLabels(ref.job_id(), rank);
  }
  if (p.has_loss()) {
    if (!s.has_loss) s.loss = f_.loss->WithLabels(ref.job_id(), rank);
    s.has_loss = true;
    s.loss.Set(p.loss());
  }
  if (p.tokens() > 0) s.tokens.Increment(static_cast<uint64_t>(p.tokens()));
  s.step_seconds.Observe(p.step_seconds());
  s.allreduce_seconds.Observe(p.allreduce_seconds());
  s.data_wait_seconds.Observe(p.data_wait_seconds());
  if (p.has_time()) {
    s.last_progress.Set(static_cast<double>(google::protobuf::util::TimeUtil::TimestampToNanoseconds(p.time())) * 1e-9);
  } else {
    s.last_progress.SetToCurrentTime();
  }
  if (f_.device_memory != nullptr) s.device_memory.Set(static_cast<double>(p.device_memory_bytes()));
  if (f_.mfu != nullptr && p.has_mfu()) {
    if (!s.has_mfu) s.mfu = f_.mfu->WithLabels(ref.job_id(), rank);
    s.has_mfu = true;
    s.mfu.Set(p.mfu());
  }
}

void AgentMetrics::OnRunEnded(const herd::v1::AssignmentRef& ref, herd::v1::EngineExitReason reason) {
  f_.exits->WithLabels(ExitReasonLabel(reason)).Increment();
  f_.engine_running->WithLabels().Set(0);
  absl::MutexLock lock(&mu_);
  for (auto it = ranks_.begin(); it != ranks_.end();) {
    it = it->first.first == ref.job_id() ? ranks_.erase(it) : std::next(it);
  }
  for (metrics::GaugeFamily* g : {f_.loss, f_.last_progress, f_.device_memory, f_.mfu}) {
    if (g != nullptr) g->RemoveWhere("job_id", ref.job_id());
  }
  f_.tokens->RemoveWhere("job_id", ref.job_id());
  for (metrics::HistogramFamily* h : {f_.step_seconds, f_.allreduce_seconds, f_.data_wait_seconds}) {
    h->RemoveWhere("job_id", ref.job_id());
  }
}

}  // namespace herd::agent
