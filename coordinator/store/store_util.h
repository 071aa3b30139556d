// Small helpers shared by the stores: random ids, times as microseconds, page tokens, the name
// rules of common.proto, digest checks.
#ifndef HERD_COORDINATOR_STORE_STORE_UTIL_H_
#define HERD_COORDINATOR_STORE_STORE_UTIL_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace herd::coordinator::store {

// `n` bytes from the kernel's CSPRNG (getrandom). UNAVAILABLE if it fails.
absl::StatusOr<std::string> RandomBytes(size_t n);
// Lower-case RFC 4648 base32 without padding ("a".."z", "2".."7").
std::string Base32(std::string_view bytes);
// prefix + 26 base32 characters of 128 random bits, e.g. "job_k5q...". Never fails in practice;
// a CSPRNG failure becomes UNAVAILABLE.
absl::StatusOr<std::string> NewId(std::string_view prefix);

inline int64_t ToMicros(absl::Time t) { return absl::ToUnixMicros(t); }
inline absl::Time FromMicros(int64_t us) { return absl::FromUnixMicros(us); }

// Page sizes of the API (common.proto, Limits): 0 means 100, above 1000 means 1000, negative is
// INVALID_ARGUMENT.
absl::StatusOr<int> NormalizePageSize(int page_size);

// Opaque page tokens: a cursor (the `seq` or step of the last item returned) bound to the
// listing it came from (`kind`) and to its filters (`filter_key`: tenant, job id, states,
// prefix ...). Decode answers INVALID_ARGUMENT for a token that is malformed or was made for
// another listing or other filters. An empty token decodes to nullopt (the first page).
std::string EncodePageToken(std::string_view kind, int64_t cursor, std::string_view filter_key);
absl::StatusOr<std::optional<int64_t>> DecodePageToken(std::string_view token,
                                                       std::string_view kind,
                                                       std::string_view filter_key);

// The name rules of common.proto: 1 to 128 bytes of UTF-8, no control characters, no '/' or
// '\', not "." or "..", no leading or trailing whitespace. INVALID_ARGUMENT naming `field`.
absl::Status ValidateName(std::string_view field, std::string_view name);

// 64 lower-case hex characters.
bool IsSha256Hex(std::string_view s);

}  // namespace herd::coordinator::store

#endif  // HERD_COORDINATOR_STORE_STORE_UTIL_H_
