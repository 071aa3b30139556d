// What the agent's metrics (agent_metrics.h) see of each assignment run: the engine starting,
// each progress line, and the end. Called on the run's thread; implementations must be
// thread-safe and quick (the engine's lines wait behind them).
#ifndef HERD_TRAINER_AGENT_RUN_OBSERVER_H_
#define HERD_TRAINER_AGENT_RUN_OBSERVER_H_

#include "herd/v1/common.pb.h"
#include "herd/v1/trainers.pb.h"

namespace herd::agent {

class RunObserver {
 public:
  virtual ~RunObserver() = default;
  // The herd-engine child of `ref` has started.
  virtual void OnEngineStarted(const herd::v1::AssignmentRef& ref) = 0;
  // One progress line of its engine, as relayed to the coordinator.
  virtual void OnProgress(const herd::v1::AssignmentRef& ref, const herd::v1::ProgressPoint& point) = 0;
  // The run is over (the engine has exited, or never started), just before its exit is
  // reported: `reason` as reported (START_FAILED when no engine was started).
  virtual void OnRunEnded(const herd::v1::AssignmentRef& ref, herd::v1::EngineExitReason reason) = 0;
};

}  // namespace herd::agent

#endif  // HERD_TRAINER_AGENT_RUN_OBSERVER_H_
