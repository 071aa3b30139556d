// JobService.WatchJob over a real Store and ProgressBoard, served in-process on 127.0.0.1 port 0:
// replay, resume after a sequence, live events, progress, the end at a final state, tenancy,
// auth and the per-tenant limit of open watches.
#include <memory>
#include <string>
#include <vector>

#include "common/rpc/rpc.h"
#include "coordinator/progress_board.h"
#include "coordinator/services/job_service.h"
#include "coordinator/store/test_util.h"
#include "gtest/gtest.h"

namespace herd::coordinator::services {
namespace {

using store::JobState;
using store::testing::kTenantA;
using store::testing::kTenantB;

// One open WatchJob stream.
struct Watch {
  grpc::ClientContext context;
  std::unique_ptr<grpc::ClientReader<herd::v1::WatchJobResponse>> reader;

  // The next message; fails the test when the stream ended instead.
  herd::v1::WatchJobResponse Next() {
    herd::v1::WatchJobResponse m;
    EXPECT_TRUE(reader->Read(&m)) << "the stream ended early";
    return m;
  }
  // Reads to the end; the messages left and the status.
  grpc::Status Drain(std::vector<herd::v1::WatchJobResponse>* rest = nullptr) {
    herd::v1::WatchJobResponse m;
    while (reader->Read(&m)) {
      if (rest) rest->push_back(m);
    }
    return reader->Finish();
  }
};

class JobWatchTest : public store::testing::StoreTest {
 protected:
  void SetUp() override {
    StoreTest::SetUp();
    auto a = store_->tokens().CreateUserToken(kTenantA, "test");
    auto b = store_->tokens().CreateUserToken(kTenantB, "test");
    ASSERT_TRUE(a.ok() && b.ok());
    token_a_ = a->token;
    token_b_ = b->token;
    service_ = std::make_unique<JobService>(&store_->jobs(), &store_->tokens(), &board_);
    auto server = rpc::StartServer({.listen = "127.0.0.1:0"}, {service_.get()});
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(server->server);
    auto channel = rpc::MakeChannel({.target = StrCat("127.0.0.1:", server->port)});
    ASSERT_TRUE(channel.ok());
    stub_ = herd::v1::JobService::NewStub(*channel);
  }
  void TearDown() override {
    // No deadline: a handler that does not notice its client went away hangs the test.
    if (server_) server_->Shutdown();
  }

  std::unique_ptr<Watch> Open(const std::string& token, const std::string& id, int64_t after = 0) {
    auto w = std::make_unique<Watch>();
    w->context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
    if (!token.empty()) w->context.AddMetadata("authorization", "Bearer " + token);
    herd::v1::WatchJobRequest r;
    r.set_id(id);
    r.set_after_sequence(after);
    w->reader = stub_->WatchJob(&w->context, r);
    return w;
  }

  // A job of tenant A moved to RUNNING with a one-rank world (events 1-4).
  store::JobRecord RunningJob() {
    store::JobRecord job = MakeJob(kTenantA);
    EXPECT_TRUE(store_->jobs().Transition(job.id, JobState::kQueued).ok());
    auto running = store_->jobs().FormWorld(job.id, {.generation = 1, .trainer_ids = {"tr_a"}});
    EXPECT_TRUE(running.ok()) << running.status();
    board_.NewGeneration(job.id, 1, 0);
    return running.ok() ? *running : job;
  }

  static ProgressSample Point(int64_t step, double loss) {
    return {.rank = 0, .step = step, .total_steps = 10, .loss = loss, .tokens = 64,
            .step_seconds = 0.5, .time = absl::Now()};
  }

  ProgressBoard board_;
  std::string token_a_, token_b_;
  std::unique_ptr<JobService> service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<herd::v1::JobService::Stub> stub_;
};

TEST_F(JobWatchTest, FinalJobReplaysHistoryAndEnds) {
  store::JobRecord job = MakeJob(kTenantA);
  ASSERT_TRUE(store_->jobs().Cancel(kTenantA, job.id, "no").ok());
  auto w = Open(token_a_, job.id);
  herd::v1::WatchJobResponse first = w->Next();
  ASSERT_TRUE(first.has_job());
  EXPECT_EQ(first.job().id(), job.id);
  EXPECT_EQ(first.job().state(), herd::v1::JOB_STATE_CANCELLED);
  std::vector<herd::v1::WatchJobResponse> rest;
  grpc::Status s = w->Drain(&rest);
  ASSERT_TRUE(s.ok()) << s.error_message();
  ASSERT_EQ(rest.size(), 2u);
  EXPECT_EQ(rest[0].event().sequence(), 1);
  EXPECT_EQ(rest[0].event().state(), herd::v1::JOB_STATE_VALIDATING);
  EXPECT_EQ(rest[1].event().sequence(), 2);
  EXPECT_EQ(rest[1].event().state(), herd::v1::JOB_STATE_CANCELLED);
  EXPECT_EQ(rest[1].event().failure().code(), "CANCELLED");
}

TEST_F(JobWatchTest, ResumesAfterSequence) {
  store::JobRecord job = MakeJob(kTenantA);
  ASSERT_TRUE(store_->jobs().Cancel(kTenantA, job.id, "no").ok());
  std::vector<herd::v1::WatchJobResponse> rest;
  auto w = Open(token_a_, job.id, 1);
  EXPECT_TRUE(w->Next().has_job());
  ASSERT_TRUE(w->Drain(&rest).ok());
  ASSERT_EQ(rest.size(), 1u);
  EXPECT_EQ(rest[0].event().sequence(), 2);

  // Everything seen already: just the job, and the end.
  rest.clear();
  auto all_seen = Open(token_a_, job.id, 2);
  EXPECT_TRUE(all_seen->Next().has_job());
  ASSERT_TRUE(all_seen->Drain(&rest).ok());
  EXPECT_TRUE(rest.empty());

  // A live job: the replay starts after the sequence, new events follow.
  store::JobRecord live = RunningJob();
  auto resumed = Open(token_a_, live.id, 3);
  EXPECT_TRUE(resumed->Next().has_job());
  EXPECT_EQ(resumed->Next().event().sequence(), 4);
  ASSERT_TRUE(store_->jobs().Cancel(kTenantA, live.id, "").ok());
  EXPECT_EQ(resumed->Next().event().sequence(), 5);
  ASSERT_TRUE(resumed->Drain().ok());
}

TEST_F(JobWatchTest, LiveEventsThenEndAtFinalState) {
  store::JobRecord job = MakeJob(kTenantA);
  auto w = Open(token_a_, job.id);
  herd::v1::WatchJobResponse first = w->Next();
  EXPECT_EQ(first.job().state(), herd::v1::JOB_STATE_VALIDATING);
  EXPECT_EQ(w->Next().event().sequence(), 1);

  ASSERT_TRUE(store_->jobs().Transition(job.id, JobState::kQueued).ok());
  herd::v1::JobEvent queued = w->Next().event();
  EXPECT_EQ(queued.sequence(), 2);
  EXPECT_EQ(queued.type(), herd::v1::JOB_EVENT_TYPE_STATE_CHANGED);
  EXPECT_EQ(queued.state(), herd::v1::JOB_STATE_QUEUED);

  store::JobEvent notice;
  notice.type = store::JobEventType::kNotice;
  notice.message = "hello";
  ASSERT_TRUE(store_->jobs().AppendEvent(job.id, notice).ok());
  herd::v1::JobEvent got = w->Next().event();
  EXPECT_EQ(got.type(), herd::v1::JOB_EVENT_TYPE_NOTICE);
  EXPECT_EQ(got.message(), "hello");

  ASSERT_TRUE(store_->jobs().Transition(job.id, JobState::kFailed,
                                        {.failure = store::Failure{"INTERNAL", "boom"}})
                  .ok());
  herd::v1::JobEvent failed = w->Next().event();
  EXPECT_EQ(failed.state(), herd::v1::JOB_STATE_FAILED);
  EXPECT_EQ(failed.failure().message(), "boom");
  std::vector<herd::v1::WatchJobResponse> rest;
  grpc::Status s = w->Drain(&rest);
  EXPECT_TRUE(s.ok()) << s.error_message();
  EXPECT_TRUE(rest.empty()) << "the stream ends right after the final event";
}

TEST_F(JobWatchTest, ProgressArrivesCoalesced) {
  store::JobRecord job = RunningJob();
  board_.SetTotalSteps(job.id, 10);
  board_.Report(job.id, 1, {Point(1, 3.0)}, {});
  auto w = Open(token_a_, job.id);
  herd::v1::WatchJobResponse first = w->Next();
  ASSERT_TRUE(first.has_job());
  EXPECT_EQ(first.job().progress().step(), 1) << "the job carries the live progress";
  EXPECT_EQ(first.job().progress().total_steps(), 10);
  EXPECT_EQ(first.job().progress().loss(), 3.0);
  for (int64_t seq = 1; seq <= 4; ++seq) EXPECT_EQ(w->Next().event().sequence(), seq);

  // A burst of steps: the latest wins, not one message per step.
  for (int64_t step = 2; step <= 6; ++step) {
    board_.Report(job.id, 1, {Point(step, 3.0 - 0.1 * step)}, {});
  }
  int progress_messages = 0;
  herd::v1::JobProgress latest;
  while (latest.step() < 6) {
    herd::v1::WatchJobResponse m = w->Next();
    if (!m.has_progress()) {
      ADD_FAILURE() << "unexpected " << m.DebugString();
      break;
    }
    ++progress_messages;
    latest = m.progress();
  }
  EXPECT_LE(progress_messages, 2);
  EXPECT_DOUBLE_EQ(latest.loss(), 2.4);
  EXPECT_EQ(latest.total_steps(), 10);
  EXPECT_DOUBLE_EQ(latest.tokens_per_second(), 128);
  EXPECT_TRUE(latest.has_update_time());

  // Events are never held back by progress; the final one ends the stream.
  ASSERT_TRUE(store_->jobs().Cancel(kTenantA, job.id, "").ok());
  board_.Forget(job.id);
  std::vector<herd::v1::WatchJobResponse> rest;
  ASSERT_TRUE(w->Drain(&rest).ok());
  ASSERT_FALSE(rest.empty());
  EXPECT_EQ(rest.back().event().state(), herd::v1::JOB_STATE_CANCELLED);
}

TEST_F(JobWatchTest, ErrorsAndTenancy) {
  store::JobRecord job = MakeJob(kTenantA);
  herd::v1::WatchJobResponse m;

  auto other = Open(token_b_, job.id);
  EXPECT_FALSE(other->reader->Read(&m));
  grpc::Status s = other->reader->Finish();
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND);
  auto missing = Open(token_b_, "job_" + std::string(26, 'z'));
  EXPECT_FALSE(missing->reader->Read(&m));
  grpc::Status s2 = missing->reader->Finish();
  EXPECT_EQ(s2.error_code(), grpc::StatusCode::NOT_FOUND);

  auto anonymous = Open("", job.id);
  EXPECT_FALSE(anonymous->reader->Read(&m));
  EXPECT_EQ(anonymous->reader->Finish().error_code(), grpc::StatusCode::UNAUTHENTICATED);

  auto empty = Open(token_a_, "");
  EXPECT_FALSE(empty->reader->Read(&m));
  EXPECT_EQ(empty->reader->Finish().error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  auto negative = Open(token_a_, job.id, -1);
  EXPECT_FALSE(negative->reader->Read(&m));
  EXPECT_EQ(negative->reader->Finish().error_code(), grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(JobWatchTest, LimitsOpenWatchesPerTenant) {
  store::JobRecord job = MakeJob(kTenantA);
  std::vector<std::unique_ptr<Watch>> open;
  for (int i = 0; i < 64; ++i) {
    open.push_back(Open(token_a_, job.id));
    ASSERT_TRUE(open.back()->Next().has_job()) << i;  // the handler holds its slot
  }
  auto one_more = Open(token_a_, job.id);
  herd::v1::WatchJobResponse m;
  EXPECT_FALSE(one_more->reader->Read(&m));
  grpc::Status s = one_more->reader->Finish();
  EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << s.error_message();

  // Another tenant has its own allowance.
  store::JobRecord theirs = MakeJob(kTenantB);
  auto b = Open(token_b_, theirs.id);
  EXPECT_TRUE(b->Next().has_job());
  b->context.TryCancel();
  EXPECT_EQ(b->Drain().error_code(), grpc::StatusCode::CANCELLED);

  // Clients that go away end their handlers (TearDown's Shutdown waits for them).
  for (auto& w : open) w->context.TryCancel();
  for (auto& w : open) EXPECT_EQ(w->Drain().error_code(), grpc::StatusCode::CANCELLED);
}

}  // namespace
}  // namespace herd::coordinator::services
