// The herd CLI's exit codes (DESIGN.md §11), and the one mapping from a failed RPC to them.
#ifndef HERD_CLI_EXIT_CODES_H_
#define HERD_CLI_EXIT_CODES_H_

#include "absl/status/status.h"

namespace herd::cli {

enum ExitCode {
  kOk = 0,
  kUsage = 1,
  kInvalid = 2,          // invalid input: file, job spec, validation
  kNotFound = 3,
  kUnauthenticated = 4,  // or permission denied
  kUnavailable = 5,
  kJobFailed = 6,
  kInterrupted = 130,
};

inline int ExitCodeFor(const absl::Status& status) {
  switch (status.code()) {
    case absl::StatusCode::kOk:
      return kOk;
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kOutOfRange:
    case absl::StatusCode::kResourceExhausted:
    case absl::StatusCode::kDataLoss:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kAlreadyExists:
      return kInvalid;
    case absl::StatusCode::kNotFound:
      return kNotFound;
    case absl::StatusCode::kUnauthenticated:
    case absl::StatusCode::kPermissionDenied:
      return kUnauthenticated;
    case absl::StatusCode::kUnavailable:
    case absl::StatusCode::kDeadlineExceeded:
      return kUnavailable;
    case absl::StatusCode::kCancelled:
      return kInterrupted;
    default:
      return kUsage;
  }
}

}  // namespace herd::cli

#endif  // HERD_CLI_EXIT_CODES_H_
