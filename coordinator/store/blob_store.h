// Content-addressed blobs under <data_dir>/blobs (DESIGN.md §1): datasets, model metadata
// files, prepared data, checkpoints and adapters, each a file named by its SHA-256 at
// blobs/sha256/ab/abcdef.... A blob becomes visible only complete: it is written to a unique temp
// file under blobs/tmp, hashed while written, fsynced, renamed into place, and its directory
// fsynced. So a path under blobs/sha256 always holds exactly the bytes of its name, and a
// database row that names a digest points at a finished blob. Open deletes leftovers in tmp.
//
// Thread-safe: every method may be called from any thread; there is no in-memory state beyond
// the options.
#ifndef HERD_COORDINATOR_STORE_BLOB_STORE_H_
#define HERD_COORDINATOR_STORE_BLOB_STORE_H_

#include <cstdint>
#include <istream>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/sha256.h"

namespace herd::coordinator::store {

// A stored blob: its digest (64 lower-case hex) and size.
struct BlobRef {
  std::string sha256;
  int64_t size_bytes = 0;
  bool operator==(const BlobRef&) const = default;
};

struct BlobStoreOptions {
  // The blob directory, usually <data_dir>/blobs; created when missing.
  std::string root;

  // INVALID_ARGUMENT naming the field at fault.
  absl::Status Validate() const;
};

// A blob being written. Nothing is visible until Commit; destroying an uncommitted writer
// deletes its temp file.
class BlobWriter {
 public:
  ~BlobWriter();
  BlobWriter(const BlobWriter&) = delete;
  BlobWriter& operator=(const BlobWriter&) = delete;

  absl::Status Append(std::string_view data);
  int64_t size() const { return size_; }
  // fsyncs, renames into place and fsyncs the directory. With `expected_sha256` set, bytes
  // hashing to anything else answer DATA_LOSS and nothing is kept. Committing bytes that are
  // already stored is OK and returns the same ref. The writer is spent afterwards.
  absl::StatusOr<BlobRef> Commit(std::string_view expected_sha256 = "");

 private:
  friend class BlobStore;
  BlobWriter(const class BlobStore* store, std::string tmp_path, int fd)
      : store_(store), tmp_path_(std::move(tmp_path)), fd_(fd) {}

  const class BlobStore* const store_;
  const std::string tmp_path_;
  int fd_;  // -1 once committed or failed
  Sha256 hash_;
  int64_t size_ = 0;
};

// Reads one finished blob from any offset (downloads resume from where they broke off).
class BlobReader {
 public:
  ~BlobReader();
  BlobReader(const BlobReader&) = delete;
  BlobReader& operator=(const BlobReader&) = delete;

  int64_t size() const { return size_; }
  // Replaces *out with up to `max_bytes` bytes starting at `offset`; empty at the end.
  // OUT_OF_RANGE when offset is negative or beyond the size.
  absl::Status ReadAt(int64_t offset, size_t max_bytes, std::string* out) const;

 private:
  friend class BlobStore;
  BlobReader(std::string path, int fd, int64_t size) : path_(std::move(path)), fd_(fd), size_(size) {}
  const std::string path_;
  const int fd_;
  const int64_t size_;
};

class BlobStore {
 public:
  struct Info {
    BlobRef ref;
    absl::Time mtime;  // when it was stored (the garbage collector spares young blobs)
  };

  static absl::StatusOr<std::unique_ptr<BlobStore>> Open(const BlobStoreOptions& options);

  // Writing.
  absl::StatusOr<std::unique_ptr<BlobWriter>> NewWriter() const;
  absl::StatusOr<BlobRef> Put(std::string_view data) const;
  absl::StatusOr<BlobRef> PutStream(std::istream& in) const;
  absl::StatusOr<BlobRef> PutFile(const std::string& path) const;  // copies the file
  // Moves an already fsynced file (an upload's part file) into the store without copying it,
  // after hashing it: DATA_LOSS (the file is left where it is) when its bytes do not match
  // `expected_sha256`/`expected_size`. The source must be on the same file system.
  absl::StatusOr<BlobRef> Adopt(const std::string& path, std::string_view expected_sha256,
                                int64_t expected_size) const;

  // Reading. A digest that is not 64 lower-case hex answers INVALID_ARGUMENT; an absent blob
  // NOT_FOUND.
  bool Has(std::string_view sha256) const;
  absl::StatusOr<int64_t> Size(std::string_view sha256) const;
  // Size() that also renews the blob's mtime: call it before writing a row that references a
  // blob stored earlier, so the garbage collector's grace period covers the gap (gc.h).
  absl::StatusOr<int64_t> Touch(std::string_view sha256) const;
  absl::StatusOr<std::unique_ptr<BlobReader>> NewReader(std::string_view sha256) const;
  absl::StatusOr<std::string> Read(std::string_view sha256, int64_t offset = 0,
                                   int64_t length = -1 /* to the end */) const;
  // Up to `max_bytes` of the stream made of `parts` back to back (a multi-file artifact such as
  // an adapter, common.proto Manifest), starting at `offset`; empty at the end. OUT_OF_RANGE
  // when offset is negative or past the total; DATA_LOSS when a part is shorter than its ref.
  absl::StatusOr<std::string> ReadConcatenated(const std::vector<BlobRef>& parts, int64_t offset,
                                               size_t max_bytes) const;
  // Rehashes the blob: DATA_LOSS when its bytes no longer match its name (disk corruption).
  absl::Status Verify(std::string_view sha256) const;
  // Every stored blob (for the garbage collector and storage metrics).
  absl::StatusOr<std::vector<Info>> List() const;

  // Deletes a blob; callers make sure no row references it (gc.h). NOT_FOUND when absent.
  absl::Status Delete(std::string_view sha256) const;

  // Path of a blob (it may not exist), and the temp folder (same file system as the blobs).
  std::string PathOf(std::string_view sha256) const;
  const std::string& root() const { return root_; }
  const std::string& tmp_dir() const { return tmp_dir_; }

 private:
  friend class BlobWriter;
  explicit BlobStore(std::string root);
  // Renames `tmp` (fsynced) to the blob's path and fsyncs the directories involved.
  absl::Status Install(const std::string& tmp, const BlobRef& ref) const;

  // Constant after construction.
  const std::string root_;     // <data_dir>/blobs
  const std::string tmp_dir_;  // root_/tmp
};

}  // namespace herd::coordinator::store

#endif  // HERD_COORDINATOR_STORE_BLOB_STORE_H_
