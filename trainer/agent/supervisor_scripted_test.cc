// The Supervisor's verdicts on engines that misbehave, played by small shell scripts against the
// fake coordinator: silence (HUNG), a line that is not JSON (PROTOCOL_VIOLATION), a segfault
// (CRASHED, with the stderr tail), an engine error (ERROR with its code), and an engine that
// ignores `cancel` (killed after the grace, CANCELLED). Every case checks the process is gone.
// One script saves the assignment line it is sent: the job's training settings are in it.
#include <signal.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstdio>
#include <filesystem>
#include <mutex>

#include "common/engine_protocol.h"
#include "common/file_util.h"
#include "common/rpc/job_spec_proto.h"
#include "common/sha256.h"
#include "gtest/gtest.h"
#include "trainer/agent/fake_coordinator.h"
#include "trainer/agent/supervisor.h"

namespace herd::agent {
namespace {

namespace v1 = herd::v1;
namespace fs = std::filesystem;

constexpr char kHello[] = R"(echo '{"v":1,"type":"hello","engine_version":"script"}'; read assignment; )";
constexpr char kWeights[] = "1111111111111111111111111111111111111111111111111111111111111111";
constexpr char kData[] = "prepared rows";

class ScriptedEngineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = ::testing::TempDir() + "/scripted-" + ::testing::UnitTest::GetInstance()->current_test_info()->name();
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    fake_.AddBlob(kData);
  }

  // A supervisor whose engine is `/bin/sh -c body` (as a script file).
  std::unique_ptr<Supervisor> Start(const std::string& body, absl::Duration silence = absl::Minutes(5)) {
    const std::string script = dir_ + "/engine.sh";
    EXPECT_TRUE(WriteFileAtomic(script, "#!/bin/sh\necho \"engine pid $$\" >&2\n" + body + "\n").ok());
    chmod(script.c_str(), 0755);
    SupervisorOptions o{.engine_path = script, .scratch_dir = dir_ + "/scratch",
                        .models = {{"m", {.dir = dir_, .weights_sha256 = kWeights}}},
                        .silence_timeout = silence, .cancel_grace = absl::Seconds(1),
                        .progress_interval = absl::Milliseconds(50), .retry_backoff = absl::Milliseconds(10)};
    o.log = [this](const std::string& line) {
      std::lock_guard<std::mutex> lock(mu_);
      log_ += line + "\n";
    };
    auto s = std::make_unique<Supervisor>(std::move(o), &fake_);
    s->SetTrainerId("tr_1");
    JobSpec spec = spec_;
    spec.base_model = "m";
    spec.dataset = "ds_1";
    v1::Assignment a;
    a.mutable_ref()->set_job_id("job_s");
    a.mutable_ref()->set_generation(1);
    a.set_world_size(1);
    a.set_base_model("m");
    a.set_weights_sha256(kWeights);
    rpc::JobSpecToProto(spec, a.mutable_spec());
    a.set_total_steps(10);
    a.mutable_train_data()->set_sha256(Sha256Hex(kData));
    a.mutable_train_data()->set_size_bytes(sizeof(kData) - 1);
    ref_ = a.ref();
    EXPECT_TRUE(s->Offer(a));
    return s;
  }

  v1::ReportEngineExitRequest Exit() {
    auto exits = fake_.WaitForExits(1, absl::Minutes(2));
    EXPECT_EQ(exits.size(), 1u) << Log();
    return exits.empty() ? v1::ReportEngineExitRequest() : exits[0];
  }

  std::string Log() {
    std::lock_guard<std::mutex> lock(mu_);
    return log_;
  }

  bool EngineGone(const v1::ReportEngineExitRequest& exit) {
    const std::string mark = "engine pid ";
    const size_t at = exit.stderr_tail().find(mark);
    if (at == std::string::npos) return false;
    const pid_t pid = std::atoi(exit.stderr_tail().c_str() + at + mark.size());
    if (pid <= 0) return false;
    // The whole process group: the script's children die of the group's SIGKILL too, and may
    // linger as zombies of an init that does not reap them. SIGKILL lands asynchronously, so
    // look again until a generous deadline.
    const absl::Time deadline = absl::Now() + absl::Seconds(30);
    while (GroupAlive(pid)) {
      if (absl::Now() > deadline) return false;
      absl::SleepFor(absl::Milliseconds(10));
    }
    return true;
  }

  // Whether a process of group `pgid` is alive (not a zombie).
  static bool GroupAlive(pid_t pgid) {
    std::error_code ec;
    for (const auto& entry : fs::directory_iterator("/proc", ec)) {
      const std::string stat = ReadFile(entry.path().string() + "/stat").value_or("");
      const size_t paren = stat.rfind(')');
      if (paren == std::string::npos) continue;
      char state = 0;
      int ppid = 0, pgrp = 0;
      if (std::sscanf(stat.c_str() + paren + 1, " %c %d %d", &state, &ppid, &pgrp) != 3) continue;
      if (pgrp == pgid && state != 'Z' && state != 'X') return true;
    }
    return false;
  }

  std::string dir_;
  JobSpec spec_;  // the job Start() assigns (base_model and dataset are set there)
  FakeCoordinator fake_;
  v1::AssignmentRef ref_;
  std::mutex mu_;
  std::string log_;
};

TEST_F(ScriptedEngineTest, SilentEngineIsHung) {
  auto s = Start(std::string(kHello) + "sleep 600", absl::Milliseconds(300));
  const auto exit = Exit();
  EXPECT_EQ(exit.reason(), v1::ENGINE_EXIT_REASON_HUNG) << exit.DebugString();
  EXPECT_EQ(exit.failure().code(), "UNAVAILABLE");
  EXPECT_TRUE(EngineGone(exit));
}

TEST_F(ScriptedEngineTest, LineThatIsNotJsonIsAViolation) {
  auto s = Start(std::string(kHello) + "echo 'not json at all'; sleep 600");
  const auto exit = Exit();
  EXPECT_EQ(exit.reason(), v1::ENGINE_EXIT_REASON_PROTOCOL_VIOLATION) << exit.DebugString();
  EXPECT_NE(exit.failure().message().find("not json at all"), std::string::npos) << exit.failure().message();
  EXPECT_TRUE(EngineGone(exit));
}

TEST_F(ScriptedEngineTest, SegfaultIsCrashedWithTheStderrTail) {
  auto s = Start(std::string(kHello) + "echo 'about to fall over' >&2; kill -SEGV $$");
  const auto exit = Exit();
  EXPECT_EQ(exit.reason(), v1::ENGINE_EXIT_REASON_CRASHED) << exit.DebugString();
  EXPECT_EQ(exit.signal(), SIGSEGV);
  EXPECT_FALSE(exit.has_exit_code());
  EXPECT_NE(exit.stderr_tail().find("about to fall over"), std::string::npos);
}

TEST_F(ScriptedEngineTest, EngineErrorIsReportedWithItsCode) {
  auto s = Start(std::string(kHello) +
                 R"(echo '{"v":1,"type":"progress","step":1}'; )"
                 R"(echo '{"v":1,"type":"error","code":"RESOURCE_EXHAUSTED","message":"out of device memory"}'; )"
                 R"(echo '{"v":1,"type":"exit","reason":"error","step":1}'; exit 1)");
  const auto exit = Exit();
  EXPECT_EQ(exit.reason(), v1::ENGINE_EXIT_REASON_ERROR) << exit.DebugString();
  EXPECT_EQ(exit.failure().code(), "RESOURCE_EXHAUSTED");
  EXPECT_EQ(exit.failure().message(), "out of device memory");
  EXPECT_EQ(exit.exit_code(), 1);
  EXPECT_EQ(exit.step(), 1);
}

// The job's training settings reach the engine's assignment line (activation_checkpointing
// travels beside the `training` object, engine_protocol.md §5.1).
TEST_F(ScriptedEngineTest, AssignmentCarriesTheJobsTrainingSettings) {
  spec_.training.activation_checkpointing = true;
  spec_.training.seed = 9;
  const std::string saved = dir_ + "/assignment.json";
  auto s = Start(std::string(kHello) + "printf '%s\\n' \"$assignment\" > " + saved + "; " +
                 R"(echo '{"v":1,"type":"error","code":"INTERNAL","message":"saw it"}'; )"
                 R"(echo '{"v":1,"type":"exit","reason":"error","step":0}'; exit 1)");
  const auto exit = Exit();
  EXPECT_EQ(exit.failure().message(), "saw it") << exit.DebugString();
  auto text = ReadFile(saved);
  ASSERT_TRUE(text.ok()) << text.status() << "\n" << Log();
  auto line = ParseProtocolLine(*text);
  ASSERT_TRUE(line.ok()) << line.status() << ": " << *text;
  EXPECT_EQ((*line)["activation_checkpointing"], true) << *text;
  auto assignment = AssignmentFromJson(*line);
  ASSERT_TRUE(assignment.ok()) << assignment.status();
  EXPECT_TRUE(assignment->training.activation_checkpointing);
  EXPECT_EQ(assignment->training.seed, 9);
}

TEST_F(ScriptedEngineTest, EngineIgnoringCancelIsKilledAfterTheGrace) {
  auto s = Start(std::string(kHello) + R"(echo '{"v":1,"type":"progress","step":1}'; trap '' TERM; sleep 600)");
  ASSERT_TRUE(fake_.WaitForPoints(1, absl::Minutes(2))) << Log();
  s->Cancel(ref_, "job cancelled by user");
  const auto exit = Exit();
  EXPECT_EQ(exit.reason(), v1::ENGINE_EXIT_REASON_CANCELLED) << exit.DebugString();
  EXPECT_EQ(exit.signal(), SIGKILL);
  EXPECT_TRUE(EngineGone(exit));
  EXPECT_NE(Log().find("killing it"), std::string::npos) << Log();
}

}  // namespace
}  // namespace herd::agent
