// Resumable dataset uploads (datasets.proto, DESIGN.md §3.1). A session's bytes go to a part
// file <data_dir>/uploads/<upload_id>.part; committed_offset in the database counts only bytes
// that were fsynced before it was written, so after a crash the part file is cut back to it and
// the client resumes from there. When the last byte is in, Seal() checks size and sha256 and
// moves the part file into the blob store (no copy); the service then validates the blob and
// records the answer with Finish(), normally in one transaction with DatasetStore::Create:
//
//   db.Write([&](Tx&) -> absl::Status {
//     HERD_ASSIGN_OR_RETURN(DatasetRecord ds, datasets.Create(tenant, new_dataset));
//     return uploads.Finish(tenant, upload_id, ds).status();
//   });
//
// States: OPEN (taking bytes) -> SEALED (bytes verified, blob stored, answer not yet recorded:
// after a crash here the service validates again) -> FINISHED (answer kept until expire_time).
//
// Thread-safe. At most one UploadWriter per upload exists at a time.
#ifndef HERD_COORDINATOR_STORE_UPLOAD_STORE_H_
#define HERD_COORDINATOR_STORE_UPLOAD_STORE_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "coordinator/clock.h"
#include "coordinator/store/blob_store.h"
#include "coordinator/store/dataset_store.h"
#include "coordinator/store/db.h"

namespace herd::coordinator::store {

struct UploadStoreOptions {
  // Folder of the part files, usually <data_dir>/uploads; on the blob store's file system.
  std::string dir;
  // Largest total_size_bytes accepted (RESOURCE_EXHAUSTED above).
  int64_t max_upload_bytes = int64_t{16} << 30;
  // Sessions a tenant may have OPEN or SEALED at once (RESOURCE_EXHAUSTED above).
  int max_open_uploads_per_tenant = 16;
  // A session is deleted this long after its last byte arrived, or after it finished.
  absl::Duration ttl = absl::Hours(24);
  // Where times come from (coordinator/clock.h); not owned.
  Clock* clock = Clock::Real();

  absl::Status Validate() const;
};

enum class UploadState { kOpen, kSealed, kFinished };

// What StartUpload asks for; a second Start with equal params resumes the open session.
struct UploadParams {
  std::string name;
  std::string format;  // a datasets::FormatName, or "" to detect
  bool skip_invalid = false;
  int64_t total_size_bytes = 0;
  std::string sha256;
  bool operator==(const UploadParams&) const = default;
};

struct UploadRecord {
  std::string id;  // "up_..."
  std::string tenant;
  UploadParams params;
  int64_t committed_offset = 0;  // durable bytes; the next chunk starts here
  UploadState state = UploadState::kOpen;
  std::optional<DatasetRecord> result;  // FINISHED: the answer (READY, or REJECTED + report)
  absl::Time create_time;
  absl::Time update_time;
  absl::Time expire_time;
};

class UploadStore;

// Exclusive access to one OPEN upload for the length of one stream.
class UploadWriter {
 public:
  ~UploadWriter();  // releases the upload; bytes appended but not committed are dropped
  UploadWriter(const UploadWriter&) = delete;
  UploadWriter& operator=(const UploadWriter&) = delete;

  const std::string& upload_id() const { return id_; }
  int64_t committed_offset() const { return committed_; }
  int64_t written_offset() const { return written_; }  // where the next chunk must start
  int64_t total_size_bytes() const { return total_; }

  // Writes a chunk. ABORTED (naming the committed offset) when `offset` is not where the
  // previous chunk ended; OUT_OF_RANGE past total_size_bytes; INVALID_ARGUMENT empty data.
  absl::Status Append(int64_t offset, std::string_view data);
  // Makes the appended bytes durable (fsync) and records the new committed_offset.
  absl::Status Commit();
  // Commits, then checks that all total_size_bytes are in (FAILED_PRECONDITION "N of M bytes"
  // otherwise; the session stays open) and that they hash to the expected sha256 (DATA_LOSS
  // otherwise: the session and its bytes are deleted), and moves them into the blob store.
  // The upload is SEALED afterwards and this writer is spent.
  absl::StatusOr<BlobRef> Seal();

 private:
  friend class UploadStore;
  UploadWriter(UploadStore* store, std::string id, std::string path, int fd, int64_t committed,
               int64_t total, std::string sha256)
      : store_(store), id_(std::move(id)), path_(std::move(path)),
        fd_(fd), committed_(committed), written_(committed), total_(total),
        sha256_(std::move(sha256)) {}

  UploadStore* const store_;
  const std::string id_;
  const std::string path_;
  int fd_;  // -1 once sealed or failed
  int64_t committed_;
  int64_t written_;
  const int64_t total_;
  const std::string sha256_;
};

class UploadStore {
 public:
  // Opens the part-file folder and reconciles it with the table: part files without an OPEN
  // session are deleted, longer ones cut back to committed_offset.
  static absl::StatusOr<std::unique_ptr<UploadStore>> Open(Db* db, const BlobStore* blobs,
                                                           UploadStoreOptions options);

  // StartUpload: the tenant's OPEN or SEALED session with equal params, or a new one.
  // INVALID_ARGUMENT bad name/format, total_size_bytes < 1, sha256 not hex; RESOURCE_EXHAUSTED
  // over max_upload_bytes or max_open_uploads_per_tenant.
  absl::StatusOr<UploadRecord> Start(std::string_view tenant, const UploadParams& params);
  // QueryUpload. NOT_FOUND for another tenant's, an unknown or an expired session.
  absl::StatusOr<UploadRecord> Get(std::string_view tenant, std::string_view id) const;
  // The writer of one stream. NOT_FOUND as Get; ABORTED when another writer holds it;
  // FAILED_PRECONDITION when the upload is not OPEN (sealed or finished: it takes no bytes).
  absl::StatusOr<std::unique_ptr<UploadWriter>> OpenWriter(std::string_view tenant,
                                                           std::string_view id);
  // Records the answer of a SEALED upload (READY dataset, or REJECTED with its report);
  // FINISHED afterwards, kept until expire_time. On a FINISHED upload returns it unchanged
  // (the first answer stays). FAILED_PRECONDITION when OPEN.
  absl::StatusOr<UploadRecord> Finish(std::string_view tenant, std::string_view id,
                                      const DatasetRecord& result);
  // Deletes sessions whose expire_time has passed, with their part files; returns how many.
  // Sessions with a live writer are spared.
  absl::StatusOr<int> DeleteExpired();

 private:
  friend class UploadWriter;
  UploadStore(Db* db, const BlobStore* blobs, UploadStoreOptions options)
      : db_(db), blobs_(blobs), options_(std::move(options)) {}
  absl::Status Reconcile();
  std::string PartPath(std::string_view id) const;
  void Release(const std::string& id);
  absl::Status DeleteSession(std::string_view id);

  // Constant after construction.
  Db* const db_;
  const BlobStore* const blobs_;
  const UploadStoreOptions options_;

  absl::Mutex mu_;
  std::set<std::string, std::less<>> writing_ ABSL_GUARDED_BY(mu_);  // ids with a live writer
};

}  // namespace herd::coordinator::store

#endif  // HERD_COORDINATOR_STORE_UPLOAD_STORE_H_
