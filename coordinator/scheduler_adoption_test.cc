// Scheduler after a coordinator restart (DESIGN.md §3.9): adopted worlds continue when every rank
// comes back in time, and recover otherwise. Time is a FakeClock; nothing sleeps.
#include <string>
#include <vector>

#include "coordinator/registry.h"
#include "coordinator/scheduler.h"
#include "coordinator/scheduler_testing.h"
#include "gtest/gtest.h"

namespace herd::coordinator {
namespace {

using scheduler_testing::Job;
using scheduler_testing::Listed;
using scheduler_testing::Reg;
using scheduler_testing::SchedulerTest;

class SchedulerAdoptionTest : public SchedulerTest {
 protected:
  // Job "a" was RUNNING at generation 3 on t1, t2 when the coordinator stopped.
  void SetUp() override {
    SchedulerTest::SetUp();
    JobRequest r = Job({"a", "m", 2});
    r.last_generation = 3;
    ASSERT_TRUE(scheduler_->Adopt(r, 3, {TrainerIdForName("t1"), TrainerIdForName("t2")}, absl::Seconds(60)).ok());
  }
  // The agent registers again after the restart, its engine still running.
  RegisterTrainerResult ComeBack(const std::string& name) {
    absl::StatusOr<RegisterTrainerResult> r = scheduler_->RegisterTrainer(Reg({name}));
    EXPECT_TRUE(r.ok()) << r.status();
    if (!r.ok()) return {};
    sessions_[name] = r->registration;
    names_[r->registration.trainer_id] = name;
    return *r;
  }
  AssignmentRef Ref(int rank, int64_t generation = 3) { return AssignmentRef{"a", generation, rank}; }
};

TEST_F(SchedulerAdoptionTest, TheWorldContinuesWhenEveryRankComesBackInTime) {
  std::optional<RunningJob> running = scheduler_->GetRunning("a");
  ASSERT_TRUE(running.has_value());
  EXPECT_EQ(running->generation, 3);
  EXPECT_EQ(running->awaiting_trainer_ids.size(), 2u);
  EXPECT_EQ(running->adoption_deadline, clock_.Now() + absl::Seconds(60));
  EXPECT_EQ(rendezvous_->CurrentGeneration("a"), 3);
  // Its ranks' calls are accepted meanwhile (buffered progress, uploads, rendezvous).
  EXPECT_TRUE(scheduler_->CheckAssignment(TrainerIdForName("t1"), Ref(0)).ok());

  EXPECT_TRUE(ComeBack("t1").events.empty());
  EXPECT_EQ(State("t1"), TrainerState::kBusy);
  Submit({"b", "m", 1});  // t1 is not free for it
  EXPECT_EQ(QueueIds(), std::vector<std::string>{"b"});
  HeartbeatResult hb = Beat("t1", {Listed(Ref(0), 40)});
  EXPECT_TRUE(hb.reply.assignments.empty());
  EXPECT_TRUE(hb.reply.cancellations.empty());
  EXPECT_TRUE(hb.events.empty());  // t2 is still awaited

  for (int i = 0; i < 5; ++i) {  // 50 s, t1 keeping its lease
    clock_.Advance(absl::Seconds(10));
    Beat("t1", {Listed(Ref(0), 41 + i)});
    EXPECT_TRUE(scheduler_->Tick().empty());
  }
  ComeBack("t2");
  hb = Beat("t2", {Listed(Ref(1), 45)});
  ASSERT_EQ(hb.events.adopted.size(), 1u);
  EXPECT_EQ(hb.events.adopted[0].job_id, "a");
  EXPECT_EQ(hb.events.adopted[0].generation, 3);
  EXPECT_TRUE(hb.events.recovering.empty());

  clock_.Advance(absl::Seconds(12));  // past the deadline: nothing to give up
  Beat("t1", {Listed(Ref(0), 50)});
  Beat("t2", {Listed(Ref(1), 50)});
  SchedulerEvents tick = scheduler_->Tick();
  EXPECT_TRUE(tick.recovering.empty());
  EXPECT_TRUE(tick.ended.empty());
  running = scheduler_->GetRunning("a");
  ASSERT_TRUE(running.has_value());
  EXPECT_EQ(running->generation, 3);
  EXPECT_TRUE(running->awaiting_trainer_ids.empty());
  EXPECT_FALSE(running->adoption_deadline.has_value());
  // It finishes as any world does.
  absl::StatusOr<SchedulerEvents> exit = scheduler_->ReportEngineExit(Id("t2"), Ref(1), {ExitReason::kCompleted});
  ASSERT_TRUE(exit.ok()) << exit.status();
  ASSERT_EQ(exit->started.size(), 1u);  // t2 is free: b takes it
  EXPECT_EQ(exit->started[0].job_id, "b");
  EXPECT_TRUE(scheduler_->Finish("a", JobEnd::kSucceeded, "adapter published").ok());
  EXPECT_EQ(scheduler_->ReportEngineExit(Id("t1"), Ref(0), {ExitReason::kCompleted}).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(State("t1"), TrainerState::kIdle);
}

TEST_F(SchedulerAdoptionTest, AMissingRankAtTheDeadlineRecoversTheJob) {
  ComeBack("t1");
  Beat("t1", {Listed(Ref(0), 40)});
  for (int i = 0; i < 5; ++i) {  // t1 keeps its lease; t2 never comes
    clock_.Advance(absl::Seconds(11));
    Beat("t1", {Listed(Ref(0), 41 + i)});
    EXPECT_TRUE(scheduler_->Tick().empty());
  }
  clock_.Advance(absl::Seconds(5));  // 60 s after the restart
  SchedulerEvents e = scheduler_->Tick();
  ASSERT_EQ(e.recovering.size(), 1u);
  EXPECT_EQ(e.recovering[0].job_id, "a");
  EXPECT_EQ(e.recovering[0].generation, 3);
  EXPECT_EQ(e.recovering[0].missing_trainer_ids, std::vector<std::string>{TrainerIdForName("t2")});
  EXPECT_EQ(e.recovering[0].reason, "did not come back within 1m of the coordinator's restart");
  EXPECT_TRUE(e.ended.empty());
  EXPECT_TRUE(e.started.empty());
  EXPECT_FALSE(scheduler_->GetRunning("a").has_value());
  ASSERT_EQ(scheduler_->Queue().size(), 1u);
  EXPECT_EQ(scheduler_->Queue()[0].request.last_generation, 3);
  EXPECT_EQ(scheduler_->CheckAssignment(Id("t1"), Ref(0)).code(), absl::StatusCode::kFailedPrecondition);

  // The rank present is cancelled and is free only once its engine is gone.
  HeartbeatResult hb = Beat("t1", {Listed(Ref(0), 47)});
  ASSERT_EQ(hb.reply.cancellations.size(), 1u);
  EXPECT_EQ(hb.reply.cancellations[0].ref, Ref(0));
  EXPECT_NE(hb.reply.cancellations[0].reason.find("generation 3 is replaced"), std::string::npos);
  EXPECT_EQ(State("t1"), TrainerState::kBusy);
  AddTrainer({"t3"});
  EXPECT_TRUE(scheduler_->Schedule().started.empty());
  hb = Beat("t1");
  ASSERT_EQ(hb.events.started.size(), 1u);
  EXPECT_EQ(hb.events.started[0].generation, 4);
  EXPECT_EQ(Names(hb.events.started[0].trainer_ids), (std::vector<std::string>{"t1", "t3"}));

  // t2 comes back late, its engine of generation 3 still running: told to stop, not given work.
  ComeBack("t2");
  EXPECT_EQ(State("t2"), TrainerState::kBusy);
  hb = Beat("t2", {Listed(Ref(1), 50)});
  ASSERT_EQ(hb.reply.cancellations.size(), 1u);
  EXPECT_EQ(hb.reply.cancellations[0].ref, Ref(1));
  EXPECT_TRUE(hb.events.empty());
  EXPECT_TRUE(Beat("t2").reply.freed);
}

TEST_F(SchedulerAdoptionTest, ATrainerBackWithoutItsAssignmentRecoversTheJob) {
  ComeBack("t1");
  ComeBack("t2");
  Beat("t2", {Listed(Ref(1))});
  HeartbeatResult hb = Beat("t1");  // restarted agent: it runs nothing
  ASSERT_EQ(hb.events.recovering.size(), 1u);
  EXPECT_EQ(hb.events.recovering[0].missing_trainer_ids, std::vector<std::string>{Id("t1")});
  EXPECT_EQ(hb.events.recovering[0].reason, "came back without running rank 0 of generation 3");
  EXPECT_TRUE(hb.events.ended.empty());
  EXPECT_EQ(State("t1"), TrainerState::kIdle);
  EXPECT_EQ(QueueIds(), std::vector<std::string>{"a"});
  // t2 is cancelled; once it lets go, generation 4 forms on both.
  hb = Beat("t2", {Listed(Ref(1))});
  ASSERT_EQ(hb.reply.cancellations.size(), 1u);
  hb = Beat("t2");
  ASSERT_EQ(hb.events.started.size(), 1u);
  EXPECT_EQ(hb.events.started[0].generation, 4);
  ASSERT_EQ(hb.reply.assignments.size(), 1u);
  EXPECT_EQ(hb.reply.assignments[0].ref, Ref(1, 4));
}

TEST_F(SchedulerAdoptionTest, ATrainerLostBeforeListingRecoversTheJob) {
  ComeBack("t1");
  clock_.Advance(absl::Seconds(16));
  SchedulerEvents e = scheduler_->Tick();
  ASSERT_EQ(e.lost.size(), 1u);
  ASSERT_EQ(e.recovering.size(), 1u);
  EXPECT_EQ(e.recovering[0].missing_trainer_ids, std::vector<std::string>{Id("t1")});
  EXPECT_TRUE(e.ended.empty());
}

TEST_F(SchedulerAdoptionTest, AnExitReportedInsteadOfAHeartbeatCountsAsBack) {
  // Rank 1 finished while the coordinator was away; its agent reports before registering.
  EXPECT_TRUE(scheduler_->ReportEngineExit(TrainerIdForName("t2"), Ref(1), {ExitReason::kCompleted})->empty());
  ComeBack("t2");
  EXPECT_EQ(State("t2"), TrainerState::kIdle);
  ComeBack("t1");
  HeartbeatResult hb = Beat("t1", {Listed(Ref(0))});
  ASSERT_EQ(hb.events.adopted.size(), 1u);
  EXPECT_EQ(hb.events.adopted[0].trainer_ids, (std::vector<std::string>{Id("t1"), Id("t2")}));
}

// The trainer that did not come back took its engine with it: its peer's engine fails too.
TEST_F(SchedulerAdoptionTest, ARankFailingBeforeTheWorldIsWholeRecoversTheJob) {
  ComeBack("t1");
  Beat("t1", {Listed(Ref(0), 40)});
  absl::StatusOr<SchedulerEvents> e = scheduler_->ReportEngineExit(
      Id("t1"), Ref(0), {ExitReason::kError, absl::StatusCode::kUnavailable, "peer gone", 41});
  ASSERT_TRUE(e.ok()) << e.status();
  ASSERT_EQ(e->recovering.size(), 1u);
  EXPECT_TRUE(e->ended.empty());
  EXPECT_EQ(e->recovering[0].missing_trainer_ids, std::vector<std::string>{TrainerIdForName("t2")});
  EXPECT_EQ(e->recovering[0].reason.rfind("had not come back when rank 0 on trainer t1 ended ERROR: peer gone", 0), 0u)
      << e->recovering[0].reason;
  EXPECT_EQ(State("t1"), TrainerState::kIdle);
  EXPECT_EQ(QueueIds(), std::vector<std::string>{"a"});
}

TEST_F(SchedulerAdoptionTest, AJobFaultStillFailsTheJob) {
  ComeBack("t1");
  absl::StatusOr<SchedulerEvents> e = scheduler_->ReportEngineExit(
      Id("t1"), Ref(0), {ExitReason::kError, absl::StatusCode::kOutOfRange, "loss is not finite", 41});
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_TRUE(e->recovering.empty());
  ASSERT_EQ(e->ended.size(), 1u);
  EXPECT_EQ(e->ended[0].end, JobEnd::kFailed);
  EXPECT_TRUE(QueueIds().empty());
  // t2, when it comes back, is told to stop.
  ComeBack("t2");
  EXPECT_EQ(Beat("t2", {Listed(Ref(1))}).reply.cancellations.size(), 1u);
}

TEST_F(SchedulerAdoptionTest, StaleRefsAreRejectedAndAdoptIsChecked) {
  ComeBack("t1");
  Beat("t1", {Listed(Ref(0))});
  struct Case {
    std::string name;
    AssignmentRef ref;
    absl::StatusCode want;
  };
  const std::vector<Case> cases = {
      {"adopted rank", Ref(0), absl::StatusCode::kOk},
      {"older generation", Ref(0, 2), absl::StatusCode::kFailedPrecondition},
      {"newer generation", Ref(0, 4), absl::StatusCode::kFailedPrecondition},
      {"rank of another trainer", Ref(1), absl::StatusCode::kFailedPrecondition},
  };
  for (const Case& c : cases) EXPECT_EQ(scheduler_->CheckAssignment(Id("t1"), c.ref).code(), c.want) << c.name;

  JobRequest r = Job({"x", "m", 2});
  EXPECT_EQ(scheduler_->Adopt(Job({"a", "m", 2}), 3, {"tr_1", "tr_2"}, absl::Seconds(1)).code(),
            absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(scheduler_->Adopt(r, 0, {"tr_1", "tr_2"}, absl::Seconds(1)).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(scheduler_->Adopt(r, 1, {"tr_1"}, absl::Seconds(1)).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(scheduler_->Adopt(r, 1, {"tr_1", "tr_1"}, absl::Seconds(1)).code(), absl::StatusCode::kInvalidArgument);
  // t1 is busy with "a": nothing of "x" is kept.
  EXPECT_EQ(scheduler_->Adopt(r, 1, {"tr_9", Id("t1")}, absl::Seconds(1)).code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_FALSE(scheduler_->GetRunning("x").has_value());
  EXPECT_TRUE(scheduler_->Adopt(r, 1, {"tr_9", "tr_8"}, absl::Seconds(1)).ok());
}

}  // namespace
}  // namespace herd::coordinator
