// Test support: run one of the repository's Python reference scripts from a C++ test, the way
// ctest sets things up (HERD_PYTHON = the venv's interpreter, HERD_SOURCE_DIR = the checkout).
#ifndef HERD_TESTS_TESTING_PYTHON_SCRIPT_H_
#define HERD_TESTS_TESTING_PYTHON_SCRIPT_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace herd::testing {

// Runs `$HERD_PYTHON $HERD_SOURCE_DIR/<script> <args...>` with OMP_NUM_THREADS=1 and Hugging Face
// offline, and returns what it printed (stdout and stderr). FAILED_PRECONDITION naming the
// variable when ctest's environment is missing (a reference test must fail, never skip);
// INTERNAL with the command line and its output when the script exits non-zero.
absl::StatusOr<std::string> RunPythonScript(const std::string& script, const std::vector<std::string>& args);

}  // namespace herd::testing

#endif  // HERD_TESTS_TESTING_PYTHON_SCRIPT_H_
