// The engine's collectives (DESIGN.md §6): one interface, a GPU implementation over NCCL and a
// CPU implementation over TCP on the addresses given in config. Buffers are raw spans so this
// header stays free of torch; callers pass a contiguous tensor's data.
#ifndef HERD_TRAINER_ENGINE_DIST_COMMUNICATOR_H_
#define HERD_TRAINER_ENGINE_DIST_COMMUNICATOR_H_

#include <cstdint>
#include <span>
#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"

namespace herd::engine {

// Progress of a communicator, exported as metrics by the agent.
struct CollectiveStats {
  uint64_t sequence = 0;        // collectives completed
  uint64_t bytes = 0;           // payload bytes reduced
  double seconds = 0;           // wall time spent inside collectives
};

class Communicator {
 public:
  virtual ~Communicator() = default;

  virtual int rank() const = 0;
  virtual int world_size() const = 0;

  // In-place sum over all ranks. Every rank must call with the same length. Past `timeout` the
  // communicator is aborted and DEADLINE_EXCEEDED returned; it is unusable afterwards (the
  // engine reports the hang and exits, DESIGN.md §6).
  virtual absl::Status AllReduceSum(std::span<float> data, absl::Duration timeout) = 0;
  virtual absl::Status AllReduceSum(std::span<double> data, absl::Duration timeout) = 0;

  virtual CollectiveStats stats() const = 0;
  // "tcp" or "nccl".
  virtual std::string backend() const = 0;
};

}  // namespace herd::engine

#endif  // HERD_TRAINER_ENGINE_DIST_COMMUNICATOR_H_
