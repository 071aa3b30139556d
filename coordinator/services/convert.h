// Small conversions shared by the service skins: request ids checked before any lookup, and absl
// time <-> protobuf well-known types.
#ifndef HERD_COORDINATOR_SERVICES_CONVERT_H_
#define HERD_COORDINATOR_SERVICES_CONVERT_H_

#include <string_view>

#include <google/protobuf/duration.pb.h>
#include <google/protobuf/timestamp.pb.h>
#include <google/protobuf/util/time_util.h>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "common/strings.h"

namespace herd::coordinator::services {

// An object id from a request (common.proto: at most 64 bytes): INVALID_ARGUMENT naming `field`
// when empty or longer, before any lookup (so an id is never echoed at length).
inline absl::Status CheckId(std::string_view field, std::string_view id) {
  if (id.empty()) return absl::InvalidArgumentError(herd::StrCat(field, ": must not be empty"));
  if (id.size() > 64) {
    return absl::InvalidArgumentError(herd::StrCat(field, ": ", id.size(), " bytes; an id is at most 64"));
  }
  return absl::OkStatus();
}

inline void ToTimestamp(absl::Time t, google::protobuf::Timestamp* out) {
  *out = google::protobuf::util::TimeUtil::NanosecondsToTimestamp(absl::ToUnixNanos(t));
}

inline void ToDurationProto(absl::Duration d, google::protobuf::Duration* out) {
  *out = google::protobuf::util::TimeUtil::NanosecondsToDuration(absl::ToInt64Nanoseconds(d));
}

}  // namespace herd::coordinator::services

#endif  // HERD_COORDINATOR_SERVICES_CONVERT_H_
