// The agent's view of one engine's side of the protocol (proto/herd/v1/engine_protocol.md): checks
// each engine line against the ordering and typing rules of §4 and §9, keeps what the exit
// report needs (hello, error, exit, last step), turns progress and eval lines into the wire's
// ProgressPoint and EvalPoint, and decides the EngineExitReason of §7. Pure: no threads, no I/O
// beyond checking a checkpoint folder's files.
#ifndef HERD_TRAINER_AGENT_ENGINE_CONVERSATION_H_
#define HERD_TRAINER_AGENT_ENGINE_CONVERSATION_H_

#include <cstdint>
#include <optional>
#include <set>
#include <string>

#include "absl/time/time.h"
#include "herd/v1/trainers.pb.h"
#include "nlohmann/json.hpp"

namespace herd::agent {

class EngineConversation {
 public:
  // `checkpoints_dir`: <scratch_dir>/checkpoints, the only place checkpoints may name.
  EngineConversation(int rank, std::string checkpoints_dir);

  // Checks one engine line and records it. "" when it is fine, else the violation to report
  // (quoting the first 200 bytes of the line).
  std::string Accept(const nlohmann::json& message);
  // The agent answered the rendezvous request for `key`.
  void Answered(const std::string& key) { outstanding_keys_.erase(key); }

  bool saw_hello() const { return saw_hello_; }
  bool saw_exit() const { return exit_reason_.has_value(); }
  bool saw_final_checkpoint() const { return saw_final_; }
  int64_t last_step() const { return last_step_; }
  // ASSIGNMENT_PHASE_* of the latest phase line (PREPARING before any).
  herd::v1::AssignmentPhase phase() const { return phase_; }
  // Whether a rendezvous request waits for the agent's answer (the engine is silent meanwhile).
  bool waiting_on_agent() const { return !outstanding_keys_.empty(); }

  // The exit report of §7 once the process has ended with `exit_code` (or been killed by
  // `signal`, then exit_code is ignored). `violation`/`hung` are the agent's own verdicts;
  // `cancel_sent` whether the agent sent `cancel`. Leaves trainer_id, ref and stderr_tail unset.
  herd::v1::ReportEngineExitRequest ExitReport(int exit_code, int signal, bool cancel_sent,
                                               const std::string& violation, const std::string& hung) const;

 private:
  const int rank_;
  const std::string checkpoints_dir_;
  bool saw_hello_ = false;
  bool saw_final_ = false;
  int64_t last_step_ = 0;       // latest progress step
  int64_t last_eval_ = -1;      // latest eval step
  int64_t last_checkpoint_ = -1;
  herd::v1::AssignmentPhase phase_ = herd::v1::ASSIGNMENT_PHASE_PREPARING;
  std::set<std::string> outstanding_keys_;
  std::optional<std::string> exit_reason_;
  int64_t exit_step_ = 0;
  std::optional<std::pair<std::string, std::string>> error_;  // code, message
};

// A `progress` line as the wire's point, measured by `rank` at `now`.
herd::v1::ProgressPoint ProgressFromLine(const nlohmann::json& progress, int rank, absl::Time now);
// An `eval` line as the wire's point, at `now`.
herd::v1::EvalPoint EvalFromLine(const nlohmann::json& eval, absl::Time now);

// The last `max_bytes` of `text`, cut at a UTF-8 character boundary and with invalid bytes
// replaced, so it can travel in a proto string.
std::string Utf8Tail(const std::string& text, size_t max_bytes);

}  // namespace herd::agent

#endif  // HERD_TRAINER_AGENT_ENGINE_CONVERSATION_H_
