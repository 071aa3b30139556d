// Runs one job's ranks as herd-engine processes on this machine and plays the agent's part of
// the protocol for all of them: assignments, an in-memory rendezvous, progress aggregated over
// ranks, and teardown of every engine on failure or interruption. herd-train is this plus data
// preparation; tests use it for multi-rank runs on loopback.
#ifndef HERD_TRAINER_AGENT_LOCAL_RUN_H_
#define HERD_TRAINER_AGENT_LOCAL_RUN_H_

#include <atomic>
#include <functional>
#include <string>

#include "absl/status/statusor.h"
#include "common/engine_protocol.h"
#include "nlohmann/json.hpp"

namespace herd::agent {

struct LocalRunOptions {
  std::string engine_path;       // herd-engine
  EngineAssignment assignment;   // rank, world_size and scratch_dir are filled in per rank
  int nproc = 1;
  std::string work_dir;          // rank r gets <work_dir>/rank-<r>/ as scratch
  int omp_threads = 1;           // OMP_NUM_THREADS of each engine
  bool engine_logs_to_stderr = false;  // else <scratch>/engine.stderr.log
  const std::atomic<bool>* interrupted = nullptr;  // set by a signal handler: cancel everything
};

// Aggregated over ranks, delivered on the calling thread.
struct LocalRunCallbacks {
  // Once per step, when every rank has reported it: rank 0's message with `tokens` summed over
  // ranks and `step_seconds` the slowest rank's.
  std::function<void(const nlohmann::json& progress)> on_step;
  std::function<void(const nlohmann::json& eval)> on_eval;
  std::function<void(const nlohmann::json& checkpoint)> on_checkpoint;
};

struct LocalRunResult {
  int64_t steps = 0;
  std::string final_checkpoint_dir;   // rank 0's final checkpoint folder
};

// Returns when every engine has exited. The first engine error (with its rank, code and message,
// plus the tail of its log) fails the run and stops the others; CANCELLED after an interrupt.
absl::StatusOr<LocalRunResult> RunLocal(const LocalRunOptions& options, const LocalRunCallbacks& callbacks);

}  // namespace herd::agent

#endif  // HERD_TRAINER_AGENT_LOCAL_RUN_H_
