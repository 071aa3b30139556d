// A job's stored checkpoints and its final adapter (adapters.proto, DESIGN.md §3.7, §3.10).
// A checkpoint is a set of named files, each a blob: adapter_config.json and
// adapter_model.safetensors (what users download) plus optimizer and trainer state (what a
// resumed generation fetches). Adding one, pruning the periodic ones past checkpoints.keep,
// moving jobs.last_checkpoint_step and writing the CHECKPOINT_SAVED event is one transaction.
//
// One checkpoint per step: a final adapter at the step of a periodic checkpoint replaces it
// (same weights, now published); the final one is never pruned.
//
// Thread-safe (all state is in the Db).
#ifndef HERD_COORDINATOR_STORE_CHECKPOINT_STORE_H_
#define HERD_COORDINATOR_STORE_CHECKPOINT_STORE_H_

#include <cstdint>
#include <optional>
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

inline constexpr std::string_view kAdapterConfigFile = "adapter_config.json";
inline constexpr std::string_view kAdapterWeightsFile = "adapter_model.safetensors";

// A file of a multi-file artifact: its plain name and its blob.
struct NamedBlob {
  std::string name;
  BlobRef blob;
  bool operator==(const NamedBlob&) const = default;
};

// The manifest digest of common.proto: SHA-256 of "<sha256>  <name>\n" lines sorted by name.
std::string ManifestDigest(const std::vector<NamedBlob>& files);

struct CheckpointStoreOptions {
  // Where times come from (coordinator/clock.h); not owned.
  Clock* clock = Clock::Real();
  // Files per checkpoint (trainers.proto: RESOURCE_EXHAUSTED above).
  int max_files = 16;

  absl::Status Validate() const;
};

struct NewCheckpoint {
  int64_t step = 0;        // >= 1
  bool final = false;      // the job's published adapter
  int64_t generation = 0;  // must be the job's current generation
  std::vector<NamedBlob> files;  // stored blobs; must include the two adapter files
  std::optional<double> loss;
  std::optional<double> eval_loss;
};

struct CheckpointRecord {
  std::string job_id;
  int64_t step = 0;
  bool final = false;
  int64_t generation = 0;
  std::vector<NamedBlob> files;  // every file, in the order given
  std::string files_sha256;      // manifest digest of all files (upload idempotency)
  std::vector<NamedBlob> adapter;  // adapter_config.json, adapter_model.safetensors: the download
  std::string adapter_sha256;      // manifest digest of `adapter`: the checkpoint's sha256 for users
  int64_t adapter_size_bytes = 0;
  std::optional<double> loss;
  std::optional<double> eval_loss;
  absl::Time create_time;
};

struct AddCheckpointResult {
  CheckpointRecord checkpoint;
  bool created = false;              // false: the same checkpoint was already stored (a retry)
  std::vector<int64_t> pruned_steps; // periodic checkpoints deleted past checkpoints.keep
};

struct ListCheckpointsResponse {
  std::vector<CheckpointRecord> checkpoints;  // by increasing step
  std::string next_page_token;                // "" on the last page
};

class CheckpointStore {
 public:
  CheckpointStore(Db* db, const BlobStore* blobs, CheckpointStoreOptions options);

  // Stores a checkpoint of a job (cluster side). A retry with the same files is OK (created =
  // false). INVALID_ARGUMENT step < 1, a bad or repeated file name, adapter files missing;
  // RESOURCE_EXHAUSTED too many files; FAILED_PRECONDITION a file's blob is not stored, the job
  // is final, or the generation is not the job's current one; ALREADY_EXISTS the step (or a
  // final adapter at another step) is stored with different files; NOT_FOUND no such job.
  absl::StatusOr<AddCheckpointResult> Add(std::string_view job_id, const NewCheckpoint& checkpoint);

  // Cluster side: one step, and the newest stored checkpoint (what a new generation resumes
  // from; nullopt when none).
  absl::StatusOr<CheckpointRecord> Get(std::string_view job_id, int64_t step) const;
  absl::StatusOr<std::optional<CheckpointRecord>> Latest(std::string_view job_id) const;

  // ListCheckpoints, tenant-checked (another tenant's job is NOT_FOUND like a missing one).
  absl::StatusOr<ListCheckpointsResponse> List(std::string_view tenant, std::string_view job_id,
                                               int page_size, std::string_view page_token) const;
  // DownloadAdapter's choice: `step` when set; else the final adapter of a SUCCEEDED job; else
  // the newest checkpoint. NOT_FOUND no such job for the tenant, no such step, or none yet.
  absl::StatusOr<CheckpointRecord> ForDownload(std::string_view tenant, std::string_view job_id,
                                               std::optional<int64_t> step) const;

 private:
  // Constant after construction.
  Db* const db_;
  const BlobStore* const blobs_;
  const CheckpointStoreOptions options_;
};

}  // namespace herd::coordinator::store

#endif  // HERD_COORDINATOR_STORE_CHECKPOINT_STORE_H_
