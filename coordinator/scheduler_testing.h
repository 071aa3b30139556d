// For the Scheduler's tests (scheduler_test.cc, scheduler_adoption_test.cc): a registry, a
// rendezvous store and a scheduler over a FakeClock, trainers and jobs described by table rows, and
// the heartbeats a trainer sends. Nothing sleeps.
#ifndef HERD_COORDINATOR_SCHEDULER_TESTING_H_
#define HERD_COORDINATOR_SCHEDULER_TESTING_H_

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "coordinator/scheduler.h"
#include "gtest/gtest.h"

namespace herd::coordinator::scheduler_testing {

inline std::string Hex(char c) { return std::string(64, c); }

inline HeldModel Model(const std::string& name, char weights = 'a') {
  HeldModel m;
  m.name = name;
  m.files = {{"config.json", Hex('1')}, {"tokenizer.json", Hex('2')}};
  m.weights_sha256 = Hex(weights);
  return m;
}

struct TrainerSpec {
  std::string name;
  std::vector<std::string> models = {"m"};
  DeviceKind kind = DeviceKind::kCpu;
};

inline TrainerRegistration Reg(const TrainerSpec& spec) {
  TrainerRegistration r;
  r.name = spec.name;
  r.device_kind = spec.kind;
  for (const std::string& m : spec.models) r.models.push_back(Model(m));
  return r;
}

struct JobSpecRow {
  std::string id;
  std::string model = "m";
  int64_t trainers = 1;
  int64_t priority = 0;
};

inline JobRequest Job(const JobSpecRow& row) {
  JobRequest r;
  r.job_id = row.id;
  r.tenant = "acme";
  r.base_model = row.model;
  r.trainers = row.trainers;
  r.priority = row.priority;
  r.global_batch_size = 24;  // a multiple of every W used here (1, 2, 3, 4)
  return r;
}

inline AssignmentStatus Listed(const AssignmentRef& ref, int64_t step = 0) {
  return AssignmentStatus{ref, AssignmentPhase::kTraining, step};
}

class SchedulerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    registry_ = *TrainerRegistry::Create(RegistryOptions{}, &clock_);
    rendezvous_ = *RendezvousStore::Create();
    scheduler_ = *Scheduler::Create(SchedulerOptions{}, registry_.get(), rendezvous_.get(), &clock_);
  }

  // Registers without a scheduling pass (the table builds a cluster, then runs one pass).
  void AddTrainer(const TrainerSpec& spec) {
    absl::StatusOr<RegisterResult> r = registry_->Register(Reg(spec));
    ASSERT_TRUE(r.ok()) << r.status();
    sessions_[spec.name] = *r;
    names_[r->trainer_id] = spec.name;
  }
  SchedulerEvents Submit(const JobSpecRow& row) {
    absl::StatusOr<SchedulerEvents> e = scheduler_->Submit(Job(row));
    EXPECT_TRUE(e.ok()) << e.status();
    return e.ok() ? *e : SchedulerEvents{};
  }
  HeartbeatResult Beat(const std::string& name, std::vector<AssignmentStatus> statuses = {}) {
    const RegisterResult& s = sessions_.at(name);
    absl::StatusOr<HeartbeatResult> r = scheduler_->Heartbeat(s.trainer_id, s.session_id, statuses);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : HeartbeatResult{};
  }
  std::string Id(const std::string& name) { return sessions_.at(name).trainer_id; }
  TrainerState State(const std::string& name) { return registry_->GetTrainer(Id(name))->state; }
  std::vector<std::string> Names(const std::vector<std::string>& ids) {
    std::vector<std::string> out;
    for (const std::string& id : ids) out.push_back(names_.at(id));
    return out;
  }
  std::vector<std::string> QueueIds() {
    std::vector<std::string> out;
    for (const QueuedJob& q : scheduler_->Queue()) out.push_back(q.request.job_id);
    return out;
  }
  // Starts `job` on `trainers` (which must be the only idle ones able to take it) and has every
  // rank acknowledge it. Returns the refs by rank.
  std::vector<AssignmentRef> StartAcknowledged(const JobSpecRow& job, const std::vector<std::string>& trainers) {
    SchedulerEvents e = Submit(job);
    EXPECT_EQ(e.started.size(), 1u);
    if (e.started.empty()) return {};
    EXPECT_EQ(Names(e.started[0].trainer_ids), trainers);
    std::vector<AssignmentRef> refs;
    for (size_t r = 0; r < trainers.size(); ++r) {
      EXPECT_EQ(Beat(trainers[r]).reply.assignments.size(), 1u);
      refs.push_back(e.started[0].assignments[r].ref);
      Beat(trainers[r], {Listed(refs.back())});
    }
    return refs;
  }

  FakeClock clock_;
  std::unique_ptr<TrainerRegistry> registry_;
  std::unique_ptr<RendezvousStore> rendezvous_;
  std::unique_ptr<Scheduler> scheduler_;
  std::map<std::string, RegisterResult> sessions_;  // by trainer name
  std::map<std::string, std::string> names_;        // trainer id -> name
};

}  // namespace herd::coordinator::scheduler_testing

#endif  // HERD_COORDINATOR_SCHEDULER_TESTING_H_
