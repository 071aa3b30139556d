// Error handling helpers around absl::Status, the one error currency below main (STYLE.md).
#ifndef HERD_COMMON_STATUS_H_
#define HERD_COMMON_STATUS_H_

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define HERD_STATUS_CONCAT_INNER_(a, b) a##b
#define HERD_STATUS_CONCAT_(a, b) HERD_STATUS_CONCAT_INNER_(a, b)

// Returns from the calling function if `expr` (an absl::Status) is not OK.
#define HERD_RETURN_IF_ERROR(expr)                   \
  do {                                               \
    ::absl::Status herd_status_ = (expr);            \
    if (!herd_status_.ok()) return herd_status_;     \
  } while (0)

// `lhs = value of expr` where expr is an absl::StatusOr<T>; returns its status on error.
#define HERD_ASSIGN_OR_RETURN(lhs, expr) \
  HERD_ASSIGN_OR_RETURN_IMPL_(HERD_STATUS_CONCAT_(herd_statusor_, __LINE__), lhs, expr)
#define HERD_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                                \
  if (!tmp.ok()) return tmp.status();               \
  lhs = std::move(tmp).value()

namespace herd {

// Prefixes a status message with context ("reading model.safetensors: ..."), keeping its code.
absl::Status Annotate(const absl::Status& status, std::string_view context);

}  // namespace herd

#endif  // HERD_COMMON_STATUS_H_
