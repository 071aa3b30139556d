// Trainers and the base models they publish (trainers.proto, cluster.proto), as the registry
// persists them: registrations and state transitions only. Heartbeats stay in memory (an fsync
// per heartbeat would dominate, DESIGN.md §1); last_seen_time is what the registry last chose
// to write (at registration and at transitions such as LOST).
//
// Thread-safe (all state is in the Db).
#ifndef HERD_COORDINATOR_STORE_TRAINER_STORE_H_
#define HERD_COORDINATOR_STORE_TRAINER_STORE_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "coordinator/clock.h"
#include "coordinator/store/blob_store.h"
#include "coordinator/store/checkpoint_store.h"
#include "coordinator/store/db.h"

namespace herd::coordinator::store {

struct TrainerStoreOptions {
  // Where times come from (coordinator/clock.h); not owned.
  Clock* clock = Clock::Real();

  absl::Status Validate() const;
};

struct DeviceRecord {
  std::string kind;  // "CPU" or "CUDA"
  std::string name;  // product name
  int32_t index = 0;
  int64_t memory_bytes = 0;
  bool operator==(const DeviceRecord&) const = default;
};

struct TrainerRecord {
  std::string id;     // "tr_...", stable per name
  std::string name;   // unique in the cluster
  std::string state;  // the registry's word for it ("IDLE", "BUSY", "LOST"); stored as given
  DeviceRecord device;
  std::string metrics_address;
  std::string agent_version;
  std::string engine_version;
  std::vector<std::string> models;  // names of the models it holds
  absl::Time register_time;
  absl::Time last_seen_time;
};

struct ModelRecord {
  std::string name;
  std::string weights_sha256;  // manifest digest of the weight files (not a blob here)
  int64_t weights_size_bytes = 0;
  std::vector<NamedBlob> files;  // config.json, tokenizer files ...: stored blobs
  absl::Time create_time;
  absl::Time update_time;
};

class TrainerStore {
 public:
  TrainerStore(Db* db, const BlobStore* blobs, TrainerStoreOptions options);

  // Records a registration: a known name keeps its id and has its other fields replaced; a new
  // trainer gets `trainer.id` (the registry's id for the name) or, when that is empty, a fresh
  // one; register_time and last_seen_time become now. INVALID_ARGUMENT bad name or device kind.
  absl::StatusOr<TrainerRecord> Register(const TrainerRecord& trainer);
  // Records a state transition (and when the trainer was last seen). NOT_FOUND.
  absl::Status SetState(std::string_view id, std::string_view state, absl::Time last_seen);
  absl::StatusOr<TrainerRecord> Get(std::string_view id) const;
  absl::StatusOr<TrainerRecord> GetByName(std::string_view name) const;
  absl::StatusOr<std::vector<TrainerRecord>> List() const;  // by name

  // Publishes a model. Equal to the stored one: unchanged. Different weights or files:
  // FAILED_PRECONDITION saying which differ, unless `replace` (the registry decides when a
  // model may change). INVALID_ARGUMENT bad names; FAILED_PRECONDITION a file's blob is not
  // stored.
  absl::StatusOr<ModelRecord> PutModel(const ModelRecord& model, bool replace);
  absl::StatusOr<ModelRecord> GetModel(std::string_view name) const;
  absl::StatusOr<std::vector<ModelRecord>> ListModels() const;  // by name

 private:
  // Constant after construction.
  Db* const db_;
  const BlobStore* const blobs_;
  const TrainerStoreOptions options_;
};

}  // namespace herd::coordinator::store

#endif  // HERD_COORDINATOR_STORE_TRAINER_STORE_H_
