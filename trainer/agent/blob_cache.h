// The agent's content-addressed cache of blobs fetched from the coordinator (prepared data,
// resume checkpoint files): <root>/sha256/ab/abcdef…, each written as a .partial file that a
// broken stream resumes from the bytes it has, checked against its sha256, then renamed into
// place. A blob in place is complete and verified; later assignments reuse it. Trim() keeps the
// cache under max_bytes by deleting the blobs used least recently (a reuse renews a blob's time).
#ifndef HERD_TRAINER_AGENT_BLOB_CACHE_H_
#define HERD_TRAINER_AGENT_BLOB_CACHE_H_

#include <cstdint>
#include <functional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "herd/v1/trainers.pb.h"
#include "trainer/agent/coordinator_api.h"

namespace herd::agent {

struct BlobCacheOptions {
  std::string root;                                       // blobs live under <root>/sha256/
  int max_attempts = 8;                                   // streams tried per blob before giving up
  absl::Duration initial_backoff = absl::Milliseconds(200);  // doubled after each failed attempt
  absl::Duration max_backoff = absl::Seconds(10);
  int64_t max_bytes = 0;                                  // Trim() bound on the held blobs; 0 = none
};

// Not thread-safe: one fetch at a time (the agent runs one assignment at a time).
class BlobCache {
 public:
  explicit BlobCache(BlobCacheOptions options) : options_(std::move(options)) {}

  // Where blob `sha256` lives once fetched.
  std::string PathFor(const std::string& sha256) const;

  // The path of blob `sha256` (of `size_bytes`, -1 when unknown), fetched with FetchBlob for
  // `ref` unless already held. Retries broken streams (UNAVAILABLE, ABORTED, DEADLINE_EXCEEDED,
  // a digest mismatch) from the bytes held; returns the coordinator's status for anything
  // else (NOT_FOUND, FAILED_PRECONDITION, DATA_LOSS of the stored blob), CANCELLED once `stop`
  // answers true.
  absl::StatusOr<std::string> Fetch(CoordinatorApi& api, const std::string& trainer_id,
                                    const herd::v1::AssignmentRef& ref, const std::string& sha256,
                                    int64_t size_bytes, const std::function<bool()>& stop);

  // Deletes complete blobs, least recently used first, until the held ones total at most
  // max_bytes (partial files are left alone: they belong to a fetch in flight). Returns the bytes
  // freed. Call it between assignments.
  int64_t Trim();

 private:
  // One stream from the end of `partial`; OK once it holds the whole blob.
  absl::Status FetchOnce(CoordinatorApi& api, const herd::v1::FetchBlobRequest& request, const std::string& partial,
                         int64_t* size_bytes, const std::function<bool()>& stop);

  const BlobCacheOptions options_;
};

}  // namespace herd::agent

#endif  // HERD_TRAINER_AGENT_BLOB_CACHE_H_
