// Garbage collection of blobs no row references any more (pruned checkpoints, deleted
// datasets, rejected uploads, replaced model files). A blob is deleted only when no table
// names it and it is older than a grace period: a writer stores the blob first and its row
// second, so a young unreferenced blob may be about to be referenced (BlobStore renews the
// mtime of a blob stored again for the same reason).
#ifndef HERD_COORDINATOR_STORE_GC_H_
#define HERD_COORDINATOR_STORE_GC_H_

#include <cstdint>
#include <set>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "coordinator/store/blob_store.h"
#include "coordinator/store/db.h"

namespace herd::coordinator::store {

struct GcStats {
  int64_t blobs_deleted = 0;
  int64_t bytes_deleted = 0;
  int64_t blobs_kept = 0;
  int64_t bytes_kept = 0;  // what the blob store holds afterwards (herd_storage_bytes)
};

// Every digest some row names.
absl::StatusOr<std::set<std::string>> ReferencedBlobs(Db* db);

// Deletes unreferenced blobs whose mtime is before now - grace.
absl::StatusOr<GcStats> CollectGarbage(Db* db, const BlobStore* blobs, absl::Time now,
                                       absl::Duration grace = absl::Hours(1));

}  // namespace herd::coordinator::store

#endif  // HERD_COORDINATOR_STORE_GC_H_
