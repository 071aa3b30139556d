// A tenant's datasets (datasets.proto): the uploaded file as a blob plus what validation found.
// Only READY datasets are stored; a REJECTED answer lives only in its upload's result
// (upload_store.h). Another tenant's dataset answers NOT_FOUND like a missing one.
//
// Thread-safe (all state is in the Db).
#ifndef HERD_COORDINATOR_STORE_DATASET_STORE_H_
#define HERD_COORDINATOR_STORE_DATASET_STORE_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "coordinator/clock.h"
#include "coordinator/store/blob_store.h"
#include "coordinator/store/db.h"

namespace herd::coordinator::store {

struct DatasetStoreOptions {
  // Where times come from (coordinator/clock.h); not owned.
  Clock* clock = Clock::Real();

  absl::Status Validate() const;
};

// Values equal herd.v1.DatasetState.
enum class DatasetState { kUnspecified = 0, kReady = 1, kRejected = 2 };

struct DatasetRecord {
  std::string id;              // "ds_..."; empty when REJECTED
  std::string tenant;
  std::string name;            // label given at upload
  std::string sha256;          // of the file as uploaded (its blob)
  int64_t size_bytes = 0;
  int64_t record_count = 0;    // valid records
  std::string format;          // "text", "prompt_completion", "chat", "alpaca", "tokenized"
  DatasetState state = DatasetState::kUnspecified;
  bool skip_invalid = false;
  std::string validation_json; // the ValidationReport, encoded by the caller
  absl::Time create_time;
};

// What Create stores.
struct NewDataset {
  std::string name;
  BlobRef blob;                // must be stored already
  int64_t record_count = 0;
  std::string format;          // a datasets::FormatName
  bool skip_invalid = false;
  std::string validation_json;
};

struct ListDatasetsRequest {
  int page_size = 0;           // 0 = 100, capped at 1000
  std::string page_token;      // "" for the first page
  std::string name_prefix;     // byte-wise; "" = all
};
struct ListDatasetsResponse {
  std::vector<DatasetRecord> datasets;  // newest first
  std::string next_page_token;          // "" on the last page
};

class DatasetStore {
 public:
  DatasetStore(Db* db, const BlobStore* blobs, DatasetStoreOptions options);

  // A READY dataset. INVALID_ARGUMENT bad name, format or counts; FAILED_PRECONDITION the blob
  // is not stored (or has another size).
  absl::StatusOr<DatasetRecord> Create(std::string_view tenant, const NewDataset& dataset);
  absl::StatusOr<DatasetRecord> Get(std::string_view tenant, std::string_view id) const;
  absl::StatusOr<ListDatasetsResponse> List(std::string_view tenant,
                                            const ListDatasetsRequest& request) const;
  // Deletes the row and returns it; the blob stays until the garbage collector finds it
  // unreferenced (another dataset may share the bytes). FAILED_PRECONDITION naming the job
  // when a job that is not final uses it (as dataset or validation dataset).
  absl::StatusOr<DatasetRecord> Delete(std::string_view tenant, std::string_view id);

 private:
  // Constant after construction.
  Db* const db_;
  const BlobStore* const blobs_;
  const DatasetStoreOptions options_;
};

// A DatasetRecord as JSON and back (the stored answer of a finished upload).
std::string DatasetToJson(const DatasetRecord& dataset);
absl::StatusOr<DatasetRecord> DatasetFromJson(std::string_view json);

}  // namespace herd::coordinator::store

#endif  // HERD_COORDINATOR_STORE_DATASET_STORE_H_
