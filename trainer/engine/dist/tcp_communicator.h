// The CPU collectives route (DESIGN.md §6, decision in docs/toolchain.md): plain TCP between the
// engine processes, star-shaped through rank 0, which adds the contributions in rank order so
// that the result is bitwise the same on every rank and independent of arrival order. Meant for
// the CPU path (tests, quickstart, small adapters); GPUs use NCCL.
#ifndef HERD_TRAINER_ENGINE_DIST_TCP_COMMUNICATOR_H_
#define HERD_TRAINER_ENGINE_DIST_TCP_COMMUNICATOR_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "trainer/engine/dist/communicator.h"
#include "trainer/engine/dist/rendezvous.h"

namespace herd::engine {

struct TcpGroupOptions {
  int rank = 0;
  int world_size = 1;
  int64_t generation = 0;           // a peer from another generation is refused
  std::string bind_host = "127.0.0.1";  // rank 0 listens here; never a wildcard by default
  std::string advertise_host;           // what peers dial; "" = bind_host
  std::string key = "cpu_group";    // rendezvous key of rank 0's address
  absl::Duration connect_timeout = absl::Seconds(120);
};

class TcpCommunicator final : public Communicator {
 public:
  // Forms the group: rank 0 listens on bind_host:0 and publishes "host:port"; the others read
  // it and connect. Returns once every peer is connected.
  static absl::StatusOr<std::unique_ptr<TcpCommunicator>> Create(const TcpGroupOptions& options,
                                                                 Rendezvous& rendezvous);
  ~TcpCommunicator() override;

  int rank() const override { return rank_; }
  int world_size() const override { return world_size_; }
  absl::Status AllReduceSum(std::span<float> data, absl::Duration timeout) override;
  absl::Status AllReduceSum(std::span<double> data, absl::Duration timeout) override;
  CollectiveStats stats() const override { return stats_; }
  std::string backend() const override { return "tcp"; }

 private:
  TcpCommunicator(int rank, int world_size, std::vector<int> fds)
      : rank_(rank), world_size_(world_size), fds_(std::move(fds)) {}
  template <typename T>
  absl::Status AllReduce(std::span<T> data, absl::Duration timeout);
  void Abort();

  const int rank_;
  const int world_size_;
  // Rank 0: fds_[r] is the socket to rank r (fds_[0] unused). Others: fds_[0] is rank 0.
  std::vector<int> fds_;
  CollectiveStats stats_;
  bool aborted_ = false;
};

}  // namespace herd::engine

#endif  // HERD_TRAINER_ENGINE_DIST_TCP_COMMUNICATOR_H_
