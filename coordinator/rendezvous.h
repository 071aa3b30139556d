// Rendezvous values (DESIGN.md §3.6; trainers.proto Put/GetRendezvousValue): a small key/value
// store per (job, generation) through which rank 0's engine hands its peers the NCCL unique id
// or its CPU group address. Only the job's current generation accepts calls; starting a new
// generation or ending the job drops the values and wakes every waiter with
// FAILED_PRECONDITION. In memory; the caller persists values (see Put). Thread-safe.
//
// Whether the calling trainer holds a rank of that generation is the Scheduler's check
// (CheckAssignment); this store only knows which generation is current.
#ifndef HERD_COORDINATOR_RENDEZVOUS_H_
#define HERD_COORDINATOR_RENDEZVOUS_H_

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace herd::coordinator {

// Keys are 1 to 128 bytes of [A-Za-z0-9._:-] (the wire contract; not configurable).
inline constexpr size_t kMaxRendezvousKeyBytes = 128;
// INVALID_ARGUMENT naming what is wrong with the key.
absl::Status ValidateRendezvousKey(std::string_view key);

struct RendezvousOptions {
  // Largest value accepted (trainers.proto: 64 KiB).
  size_t max_value_bytes = size_t{64} << 10;
  // Most keys in one generation (trainers.proto: 1024).
  size_t max_keys_per_generation = 1024;
  // Longest wait a Get may ask for (trainers.proto: 60 s).
  absl::Duration max_wait = absl::Seconds(60);

  absl::Status Validate() const;
};

class RendezvousStore {
 public:
  // INVALID_ARGUMENT when options fail Validate().
  static absl::StatusOr<std::unique_ptr<RendezvousStore>> Create(const RendezvousOptions& options = {});

  // Makes `generation` the current one of `job_id`, dropping older values and failing their
  // waiters. The same generation again is a no-op; an older one is FAILED_PRECONDITION.
  absl::Status BeginGeneration(const std::string& job_id, int64_t generation);
  // The job has ended: drops its values and fails its waiters.
  void EndJob(const std::string& job_id);
  // Fails every waiter with UNAVAILABLE and every later call too (coordinator stopping).
  void Shutdown();

  // Stores `value` under `key`. Returns true when newly stored, false when the key already held
  // this value (a retry). The caller writes the value through to the store on every OK (an
  // upsert: the write after the first Put may have failed) before answering. INVALID_ARGUMENT bad key or empty value;
  // RESOURCE_EXHAUSTED value over max_value_bytes or the generation full; ALREADY_EXISTS the
  // key holds another value; FAILED_PRECONDITION not the job's current generation.
  absl::StatusOr<bool> Put(const std::string& job_id, int64_t generation, const std::string& key,
                           const std::string& value);

  // Reads `key`, waiting up to `wait` (real time) for it to be posted. INVALID_ARGUMENT bad key
  // or wait outside [0, max_wait]; NOT_FOUND wait is zero and the key is not set;
  // DEADLINE_EXCEEDED the wait passed; FAILED_PRECONDITION not (or no longer, during the wait)
  // the current generation; UNAVAILABLE after Shutdown().
  absl::StatusOr<std::string> Get(const std::string& job_id, int64_t generation,
                                  const std::string& key, absl::Duration wait);

  // The job's current generation; 0 when it has none.
  int64_t CurrentGeneration(const std::string& job_id) const;
  // Get calls blocked waiting right now (a gauge; tests use it to know a waiter is parked).
  int64_t Waiters() const;

 private:
  struct Generation {
    int64_t number = 0;
    std::map<std::string, std::string> values;
  };

  explicit RendezvousStore(const RendezvousOptions& options) : options_(options) {}
  absl::Status CheckCurrentLocked(const std::string& job_id, int64_t generation) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // Constant after construction.
  const RendezvousOptions options_;

  mutable absl::Mutex mu_;
  absl::CondVar changed_;  // signalled on every Put, generation change, end and shutdown
  std::map<std::string, Generation> jobs_ ABSL_GUARDED_BY(mu_);
  bool shut_down_ ABSL_GUARDED_BY(mu_) = false;
  int64_t waiters_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace herd::coordinator

#endif  // HERD_COORDINATOR_RENDEZVOUS_H_
