// Opening the data dir (store.h).
#include "coordinator/store/store.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "common/file_util.h"
#include "common/status.h"
#include "common/strings.h"

namespace herd::coordinator::store {

absl::Status StoreOptions::Validate() const {
  auto bad = [](std::string_view field, std::string_view why) {
    return absl::InvalidArgumentError(herd::StrCat("StoreOptions.", field, ": ", why));
  };
  if (data_dir.empty()) return bad("data_dir", "required");
  if (busy_timeout < absl::ZeroDuration()) return bad("busy_timeout", "must be >= 0");
  if (max_unfinished_jobs_per_tenant < 0) return bad("max_unfinished_jobs_per_tenant", "must be >= 0");
  if (max_upload_bytes < 1) return bad("max_upload_bytes", "must be >= 1");
  if (max_open_uploads_per_tenant < 1) return bad("max_open_uploads_per_tenant", "must be >= 1");
  if (upload_ttl <= absl::ZeroDuration()) return bad("upload_ttl", "must be > 0");
  if (clock == nullptr) return bad("clock", "required");
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Store>> Store::Open(const StoreOptions& options) {
  HERD_RETURN_IF_ERROR(options.Validate());
  std::error_code ec;
  if (std::filesystem::create_directories(options.data_dir, ec)) {
    // A new data dir: make its entry in the parent durable too.
    std::string parent = std::filesystem::absolute(options.data_dir).parent_path().string();
    HERD_RETURN_IF_ERROR(SyncDirectory(parent));
  }
  if (ec) {
    return absl::FailedPreconditionError(
        herd::StrCat("cannot create data dir ", options.data_dir, ": ", ec.message()));
  }
  const std::string lock_path = herd::StrCat(options.data_dir, "/LOCK");
  int fd = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) {
    return absl::FailedPreconditionError(
        herd::StrCat("cannot open ", lock_path, ": ", std::strerror(errno)));
  }
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    int err = errno;
    ::close(fd);
    if (err == EWOULDBLOCK) {
      return absl::FailedPreconditionError(herd::StrCat(
          "data dir ", options.data_dir, " is in use by another herd-coordinator (", lock_path,
          " is locked)"));
    }
    return absl::FailedPreconditionError(herd::StrCat("cannot lock ", lock_path, ": ", std::strerror(err)));
  }
  std::unique_ptr<Store> store(new Store(options.data_dir, fd));  // owns fd from here on

  DbOptions db_options;
  db_options.path = herd::StrCat(options.data_dir, "/herd.db");
  db_options.busy_timeout = options.busy_timeout;
  HERD_ASSIGN_OR_RETURN(store->db_, Db::Open(db_options));
  HERD_RETURN_IF_ERROR(SyncDirectory(options.data_dir));  // herd.db and its WAL exist durably

  BlobStoreOptions blob_options;
  blob_options.root = herd::StrCat(options.data_dir, "/blobs");
  HERD_ASSIGN_OR_RETURN(store->blobs_, BlobStore::Open(blob_options));

  Db* db = store->db_.get();
  const BlobStore* blobs = store->blobs_.get();
  JobStoreOptions job_options;
  job_options.max_unfinished_jobs_per_tenant = options.max_unfinished_jobs_per_tenant;
  job_options.clock = options.clock;
  HERD_RETURN_IF_ERROR(job_options.Validate());
  store->jobs_ = std::make_unique<JobStore>(db, blobs, job_options);

  CheckpointStoreOptions checkpoint_options;
  checkpoint_options.clock = options.clock;
  store->checkpoints_ = std::make_unique<CheckpointStore>(db, blobs, checkpoint_options);

  DatasetStoreOptions dataset_options;
  dataset_options.clock = options.clock;
  store->datasets_ = std::make_unique<DatasetStore>(db, blobs, dataset_options);

  UploadStoreOptions upload_options;
  upload_options.dir = herd::StrCat(options.data_dir, "/uploads");
  upload_options.max_upload_bytes = options.max_upload_bytes;
  upload_options.max_open_uploads_per_tenant = options.max_open_uploads_per_tenant;
  upload_options.ttl = options.upload_ttl;
  upload_options.clock = options.clock;
  HERD_ASSIGN_OR_RETURN(store->uploads_, UploadStore::Open(db, blobs, upload_options));

  TokenStoreOptions token_options;
  token_options.clock = options.clock;
  store->tokens_ = std::make_unique<TokenStore>(db, token_options);

  TrainerStoreOptions trainer_options;
  trainer_options.clock = options.clock;
  store->trainers_ = std::make_unique<TrainerStore>(db, blobs, trainer_options);
  return store;
}

Store::~Store() {
  // Stores before the Db they use; the lock last.
  trainers_.reset();
  tokens_.reset();
  uploads_.reset();
  datasets_.reset();
  checkpoints_.reset();
  jobs_.reset();
  blobs_.reset();
  db_.reset();
  ::close(lock_fd_);
}

}  // namespace herd::coordinator::store
