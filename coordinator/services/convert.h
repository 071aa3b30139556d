// absl time <-> protobuf well-known types, for the service skins.
#ifndef HERD_COORDINATOR_SERVICES_CONVERT_H_
#define HERD_COORDINATOR_SERVICES_CONVERT_H_

#include <google/protobuf/duration.pb.h>
#include <google/protobuf/timestamp.pb.h>
#include <google/protobuf/util/time_util.h>

#include "absl/time/time.h"

namespace herd::coordinator::services {

inline void ToTimestamp(absl::Time t, google::protobuf::Timestamp* out) {
  *out = google::protobuf::util::TimeUtil::NanosecondsToTimestamp(absl::ToUnixNanos(t));
}

inline void ToDurationProto(absl::Duration d, google::protobuf::Duration* out) {
  *out = google::protobuf::util::TimeUtil::NanosecondsToDuration(absl::ToInt64Nanoseconds(d));
}

}  // namespace herd::coordinator::services

#endif  // HERD_COORDINATOR_SERVICES_CONVERT_H_
