// `herd jobs watch`: the display as pure functions (the sparkline, the loss trail across a
// recovery, the progress, event and job lines, fitting a line to the terminal, exit codes), and
// the command against a JobService served in-process on 127.0.0.1 port 0 (exit codes, resuming
// after a stream deadline, progress lines, Ctrl-C).
#include "cli/jobs_watch.h"

#include <signal.h>

#include <cmath>
#include <limits>
#include <memory>
#include <sstream>

#include "cli/exit_codes.h"
#include "common/rpc/rpc.h"
#include "coordinator/progress_board.h"
#include "coordinator/services/job_service.h"
#include "coordinator/store/test_util.h"
#include "gtest/gtest.h"

namespace herd::cli {
namespace {

TEST(SparklineTest, ScalesBetweenMinAndMax) {
  struct Case {
    std::vector<double> values;
    size_t width;
    std::string want;
  } cases[] = {
      {{}, 10, ""},
      {{1, 2, 3, 4, 5, 6, 7, 8}, 10, "▁▂▃▄▅▆▇█"},
      {{8, 1}, 10, "█▁"},
      {{2.5, 2.5, 2.5}, 10, "▄▄▄"},                         // flat
      {{0, 100, 50}, 10, "▁█▅"},                            // 3.5 rounds up
      {{9, 9, 1, 2, 3}, 3, "▁▅█"},                          // only the last `width`
      {{1, std::nan(""), 3, std::numeric_limits<double>::infinity()}, 10, "▁█"},
      {{5}, 10, "▄"},
  };
  for (const Case& c : cases) {
    EXPECT_EQ(Sparkline(c.values, c.width), c.want) << ::testing::PrintToString(c.values);
  }
}

TEST(LossTrailTest, OnePointPerStepAndRollsBackOnRecovery) {
  LossTrail trail(4);
  trail.Add(1, 3.0);
  trail.Add(1, 3.0);  // the same progress again (a resumed stream)
  trail.Add(2, 2.5);
  trail.Add(3, 2.0);
  EXPECT_EQ(trail.Values(), (std::vector<double>{3.0, 2.5, 2.0}));
  trail.Add(2, 2.6);  // a new generation resumed from step 1's checkpoint
  EXPECT_EQ(trail.Values(), (std::vector<double>{3.0, 2.6}));
  trail.Add(3, std::nan(""));
  for (int64_t s = 3; s <= 6; ++s) trail.Add(s, static_cast<double>(s));
  EXPECT_EQ(trail.Values(), (std::vector<double>{3, 4, 5, 6})) << "capacity";
}

TEST(ProgressLineTest, ShowsWhatIsKnown) {
  herd::v1::JobProgress p;
  EXPECT_EQ(ProgressLine(herd::v1::JOB_STATE_QUEUED, p, ""), "QUEUED");
  p.set_total_steps(1000);
  EXPECT_EQ(ProgressLine(herd::v1::JOB_STATE_QUEUED, p, ""), "QUEUED  step 0/1000 (0%)");
  p.set_step(120);
  p.set_epoch(0.12);
  p.set_loss(1.23456);
  p.set_learning_rate(2e-4);
  p.set_tokens_per_second(12345.6);
  p.set_eval_loss(1.301);
  EXPECT_EQ(ProgressLine(herd::v1::JOB_STATE_RUNNING, p, "▇▅▃"),
            "RUNNING  step 120/1000 (12%)  epoch 0.12  loss 1.2346 ▇▅▃  lr 2.00e-04  "
            "12,346 tok/s  eval 1.3010");
  herd::v1::JobProgress no_total;
  no_total.set_step(7);
  EXPECT_EQ(ProgressLine(herd::v1::JOB_STATE_RECOVERING, no_total, "▁"), "RECOVERING  step 7");
}

TEST(EventLineTest, TimeSequenceTypeMessage) {
  herd::v1::JobEvent e;
  e.set_sequence(5);
  e.mutable_time()->set_seconds(1'700'000'000);  // 2023-11-14 22:13:20 UTC
  e.set_type(herd::v1::JOB_EVENT_TYPE_STATE_CHANGED);
  e.set_message("QUEUED -> RUNNING");
  EXPECT_EQ(EventLine(e), "22:13:20Z  #5  STATE_CHANGED  QUEUED -> RUNNING");

  e.set_message("RUNNING -> FAILED: boom");
  e.mutable_failure()->set_code("INTERNAL");
  e.mutable_failure()->set_message("boom");
  EXPECT_EQ(EventLine(e), "22:13:20Z  #5  STATE_CHANGED  RUNNING -> FAILED: boom") << "said once";
  e.set_type(herd::v1::JOB_EVENT_TYPE_RANK_FAILED);
  e.set_message("rank 1 lost");
  e.mutable_failure()->set_message("heartbeat lease expired");
  EXPECT_EQ(EventLine(e),
            "22:13:20Z  #5  RANK_FAILED  rank 1 lost (INTERNAL: heartbeat lease expired)");
}

TEST(JobLineTest, IdNameStateModelData) {
  herd::v1::Job job;
  job.set_id("job_1");
  job.set_state(herd::v1::JOB_STATE_VALIDATING);
  job.mutable_spec()->set_base_model("tiny-llama");
  job.mutable_spec()->set_dataset_id("ds_2");
  EXPECT_EQ(JobLine(job), "job_1: VALIDATING, tiny-llama on ds_2");
  job.mutable_spec()->set_name("bot");
  EXPECT_EQ(JobLine(job), "job_1 (bot): VALIDATING, tiny-llama on ds_2");
}

TEST(FitColumnsTest, CountsCharactersNotBytes) {
  EXPECT_EQ(FitColumns("abcdef", 4), "abcd");
  EXPECT_EQ(FitColumns("abc", 4), "abc");
  EXPECT_EQ(FitColumns("ab▁▂▃", 4), "ab▁▂");
  EXPECT_EQ(FitColumns("▁▂", 2), "▁▂");
  EXPECT_EQ(FitColumns("abc", 0), "");
}

TEST(GroupThousandsTest, Commas) {
  EXPECT_EQ(GroupThousands(0), "0");
  EXPECT_EQ(GroupThousands(999), "999");
  EXPECT_EQ(GroupThousands(1000), "1,000");
  EXPECT_EQ(GroupThousands(1234567), "1,234,567");
  EXPECT_EQ(GroupThousands(-1234), "-1,234");
}

TEST(ExitCodeForFinalStateTest, PerDesign) {
  EXPECT_EQ(ExitCodeForFinalState(herd::v1::JOB_STATE_SUCCEEDED), kOk);
  EXPECT_EQ(ExitCodeForFinalState(herd::v1::JOB_STATE_FAILED), kJobFailed);
  EXPECT_EQ(ExitCodeForFinalState(herd::v1::JOB_STATE_CANCELLED), kJobFailed);
  EXPECT_EQ(ExitCodeForFinalState(herd::v1::JOB_STATE_RUNNING), -1);
  EXPECT_EQ(kJobFailed, 6);
}

using coordinator::store::JobState;
using coordinator::store::testing::kTenantA;

class WatchCommandTest : public coordinator::store::testing::StoreTest {
 protected:
  void SetUp() override {
    StoreTest::SetUp();
    auto token = store_->tokens().CreateUserToken(kTenantA, "test");
    ASSERT_TRUE(token.ok());
    service_ = std::make_unique<coordinator::services::JobService>(
        &store_->jobs(), &store_->tokens(), &board_);
    auto server = rpc::StartServer({.listen = "127.0.0.1:0"}, {service_.get()});
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(server->server);
    config_.endpoint = StrCat("127.0.0.1:", server->port);
    config_.token = token->token;
    config_.source = "test";
  }
  void TearDown() override {
    if (server_) server_->Shutdown();
  }

  // Runs the command with stdout captured.
  int Watch(const WatchOptions& options, std::string* out, const ClientConfig* config = nullptr) {
    ::testing::internal::CaptureStdout();
    const int rc = WatchJob(config ? *config : config_, options);
    *out = ::testing::internal::GetCapturedStdout();
    return rc;
  }

  coordinator::ProgressBoard board_;
  std::unique_ptr<coordinator::services::JobService> service_;
  std::unique_ptr<grpc::Server> server_;
  ClientConfig config_;
};

TEST_F(WatchCommandTest, ExitCodes) {
  std::string out;
  auto cancelled = MakeJob(kTenantA, "bot");
  ASSERT_TRUE(store_->jobs().Cancel(kTenantA, cancelled.id, "enough").ok());
  EXPECT_EQ(Watch({.id = cancelled.id}, &out), kJobFailed);
  EXPECT_NE(out.find(StrCat(cancelled.id, " (bot): CANCELLED")), std::string::npos) << out;
  EXPECT_NE(out.find("#2  STATE_CHANGED  VALIDATING -> CANCELLED"), std::string::npos) << out;

  auto done = MakeJob(kTenantA);
  for (JobState s : {JobState::kQueued}) ASSERT_TRUE(store_->jobs().Transition(done.id, s).ok());
  ASSERT_TRUE(store_->jobs().FormWorld(done.id, {.generation = 1, .trainer_ids = {"tr_a"}}).ok());
  for (JobState s : {JobState::kPublishing, JobState::kSucceeded}) {
    ASSERT_TRUE(store_->jobs().Transition(done.id, s).ok());
  }
  EXPECT_EQ(Watch({.id = done.id}, &out), kOk) << out;

  EXPECT_EQ(Watch({.id = "job_" + std::string(26, 'z')}, &out), kNotFound);
  ClientConfig anonymous = config_;
  anonymous.token.clear();
  EXPECT_EQ(Watch({.id = done.id}, &out, &anonymous), kUnauthenticated);
  ClientConfig nobody = config_;
  nobody.endpoint = "127.0.0.1:1";  // nothing listens there
  EXPECT_EQ(Watch({.id = done.id, .give_up_after = absl::Milliseconds(300)}, &out, &nobody),
            kUnavailable);
}

TEST_F(WatchCommandTest, ResumesAfterStreamDeadlineWithoutRepeats) {
  auto job = MakeJob(kTenantA);
  ASSERT_TRUE(store_->jobs().Transition(job.id, JobState::kQueued).ok());
  std::vector<int64_t> sequences;
  int job_messages = 0;
  WatchOptions options{.id = job.id, .json = true, .stream_deadline = absl::Milliseconds(300)};
  options.on_message = [&](const herd::v1::WatchJobResponse& m) {
    if (m.has_event()) sequences.push_back(m.event().sequence());
    if (m.has_job() && ++job_messages == 2) {
      // The first stream passed its deadline and the watch resumed: finish the job now.
      coordinator::store::JobEvent notice;
      notice.type = coordinator::store::JobEventType::kNotice;
      notice.message = "while resuming";
      ASSERT_TRUE(store_->jobs().AppendEvent(job.id, notice).ok());
      ASSERT_TRUE(store_->jobs().Cancel(kTenantA, job.id, "").ok());
    }
  };
  std::string out;
  EXPECT_EQ(Watch(options, &out), kJobFailed);
  EXPECT_GE(job_messages, 2);
  EXPECT_EQ(sequences, (std::vector<int64_t>{1, 2, 3, 4})) << "each event once, in order";
  // -o json: one object a line, one line a message.
  std::istringstream lines(out);
  int n = 0;
  for (std::string line; std::getline(lines, line); ++n) {
    EXPECT_EQ(line.front(), '{') << line;
    EXPECT_EQ(line.back(), '}') << line;
  }
  EXPECT_EQ(n, job_messages + 4) << out;
}

TEST_F(WatchCommandTest, ProgressLinesAndCtrlC) {
  auto job = MakeJob(kTenantA);
  ASSERT_TRUE(store_->jobs().Transition(job.id, JobState::kQueued).ok());
  ASSERT_TRUE(store_->jobs().FormWorld(job.id, {.generation = 1, .trainer_ids = {"tr_a"}}).ok());
  auto point = [](int64_t step, double loss) {
    return coordinator::ProgressSample{.rank = 0, .step = step, .total_steps = 10, .loss = loss,
                                       .tokens = 500, .step_seconds = 0.25, .time = absl::Now()};
  };
  board_.NewGeneration(job.id, 1, 0);
  board_.Report(job.id, 1, {point(1, 2.0)}, {});
  WatchOptions options{.id = job.id};
  options.on_message = [&](const herd::v1::WatchJobResponse& m) {
    if (m.has_job()) board_.Report(job.id, 1, {point(2, 1.0)}, {});
    if (m.has_progress()) ::raise(SIGINT);  // the user has seen enough
  };
  std::string out;
  EXPECT_EQ(Watch(options, &out), kInterrupted);
  // Not a terminal: plain lines, one per new progress.
  for (const char* line : {"RUNNING  step 1/10 (10%)  loss 2.0000 ▄  2,000 tok/s\n",
                           "RUNNING  step 2/10 (20%)  loss 1.0000 █▁  2,000 tok/s\n"}) {
    EXPECT_NE(out.find(line), std::string::npos) << line << " in\n" << out;
  }
  EXPECT_NE(out.find("#3  WORLD_FORMED"), std::string::npos) << out;
}

}  // namespace
}  // namespace herd::cli
