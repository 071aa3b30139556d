// Status helpers.
#include "common/status.h"

#include "common/strings.h"

namespace herd {

absl::Status Annotate(const absl::Status& status, std::string_view context) {
  if (status.ok()) return status;
  return absl::Status(status.code(), herd::StrCat(context, ": ", status.message()));
}

}  // namespace herd
