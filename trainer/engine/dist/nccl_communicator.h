// The GPU collectives route (DESIGN.md §6): NCCL, called directly from the engine. libtorch
// links the same libnccl.so.2, so there is one copy in the process. Communicators are created
// non-blocking so that every call can be watched: past its deadline the communicator is aborted
// (ncclCommAbort) and DEADLINE_EXCEEDED returned.
#ifndef HERD_TRAINER_ENGINE_DIST_NCCL_COMMUNICATOR_H_
#define HERD_TRAINER_ENGINE_DIST_NCCL_COMMUNICATOR_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "trainer/engine/dist/communicator.h"
#include "trainer/engine/dist/rendezvous.h"

namespace herd::engine {

struct NcclGroupOptions {
  int rank = 0;
  int world_size = 1;
  int device = 0;                    // CUDA device ordinal of this rank
  std::string key = "nccl_id";       // rendezvous key of rank 0's unique id
  absl::Duration init_timeout = absl::Seconds(300);
};

// NCCL's version as "2.28.9", or "" when the library cannot say.
std::string NcclVersion();

class NcclCommunicator final : public Communicator {
 public:
  static absl::StatusOr<std::unique_ptr<NcclCommunicator>> Create(const NcclGroupOptions& options,
                                                                  Rendezvous& rendezvous);
  ~NcclCommunicator() override;

  int rank() const override { return rank_; }
  int world_size() const override { return world_size_; }
  // `data` is device or host memory. Device data is read after the work already queued on the
  // legacy default stream (where torch's kernels run: the engine never switches streams); host
  // data goes through a device buffer. Returns when the result is in place.
  absl::Status AllReduceSum(std::span<float> data, absl::Duration timeout) override;
  absl::Status AllReduceSum(std::span<double> data, absl::Duration timeout) override;
  CollectiveStats stats() const override { return stats_; }
  std::string backend() const override { return "nccl"; }

  // Test hook for the watchdog self-check (`herd-engine --smoke cuda:N`), nothing else: holds
  // this communicator's stream with a host function that blocks until ReleaseStallForTest() or
  // until `max_hold` has passed, so the next collective cannot complete — a peer that never
  // arrives. The bound keeps a forgotten release from wedging the process for good (aborting a
  // communicator may wait for its stream). Once StallStreamForTest() has returned,
  // ReleaseStallForTest() may be called from any thread; the destructor releases too.
  absl::Status StallStreamForTest(absl::Duration max_hold);
  void ReleaseStallForTest();

 private:
  struct State;
  NcclCommunicator(int rank, int world_size, std::unique_ptr<State> state);
  absl::Status AllReduce(void* data, size_t count, int nccl_dtype, size_t bytes, absl::Duration timeout);

  const int rank_;
  const int world_size_;
  std::unique_ptr<State> state_;
  CollectiveStats stats_;
};

}  // namespace herd::engine

#endif  // HERD_TRAINER_ENGINE_DIST_NCCL_COMMUNICATOR_H_
