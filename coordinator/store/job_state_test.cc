// The job state machine, checked for every pair of states.
#include "coordinator/store/job_state.h"

#include <set>

#include "coordinator/store/test_util.h"
#include "gtest/gtest.h"

namespace herd::coordinator::store {
namespace {

using S = JobState;

TEST(JobStateTest, EveryPairOfStates) {
  // The legal moves, written out from DESIGN.md §3; everything else is illegal.
  const std::set<std::pair<S, S>> legal = {
      {S::kValidating, S::kQueued},     {S::kQueued, S::kRunning},
      {S::kRunning, S::kRecovering},    {S::kRecovering, S::kRunning},
      {S::kRunning, S::kPublishing},    {S::kPublishing, S::kSucceeded},
  };
  const S all[] = {S::kUnspecified, S::kValidating, S::kQueued,    S::kRunning,  S::kRecovering,
                   S::kPublishing,  S::kSucceeded,  S::kFailed,    S::kCancelled};
  int checked = 0;
  for (S from : all) {
    for (S to : all) {
      bool want = legal.count({from, to}) > 0 ||
                  (from != S::kUnspecified && !IsFinal(from) &&
                   (to == S::kFailed || to == S::kCancelled));
      EXPECT_EQ(CanTransition(from, to), want) << JobStateName(from) << " -> " << JobStateName(to);
      absl::Status status = CheckTransition("job_x", from, to);
      EXPECT_EQ(status.ok(), want);
      if (!want) {
        EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition);
        EXPECT_TRUE(testing::MessageHas(status, JobStateName(from))) << status;
        EXPECT_TRUE(testing::MessageHas(status, JobStateName(to))) << status;
        EXPECT_TRUE(testing::MessageHas(status, "job_x")) << status;
      }
      ++checked;
    }
  }
  EXPECT_EQ(checked, 81);
}

TEST(JobStateTest, FinalStates) {
  for (S s : kAllJobStates) {
    bool final = s == S::kSucceeded || s == S::kFailed || s == S::kCancelled;
    EXPECT_EQ(IsFinal(s), final) << JobStateName(s);
  }
}

TEST(JobStateTest, NamesRoundTripAndMatchTheProtoNumbers) {
  for (S s : kAllJobStates) EXPECT_EQ(ParseJobState(JobStateName(s)), s);
  EXPECT_EQ(ParseJobState("UNSPECIFIED"), std::nullopt);
  EXPECT_EQ(ParseJobState("running"), std::nullopt);
  EXPECT_EQ(static_cast<int>(S::kRunning), 3);     // herd.v1.JOB_STATE_RUNNING
  EXPECT_EQ(static_cast<int>(S::kCancelled), 8);   // herd.v1.JOB_STATE_CANCELLED
  for (int t = 1; t <= 7; ++t) {
    auto type = static_cast<JobEventType>(t);
    EXPECT_EQ(ParseJobEventType(JobEventTypeName(type)), type);
  }
  EXPECT_EQ(static_cast<int>(JobEventType::kCheckpointSaved), 5);  // herd.v1 value
  EXPECT_EQ(ParseJobEventType("BOGUS"), std::nullopt);
}

}  // namespace
}  // namespace herd::coordinator::store
