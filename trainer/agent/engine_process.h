// Supervising one herd-engine child (proto/herd/v1/engine_protocol.md): start it in its own
// process group with pipes on stdin/stdout, read its protocol lines on a thread, write ours, and
// kill the whole group when done. Used by the trainer agent and by herd-train.
#ifndef HERD_TRAINER_AGENT_ENGINE_PROCESS_H_
#define HERD_TRAINER_AGENT_ENGINE_PROCESS_H_

#include <sys/types.h>

#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace herd::agent {

struct EngineProcessOptions {
  std::string engine_path;                   // herd-engine
  std::vector<std::string> args = {"--protocol=1"};
  std::string working_dir;                   // the assignment's scratch folder
  std::string stderr_path;                   // the engine's log; "" = inherit ours
  std::map<std::string, std::string> env;    // added to ours (OMP_NUM_THREADS, ...)
};

class EngineProcess {
 public:
  // Called on the reader thread for every valid line, then once with a null json at EOF or on a
  // line that breaks the framing (the error text is in `violation`).
  using LineHandler = std::function<void(const nlohmann::json& message, const std::string& violation)>;

  // UNAVAILABLE when the binary cannot be executed (missing, not executable): nothing runs then.
  static absl::StatusOr<std::unique_ptr<EngineProcess>> Start(const EngineProcessOptions& options,
                                                              LineHandler on_line);
  ~EngineProcess();  // kills the process group if still running, reaps it

  absl::Status Send(const nlohmann::json& message);
  // Closes the engine's stdin (the protocol's "go away now").
  void CloseStdin();
  // SIGKILL to the engine's process group.
  void Kill();
  // Waits for the process; returns its exit code, or 128 + signal.
  int Wait();
  // After Wait(): the signal that killed the process, 0 when it exited.
  int term_signal() const { return term_signal_; }
  pid_t pid() const { return pid_; }

 private:
  EngineProcess() = default;
  void ReadLoop(LineHandler on_line);

  pid_t pid_ = -1;
  int stdin_fd_ = -1;
  int stdout_fd_ = -1;
  std::mutex write_mu_;
  std::thread reader_;
  bool reaped_ = false;
  int exit_code_ = -1;
  int term_signal_ = 0;
};

}  // namespace herd::agent

#endif  // HERD_TRAINER_AGENT_ENGINE_PROCESS_H_
