// The coordinator's whole state under one --data-dir (DESIGN.md §1): <data_dir>/herd.db (SQLite,
// WAL, synchronous=FULL), <data_dir>/blobs (content-addressed files), <data_dir>/uploads (part
// files of resumable uploads), and <data_dir>/LOCK, held (flock) while the Store is open so
// that two coordinators never share a data dir.
//
//   HERD_ASSIGN_OR_RETURN(std::unique_ptr<Store> store, Store::Open({.data_dir = dir}));
//   store->jobs().Create(tenant, spec, key);
//
// Everything acknowledged (a method returned OK) is durable: it survives a crash of the process
// or of the machine. Thread-safe; the domain stores may be used from any thread.
#ifndef HERD_COORDINATOR_STORE_STORE_H_
#define HERD_COORDINATOR_STORE_STORE_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "coordinator/clock.h"
#include "coordinator/store/blob_store.h"
#include "coordinator/store/checkpoint_store.h"
#include "coordinator/store/dataset_store.h"
#include "coordinator/store/db.h"
#include "coordinator/store/job_store.h"
#include "coordinator/store/token_store.h"
#include "coordinator/store/trainer_store.h"
#include "coordinator/store/upload_store.h"

namespace herd::coordinator::store {

struct StoreOptions {
  // The folder holding everything; created when missing.
  std::string data_dir = "herd-data";
  // How long SQLite waits on a lock held by another connection (the sqlite3 shell, say).
  absl::Duration busy_timeout = absl::Seconds(10);
  // Unfinished jobs a tenant may have (CreateJob: RESOURCE_EXHAUSTED); 0 = no limit.
  int max_unfinished_jobs_per_tenant = 100;
  // Largest dataset upload, bytes.
  int64_t max_upload_bytes = int64_t{16} << 30;
  // Unfinished uploads a tenant may have at once.
  int max_open_uploads_per_tenant = 16;
  // Upload sessions are deleted this long after their last byte, or after they finished.
  absl::Duration upload_ttl = absl::Hours(24);
  // Where times come from (coordinator/clock.h); not owned.
  Clock* clock = Clock::Real();

  // INVALID_ARGUMENT naming the field at fault.
  absl::Status Validate() const;
};

class Store {
 public:
  // Creates or opens the data dir: takes the lock (FAILED_PRECONDITION when another process
  // holds it), migrates the schema, deletes blob temp files, reconciles upload part files.
  static absl::StatusOr<std::unique_ptr<Store>> Open(const StoreOptions& options);
  ~Store();  // releases the lock
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  Db& db() { return *db_; }
  const BlobStore& blobs() const { return *blobs_; }
  JobStore& jobs() { return *jobs_; }
  CheckpointStore& checkpoints() { return *checkpoints_; }
  DatasetStore& datasets() { return *datasets_; }
  UploadStore& uploads() { return *uploads_; }
  TokenStore& tokens() { return *tokens_; }
  TrainerStore& trainers() { return *trainers_; }
  const std::string& data_dir() const { return data_dir_; }

 private:
  Store(std::string data_dir, int lock_fd) : data_dir_(std::move(data_dir)), lock_fd_(lock_fd) {}

  // Constant after construction (set in Open).
  const std::string data_dir_;
  const int lock_fd_;
  std::unique_ptr<Db> db_;
  std::unique_ptr<BlobStore> blobs_;
  std::unique_ptr<JobStore> jobs_;
  std::unique_ptr<CheckpointStore> checkpoints_;
  std::unique_ptr<DatasetStore> datasets_;
  std::unique_ptr<UploadStore> uploads_;
  std::unique_ptr<TokenStore> tokens_;
  std::unique_ptr<TrainerStore> trainers_;
};

}  // namespace herd::coordinator::store

#endif  // HERD_COORDINATOR_STORE_STORE_H_
