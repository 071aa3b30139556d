// SHA-256 (FIPS 180-4): content addresses of blobs and integrity checks on every download.
// Written here rather than taken from OpenSSL so that herd_common stays dependency-light for the
// engine, which must build on GPU machines without OpenSSL headers.
#ifndef HERD_COMMON_SHA256_H_
#define HERD_COMMON_SHA256_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace herd {

class Sha256 {
 public:
  Sha256();
  void Update(const void* data, size_t size);
  void Update(std::string_view data) { Update(data.data(), data.size()); }
  // Finishes the hash; the object must not be updated afterwards.
  std::array<uint8_t, 32> Digest();
  // Digest() as 64 lowercase hex characters.
  std::string HexDigest();

 private:
  void Block(const uint8_t* block);

  std::array<uint32_t, 8> state_;
  std::array<uint8_t, 64> buffer_;
  size_t buffered_ = 0;
  uint64_t total_bytes_ = 0;
};

// Hex SHA-256 of a string.
std::string Sha256Hex(std::string_view data);

// Hex SHA-256 of a file's contents, streamed (constant memory).
absl::StatusOr<std::string> Sha256File(const std::string& path);

}  // namespace herd

#endif  // HERD_COMMON_SHA256_H_
