// Reading and writing safetensors files, the format of every checkpoint Herd loads or emits
// (base model weights, LoRA adapters). Format: an 8-byte little-endian header length N, N bytes
// of JSON header {name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}},
// then the data buffer, offsets relative to its start.
//
// The reader maps the file and hands out spans into the mapping (zero copy), after checking the
// header as strictly as the reference implementation does: a file Herd accepts, Hugging Face's
// `safetensors` accepts too, and every rejection names the file, the tensor and the problem.
#ifndef HERD_COMMON_SAFETENSORS_H_
#define HERD_COMMON_SAFETENSORS_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/file_util.h"

namespace herd {

// The element types Herd reads and writes. Others (F8_*, U16..U64, complex) are rejected by name.
enum class Dtype : uint8_t { kF64, kF32, kF16, kBF16, kI64, kI32, kI16, kI8, kU8, kBool };

// The header spelling: "F64", "F32", "F16", "BF16", "I64", "I32", "I16", "I8", "U8", "BOOL".
std::string_view DtypeName(Dtype dtype);
// Bytes per element (BOOL is one byte).
size_t DtypeSize(Dtype dtype);
// INVALID_ARGUMENT naming `name` when it is not one of the dtypes above.
absl::StatusOr<Dtype> DtypeFromName(std::string_view name);

// The largest header accepted, as in the reference implementation; a bound for hostile files.
inline constexpr uint64_t kSafetensorsMaxHeaderBytes = 100'000'000;

// One tensor of a parsed file. `data` points into the file's bytes and stays valid while the
// SafetensorsFile lives. It is aligned only as far as the writer made it (Herd's writer aligns
// every tensor to its element size; other writers may not), so copy rather than cast.
struct SafetensorsTensor {
  std::string name;
  Dtype dtype = Dtype::kF32;
  std::vector<int64_t> shape;  // empty for a 0-d scalar
  uint64_t begin = 0;          // data_offsets, relative to the data buffer
  uint64_t end = 0;
  std::span<const uint8_t> data;

  int64_t numel() const;
};

// A validated, read-only safetensors file.
class SafetensorsFile {
 public:
  // Maps `path` and validates it. NOT_FOUND if it does not exist, INVALID_ARGUMENT if malformed.
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Open(const std::string& path);

  // Validates a whole file image held in memory (tests, fuzzing, downloads); `source` names it
  // in error messages.
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Parse(std::string bytes,
                                                               std::string source);

  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  // The path, or the `source` given to Parse.
  const std::string& source() const { return source_; }

  // Every tensor, in file order (by position in the data buffer).
  const std::vector<SafetensorsTensor>& tensors() const { return tensors_; }
  std::vector<std::string> names() const;

  // nullptr when the file has no tensor of that name.
  const SafetensorsTensor* Find(std::string_view name) const;
  // NOT_FOUND naming the file and the tensor when absent.
  absl::StatusOr<const SafetensorsTensor*> Get(std::string_view name) const;

  // The "__metadata__" map (empty when the header has none).
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

 private:
  SafetensorsFile() = default;
  absl::Status Init(const uint8_t* bytes, size_t size);

  std::string source_;
  std::unique_ptr<MappedFile> mapped_;  // set by Open
  std::string owned_;                   // set by Parse
  std::vector<SafetensorsTensor> tensors_;
  std::map<std::string, size_t, std::less<>> index_;  // name -> position in tensors_
  std::map<std::string, std::string> metadata_;
};

// Collects tensors and writes them as one safetensors file. Tensors are laid out by element size
// (largest first), then by name, so the output does not depend on the order of Add calls and every
// tensor starts at a multiple of its element size (the header is padded with spaces to 8 bytes).
class SafetensorsWriter {
 public:
  // Takes `bytes` (little-endian elements, row-major). INVALID_ARGUMENT on a duplicate, reserved
  // or non-UTF-8 name, a negative dimension, or a byte count that is not numel * DtypeSize(dtype).
  absl::Status Add(std::string name, Dtype dtype, std::vector<int64_t> shape, std::string bytes);
  // Copies `size` bytes from `data`.
  absl::Status Add(std::string name, Dtype dtype, std::vector<int64_t> shape, const void* data,
                   size_t size);

  // Keys and values should be UTF-8; invalid bytes are written as U+FFFD.
  void SetMetadata(std::string key, std::string value) {
    metadata_[std::move(key)] = std::move(value);
  }

  // The whole file image.
  std::string Serialize() const;
  // Serialize() written to `path` atomically (temp file, fsync, rename).
  absl::Status Write(const std::string& path) const;

 private:
  struct Entry {
    Dtype dtype;
    std::vector<int64_t> shape;
    std::string bytes;
  };
  std::map<std::string, Entry> entries_;
  std::map<std::string, std::string> metadata_;
};

}  // namespace herd

#endif  // HERD_COMMON_SAFETENSORS_H_
