// Test support: lints an exposition with Debian's promtool (`promtool check metrics`, package
// `prometheus`), as common/metrics/promtool_test.cc does, for the servers' metrics tests.
#ifndef HERD_COMMON_METRICS_PROMTOOL_LINT_H_
#define HERD_COMMON_METRICS_PROMTOOL_LINT_H_

#include <string>

#include "absl/status/statusor.h"

namespace herd::metrics {

struct PromtoolLint {
  int exit_code = -1;  // 0: parsed and linted clean
  std::string output;  // what promtool printed (empty when clean)
};

// NOT_FOUND when promtool is neither on PATH nor at /usr/bin/promtool; UNAVAILABLE when it
// cannot be run. `scratch_dir` holds the input file for the duration of the call.
absl::StatusOr<PromtoolLint> LintWithPromtool(const std::string& exposition, const std::string& scratch_dir);

}  // namespace herd::metrics

#endif  // HERD_COMMON_METRICS_PROMTOOL_LINT_H_
