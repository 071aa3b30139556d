// Files the way Herd needs them: whole-file reads, crash-safe writes, read-only memory maps.
#ifndef HERD_COMMON_FILE_UTIL_H_
#define HERD_COMMON_FILE_UTIL_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace herd {

// Reads a whole file. NOT_FOUND if it does not exist.
absl::StatusOr<std::string> ReadFile(const std::string& path);

// Writes `data` to `path` so that a crash leaves either the old file or the new one, never a
// mix: unique temp file in the same folder, fsync, rename, fsync of the folder.
absl::Status WriteFileAtomic(const std::string& path, std::string_view data);

// fsyncs a directory, so a rename or create inside it survives a crash.
absl::Status SyncDirectory(const std::string& dir);

// A read-only memory map of a whole file; unmapped on destruction.
class MappedFile {
 public:
  static absl::StatusOr<std::unique_ptr<MappedFile>> Open(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  MappedFile(std::string path, const uint8_t* data, size_t size)
      : path_(std::move(path)), data_(data), size_(size) {}

  const std::string path_;
  const uint8_t* const data_;  // nullptr for an empty file
  const size_t size_;
};

}  // namespace herd

#endif  // HERD_COMMON_FILE_UTIL_H_
