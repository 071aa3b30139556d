// The fixture of JobStore's tests (job_store_test.cc, job_store_lifecycle_test.cc): a fresh store
// with two tenants (StoreTest), and a helper that walks a job to a state along legal moves.
#ifndef HERD_COORDINATOR_STORE_JOB_STORE_TESTING_H_
#define HERD_COORDINATOR_STORE_JOB_STORE_TESTING_H_

#include <string>
#include <vector>

#include "coordinator/store/job_store.h"
#include "coordinator/store/test_util.h"
#include "gtest/gtest.h"

namespace herd::coordinator::store::testing {

class JobStoreTest : public StoreTest {
 protected:
  JobStore& jobs() { return store_->jobs(); }

  // Walks a job to `target` along legal moves.
  JobRecord Drive(const std::string& id, JobState target) {
    const std::vector<JobState> path = {JobState::kQueued, JobState::kRunning,
                                        JobState::kPublishing, JobState::kSucceeded};
    auto job = jobs().GetById(id);
    EXPECT_TRUE(job.ok());
    if (target == JobState::kValidating) return *job;
    if (target == JobState::kFailed || target == JobState::kCancelled) {
      return *jobs().Transition(id, target);
    }
    if (target == JobState::kRecovering) {
      Drive(id, JobState::kRunning);
      return *jobs().Transition(id, JobState::kRecovering);
    }
    for (JobState s : path) {
      auto next = jobs().Transition(id, s);
      EXPECT_TRUE(next.ok()) << next.status();
      job = next;
      if (s == target) break;
    }
    return *job;
  }
};

}  // namespace herd::coordinator::store::testing

#endif  // HERD_COORDINATOR_STORE_JOB_STORE_TESTING_H_
