// Runs a helper program to completion and captures what it prints: the coordinator runs
// herd-prepare this way (libsentencepiece may not share a process with gRPC/protobuf, DESIGN.md
// §1). The child gets its own process group, dies with the thread that started it
// (PR_SET_PDEATHSIG), and is killed with its group at the deadline.
#ifndef HERD_COMMON_SUBPROCESS_H_
#define HERD_COMMON_SUBPROCESS_H_

#include <atomic>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace herd {

struct SubprocessResult {
  int exit_code = -1;       // when it exited
  int signal = 0;           // when a signal ended it (0 otherwise)
  std::string stdout_text;  // everything it wrote (capped at max_output_bytes)
  std::string stderr_text;  // the same for stderr

  bool ok() const { return signal == 0 && exit_code == 0; }
};

struct SubprocessOptions {
  std::vector<std::string> argv;     // argv[0] is the program's path
  absl::Duration timeout = absl::Minutes(30);
  size_t max_output_bytes = 1 << 20;  // per stream; more is dropped
  // When set and it becomes true, the child's group is killed within a second (CANCELLED).
  const std::atomic<bool>* cancel = nullptr;
};

// INVALID_ARGUMENT empty argv; NOT_FOUND the program does not exist or is not executable;
// DEADLINE_EXCEEDED it ran past the timeout (killed); CANCELLED `cancel` was set; UNAVAILABLE fork/pipe failures. A
// program that ran and failed is OK with its exit code in the result.
absl::StatusOr<SubprocessResult> RunSubprocess(const SubprocessOptions& options);

}  // namespace herd

#endif  // HERD_COMMON_SUBPROCESS_H_
