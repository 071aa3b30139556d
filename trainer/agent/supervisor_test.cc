// The Supervisor against a fake coordinator (fake_coordinator.h) with the real herd-engine on the
// tiny fixture model: a run to completion (blobs fetched through a broken stream, progress,
// evals, checkpoints uploaded and verified, COMPLETED), a cancellation mid-run, a relayed call
// answering FAILED_PRECONDITION, shutdown, and the START_FAILED paths. The binaries come from
// the environment (trainer/agent/CMakeLists.txt sets it by generator expression).
#include "trainer/agent/supervisor.h"

#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <mutex>

#include "common/file_util.h"
#include "common/rpc/job_spec_proto.h"
#include "common/sha256.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "trainer/agent/fake_coordinator.h"
#include "trainer/agent/model_scan.h"
#include "trainer/agent/registration.h"

namespace herd::agent {
namespace {

namespace fs = std::filesystem;
namespace v1 = herd::v1;

constexpr absl::Duration kDeadline = absl::Minutes(4);  // catches hangs; runs take seconds

std::string Env(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "";
}

// Runs a tool to completion; its stdout, or an error with its exit status.
absl::StatusOr<std::string> RunTool(const std::vector<std::string>& argv, const std::string& out_file) {
  const pid_t pid = fork();
  if (pid < 0) return absl::InternalError("fork failed");
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    FILE* f = std::freopen(out_file.c_str(), "w", stdout);
    (void)f;
    std::vector<char*> args;
    for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    execv(args[0], args.data());
    _exit(127);
  }
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  std::string out = ReadFile(out_file).value_or("");
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    return absl::InternalError(argv[0] + " failed: " + out);
  }
  return out;
}

// The tiny model and its prepared data, made once for all tests.
struct Fixture {
  std::string dir, model_dir, weights_sha256, train_blob, validation_blob;
  int64_t sequences = 0;
};

class SupervisorTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    fixture_ = new Fixture;
    char tmpl[] = "/tmp/herd-supervisor-test-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    fixture_->dir = tmpl;
    ASSERT_FALSE(Env("HERD_ENGINE").empty()) << "HERD_ENGINE is not set: run through ctest";
    fixture_->model_dir = fixture_->dir + "/models/tiny-llama";
    auto made = RunTool({Env("HERD_MAKE_TINY_MODEL"), "--out", fixture_->model_dir}, fixture_->dir + "/make.out");
    ASSERT_TRUE(made.ok()) << made.status();
    const std::string train = fixture_->dir + "/train.prepared", validation = fixture_->dir + "/validation.prepared";
    auto prepared = RunTool({Env("HERD_PREPARE"), "--data", Env("HERD_SAMPLES") + "/support_qa.jsonl", "--model",
                             fixture_->model_dir, "--out", train, "--validation-out", validation, "--max-seq-len",
                             "128", "--validation-split", "0.1"},
                            fixture_->dir + "/prepare.out");
    ASSERT_TRUE(prepared.ok()) << prepared.status();
    fixture_->sequences = nlohmann::json::parse(*prepared)["train"]["sequences"].get<int64_t>();
    fixture_->train_blob = *ReadFile(train);
    fixture_->validation_blob = *ReadFile(validation);
    auto info = ReadModelDir(fixture_->model_dir);
    ASSERT_TRUE(info.ok()) << info.status();
    auto described = DescribeModel(*info);
    ASSERT_TRUE(described.ok()) << described.status();
    fixture_->weights_sha256 = described->weights_sha256();
  }

  static void TearDownTestSuite() {
    if (fixture_ && !fixture_->dir.empty()) fs::remove_all(fixture_->dir);
    delete fixture_;
    fixture_ = nullptr;
  }

  void SetUp() override {
    ASSERT_NE(fixture_, nullptr);
    ASSERT_FALSE(fixture_->weights_sha256.empty());
    scratch_ = fixture_->dir + "/scratch-" + ::testing::UnitTest::GetInstance()->current_test_info()->name();
    fake_.AddBlob(fixture_->train_blob);
    fake_.AddBlob(fixture_->validation_blob);
  }

  SupervisorOptions Options() {
    SupervisorOptions o{.engine_path = Env("HERD_ENGINE"), .scratch_dir = scratch_,
                        .models = {{"tiny-llama", {.dir = fixture_->model_dir,
                                                   .weights_sha256 = fixture_->weights_sha256}}},
                        .cancel_grace = absl::Seconds(20), .progress_interval = absl::Milliseconds(100),
                        .retry_backoff = absl::Milliseconds(20)};
    o.log = [this](const std::string& line) {
      std::lock_guard<std::mutex> lock(log_mu_);
      log_ += line + "\n";
    };
    return o;
  }

  std::string Log() {
    std::lock_guard<std::mutex> lock(log_mu_);
    return log_;
  }

  // A job of `total_steps` steps, checkpoint every 2, with validation.
  v1::Assignment MakeAssignment(int64_t total_steps, int64_t epochs = 1) {
    JobSpec spec;
    spec.base_model = "tiny-llama";
    spec.dataset = "ds_1";
    spec.lora.r = 4;
    spec.lora.alpha = 8;
    spec.training.epochs = epochs;
    spec.training.global_batch_size = 2;
    spec.training.micro_batch_size = 1;
    spec.training.max_seq_len = 128;
    spec.training.learning_rate = 1e-3;
    spec.training.seed = 5;
    spec.checkpoints.every_steps = 2;
    v1::Assignment a;
    a.mutable_ref()->set_job_id("job_1");
    a.mutable_ref()->set_generation(1);
    a.mutable_ref()->set_rank(0);
    a.set_world_size(1);
    a.set_base_model("tiny-llama");
    a.set_weights_sha256(fixture_->weights_sha256);
    rpc::JobSpecToProto(spec, a.mutable_spec());
    a.set_total_steps(total_steps);
    a.set_steps_per_epoch((fixture_->sequences + 1) / 2);
    a.set_grad_accum_steps(2);
    a.set_eval_every_steps(2);
    a.mutable_train_data()->set_sha256(Sha256Hex(fixture_->train_blob));
    a.mutable_train_data()->set_size_bytes(static_cast<int64_t>(fixture_->train_blob.size()));
    a.mutable_validation_data()->set_sha256(Sha256Hex(fixture_->validation_blob));
    a.mutable_validation_data()->set_size_bytes(static_cast<int64_t>(fixture_->validation_blob.size()));
    a.set_device_kind(v1::DEVICE_KIND_CPU);
    a.mutable_collective_timeout()->set_seconds(60);
    return a;
  }

  // The engine's pid, from the supervisor's log; -1 when none started.
  pid_t EnginePid() {
    const std::string log = Log(), mark = "started herd-engine, pid ";
    const size_t at = log.find(mark);
    return at == std::string::npos ? -1 : std::atoi(log.c_str() + at + mark.size());
  }

  static bool ProcessGone(pid_t pid) { return kill(pid, 0) != 0 && errno == ESRCH; }

  static Fixture* fixture_;
  FakeCoordinator fake_;
  std::string scratch_;
  std::mutex log_mu_;
  std::string log_;
};

Fixture* SupervisorTest::fixture_ = nullptr;

TEST_F(SupervisorTest, RunsToCompletionAndUploadsTheFinalCheckpoint) {
  fake_.BreakFirstFetchAfter(100000);  // the train blob's first stream breaks: resumed, not restarted
  Supervisor supervisor(Options(), &fake_);
  supervisor.SetTrainerId("tr_test");
  const v1::Assignment a = MakeAssignment(/*total_steps=*/3);
  ASSERT_TRUE(supervisor.Offer(a));
  ASSERT_EQ(supervisor.Held().size(), 1u);
  EXPECT_EQ(supervisor.Held()[0].ref().job_id(), "job_1");
  EXPECT_TRUE(supervisor.Offer(a));  // resent by the next answer: already held, not run twice

  auto exits = fake_.WaitForExits(1, kDeadline);
  ASSERT_EQ(exits.size(), 1u) << Log();
  const v1::ReportEngineExitRequest& exit = exits[0];
  EXPECT_EQ(exit.reason(), v1::ENGINE_EXIT_REASON_COMPLETED) << exit.DebugString() << Log();
  EXPECT_EQ(exit.trainer_id(), "tr_test");
  EXPECT_EQ(exit.ref().job_id(), "job_1");
  EXPECT_EQ(exit.step(), 3);
  EXPECT_TRUE(exit.has_exit_code());
  EXPECT_EQ(exit.exit_code(), 0);
  EXPECT_LE(exit.stderr_tail().size(), 16u << 10);

  // The broken stream resumed from the bytes held.
  const std::vector<int64_t> offsets = fake_.FetchOffsets(Sha256Hex(fixture_->train_blob));
  ASSERT_EQ(offsets.size(), 2u);
  EXPECT_EQ(offsets[0], 0);
  EXPECT_GT(offsets[1], 0);

  // Progress: every step, in order, from rank 0; evals after step 2 and the last.
  const std::vector<v1::ProgressPoint> points = fake_.Points();
  ASSERT_EQ(points.size(), 3u);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(points[i].step(), i + 1);
    EXPECT_EQ(points[i].rank(), 0);
    EXPECT_EQ(points[i].total_steps(), 3);
    EXPECT_TRUE(points[i].has_loss());
    EXPECT_GT(points[i].tokens(), 0);
    EXPECT_GT(points[i].device_memory_bytes(), 0) << "the engine's peak memory (host memory on a CPU)";
    EXPECT_FALSE(points[i].has_mfu()) << "no bf16 peak is known for a CPU";
  }
  ASSERT_FALSE(fake_.Evals().empty());
  EXPECT_EQ(fake_.Evals().back().step(), 3);

  // Checkpoints: step 2, then the final one at step 3, each verified by the fake (sizes, sha256,
  // manifest digest) — and the final one with the four files of engine_protocol.md §8.2.
  const std::vector<UploadedCheckpoint> uploads = fake_.Uploads();
  ASSERT_EQ(uploads.size(), 2u) << Log();
  EXPECT_EQ(uploads[0].header.step(), 2);
  EXPECT_FALSE(uploads[0].header.final());
  const UploadedCheckpoint& last = uploads[1];
  EXPECT_EQ(last.header.step(), 3);
  EXPECT_TRUE(last.header.final());
  EXPECT_EQ(last.header.trainer_id(), "tr_test");
  std::vector<std::string> names;
  for (const auto& f : last.header.manifest().files()) names.push_back(f.name());
  EXPECT_EQ(names, (std::vector<std::string>{"adapter_config.json", "adapter_model.safetensors",
                                             "optimizer.safetensors", "trainer_state.json"}));
  EXPECT_EQ(nlohmann::json::parse(last.files.at("adapter_config.json"))["r"], 4);

  ASSERT_TRUE(supervisor.WaitIdle(kDeadline));
  EXPECT_TRUE(supervisor.Held().empty());
  EXPECT_FALSE(fs::exists(scratch_ + "/job_1")) << "the scratch folder is removed";
  EXPECT_TRUE(fs::exists(scratch_ + "/blobs/sha256/" + Sha256Hex(fixture_->train_blob).substr(0, 2) + "/" +
                         Sha256Hex(fixture_->train_blob)));
  // Reported: a resend of the same assignment is not run again.
  EXPECT_TRUE(supervisor.Offer(a));
  EXPECT_TRUE(supervisor.Held().empty());
}

TEST_F(SupervisorTest, CancellationStopsTheEngineAndReportsCancelled) {
  Supervisor supervisor(Options(), &fake_);
  supervisor.SetTrainerId("tr_test");
  const v1::Assignment a = MakeAssignment(/*total_steps=*/5000, /*epochs=*/100);
  ASSERT_TRUE(supervisor.Offer(a));
  ASSERT_TRUE(fake_.WaitForPoints(1, kDeadline)) << Log();
  const pid_t pid = EnginePid();
  ASSERT_GT(pid, 0) << Log();
  const std::vector<v1::AssignmentStatus> held = supervisor.Held();
  ASSERT_EQ(held.size(), 1u);
  EXPECT_EQ(held[0].phase(), v1::ASSIGNMENT_PHASE_TRAINING);
  EXPECT_GE(held[0].step(), 1);

  supervisor.Cancel(a.ref(), "job cancelled by user");
  auto exits = fake_.WaitForExits(1, kDeadline);
  ASSERT_EQ(exits.size(), 1u) << Log();
  EXPECT_EQ(exits[0].reason(), v1::ENGINE_EXIT_REASON_CANCELLED) << exits[0].DebugString();
  EXPECT_FALSE(exits[0].has_failure());
  EXPECT_LT(exits[0].step(), 5000);
  EXPECT_TRUE(ProcessGone(pid));
  ASSERT_TRUE(supervisor.WaitIdle(kDeadline));
  EXPECT_FALSE(fs::exists(scratch_ + "/job_1"));
}

// Two ranks, each with its own supervisor (two trainers): rank 0's engine posts the CPU group's
// address through its agent, rank 1's agent reads it; both complete, only rank 0 uploads.
TEST_F(SupervisorTest, TwoRanksMeetThroughTheRendezvousRelay) {
  SupervisorOptions o0 = Options(), o1 = Options();
  o1.scratch_dir = scratch_ + "-rank1";  // a second trainer: its own scratch and blob cache
  Supervisor s0(std::move(o0), &fake_), s1(std::move(o1), &fake_);
  s0.SetTrainerId("tr_0");
  s1.SetTrainerId("tr_1");
  v1::Assignment a0 = MakeAssignment(2), a1 = MakeAssignment(2);
  for (v1::Assignment* a : {&a0, &a1}) {
    a->set_world_size(2);
    a->set_grad_accum_steps(1);
  }
  a1.mutable_ref()->set_rank(1);
  ASSERT_TRUE(s1.Offer(a1));  // the reader first: its get waits for the put
  ASSERT_TRUE(s0.Offer(a0));
  auto exits = fake_.WaitForExits(2, kDeadline);
  ASSERT_EQ(exits.size(), 2u) << Log();
  for (const auto& e : exits) {
    EXPECT_EQ(e.reason(), v1::ENGINE_EXIT_REASON_COMPLETED) << e.DebugString() << Log();
    EXPECT_EQ(e.step(), 2);
  }
  const std::vector<UploadedCheckpoint> uploads = fake_.Uploads();
  ASSERT_EQ(uploads.size(), 1u);
  EXPECT_EQ(uploads[0].header.ref().rank(), 0);
  EXPECT_TRUE(uploads[0].header.final());
  int rank1_points = 0;
  for (const auto& p : fake_.Points()) rank1_points += p.rank() == 1;
  EXPECT_EQ(rank1_points, 2);
}

// A relayed call answering FAILED_PRECONDITION (a newer generation) stops the engine.
TEST_F(SupervisorTest, StaleGenerationStopsTheEngine) {
  fake_.SetProgressStatus(absl::FailedPreconditionError("generation 1 replaced by 2"));
  Supervisor supervisor(Options(), &fake_);
  supervisor.SetTrainerId("tr_test");
  ASSERT_TRUE(supervisor.Offer(MakeAssignment(/*total_steps=*/5000, /*epochs=*/100)));
  auto exits = fake_.WaitForExits(1, kDeadline);
  ASSERT_EQ(exits.size(), 1u) << Log();
  EXPECT_EQ(exits[0].reason(), v1::ENGINE_EXIT_REASON_CANCELLED) << exits[0].DebugString();
  const pid_t pid = EnginePid();
  ASSERT_GT(pid, 0);
  EXPECT_TRUE(ProcessGone(pid));
}

// SIGTERM of the agent: Shutdown cancels the engine and reports before returning.
TEST_F(SupervisorTest, ShutdownCancelsAndReports) {
  Supervisor supervisor(Options(), &fake_);
  supervisor.SetTrainerId("tr_test");
  ASSERT_TRUE(supervisor.Offer(MakeAssignment(/*total_steps=*/5000, /*epochs=*/100)));
  ASSERT_TRUE(fake_.WaitForPoints(1, kDeadline)) << Log();
  supervisor.Shutdown();
  auto exits = fake_.WaitForExits(1, absl::ZeroDuration());
  ASSERT_EQ(exits.size(), 1u) << Log();
  EXPECT_EQ(exits[0].reason(), v1::ENGINE_EXIT_REASON_CANCELLED);
  EXPECT_TRUE(ProcessGone(EnginePid()));
  EXPECT_FALSE(supervisor.Offer(MakeAssignment(3)));  // no new work once stopping
}

TEST_F(SupervisorTest, WrongWeightsDigestIsStartFailed) {
  Supervisor supervisor(Options(), &fake_);
  v1::Assignment a = MakeAssignment(3);
  a.set_weights_sha256(std::string(64, '0'));
  ASSERT_TRUE(supervisor.Offer(a));
  auto exits = fake_.WaitForExits(1, kDeadline);
  ASSERT_EQ(exits.size(), 1u);
  EXPECT_EQ(exits[0].reason(), v1::ENGINE_EXIT_REASON_START_FAILED);
  EXPECT_EQ(exits[0].failure().code(), "FAILED_PRECONDITION");
  EXPECT_NE(exits[0].failure().message().find("weights"), std::string::npos) << exits[0].failure().message();
  EXPECT_FALSE(exits[0].has_exit_code());
  EXPECT_EQ(EnginePid(), -1) << "no engine may start";
}

TEST_F(SupervisorTest, EngineThatCannotStartIsStartFailed) {
  SupervisorOptions o = Options();
  o.engine_path = fixture_->dir + "/no-such-engine";
  Supervisor supervisor(std::move(o), &fake_);
  ASSERT_TRUE(supervisor.Offer(MakeAssignment(3)));
  auto exits = fake_.WaitForExits(1, kDeadline);
  ASSERT_EQ(exits.size(), 1u);
  EXPECT_EQ(exits[0].reason(), v1::ENGINE_EXIT_REASON_START_FAILED);
  EXPECT_NE(exits[0].failure().message().find("no-such-engine"), std::string::npos) << exits[0].failure().message();
}

TEST_F(SupervisorTest, MissingBlobIsStartFailed) {
  Supervisor supervisor(Options(), &fake_);
  v1::Assignment a = MakeAssignment(3);
  a.mutable_train_data()->set_sha256(std::string(64, 'a'));
  ASSERT_TRUE(supervisor.Offer(a));
  auto exits = fake_.WaitForExits(1, kDeadline);
  ASSERT_EQ(exits.size(), 1u);
  EXPECT_EQ(exits[0].reason(), v1::ENGINE_EXIT_REASON_START_FAILED);
  EXPECT_EQ(exits[0].failure().code(), "NOT_FOUND");
}

}  // namespace
}  // namespace herd::agent
