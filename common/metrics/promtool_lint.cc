// promtool check metrics, run on a temp file through popen.
#include "common/metrics/promtool_lint.h"

#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>

#include "common/file_util.h"
#include "common/status.h"
#include "common/strings.h"

namespace herd::metrics {
namespace {

std::string FindPromtool() {
  if (const char* path = std::getenv("PATH")) {
    std::string dirs(path);
    size_t start = 0;
    while (start <= dirs.size()) {
      size_t end = dirs.find(':', start);
      if (end == std::string::npos) end = dirs.size();
      const std::string candidate = dirs.substr(start, end - start) + "/promtool";
      if (end > start && ::access(candidate.c_str(), X_OK) == 0) return candidate;
      start = end + 1;
    }
  }
  return ::access("/usr/bin/promtool", X_OK) == 0 ? "/usr/bin/promtool" : "";
}

}  // namespace

absl::StatusOr<PromtoolLint> LintWithPromtool(const std::string& exposition, const std::string& scratch_dir) {
  const std::string promtool = FindPromtool();
  if (promtool.empty()) {
    return absl::NotFoundError("promtool not found on PATH or at /usr/bin/promtool: install Debian's `prometheus`");
  }
  const std::string path = StrCat(scratch_dir, "/promtool_input_", ::getpid());
  HERD_RETURN_IF_ERROR(WriteFileAtomic(path, exposition));
  const std::string command = StrCat("'", promtool, "' check metrics < '", path, "' 2>&1");
  FILE* pipe = ::popen(command.c_str(), "r");
  if (pipe == nullptr) {
    std::remove(path.c_str());
    return absl::UnavailableError(StrCat("cannot run ", command));
  }
  PromtoolLint lint;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), pipe)) > 0) lint.output.append(buf, n);
  const int status = ::pclose(pipe);
  lint.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  std::remove(path.c_str());
  return lint;
}

}  // namespace herd::metrics
