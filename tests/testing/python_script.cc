// Running Python reference scripts from gtests.
#include "tests/testing/python_script.h"

#include <sys/wait.h>

#include <cstdio>
#include <cstdlib>

#include "common/strings.h"

namespace herd::testing {
namespace {

std::string Quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

}  // namespace

absl::StatusOr<std::string> RunPythonScript(const std::string& script, const std::vector<std::string>& args) {
  const char* python = std::getenv("HERD_PYTHON");
  const char* source_dir = std::getenv("HERD_SOURCE_DIR");
  if (python == nullptr || *python == '\0') {
    return absl::FailedPreconditionError(
        "HERD_PYTHON is not set: run this test through ctest, which points it at the venv scripts/setup.sh makes");
  }
  if (source_dir == nullptr || *source_dir == '\0') return absl::FailedPreconditionError("HERD_SOURCE_DIR is not set");
  std::string cmd = herd::StrCat("OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 ", Quote(python), " ",
                                 Quote(herd::StrCat(source_dir, "/", script)));
  for (const std::string& a : args) cmd += " " + Quote(a);
  FILE* p = ::popen((cmd + " 2>&1").c_str(), "r");
  if (p == nullptr) return absl::InternalError("popen failed: " + cmd);
  std::string output;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), p)) > 0) output.append(buf, n);
  const int status = ::pclose(p);
  const int rc = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  if (rc != 0) {
    return absl::InternalError(herd::StrCat("the Python reference failed (rc ", rc, "; is ", python,
                                            " the venv from scripts/setup.sh?)\n$ ", cmd, "\n", output));
  }
  return output;
}

}  // namespace herd::testing
