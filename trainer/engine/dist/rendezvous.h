// Key/value rendezvous between the ranks of one generation (DESIGN.md §3.6): rank 0 publishes
// the NCCL unique id or the CPU group's address, the others wait for it. In a cluster the values
// travel engine → agent → coordinator; herd-train and tests use a shared folder.
#ifndef HERD_TRAINER_ENGINE_DIST_RENDEZVOUS_H_
#define HERD_TRAINER_ENGINE_DIST_RENDEZVOUS_H_

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace herd::engine {

class Rendezvous {
 public:
  virtual ~Rendezvous() = default;
  // Publishes `value` under `key`; ALREADY_EXISTS if the key holds a different value.
  virtual absl::Status Put(const std::string& key, const std::string& value) = 0;
  // Waits until `key` exists; DEADLINE_EXCEEDED after `timeout`.
  virtual absl::StatusOr<std::string> Get(const std::string& key, absl::Duration timeout) = 0;
};

// Values are files in `dir` (written atomically); keys may hold [A-Za-z0-9._-] only.
class FileRendezvous final : public Rendezvous {
 public:
  explicit FileRendezvous(std::string dir) : dir_(std::move(dir)) {}
  absl::Status Put(const std::string& key, const std::string& value) override;
  absl::StatusOr<std::string> Get(const std::string& key, absl::Duration timeout) override;

 private:
  absl::StatusOr<std::string> PathFor(const std::string& key) const;

  const std::string dir_;
};

}  // namespace herd::engine

#endif  // HERD_TRAINER_ENGINE_DIST_RENDEZVOUS_H_
