// RunSubprocess: output captured, exit codes and signals told apart, deadline enforced.
#include "common/subprocess.h"

#include <gtest/gtest.h>

namespace herd {
namespace {

TEST(Subprocess, CapturesBothStreamsAndExitCode) {
  auto r = RunSubprocess({.argv = {"/bin/sh", "-c", "echo out; echo err >&2; exit 3"}});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->stdout_text, "out\n");
  EXPECT_EQ(r->stderr_text, "err\n");
  EXPECT_EQ(r->exit_code, 3);
  EXPECT_FALSE(r->ok());
}

TEST(Subprocess, Success) {
  auto r = RunSubprocess({.argv = {"/bin/true"}});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->ok());
}

TEST(Subprocess, SignalIsReported) {
  auto r = RunSubprocess({.argv = {"/bin/sh", "-c", "kill -TERM $$"}});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->signal, 15);
  EXPECT_FALSE(r->ok());
}

TEST(Subprocess, DeadlineKillsTheGroup) {
  // The inner sleep is the child's work, not synchronisation: the deadline must cut it short.
  auto r = RunSubprocess({.argv = {"/bin/sh", "-c", "sleep 30 & sleep 30"}, .timeout = absl::Milliseconds(200)});
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDeadlineExceeded) << r.status();
}

TEST(Subprocess, MissingProgram) {
  auto r = RunSubprocess({.argv = {"/nonexistent/herd-prepare"}});
  EXPECT_EQ(r.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(r.status().message().find("/nonexistent/herd-prepare"), std::string::npos);
}

TEST(Subprocess, OutputIsCapped) {
  auto r = RunSubprocess({.argv = {"/bin/sh", "-c", "head -c 100000 /dev/zero"}, .max_output_bytes = 1000});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->stdout_text.size(), 1000u);
  EXPECT_TRUE(r->ok());
}

}  // namespace
}  // namespace herd
