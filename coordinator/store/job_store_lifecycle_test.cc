// Tests of JobStore along a job's life: the state machine, cancelling, preparation and worlds,
// events and progress, waiting for events, counts by state.
#include "coordinator/store/job_store.h"

#include <thread>

#include "coordinator/store/job_store_testing.h"
#include "gtest/gtest.h"

namespace herd::coordinator::store {
namespace {

using testing::JobStoreTest;
using testing::kTenantA;
using testing::kTenantB;
using testing::MessageHas;

TEST_F(JobStoreTest, TransitionsFollowTheStateMachineForEveryPair) {
  for (JobState from : kAllJobStates) {
    for (JobState to : kAllJobStates) {
      JobRecord job = MakeJob(kTenantA);
      Drive(job.id, from);
      ASSERT_EQ(jobs().GetById(job.id)->state, from);
      int64_t events_before = jobs().GetById(job.id)->last_event_sequence;
      auto moved = jobs().Transition(job.id, to, {.message = "test move"});
      if (CanTransition(from, to)) {
        ASSERT_TRUE(moved.ok()) << moved.status();
        EXPECT_EQ(moved->state, to);
        auto events = jobs().Events(job.id, events_before);
        ASSERT_EQ(events->size(), 1u);
        EXPECT_EQ(events->at(0).type, JobEventType::kStateChanged);
        EXPECT_EQ(events->at(0).previous_state, from);
        EXPECT_EQ(events->at(0).state, to);
        EXPECT_EQ(events->at(0).message,
                  herd::StrCat(JobStateName(from), " -> ", JobStateName(to), ": test move"));
      } else {
        HERD_EXPECT_CODE(moved.status(), kFailedPrecondition);
        EXPECT_TRUE(MessageHas(moved.status(), JobStateName(from))) << moved.status();
        EXPECT_TRUE(MessageHas(moved.status(), JobStateName(to))) << moved.status();
        EXPECT_EQ(jobs().GetById(job.id)->state, from) << "unchanged";
        EXPECT_EQ(jobs().GetById(job.id)->last_event_sequence, events_before) << "no event";
      }
    }
  }
}

TEST_F(JobStoreTest, TransitionBookkeeping) {
  JobRecord job = MakeJob(kTenantA);
  HERD_EXPECT_CODE(jobs().Transition("job_missing", JobState::kQueued).status(), kNotFound);
  clock_.Advance(absl::Seconds(10));
  ASSERT_TRUE(jobs().Transition(job.id, JobState::kQueued).ok());
  clock_.Advance(absl::Seconds(10));
  auto running = jobs().FormWorld(job.id, {.generation = 1, .trainer_ids = {"tr_a"}});
  ASSERT_TRUE(running.ok()) << running.status();
  const absl::Time started = clock_.Now();
  EXPECT_EQ(running->start_time, started);
  EXPECT_EQ(running->update_time, started);
  clock_.Advance(absl::Seconds(10));
  auto recovering = jobs().Transition(job.id, JobState::kRecovering);
  EXPECT_EQ(recovering->recoveries, 1);
  EXPECT_EQ(recovering->world_size, 0) << "no world is running";
  EXPECT_TRUE(recovering->trainer_ids.empty());
  EXPECT_EQ(recovering->generation, 1) << "generation is kept";
  ASSERT_TRUE(jobs().FormWorld(job.id, {.generation = 2, .trainer_ids = {"tr_b"}}).ok());
  auto again = jobs().GetById(job.id);
  EXPECT_EQ(again->start_time, started) << "start_time is the first RUNNING";
  EXPECT_EQ(again->end_time, std::nullopt);

  // Compare-and-set.
  TransitionInfo cas;
  cas.expected_from = JobState::kQueued;
  auto refused = jobs().Transition(job.id, JobState::kFailed, cas);
  HERD_EXPECT_CODE(refused.status(), kFailedPrecondition);
  cas.expected_from = JobState::kRunning;
  cas.failure = Failure{"RESOURCE_EXHAUSTED", std::string(5000, 'm')};
  clock_.Advance(absl::Seconds(10));
  auto failed = jobs().Transition(job.id, JobState::kFailed, cas);
  ASSERT_TRUE(failed.ok()) << failed.status();
  EXPECT_EQ(failed->failure->code, "RESOURCE_EXHAUSTED");
  EXPECT_EQ(failed->failure->message.size(), 4096u) << "failure messages are capped at 4 KiB";
  EXPECT_EQ(failed->end_time, clock_.Now());
  EXPECT_EQ(failed->world_size, 0);
  auto last = jobs().Events(job.id, failed->last_event_sequence - 1);
  EXPECT_EQ(last->at(0).failure->code, "RESOURCE_EXHAUSTED");

  // Defaults for FAILED without a failure.
  JobRecord other = MakeJob(kTenantA);
  EXPECT_EQ(jobs().Transition(other.id, JobState::kFailed)->failure->code, "INTERNAL");
}

TEST_F(JobStoreTest, Cancel) {
  JobRecord job = MakeJob(kTenantA);
  Drive(job.id, JobState::kRunning);
  auto cancelled = jobs().Cancel(kTenantA, job.id, "no longer needed");
  ASSERT_TRUE(cancelled.ok());
  EXPECT_EQ(cancelled->state, JobState::kCancelled);
  EXPECT_EQ(cancelled->failure, (Failure{"CANCELLED", "no longer needed"}));
  auto again = jobs().Cancel(kTenantA, job.id, "twice");
  ASSERT_TRUE(again.ok()) << "cancelling a CANCELLED job returns it unchanged";
  EXPECT_EQ(again->failure->message, "no longer needed");
  EXPECT_EQ(again->last_event_sequence, cancelled->last_event_sequence);

  JobRecord done = MakeJob(kTenantA);
  Drive(done.id, JobState::kSucceeded);
  auto refused = jobs().Cancel(kTenantA, done.id, "");
  HERD_EXPECT_CODE(refused.status(), kFailedPrecondition);
  EXPECT_TRUE(MessageHas(refused.status(), "SUCCEEDED"));
  JobRecord failed = MakeJob(kTenantA);
  Drive(failed.id, JobState::kFailed);
  HERD_EXPECT_CODE(jobs().Cancel(kTenantA, failed.id, "").status(), kFailedPrecondition);
  HERD_EXPECT_CODE(jobs().Cancel(kTenantA, MakeJob(kTenantA).id, std::string(1025, 'r')).status(),
                   kInvalidArgument);
  EXPECT_EQ(jobs().Cancel(kTenantA, MakeJob(kTenantA).id, "")->failure->message, "cancelled by user");
}

TEST_F(JobStoreTest, PreparedStoresThePlanAndQueues) {
  JobRecord job = MakeJob(kTenantA);
  auto train = store_->blobs().Put("prepared rows");
  auto val = store_->blobs().Put("validation rows");
  PreparedInfo info{.plan_json = "{\"sequences\": 12}", .train_data = *train,
                    .validation_data = *val, .message = "12 sequences"};
  BlobRef missing{std::string(64, 'b'), 3};
  HERD_EXPECT_CODE(jobs().Prepared(job.id, {.plan_json = "{}", .train_data = missing}).status(),
                   kFailedPrecondition);
  HERD_EXPECT_CODE(
      jobs().Prepared(job.id, {.plan_json = "{}", .train_data = {train->sha256, 999}}).status(),
      kFailedPrecondition);
  HERD_EXPECT_CODE(jobs().Prepared(job.id, {.train_data = {"zz", 1}}).status(), kInvalidArgument);
  auto queued = jobs().Prepared(job.id, info);
  ASSERT_TRUE(queued.ok()) << queued.status();
  EXPECT_EQ(queued->state, JobState::kQueued);
  EXPECT_EQ(queued->plan_json, info.plan_json);
  EXPECT_EQ(queued->train_data, *train);
  EXPECT_EQ(queued->validation_data, *val);
  auto events = jobs().Events(job.id, 1);
  ASSERT_EQ(events->size(), 2u);
  EXPECT_EQ(events->at(0).type, JobEventType::kPrepared);
  EXPECT_EQ(events->at(0).message, "12 sequences");
  EXPECT_EQ(events->at(1).state, JobState::kQueued);
  HERD_EXPECT_CODE(jobs().Prepared(job.id, info).status(), kFailedPrecondition) << "not VALIDATING";
}

TEST_F(JobStoreTest, FormWorld) {
  std::string ds = MakeDataset(kTenantA).id;
  JobSpec spec = Spec(ds);
  spec.resources.trainers = 2;
  auto job = jobs().Create(kTenantA, spec, "");
  HERD_EXPECT_CODE(jobs().FormWorld(job->id, {.generation = 1, .trainer_ids = {"tr_a"}}).status(),
                   kFailedPrecondition)
      << "VALIDATING";
  Drive(job->id, JobState::kQueued);
  HERD_EXPECT_CODE(jobs().FormWorld(job->id, {.generation = 2, .trainer_ids = {"tr_a"}}).status(),
                   kFailedPrecondition)
      << "not the next generation";
  HERD_EXPECT_CODE(jobs().FormWorld(job->id, {.generation = 1}).status(), kInvalidArgument);
  HERD_EXPECT_CODE(
      jobs().FormWorld(job->id, {.generation = 1, .trainer_ids = {"a", "b", "c"}}).status(),
      kInvalidArgument)
      << "more ranks than asked for";
  auto running = jobs().FormWorld(job->id, {.generation = 1, .trainer_ids = {"tr_a", "tr_b"}});
  ASSERT_TRUE(running.ok()) << running.status();
  EXPECT_EQ(running->state, JobState::kRunning);
  EXPECT_EQ(running->generation, 1);
  EXPECT_EQ(running->world_size, 2);
  EXPECT_EQ(running->trainer_ids, (std::vector<std::string>{"tr_a", "tr_b"}));
  HERD_EXPECT_CODE(jobs().FormWorld(job->id, {.generation = 2, .trainer_ids = {"tr_a"}}).status(),
                   kFailedPrecondition)
      << "already RUNNING";
  ASSERT_TRUE(jobs().Transition(job->id, JobState::kRecovering).ok());
  auto resumed = jobs().FormWorld(job->id, {.generation = 2, .trainer_ids = {"tr_c"}, .resume_step = 40});
  ASSERT_TRUE(resumed.ok());
  EXPECT_EQ(resumed->world_size, 1) << "fewer ranks after recovery";
  auto events = jobs().Events(job->id, resumed->last_event_sequence - 2);
  ASSERT_EQ(events->size(), 2u);
  EXPECT_EQ(events->at(0).type, JobEventType::kWorldFormed);
  EXPECT_EQ(events->at(0).generation, 2);
  EXPECT_EQ(events->at(0).world_size, 1);
  EXPECT_EQ(events->at(0).step, 40);
  EXPECT_EQ(events->at(1).state, JobState::kRunning);
  EXPECT_EQ(events->at(1).previous_state, JobState::kRecovering);
}

TEST_F(JobStoreTest, AppendEventAndProgress) {
  JobRecord job = MakeJob(kTenantA);
  JobEvent rank_failed;
  rank_failed.type = JobEventType::kRankFailed;
  rank_failed.generation = 1;
  rank_failed.rank = 3;
  rank_failed.trainer_id = "tr_x";
  rank_failed.failure = Failure{"UNAVAILABLE", "heartbeat lease expired"};
  rank_failed.message = "rank 3 lost";
  auto stored = jobs().AppendEvent(job.id, rank_failed);
  ASSERT_TRUE(stored.ok()) << stored.status();
  EXPECT_EQ(stored->sequence, 2);
  JobEvent evaluated;
  evaluated.type = JobEventType::kEvaluated;
  evaluated.step = 100;
  evaluated.eval_loss = 1.25;
  ASSERT_TRUE(jobs().AppendEvent(job.id, evaluated).ok());
  auto events = jobs().Events(job.id, 1);
  ASSERT_EQ(events->size(), 2u);
  EXPECT_EQ(events->at(0).rank, 3);
  EXPECT_EQ(events->at(0).trainer_id, "tr_x");
  EXPECT_EQ(events->at(0).failure->message, "heartbeat lease expired");
  EXPECT_EQ(events->at(1).eval_loss, 1.25);
  EXPECT_EQ(events->at(1).message, "EVALUATED") << "every event has a message";

  for (JobEventType t : {JobEventType::kStateChanged, JobEventType::kPrepared,
                         JobEventType::kWorldFormed, JobEventType::kCheckpointSaved,
                         JobEventType::kUnspecified}) {
    JobEvent e;
    e.type = t;
    HERD_EXPECT_CODE(jobs().AppendEvent(job.id, e).status(), kInvalidArgument);
  }
  HERD_EXPECT_CODE(jobs().AppendEvent("job_missing", evaluated).status(), kNotFound);

  HERD_EXPECT_OK(jobs().SaveProgress(job.id, "{\"step\": 5}"));
  EXPECT_EQ(jobs().GetById(job.id)->progress_json, "{\"step\": 5}");
  HERD_EXPECT_CODE(jobs().SaveProgress("job_missing", "{}"), kNotFound);

  ASSERT_TRUE(jobs().Cancel(kTenantA, job.id, "").ok());
  HERD_EXPECT_CODE(jobs().AppendEvent(job.id, evaluated).status(), kFailedPrecondition)
      << "a final job's history is closed";
}

TEST_F(JobStoreTest, EventsAndListEventsPaging) {
  JobRecord job = MakeJob(kTenantA);
  JobEvent notice;
  notice.type = JobEventType::kNotice;
  for (int i = 0; i < 9; ++i) ASSERT_TRUE(jobs().AppendEvent(job.id, notice).ok());  // 10 events
  EXPECT_EQ(jobs().Events(job.id, 0)->size(), 10u);
  EXPECT_EQ(jobs().Events(job.id, 7)->size(), 3u);
  EXPECT_EQ(jobs().Events(job.id, 0, 4)->size(), 4u);
  EXPECT_EQ(jobs().Events(job.id, 10)->size(), 0u);
  HERD_EXPECT_CODE(jobs().Events("job_missing", 0).status(), kNotFound);

  std::vector<int64_t> seqs;
  std::string token;
  int pages = 0;
  do {
    auto page = jobs().ListEvents(kTenantA, job.id, 2, 3, token);
    ASSERT_TRUE(page.ok()) << page.status();
    for (const auto& e : page->events) seqs.push_back(e.sequence);
    token = page->next_page_token;
    ++pages;
  } while (!token.empty());
  EXPECT_EQ(seqs, (std::vector<int64_t>{3, 4, 5, 6, 7, 8, 9, 10}));
  EXPECT_EQ(pages, 3);
  auto first = jobs().ListEvents(kTenantA, job.id, 0, 3, "");
  HERD_EXPECT_CODE(jobs().ListEvents(kTenantA, job.id, 1, 3, first->next_page_token).status(),
                   kInvalidArgument)
      << "token made for another after_sequence";
  HERD_EXPECT_CODE(jobs().ListEvents(kTenantA, job.id, -1, 0, "").status(), kInvalidArgument);
  HERD_EXPECT_CODE(jobs().ListEvents(kTenantA, job.id, 0, -1, "").status(), kInvalidArgument);
  HERD_EXPECT_CODE(jobs().ListEvents(kTenantA, "job_missing", 0, 0, "").status(), kNotFound);
}

TEST_F(JobStoreTest, WaitForEventsWakesOnCommit) {
  JobRecord job = MakeJob(kTenantA);
  // Existing events come back at once.
  EXPECT_EQ(jobs().WaitForEvents(job.id, 0, absl::InfinitePast())->size(), 1u);
  // Nothing new: the deadline passes.
  auto none = jobs().WaitForEvents(job.id, 1, absl::Now() + absl::Milliseconds(20));
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->empty());
  // A writer on another thread wakes the waiter.
  std::thread writer([&] {
    absl::SleepFor(absl::Milliseconds(50));
    ASSERT_TRUE(jobs().Transition(job.id, JobState::kQueued).ok());
  });
  auto woken = jobs().WaitForEvents(job.id, 1, absl::Now() + absl::Seconds(30));
  writer.join();
  ASSERT_TRUE(woken.ok());
  ASSERT_EQ(woken->size(), 1u);
  EXPECT_EQ(woken->at(0).state, JobState::kQueued);
  // A rolled-back event wakes nobody and is never seen.
  const int64_t before = store_->db().SignalCount(internal::kJobEventsSignal);
  absl::Status rolled_back = store_->db().Write([&](Tx&) -> absl::Status {
    HERD_RETURN_IF_ERROR(jobs().Transition(job.id, JobState::kRunning).status());
    return absl::AbortedError("roll it back");
  });
  HERD_EXPECT_CODE(rolled_back, kAborted);
  EXPECT_EQ(store_->db().SignalCount(internal::kJobEventsSignal), before);
  EXPECT_TRUE(jobs().WaitForEvents(job.id, 2, absl::Now() + absl::Milliseconds(10))->empty());
  // A final job's history is complete: no waiting.
  ASSERT_TRUE(jobs().Cancel(kTenantA, job.id, "").ok());
  auto last = jobs().WaitForEvents(job.id, 2, absl::InfiniteFuture());
  ASSERT_TRUE(last.ok());
  EXPECT_EQ(last->size(), 1u);
  EXPECT_TRUE(jobs().WaitForEvents(job.id, 3, absl::InfiniteFuture())->empty());
  HERD_EXPECT_CODE(jobs().WaitForEvents("job_missing", 0, absl::InfinitePast()).status(), kNotFound);
}

TEST_F(JobStoreTest, CountAndListByState) {
  JobRecord a = MakeJob(kTenantA);
  JobRecord b = MakeJob(kTenantA);
  JobRecord c = MakeJob(kTenantB);
  Drive(b.id, JobState::kQueued);
  Drive(c.id, JobState::kQueued);
  auto count = [&](std::string_view tenant, JobState s) {
    auto counts = jobs().CountByState(tenant);
    for (auto [state, n] : *counts) {
      if (state == s) return n;
    }
    return int64_t{-1};
  };
  EXPECT_EQ(jobs().CountByState(kTenantA)->size(), 8u) << "every state, zeros included";
  EXPECT_EQ(count(kTenantA, JobState::kQueued), 1);
  EXPECT_EQ(count(kTenantA, JobState::kValidating), 1);
  EXPECT_EQ(count(kTenantA, JobState::kSucceeded), 0);
  EXPECT_EQ(count("", JobState::kQueued), 2) << "all tenants";
  auto queued = jobs().ListByState({JobState::kQueued});
  ASSERT_EQ(queued->size(), 2u);
  EXPECT_EQ(queued->at(0).id, b.id) << "oldest first";
  EXPECT_EQ(queued->at(1).id, c.id);
  EXPECT_TRUE(jobs().ListByState({})->empty());
  (void)a;
}

}  // namespace
}  // namespace herd::coordinator::store
