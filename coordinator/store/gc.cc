// Blob garbage collection (gc.h).
#include "coordinator/store/gc.h"

#include "common/status.h"

namespace herd::coordinator::store {

// Every column that names a blob; schema.cc points here. Keep the two in step.
constexpr std::string_view kReferencedBlobsSql =
    "SELECT sha256 FROM datasets"
    " UNION SELECT train_sha256 FROM jobs WHERE train_sha256 IS NOT NULL"
    " UNION SELECT validation_sha256 FROM jobs WHERE validation_sha256 IS NOT NULL"
    " UNION SELECT sha256 FROM checkpoint_files"
    " UNION SELECT sha256 FROM model_files"
    " UNION SELECT sha256 FROM uploads WHERE state = 'SEALED'";

absl::StatusOr<std::set<std::string>> ReferencedBlobs(Db* db) {
  std::set<std::string> out;
  HERD_RETURN_IF_ERROR(db->Read([&](Tx& tx) -> absl::Status {
    HERD_ASSIGN_OR_RETURN(auto rows, tx.Query(kReferencedBlobsSql));
    for (const Row& r : rows) out.insert(r.Text(0));
    return absl::OkStatus();
  }));
  return out;
}

absl::StatusOr<GcStats> CollectGarbage(Db* db, const BlobStore* blobs, absl::Time now,
                                       absl::Duration grace) {
  // Referenced set first, blob listing second: a blob stored after the query is young.
  HERD_ASSIGN_OR_RETURN(std::set<std::string> referenced, ReferencedBlobs(db));
  HERD_ASSIGN_OR_RETURN(auto stored, blobs->List());
  GcStats stats;
  for (const BlobStore::Info& info : stored) {
    if (referenced.count(info.ref.sha256) > 0 || info.mtime > now - grace) {
      ++stats.blobs_kept;
      stats.bytes_kept += info.ref.size_bytes;
      continue;
    }
    absl::Status status = blobs->Delete(info.ref.sha256);
    if (!status.ok() && status.code() != absl::StatusCode::kNotFound) return status;
    ++stats.blobs_deleted;
    stats.bytes_deleted += info.ref.size_bytes;
  }
  return stats;
}

}  // namespace herd::coordinator::store
