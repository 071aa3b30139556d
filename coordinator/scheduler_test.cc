// Scheduler: placement decisions (a table), then the life of worlds: delivery, cancellation,
// lost trainers, engine exits, stale generations. Time is a FakeClock; nothing sleeps.
#include "coordinator/scheduler.h"

#include <algorithm>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "common/strings.h"
#include "coordinator/scheduler_testing.h"
#include "gtest/gtest.h"

namespace herd::coordinator {
namespace {

using scheduler_testing::Hex;
using scheduler_testing::Job;
using scheduler_testing::JobSpecRow;
using scheduler_testing::Listed;
using scheduler_testing::Reg;
using scheduler_testing::SchedulerTest;
using scheduler_testing::TrainerSpec;

// One scheduling pass over a queue that built up while no trainer was there.
TEST_F(SchedulerTest, DecisionsTable) {
  struct Case {
    std::string name;
    std::vector<TrainerSpec> trainers;
    std::vector<JobSpecRow> jobs;  // submitted in this order
    std::map<std::string, std::vector<std::string>> want_started;  // job -> trainer names by rank
    std::vector<std::string> want_queue;                           // in scheduling order
  };
  const DeviceKind kCuda = DeviceKind::kCuda;
  const std::vector<Case> cases = {
      {"fifo within a model", {{"t1"}, {"t2"}, {"t3"}}, {{"a", "m", 2}, {"b", "m", 2}},
       {{"a", {"t1", "t2"}}}, {"b"}},
      {"a later smaller job of the same model and priority waits", {{"t1"}, {"t2"}},
       {{"a", "m", 3}, {"b", "m", 1}}, {}, {"a", "b"}},
      {"higher priority first", {{"t1"}, {"t2"}}, {{"a", "m", 2, 0}, {"b", "m", 2, 5}},
       {{"b", {"t1", "t2"}}}, {"a"}},
      {"disjoint worlds side by side", {{"t1"}, {"t2"}, {"t3"}, {"t4"}}, {{"a", "m", 2}, {"b", "m", 2}},
       {{"a", {"t1", "t2"}}, {"b", {"t3", "t4"}}}, {}},
      {"W larger than the cluster waits; other models proceed", {{"t1", {"m1", "m2"}}, {"t2", {"m1", "m2"}}},
       {{"a", "m1", 3}, {"b", "m2", 2}}, {{"b", {"t1", "t2"}}}, {"a"}},
      {"a lower priority of the same model passes a job too big for the cluster", {{"t1"}, {"t2"}},
       {{"a", "m", 3, 5}, {"b", "m", 1, 0}}, {{"b", {"t1"}}}, {"a"}},
      {"a waiting job the cluster can satisfy holds back its trainers",
       {{"t1", {"m1"}}, {"t2", {"m1"}}, {"t3", {"m1"}}, {"t4", {"m2"}}},
       {{"x", "m1", 1, 9}, {"a", "m1", 3, 5}, {"b", "m1", 1, 0}, {"c", "m2", 1, 0}},
       {{"x", {"t1"}}, {"c", {"t4"}}}, {"a", "b"}},
      {"held-back trainers are not taken by other models either",
       {{"t1", {"m1", "m2"}}, {"t2", {"m1", "m2"}}, {"t3", {"m1", "m2"}}},
       {{"x", "m1", 1, 9}, {"a", "m1", 3, 5}, {"c", "m2", 1, 0}}, {{"x", {"t1"}}}, {"a", "c"}},
      {"a trainer without the model is never picked", {{"t1", {"m2"}}, {"t2", {"m1"}}, {"t3", {"m2"}}},
       {{"a", "m1", 1}, {"b", "m1", 1}}, {{"a", {"t2"}}}, {"b"}},
      {"a model no trainer holds waits", {{"t1"}}, {{"a", "nobody-has-it", 1}}, {}, {"a"}},
      {"ranks follow trainer names", {{"charlie"}, {"alpha"}, {"bravo"}}, {{"a", "m", 3}},
       {{"a", {"alpha", "bravo", "charlie"}}}, {}},
      {"cuda preferred, cpu next, never mixed",
       {{"c1", {"m"}}, {"c2", {"m"}}, {"g1", {"m"}, kCuda}, {"g2", {"m"}, kCuda}},
       {{"a", "m", 2}, {"b", "m", 2}}, {{"a", {"g1", "g2"}}, {"b", {"c1", "c2"}}}, {}},
      {"no world across device kinds", {{"c1"}, {"g1", {"m"}, kCuda}}, {{"a", "m", 2}}, {}, {"a"}},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    SetUp();
    sessions_.clear();
    names_.clear();
    for (const JobSpecRow& j : c.jobs) EXPECT_TRUE(Submit(j).empty());
    for (const TrainerSpec& t : c.trainers) AddTrainer(t);
    SchedulerEvents events = scheduler_->Schedule();
    std::map<std::string, std::vector<std::string>> started;
    for (const WorldStarted& w : events.started) {
      started[w.job_id] = Names(w.trainer_ids);
      EXPECT_EQ(w.generation, 1);
      ASSERT_EQ(w.assignments.size(), w.trainer_ids.size());
      for (size_t r = 0; r < w.assignments.size(); ++r) {
        EXPECT_EQ(w.assignments[r].ref, (AssignmentRef{w.job_id, 1, static_cast<int>(r)}));
        EXPECT_EQ(w.assignments[r].world_size, static_cast<int>(w.trainer_ids.size()));
        EXPECT_EQ(w.assignments[r].device_kind, w.device_kind);
        EXPECT_EQ(State(names_.at(w.trainer_ids[r])), TrainerState::kBusy);
      }
    }
    EXPECT_EQ(started, c.want_started);
    EXPECT_EQ(QueueIds(), c.want_queue);
    EXPECT_EQ(scheduler_->QueueDepth(), static_cast<int64_t>(c.want_queue.size()));
  }
}

TEST_F(SchedulerTest, SubmitValidation) {
  struct Case {
    std::string name;
    std::function<void(JobRequest&)> mutate;
    absl::StatusCode want;
  };
  const std::vector<Case> cases = {
      {"valid", [](JobRequest&) {}, absl::StatusCode::kOk},
      {"empty id", [](JobRequest& r) { r.job_id = ""; }, absl::StatusCode::kInvalidArgument},
      {"empty model", [](JobRequest& r) { r.base_model = ""; }, absl::StatusCode::kInvalidArgument},
      {"no trainers", [](JobRequest& r) { r.trainers = 0; }, absl::StatusCode::kInvalidArgument},
      {"batch not divisible", [](JobRequest& r) { r.trainers = 5; }, absl::StatusCode::kInvalidArgument},
      {"micro batch not dividing", [](JobRequest& r) { r.micro_batch_size = 5; }, absl::StatusCode::kInvalidArgument},
  };
  int n = 0;
  for (const Case& c : cases) {
    JobRequest r = Job({"job_" + std::to_string(n++)});
    c.mutate(r);
    EXPECT_EQ(scheduler_->Submit(r).status().code(), c.want) << c.name;
  }
  EXPECT_EQ(scheduler_->Submit(Job({"job_0"})).status().code(), absl::StatusCode::kAlreadyExists);

  SchedulerOptions small;
  small.max_queued_jobs = 1;
  auto full = *Scheduler::Create(small, registry_.get(), nullptr, &clock_);
  EXPECT_TRUE(full->Submit(Job({"a"})).ok());
  EXPECT_EQ(full->Submit(Job({"b"})).status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(SchedulerOptions{0}.Validate().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(SchedulerTest, AssignmentsCarryTheWorldShape) {
  AddTrainer({"t1"});
  AddTrainer({"t2"});
  JobRequest r = Job({"a", "m", 2});
  r.global_batch_size = 8;
  r.micro_batch_size = 2;
  r.last_generation = 4;  // restored after a restart: the next generation is 5
  SchedulerEvents e = *scheduler_->Submit(r);
  ASSERT_EQ(e.started.size(), 1u);
  const Assignment& a = e.started[0].assignments[1];
  EXPECT_EQ(a.ref, (AssignmentRef{"a", 5, 1}));
  EXPECT_EQ(a.grad_accum_steps, 2);  // 8 / (2 x 2)
  EXPECT_EQ(a.base_model, "m");
  EXPECT_EQ(a.weights_sha256, Hex('a'));
  EXPECT_EQ(a.device_kind, DeviceKind::kCpu);
  EXPECT_EQ(a.create_time, clock_.Now());
  EXPECT_EQ(rendezvous_->CurrentGeneration("a"), 5);
  std::optional<RunningJob> running = scheduler_->GetRunning("a");
  ASSERT_TRUE(running.has_value());
  EXPECT_EQ(Names(running->trainer_ids), (std::vector<std::string>{"t1", "t2"}));
  EXPECT_EQ(scheduler_->ModelsInUse(), std::set<std::string>{"m"});
}

TEST_F(SchedulerTest, RegisteringATrainerStartsQueuedWork) {
  Submit({"a"});
  absl::StatusOr<RegisterTrainerResult> r = scheduler_->RegisterTrainer(Reg({"t1"}));
  ASSERT_TRUE(r.ok()) << r.status();
  sessions_["t1"] = r->registration;
  names_[r->registration.trainer_id] = "t1";
  ASSERT_EQ(r->events.started.size(), 1u);
  HeartbeatResult hb = Beat("t1");
  ASSERT_EQ(hb.reply.assignments.size(), 1u);
  EXPECT_EQ(hb.reply.assignments[0].ref.job_id, "a");
}

TEST_F(SchedulerTest, CancelQueuedJob) {
  Submit({"a", "m", 2});
  Submit({"b", "m", 1});
  AddTrainer({"t1"});
  EXPECT_TRUE(scheduler_->Schedule().started.empty());  // b waits behind a
  SchedulerEvents e = *scheduler_->Cancel("a");
  ASSERT_EQ(e.ended.size(), 1u);
  EXPECT_EQ(e.ended[0].end, JobEnd::kCancelled);
  EXPECT_EQ(e.ended[0].generation, 0);
  ASSERT_EQ(e.started.size(), 1u);  // b no longer waits behind a
  EXPECT_EQ(e.started[0].job_id, "b");
  EXPECT_EQ(scheduler_->Cancel("a").status().code(), absl::StatusCode::kNotFound);
}

TEST_F(SchedulerTest, CancellationFreesTrainersWhenTheyLetGo) {
  for (const char* t : {"t1", "t2"}) AddTrainer({t});
  std::vector<AssignmentRef> refs = StartAcknowledged({"a", "m", 2}, {"t1", "t2"});
  Submit({"b", "m", 1});
  EXPECT_EQ(QueueIds(), std::vector<std::string>{"b"});

  SchedulerEvents e = *scheduler_->Cancel("a");
  ASSERT_EQ(e.ended.size(), 1u);
  EXPECT_EQ(e.ended[0].end, JobEnd::kCancelled);
  EXPECT_EQ(e.ended[0].generation, 1);
  EXPECT_TRUE(e.started.empty());  // trainers still stopping
  EXPECT_EQ(rendezvous_->CurrentGeneration("a"), 0);
  EXPECT_EQ(scheduler_->CheckAssignment(Id("t1"), refs[0]).code(), absl::StatusCode::kFailedPrecondition);

  for (int round = 0; round < 2; ++round) {
    HeartbeatResult hb = Beat("t1", {Listed(refs[0])});
    ASSERT_EQ(hb.reply.cancellations.size(), 1u);
    EXPECT_EQ(hb.reply.cancellations[0].reason, "job cancelled by user");
    EXPECT_EQ(State("t1"), TrainerState::kBusy);
  }
  // t1's engine is gone: in the same answer it gets the queued job.
  HeartbeatResult hb = Beat("t1");
  EXPECT_TRUE(hb.reply.cancellations.empty());
  ASSERT_EQ(hb.events.started.size(), 1u);
  EXPECT_EQ(hb.events.started[0].job_id, "b");
  ASSERT_EQ(hb.reply.assignments.size(), 1u);
  EXPECT_EQ(hb.reply.assignments[0].ref.job_id, "b");
  // t2 reports the exit instead; the job is final, so the answer is FAILED_PRECONDITION, but the
  // trainer is free.
  Beat("t2", {Listed(refs[1])});
  EXPECT_EQ(scheduler_->ReportEngineExit(Id("t2"), refs[1], {ExitReason::kCancelled}).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(State("t2"), TrainerState::kIdle);
}

TEST_F(SchedulerTest, CancellingBeforeDeliveryFreesAtOnce) {
  AddTrainer({"t1"});
  Submit({"a"});
  Submit({"b"});
  SchedulerEvents e = *scheduler_->Cancel("a");
  ASSERT_EQ(e.started.size(), 1u);
  EXPECT_EQ(e.started[0].job_id, "b");
  HeartbeatResult hb = Beat("t1");
  EXPECT_TRUE(hb.reply.cancellations.empty());
  ASSERT_EQ(hb.reply.assignments.size(), 1u);
  EXPECT_EQ(hb.reply.assignments[0].ref.job_id, "b");
}

TEST_F(SchedulerTest, LostTrainerRecoversTheJobAtTheFrontOfTheQueue) {
  for (const char* t : {"t1", "t2", "t3"}) AddTrainer({t});
  std::vector<AssignmentRef> refs = StartAcknowledged({"a", "m", 2}, {"t1", "t2"});
  EXPECT_TRUE(Submit({"b", "m", 2}).started.empty());  // waits, holding t3 back
  Beat("t1", {Listed(refs[0], 7)});
  clock_.Advance(absl::Seconds(10));
  Beat("t2", {Listed(refs[1], 7)});
  Beat("t3");
  EXPECT_TRUE(scheduler_->Tick().empty());
  clock_.Advance(absl::Seconds(6));  // t1 silent for 16 s > lease 15 s

  SchedulerEvents e = scheduler_->Tick();
  ASSERT_EQ(e.lost.size(), 1u);
  EXPECT_EQ(e.lost[0].name, "t1");
  EXPECT_TRUE(e.ended.empty());
  EXPECT_TRUE(e.started.empty());  // t2 has not let go yet
  ASSERT_EQ(e.recovering.size(), 1u);
  EXPECT_EQ(e.recovering[0].job_id, "a");
  EXPECT_EQ(e.recovering[0].generation, 1);
  EXPECT_EQ(e.recovering[0].missing_trainer_ids, std::vector<std::string>{Id("t1")});
  EXPECT_EQ(e.recovering[0].reason, "rank 0 on trainer t1 lost at step 7");
  EXPECT_FALSE(e.recovering[0].after_restart);
  EXPECT_EQ(Names(e.recovering[0].trainer_ids), (std::vector<std::string>{"t1", "t2"}));
  EXPECT_EQ(State("t1"), TrainerState::kLost);
  EXPECT_FALSE(scheduler_->GetRunning("a").has_value());
  EXPECT_EQ(QueueIds(), (std::vector<std::string>{"a", "b"}));  // before b, submitted later
  EXPECT_EQ(scheduler_->Queue()[0].request.last_generation, 1);
  EXPECT_EQ(scheduler_->Queue()[0].request.recoveries, 1);
  EXPECT_EQ(scheduler_->CheckAssignment(Id("t2"), refs[1]).code(), absl::StatusCode::kFailedPrecondition);

  // The surviving rank is cancelled; its trainer stays busy until it lets go.
  HeartbeatResult hb = Beat("t2", {Listed(refs[1], 8)});
  ASSERT_EQ(hb.reply.cancellations.size(), 1u);
  EXPECT_EQ(hb.reply.cancellations[0].ref, refs[1]);
  EXPECT_EQ(hb.reply.cancellations[0].reason, "generation 1 is replaced: rank 0 on trainer t1 lost at step 7");
  EXPECT_TRUE(hb.reply.assignments.empty());
  EXPECT_EQ(State("t2"), TrainerState::kBusy);
  EXPECT_TRUE(scheduler_->Tick().started.empty());

  hb = Beat("t2");  // let go: free, and generation 2 forms on t2 and t3 at once
  EXPECT_TRUE(hb.reply.freed);
  ASSERT_EQ(hb.events.started.size(), 1u);
  EXPECT_EQ(hb.events.started[0].job_id, "a");
  EXPECT_EQ(hb.events.started[0].generation, 2);
  EXPECT_EQ(Names(hb.events.started[0].trainer_ids), (std::vector<std::string>{"t2", "t3"}));
  ASSERT_EQ(hb.reply.assignments.size(), 1u);
  EXPECT_EQ(hb.reply.assignments[0].ref, (AssignmentRef{"a", 2, 0}));
  EXPECT_EQ(QueueIds(), std::vector<std::string>{"b"});

  // t1 comes back still running its old engine: it is told to stop, then is free.
  absl::StatusOr<RegisterTrainerResult> back = scheduler_->RegisterTrainer(Reg({"t1"}));
  ASSERT_TRUE(back.ok()) << back.status();
  sessions_["t1"] = back->registration;
  hb = Beat("t1", {Listed(refs[0], 9)});
  ASSERT_EQ(hb.reply.cancellations.size(), 1u);
  EXPECT_EQ(hb.reply.cancellations[0].ref, refs[0]);
  EXPECT_TRUE(hb.events.empty());
  EXPECT_TRUE(Beat("t1").reply.freed);
}

TEST_F(SchedulerTest, CrashRecoversUntilTheJobIsOutOfRecoveries) {
  for (const char* t : {"t1", "t2", "t3"}) AddTrainer({t});
  std::vector<AssignmentRef> refs = StartAcknowledged({"a", "m", 2}, {"t1", "t2"});
  // Each generation: rank 1 crashes; rank 0 is cancelled and lets go; the next one forms.
  for (int64_t generation = 1; generation <= 3; ++generation) {
    SCOPED_TRACE(generation);
    ASSERT_EQ(refs.size(), 2u);
    std::optional<RunningJob> running = scheduler_->GetRunning("a");
    ASSERT_TRUE(running.has_value());
    ASSERT_EQ(running->generation, generation);
    const std::string crashed = names_.at(running->trainer_ids[1]);
    const std::string survivor = names_.at(running->trainer_ids[0]);
    absl::StatusOr<SchedulerEvents> e = scheduler_->ReportEngineExit(
        Id(crashed), refs[1], {ExitReason::kCrashed, absl::StatusCode::kAborted, "SIGSEGV", 10 * generation});
    ASSERT_TRUE(e.ok()) << e.status();
    EXPECT_TRUE(e->ended.empty());
    ASSERT_EQ(e->recovering.size(), 1u);
    EXPECT_EQ(e->recovering[0].generation, generation);
    EXPECT_EQ(e->recovering[0].missing_trainer_ids, std::vector<std::string>{Id(crashed)});
    EXPECT_EQ(e->recovering[0].reason,
              StrCat("rank 1 on trainer ", crashed, " ended CRASHED: SIGSEGV (step ", 10 * generation, ")"));
    // The crashed trainer is free and t3 (or the last survivor) idle: the next world forms at
    // once; the survivor is busy until it lets go of its cancelled rank.
    ASSERT_EQ(e->started.size(), 1u);
    EXPECT_EQ(e->started[0].generation, generation + 1);
    EXPECT_EQ(std::count(e->started[0].trainer_ids.begin(), e->started[0].trainer_ids.end(), Id(survivor)), 0);
    EXPECT_EQ(State(survivor), TrainerState::kBusy);
    HeartbeatResult hb = Beat(survivor, {Listed(refs[0], 10 * generation)});
    ASSERT_EQ(hb.reply.cancellations.size(), 1u);
    EXPECT_TRUE(hb.reply.assignments.empty());
    // The cancelled engine reports its exit: stale, but the trainer is free.
    EXPECT_EQ(scheduler_->ReportEngineExit(Id(survivor), refs[0], {ExitReason::kCancelled}).status().code(),
              absl::StatusCode::kFailedPrecondition);
    EXPECT_EQ(State(survivor), TrainerState::kIdle);
    refs.clear();
    for (size_t r = 0; r < e->started[0].trainer_ids.size(); ++r) {
      const std::string name = names_.at(e->started[0].trainer_ids[r]);
      EXPECT_EQ(Beat(name).reply.assignments.size(), 1u);
      refs.push_back(e->started[0].assignments[r].ref);
      Beat(name, {Listed(refs.back())});
    }
  }
  // The fourth failure: out of recoveries, the job fails.
  const std::optional<RunningJob> running = scheduler_->GetRunning("a");
  ASSERT_TRUE(running.has_value());
  EXPECT_EQ(running->request.recoveries, 3);
  const std::string crashed = names_.at(running->trainer_ids[1]);
  absl::StatusOr<SchedulerEvents> e = scheduler_->ReportEngineExit(
      Id(crashed), refs[1], {ExitReason::kCrashed, absl::StatusCode::kAborted, "SIGSEGV", 40});
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_TRUE(e->recovering.empty());
  ASSERT_EQ(e->ended.size(), 1u);
  EXPECT_EQ(e->ended[0].end, JobEnd::kFailed);
  EXPECT_EQ(e->ended[0].generation, 4);
  EXPECT_TRUE(e->ended[0].trainer_fault);
  EXPECT_NE(e->ended[0].reason.find("out of recoveries (3 of 3 used)"), std::string::npos) << e->ended[0].reason;
  EXPECT_TRUE(QueueIds().empty());
  EXPECT_FALSE(scheduler_->GetRunning("a").has_value());
  EXPECT_EQ(Beat(names_.at(running->trainer_ids[0]), {Listed(refs[0])}).reply.cancellations.size(), 1u);
}

TEST_F(SchedulerTest, ARestoredJobKeepsItsRecoveryCount) {
  registry_ = *TrainerRegistry::Create(RegistryOptions{}, &clock_);
  SchedulerOptions options;
  options.max_recoveries = 1;
  scheduler_ = *Scheduler::Create(options, registry_.get(), rendezvous_.get(), &clock_);
  AddTrainer({"t1"});
  JobRequest r = Job({"a"});
  r.recoveries = 1;  // recovered once before the coordinator restarted
  absl::StatusOr<SchedulerEvents> started = scheduler_->Submit(r);
  ASSERT_TRUE(started.ok()) << started.status();
  ASSERT_EQ(started->started.size(), 1u);
  const AssignmentRef ref = started->started[0].assignments[0].ref;
  Beat("t1");
  Beat("t1", {Listed(ref)});
  absl::StatusOr<SchedulerEvents> e =
      scheduler_->ReportEngineExit(Id("t1"), ref, {ExitReason::kWatchdog, absl::StatusCode::kDeadlineExceeded, "", 3});
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_TRUE(e->recovering.empty());
  ASSERT_EQ(e->ended.size(), 1u);
  EXPECT_EQ(e->ended[0].reason, "rank 0 on trainer t1 ended WATCHDOG (step 3); out of recoveries (1 of 1 used)");
  EXPECT_EQ(SchedulerOptions{.max_recoveries = -1}.Validate().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(SchedulerTest, EngineExitsTable) {
  enum class Outcome { kRuns, kFails, kRecovers };
  struct Case {
    std::string name;
    EngineExit exit;
    Outcome outcome;
  };
  const std::vector<Case> cases = {
      {"completed", {ExitReason::kCompleted}, Outcome::kRuns},
      {"error invalid argument is the job's fault",
       {ExitReason::kError, absl::StatusCode::kInvalidArgument, "bad spec", 3}, Outcome::kFails},
      {"error failed precondition is the job's fault",
       {ExitReason::kError, absl::StatusCode::kFailedPrecondition, "no checkpoint", 3}, Outcome::kFails},
      {"error out of range is the job's fault",
       {ExitReason::kError, absl::StatusCode::kOutOfRange, "loss is not finite", 3}, Outcome::kFails},
      {"error out of memory is the job's fault",
       {ExitReason::kError, absl::StatusCode::kResourceExhausted, "CUDA OOM", 1}, Outcome::kFails},
      {"error unimplemented is the job's fault",
       {ExitReason::kError, absl::StatusCode::kUnimplemented, "no such op", 1}, Outcome::kFails},
      {"error unavailable is the trainer's",
       {ExitReason::kError, absl::StatusCode::kUnavailable, "peer gone", 5}, Outcome::kRecovers},
      {"watchdog", {ExitReason::kWatchdog, absl::StatusCode::kDeadlineExceeded, "allreduce #9", 9}, Outcome::kRecovers},
      {"crashed", {ExitReason::kCrashed, absl::StatusCode::kAborted, "SIGSEGV", 2}, Outcome::kRecovers},
      {"hung", {ExitReason::kHung, absl::StatusCode::kDeadlineExceeded, "no progress", 2}, Outcome::kRecovers},
      {"protocol violation", {ExitReason::kProtocolViolation, absl::StatusCode::kInternal, "bad frame", 2},
       Outcome::kRecovers},
      {"start failed", {ExitReason::kStartFailed, absl::StatusCode::kUnavailable, "fetch", 0}, Outcome::kRecovers},
      {"upload failed", {ExitReason::kUploadFailed, absl::StatusCode::kUnavailable, "blob put", 4},
       Outcome::kRecovers},
      {"unrequested cancel", {ExitReason::kCancelled}, Outcome::kRecovers},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    SetUp();
    sessions_.clear();
    names_.clear();
    AddTrainer({"t1"});
    AddTrainer({"t2"});
    std::vector<AssignmentRef> refs = StartAcknowledged({"a", "m", 2}, {"t1", "t2"});
    absl::StatusOr<SchedulerEvents> e = scheduler_->ReportEngineExit(Id("t2"), refs[1], c.exit);
    ASSERT_TRUE(e.ok()) << e.status();
    EXPECT_EQ(State("t2"), TrainerState::kIdle);
    if (c.outcome == Outcome::kRuns) {
      EXPECT_TRUE(e->empty());
      EXPECT_TRUE(scheduler_->GetRunning("a").has_value());
      EXPECT_TRUE(scheduler_->CheckAssignment(Id("t1"), refs[0]).ok());
      continue;
    }
    std::string reason;
    if (c.outcome == Outcome::kFails) {
      EXPECT_TRUE(e->recovering.empty());
      ASSERT_EQ(e->ended.size(), 1u);
      EXPECT_EQ(e->ended[0].end, JobEnd::kFailed);
      EXPECT_FALSE(e->ended[0].trainer_fault);
      EXPECT_TRUE(QueueIds().empty());
      reason = e->ended[0].reason;
    } else {
      EXPECT_TRUE(e->ended.empty());
      ASSERT_EQ(e->recovering.size(), 1u);
      EXPECT_EQ(e->recovering[0].missing_trainer_ids, std::vector<std::string>{Id("t2")});
      EXPECT_EQ(QueueIds(), std::vector<std::string>{"a"});
      reason = e->recovering[0].reason;
    }
    EXPECT_FALSE(scheduler_->GetRunning("a").has_value());
    EXPECT_NE(reason.find("rank 1 on trainer t2 ended"), std::string::npos) << reason;
    EXPECT_NE(reason.find(c.exit.message), std::string::npos) << reason;
    EXPECT_EQ(Beat("t1", {Listed(refs[0])}).reply.cancellations.size(), 1u);
  }
}

TEST_F(SchedulerTest, ExitReportedTwiceIsOkAndStaleCallsAreRejected) {
  AddTrainer({"t1"});
  AddTrainer({"t2"});
  std::vector<AssignmentRef> refs = StartAcknowledged({"a", "m", 2}, {"t1", "t2"});
  EXPECT_TRUE(scheduler_->ReportEngineExit(Id("t2"), refs[1], {ExitReason::kCompleted}).ok());
  EXPECT_TRUE(scheduler_->ReportEngineExit(Id("t2"), refs[1], {ExitReason::kCompleted}).ok());

  struct Case {
    std::string name;
    std::string trainer;
    AssignmentRef ref;
    absl::StatusCode want;
  };
  const std::vector<Case> cases = {
      {"current rank", "t1", refs[0], absl::StatusCode::kOk},
      {"exited rank of a running job", "t2", refs[1], absl::StatusCode::kOk},
      {"generation zero", "t1", {"a", 0, 0}, absl::StatusCode::kInvalidArgument},
      {"other generation", "t1", {"a", 2, 0}, absl::StatusCode::kFailedPrecondition},
      {"rank of another trainer", "t2", refs[0], absl::StatusCode::kFailedPrecondition},
      {"rank out of range", "t1", {"a", 1, 5}, absl::StatusCode::kFailedPrecondition},
      {"unknown job", "t1", {"nope", 1, 0}, absl::StatusCode::kFailedPrecondition},
      {"malformed", "t1", {"", 1, 0}, absl::StatusCode::kInvalidArgument},
  };
  for (const Case& c : cases) {
    EXPECT_EQ(scheduler_->CheckAssignment(Id(c.trainer), c.ref).code(), c.want) << c.name;
  }
  EXPECT_EQ(scheduler_->ReportEngineExit(Id("t1"), {"a", 2, 0}, {ExitReason::kCrashed}).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(scheduler_->GetRunning("a").has_value());  // a stale report changes nothing
}

TEST_F(SchedulerTest, SucceededJobReleasesRanksWithoutCancelling) {
  AddTrainer({"t1"});
  AddTrainer({"t2"});
  std::vector<AssignmentRef> refs = StartAcknowledged({"a", "m", 2}, {"t1", "t2"});
  EXPECT_TRUE(scheduler_->ReportEngineExit(Id("t2"), refs[1], {ExitReason::kCompleted, {}, "", 20}).ok());
  // Rank 0's final checkpoint is published: SUCCEEDED.
  SchedulerEvents e = *scheduler_->Finish("a", JobEnd::kSucceeded, "adapter published");
  ASSERT_EQ(e.ended.size(), 1u);
  EXPECT_EQ(e.ended[0].end, JobEnd::kSucceeded);
  EXPECT_FALSE(e.ended[0].trainer_fault);
  HeartbeatResult hb = Beat("t1", {Listed(refs[0], 20)});
  EXPECT_TRUE(hb.reply.cancellations.empty());
  EXPECT_EQ(State("t1"), TrainerState::kBusy);
  EXPECT_EQ(scheduler_->ReportEngineExit(Id("t1"), refs[0], {ExitReason::kCompleted}).status().code(),
            absl::StatusCode::kFailedPrecondition);  // the coordinator has moved on
  EXPECT_EQ(State("t1"), TrainerState::kIdle);
  EXPECT_EQ(scheduler_->Finish("a", JobEnd::kFailed, "again").status().code(), absl::StatusCode::kNotFound);
}

TEST_F(SchedulerTest, DroppedAssignmentRecoversTheJob) {
  AddTrainer({"t1"});
  std::vector<AssignmentRef> refs = StartAcknowledged({"a"}, {"t1"});
  HeartbeatResult hb = Beat("t1");  // no longer lists it, never reported an exit
  EXPECT_TRUE(hb.events.ended.empty());
  ASSERT_EQ(hb.events.recovering.size(), 1u);
  EXPECT_EQ(hb.events.recovering[0].reason, "trainer t1 stopped running rank 0 without reporting an exit");
  // t1 is idle again: generation 2 forms on it in the same answer.
  ASSERT_EQ(hb.events.started.size(), 1u);
  EXPECT_EQ(hb.events.started[0].generation, 2);
  ASSERT_EQ(hb.reply.assignments.size(), 1u);
  EXPECT_EQ(hb.reply.assignments[0].ref, (AssignmentRef{"a", 2, 0}));
}

TEST_F(SchedulerTest, ModelFilesCannotChangeUnderAQueuedJob) {
  AddTrainer({"t1"});
  Submit({"a", "m", 2});
  clock_.Advance(absl::Seconds(16));
  EXPECT_EQ(scheduler_->Tick().lost.size(), 1u);
  TrainerRegistration changed = Reg({"t2"});
  changed.models[0].weights_sha256 = Hex('b');
  EXPECT_EQ(scheduler_->RegisterTrainer(changed).status().code(), absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE(scheduler_->Cancel("a").ok());
  EXPECT_TRUE(scheduler_->RegisterTrainer(changed).ok());
}

}  // namespace
}  // namespace herd::coordinator
