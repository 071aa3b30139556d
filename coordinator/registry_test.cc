// TrainerRegistry: sessions, leases, re-registration, delivery of work and cancellations, models.
#include "coordinator/registry.h"

#include <functional>
#include <string>
#include <vector>

#include "common/strings.h"
#include "gtest/gtest.h"

namespace herd::coordinator {
namespace {

std::string Hex(char c) { return std::string(64, c); }

HeldModel Model(const std::string& name, char weights = 'a') {
  HeldModel m;
  m.name = name;
  m.files = {{"config.json", Hex('1')}, {"tokenizer.json", Hex('2')}};
  m.weights_sha256 = Hex(weights);
  m.weights_size_bytes = 1000;
  return m;
}

TrainerRegistration Reg(const std::string& name, std::vector<HeldModel> models = {Model("tiny")},
                        DeviceKind kind = DeviceKind::kCpu) {
  TrainerRegistration r;
  r.name = name;
  r.device_kind = kind;
  r.device_name = "test cpu";
  r.device_memory_bytes = 1 << 30;
  r.metrics_address = "127.0.0.1:9401";
  r.models = std::move(models);
  return r;
}

Assignment Work(const std::string& job, int64_t generation = 1, int rank = 0) {
  Assignment a;
  a.ref = AssignmentRef{job, generation, rank};
  a.base_model = "tiny";
  return a;
}

AssignmentStatus Listed(const AssignmentRef& ref, int64_t step = 0) {
  return AssignmentStatus{ref, AssignmentPhase::kTraining, step};
}

class RegistryTest : public ::testing::Test {
 protected:
  void SetUp() override { registry_ = *TrainerRegistry::Create(RegistryOptions{}, &clock_); }

  RegisterResult MustRegister(const TrainerRegistration& r) {
    absl::StatusOr<RegisterResult> result = registry_->Register(r);
    EXPECT_TRUE(result.ok()) << result.status();
    return *result;
  }
  HeartbeatReply MustBeat(const RegisterResult& s, std::vector<AssignmentStatus> statuses = {}) {
    absl::StatusOr<HeartbeatReply> reply = registry_->Heartbeat(s.trainer_id, s.session_id, statuses);
    EXPECT_TRUE(reply.ok()) << reply.status();
    return reply.ok() ? *reply : HeartbeatReply{};
  }
  TrainerState State(const std::string& id) { return registry_->GetTrainer(id)->state; }

  FakeClock clock_;
  std::unique_ptr<TrainerRegistry> registry_;
};

TEST(RegistryOptionsTest, Validate) {
  EXPECT_TRUE(RegistryOptions{}.Validate().ok());
  RegistryOptions o;
  o.lease = o.heartbeat_interval;
  EXPECT_EQ(o.Validate().code(), absl::StatusCode::kInvalidArgument);
  o = RegistryOptions{};
  o.heartbeat_interval = absl::ZeroDuration();
  EXPECT_EQ(o.Validate().code(), absl::StatusCode::kInvalidArgument);
}

TEST(TrainerRegistrationTest, ValidateTable) {
  struct Case {
    std::string name;
    std::function<void(TrainerRegistration&)> mutate;
    absl::StatusCode want;
  };
  const std::vector<Case> cases = {
      {"valid", [](TrainerRegistration&) {}, absl::StatusCode::kOk},
      {"empty name", [](TrainerRegistration& r) { r.name = ""; }, absl::StatusCode::kInvalidArgument},
      {"slash in name", [](TrainerRegistration& r) { r.name = "a/b"; }, absl::StatusCode::kInvalidArgument},
      {"dotdot name", [](TrainerRegistration& r) { r.name = ".."; }, absl::StatusCode::kInvalidArgument},
      {"name too long", [](TrainerRegistration& r) { r.name = std::string(129, 'x'); }, absl::StatusCode::kInvalidArgument},
      {"control char", [](TrainerRegistration& r) { r.name = std::string("a\0b", 3); }, absl::StatusCode::kInvalidArgument},
      {"bad utf8", [](TrainerRegistration& r) { r.name = "a\xff"; }, absl::StatusCode::kInvalidArgument},
      {"utf8 name ok", [](TrainerRegistration& r) { r.name = "gpu-n\xc5\x93ud-0"; }, absl::StatusCode::kOk},
      {"trailing space", [](TrainerRegistration& r) { r.name = "a "; }, absl::StatusCode::kInvalidArgument},
      {"unspecified device", [](TrainerRegistration& r) { r.device_kind = DeviceKind::kUnspecified; },
       absl::StatusCode::kInvalidArgument},
      {"no metrics ok", [](TrainerRegistration& r) { r.metrics_address = ""; }, absl::StatusCode::kOk},
      {"ipv6 metrics ok", [](TrainerRegistration& r) { r.metrics_address = "[::1]:9401"; }, absl::StatusCode::kOk},
      {"metrics no port", [](TrainerRegistration& r) { r.metrics_address = "localhost"; }, absl::StatusCode::kInvalidArgument},
      {"metrics port 0", [](TrainerRegistration& r) { r.metrics_address = "h:0"; }, absl::StatusCode::kInvalidArgument},
      {"metrics port big", [](TrainerRegistration& r) { r.metrics_address = "h:70000"; }, absl::StatusCode::kInvalidArgument},
      {"no config.json", [](TrainerRegistration& r) { r.models[0].files.erase("config.json"); },
       absl::StatusCode::kInvalidArgument},
      {"no tokenizer", [](TrainerRegistration& r) { r.models[0].files.erase("tokenizer.json"); },
       absl::StatusCode::kInvalidArgument},
      {"sentencepiece ok",
       [](TrainerRegistration& r) {
         r.models[0].files.erase("tokenizer.json");
         r.models[0].files["tokenizer.model"] = Hex('3');
       },
       absl::StatusCode::kOk},
      {"bad weights digest", [](TrainerRegistration& r) { r.models[0].weights_sha256 = "ABC"; },
       absl::StatusCode::kInvalidArgument},
      {"uppercase file digest", [](TrainerRegistration& r) { r.models[0].files["config.json"] = Hex('A'); },
       absl::StatusCode::kInvalidArgument},
      {"bad model name", [](TrainerRegistration& r) { r.models[0].name = "../x"; }, absl::StatusCode::kInvalidArgument},
      {"duplicate model", [](TrainerRegistration& r) { r.models.push_back(r.models[0]); },
       absl::StatusCode::kInvalidArgument},
      {"65 models",
       [](TrainerRegistration& r) {
         r.models.clear();
         for (int i = 0; i < 65; ++i) r.models.push_back(Model(StrCat("m", i)));
       },
       absl::StatusCode::kResourceExhausted},
      {"33 files",
       [](TrainerRegistration& r) {
         for (int i = 0; i < 31; ++i) r.models[0].files[StrCat("f", i)] = Hex('4');
       },
       absl::StatusCode::kResourceExhausted},
      {"no models ok", [](TrainerRegistration& r) { r.models.clear(); }, absl::StatusCode::kOk},
  };
  for (const Case& c : cases) {
    TrainerRegistration r = Reg("t1");
    c.mutate(r);
    EXPECT_EQ(r.Validate().code(), c.want) << c.name << ": " << r.Validate();
  }
}

TEST_F(RegistryTest, IdIsStablePerNameAndSessionsAreNew) {
  RegisterResult first = MustRegister(Reg("t1"));
  EXPECT_EQ(first.trainer_id, TrainerIdForName("t1"));
  EXPECT_EQ(first.trainer_id.rfind("tr_", 0), 0u);
  EXPECT_EQ(first.heartbeat_interval, absl::Seconds(5));
  EXPECT_EQ(first.lease, absl::Seconds(15));
  EXPECT_NE(MustRegister(Reg("t2")).trainer_id, first.trainer_id);

  clock_.Advance(absl::Seconds(16));
  ASSERT_EQ(registry_->ExpireLeases().size(), 2u);
  RegisterResult second = MustRegister(Reg("t1"));
  EXPECT_EQ(second.trainer_id, first.trainer_id);
  EXPECT_NE(second.session_id, first.session_id);
  // The old session is over.
  EXPECT_EQ(registry_->Heartbeat(first.trainer_id, first.session_id, {}).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_TRUE(registry_->Heartbeat(second.trainer_id, second.session_id, {}).ok());
}

TEST_F(RegistryTest, LiveSessionBlocksTheNameUntilItsLeaseIsExpired) {
  MustRegister(Reg("t1"));
  EXPECT_EQ(registry_->Register(Reg("t1")).status().code(), absl::StatusCode::kAlreadyExists);
  clock_.Advance(absl::Seconds(16));
  // Lease over, but its LOST transition has not been reported yet.
  EXPECT_EQ(registry_->Register(Reg("t1")).status().code(), absl::StatusCode::kAlreadyExists);
  registry_->ExpireLeases();
  EXPECT_TRUE(registry_->Register(Reg("t1")).ok());
}

TEST_F(RegistryTest, HeartbeatErrors) {
  RegisterResult s = MustRegister(Reg("t1"));
  EXPECT_EQ(registry_->Heartbeat("", s.session_id, {}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(registry_->Heartbeat(s.trainer_id, "", {}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(registry_->Heartbeat(s.trainer_id, "ses_nope", {}).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(registry_->Heartbeat("tr_nope", s.session_id, {}).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(registry_->Heartbeat(s.trainer_id, s.session_id, {Listed(AssignmentRef{"", 1, 0})}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(registry_->Heartbeat(s.trainer_id, s.session_id, {Listed(AssignmentRef{"j", 0, 0})}).status().code(),
            absl::StatusCode::kInvalidArgument);
  clock_.Advance(absl::Seconds(16));
  EXPECT_EQ(registry_->Heartbeat(s.trainer_id, s.session_id, {}).status().code(), absl::StatusCode::kNotFound);
}

TEST_F(RegistryTest, HeartbeatsRenewTheLease) {
  RegisterResult s = MustRegister(Reg("t1"));
  for (int i = 0; i < 10; ++i) {
    clock_.Advance(absl::Seconds(14));
    MustBeat(s);
    EXPECT_TRUE(registry_->ExpireLeases().empty());
  }
  clock_.Advance(absl::Seconds(15));
  EXPECT_TRUE(registry_->ExpireLeases().empty());  // exactly the lease: still live
  clock_.Advance(absl::Seconds(1));
  EXPECT_EQ(registry_->ExpireLeases().size(), 1u);
  EXPECT_EQ(State(s.trainer_id), TrainerState::kLost);
}

TEST_F(RegistryTest, LostTrainerReportsItsWorkAndStepThenIsForgottenAfterRetention) {
  RegisterResult s = MustRegister(Reg("t1"));
  ASSERT_TRUE(registry_->AssignWorld({s.trainer_id}, {Work("job_a")}).ok());
  MustBeat(s);
  MustBeat(s, {Listed(Work("job_a").ref, 42)});
  clock_.Advance(absl::Seconds(16));
  std::vector<LostTrainer> lost = registry_->ExpireLeases();
  ASSERT_EQ(lost.size(), 1u);
  EXPECT_EQ(lost[0].name, "t1");
  ASSERT_TRUE(lost[0].assignment.has_value());
  EXPECT_EQ(*lost[0].assignment, Work("job_a").ref);
  EXPECT_EQ(lost[0].step, 42);
  EXPECT_TRUE(registry_->ExpireLeases().empty());  // reported once
  std::optional<TrainerInfo> info = registry_->GetTrainer(s.trainer_id);
  EXPECT_EQ(info->state, TrainerState::kLost);
  EXPECT_FALSE(info->assignment.has_value());
  EXPECT_TRUE(registry_->ListModels()[0].trainer_ids.empty());
  EXPECT_TRUE(registry_->LiveTrainers().empty());

  clock_.Advance(absl::Hours(24));
  registry_->ExpireLeases();
  EXPECT_TRUE(registry_->ListTrainers().empty());
  EXPECT_EQ(registry_->ListModels().size(), 1u);  // models stay known
}

TEST_F(RegistryTest, AssignmentIsResentUntilListed) {
  RegisterResult s = MustRegister(Reg("t1"));
  EXPECT_EQ(State(s.trainer_id), TrainerState::kIdle);
  ASSERT_TRUE(registry_->AssignWorld({s.trainer_id}, {Work("job_a")}).ok());
  EXPECT_EQ(State(s.trainer_id), TrainerState::kBusy);
  EXPECT_EQ(MustBeat(s).assignments.size(), 1u);
  EXPECT_EQ(MustBeat(s).assignments.size(), 1u);  // answer lost? sent again
  HeartbeatReply acked = MustBeat(s, {Listed(Work("job_a").ref, 3)});
  EXPECT_TRUE(acked.assignments.empty());
  EXPECT_TRUE(acked.cancellations.empty());
  EXPECT_EQ(registry_->GetTrainer(s.trainer_id)->step, 3);
  EXPECT_EQ(registry_->GetTrainer(s.trainer_id)->assignment->job_id, "job_a");
}

TEST_F(RegistryTest, CancellationIsResentUntilTheTrainerLetsGo) {
  RegisterResult s = MustRegister(Reg("t1"));
  const AssignmentRef ref = Work("job_a").ref;
  ASSERT_TRUE(registry_->AssignWorld({s.trainer_id}, {Work("job_a")}).ok());
  MustBeat(s);
  MustBeat(s, {Listed(ref)});
  EXPECT_FALSE(registry_->Release(s.trainer_id, ref, "job cancelled by user", true));
  EXPECT_EQ(State(s.trainer_id), TrainerState::kBusy);
  for (int i = 0; i < 3; ++i) {
    HeartbeatReply r = MustBeat(s, {Listed(ref)});
    ASSERT_EQ(r.cancellations.size(), 1u);
    EXPECT_EQ(r.cancellations[0].reason, "job cancelled by user");
    EXPECT_FALSE(r.freed);
  }
  HeartbeatReply done = MustBeat(s);
  EXPECT_TRUE(done.cancellations.empty());
  EXPECT_TRUE(done.freed);
  EXPECT_EQ(State(s.trainer_id), TrainerState::kIdle);
}

TEST_F(RegistryTest, CancellationOfUnacknowledgedWorkIsSentOnceEvenIfNeverListed) {
  RegisterResult s = MustRegister(Reg("t1"));
  const AssignmentRef ref = Work("job_a").ref;
  ASSERT_TRUE(registry_->AssignWorld({s.trainer_id}, {Work("job_a")}).ok());
  MustBeat(s);  // delivered, answer maybe lost
  registry_->Release(s.trainer_id, ref, "job cancelled by user", /*send_cancel=*/false);
  HeartbeatReply r = MustBeat(s);
  EXPECT_EQ(r.cancellations.size(), 1u);  // it may have started it: tell it
  EXPECT_FALSE(r.freed);
  EXPECT_TRUE(MustBeat(s).freed);
}

TEST_F(RegistryTest, UndeliveredWorkIsWithdrawnAtOnce) {
  RegisterResult s = MustRegister(Reg("t1"));
  ASSERT_TRUE(registry_->AssignWorld({s.trainer_id}, {Work("job_a")}).ok());
  EXPECT_TRUE(registry_->Release(s.trainer_id, Work("job_a").ref, "cancelled", true));
  EXPECT_EQ(State(s.trainer_id), TrainerState::kIdle);
  HeartbeatReply r = MustBeat(s);
  EXPECT_TRUE(r.assignments.empty());
  EXPECT_TRUE(r.cancellations.empty());
}

TEST_F(RegistryTest, SilentReleaseWaitsForTheTrainerWithoutCancelling) {
  RegisterResult s = MustRegister(Reg("t1"));
  const AssignmentRef ref = Work("job_a").ref;
  ASSERT_TRUE(registry_->AssignWorld({s.trainer_id}, {Work("job_a")}).ok());
  MustBeat(s);
  MustBeat(s, {Listed(ref)});
  registry_->Release(s.trainer_id, ref, "job succeeded", /*send_cancel=*/false);
  HeartbeatReply r = MustBeat(s, {Listed(ref)});
  EXPECT_TRUE(r.cancellations.empty());
  EXPECT_EQ(State(s.trainer_id), TrainerState::kBusy);
  EXPECT_TRUE(registry_->ResolveExit(s.trainer_id, ref));
  EXPECT_EQ(State(s.trainer_id), TrainerState::kIdle);
}

TEST_F(RegistryTest, ListedWorkItDoesNotOwnIsCancelledAndKeepsItBusy) {
  RegisterResult s = MustRegister(Reg("t1"));
  const AssignmentRef stale{"job_old", 1, 0};
  HeartbeatReply r = MustBeat(s, {Listed(stale)});
  ASSERT_EQ(r.cancellations.size(), 1u);
  EXPECT_EQ(r.cancellations[0].ref, stale);
  EXPECT_EQ(State(s.trainer_id), TrainerState::kBusy);
  EXPECT_TRUE(registry_->LiveTrainers()[0].idle == false);
  EXPECT_TRUE(MustBeat(s).freed);
}

TEST_F(RegistryTest, AcknowledgedWorkThatDisappearsIsReportedDropped) {
  RegisterResult s = MustRegister(Reg("t1"));
  const AssignmentRef ref = Work("job_a").ref;
  ASSERT_TRUE(registry_->AssignWorld({s.trainer_id}, {Work("job_a")}).ok());
  MustBeat(s);
  MustBeat(s, {Listed(ref)});
  HeartbeatReply r = MustBeat(s);
  ASSERT_EQ(r.dropped.size(), 1u);
  EXPECT_EQ(r.dropped[0], ref);
  EXPECT_TRUE(r.freed);
}

TEST_F(RegistryTest, AssignWorldIsAllOrNothing) {
  RegisterResult a = MustRegister(Reg("a"));
  RegisterResult b = MustRegister(Reg("b"));
  ASSERT_TRUE(registry_->AssignWorld({b.trainer_id}, {Work("job_x")}).ok());
  EXPECT_EQ(registry_->AssignWorld({a.trainer_id, b.trainer_id}, {Work("job_y", 1, 0), Work("job_y", 1, 1)}).code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(State(a.trainer_id), TrainerState::kIdle);
  EXPECT_EQ(registry_->AssignWorld({"tr_unknown"}, {Work("job_z")}).code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(RegistryTest, ModelsMayChangeOnlyWhenNoLiveTrainerOrJobUsesThem) {
  RegisterResult a = MustRegister(Reg("a", {Model("tiny", 'a')}));
  // Same model, same files: fine.
  MustRegister(Reg("b", {Model("tiny", 'a')}));
  absl::Status conflict = registry_->Register(Reg("c", {Model("tiny", 'b')})).status();
  EXPECT_EQ(conflict.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(std::string(conflict.message()).find("weights differ"), std::string::npos) << conflict;
  HeldModel other_files = Model("tiny", 'a');
  other_files.files["config.json"] = Hex('9');
  conflict = registry_->Register(Reg("c", {other_files})).status();
  EXPECT_EQ(conflict.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(std::string(conflict.message()).find("config.json"), std::string::npos) << conflict;

  clock_.Advance(absl::Seconds(16));
  registry_->ExpireLeases();  // no live holder now
  EXPECT_EQ(registry_->Register(Reg("c", {Model("tiny", 'b')}), {"tiny"}).status().code(),
            absl::StatusCode::kFailedPrecondition);  // an unfinished job uses it
  MustRegister(Reg("c", {Model("tiny", 'b')}));
  std::vector<ModelInfo> models = registry_->ListModels();
  ASSERT_EQ(models.size(), 1u);
  EXPECT_EQ(models[0].model.weights_sha256, Hex('b'));
  EXPECT_EQ(models[0].trainer_ids, std::vector<std::string>{TrainerIdForName("c")});
  (void)a;
}

TEST_F(RegistryTest, ListsTrainersAndModelsByName) {
  MustRegister(Reg("zeta", {Model("m2"), Model("m1")}, DeviceKind::kCuda));
  MustRegister(Reg("alpha", {Model("m1")}));
  std::vector<TrainerInfo> trainers = registry_->ListTrainers();
  ASSERT_EQ(trainers.size(), 2u);
  EXPECT_EQ(trainers[0].registration.name, "alpha");
  EXPECT_EQ(trainers[1].registration.name, "zeta");
  EXPECT_EQ(trainers[1].registration.device_kind, DeviceKind::kCuda);
  EXPECT_EQ(trainers[0].register_time, clock_.Now());
  std::vector<ModelInfo> models = registry_->ListModels();
  ASSERT_EQ(models.size(), 2u);
  EXPECT_EQ(models[0].model.name, "m1");
  EXPECT_EQ(models[0].trainer_ids,
            (std::vector<std::string>{TrainerIdForName("alpha"), TrainerIdForName("zeta")}));
  EXPECT_EQ(models[1].trainer_ids, std::vector<std::string>{TrainerIdForName("zeta")});
}

TEST_F(RegistryTest, RestoredTrainersAreListedLostUntilTheyRegister) {
  registry_->RestoreLost("tr_stored1", Reg("t1"), clock_.Now(), clock_.Now());
  ASSERT_EQ(registry_->ListTrainers().size(), 1u);
  EXPECT_EQ(registry_->ListTrainers()[0].state, TrainerState::kLost);
  EXPECT_EQ(registry_->ListModels().size(), 1u);
  RegisterResult s = MustRegister(Reg("t1"));
  EXPECT_EQ(s.trainer_id, "tr_stored1");  // the id it was stored with
  EXPECT_EQ(State(s.trainer_id), TrainerState::kIdle);
}


// After a coordinator restart: a trainer expected back with its work holds it from its
// registration on (BUSY, nothing delivered) and confirms it by listing it.
TEST_F(RegistryTest, AdoptedWorkIsHeldFromRegistrationAndConfirmedByAHeartbeat) {
  const std::string id = TrainerIdForName("t1");
  ASSERT_TRUE(registry_->ExpectAdoption(id, Work("a", 3)).ok());
  EXPECT_EQ(registry_->ExpectAdoption(id, Work("b", 1)).code(), absl::StatusCode::kFailedPrecondition);
  RegisterResult s = MustRegister(Reg("t1"));
  EXPECT_EQ(s.trainer.state, TrainerState::kBusy);
  ASSERT_TRUE(s.trainer.assignment.has_value());
  EXPECT_EQ(*s.trainer.assignment, Work("a", 3).ref);
  EXPECT_TRUE(registry_->LiveTrainers()[0].idle == false);

  HeartbeatReply reply = MustBeat(s, {Listed(Work("a", 3).ref, 40)});
  EXPECT_TRUE(reply.assignments.empty());  // it runs it already
  EXPECT_TRUE(reply.cancellations.empty());
  EXPECT_EQ(reply.adopted, std::vector<AssignmentRef>{Work("a", 3).ref});
  EXPECT_EQ(registry_->GetTrainer(id)->step, 40);
  EXPECT_TRUE(MustBeat(s, {Listed(Work("a", 3).ref, 41)}).adopted.empty());  // once
  EXPECT_TRUE(registry_->ResolveExit(id, Work("a", 3).ref));
  EXPECT_EQ(State(id), TrainerState::kIdle);
}

TEST_F(RegistryTest, AdoptedWorkNotListedIsDropped) {
  const std::string id = TrainerIdForName("t1");
  ASSERT_TRUE(registry_->ExpectAdoption(id, Work("a")).ok());
  RegisterResult s = MustRegister(Reg("t1"));
  HeartbeatReply reply = MustBeat(s);
  EXPECT_TRUE(reply.adopted.empty());
  EXPECT_EQ(reply.dropped, std::vector<AssignmentRef>{Work("a").ref});
  EXPECT_TRUE(reply.freed);
  EXPECT_EQ(State(id), TrainerState::kIdle);
}

TEST_F(RegistryTest, AdoptionGivenUpBeforeTheTrainerComesBack) {
  // Released with a cancellation: the trainer comes back BUSY stopping its old engine, and is
  // idle only once it no longer lists it.
  const std::string id = TrainerIdForName("t1");
  ASSERT_TRUE(registry_->ExpectAdoption(id, Work("a")).ok());
  EXPECT_FALSE(registry_->Release(id, Work("a").ref, "generation 1 is replaced", true));
  RegisterResult s = MustRegister(Reg("t1"));
  EXPECT_EQ(s.trainer.state, TrainerState::kBusy);
  EXPECT_TRUE(registry_->LiveTrainers()[0].idle == false);
  HeartbeatReply reply = MustBeat(s, {Listed(Work("a").ref)});
  ASSERT_EQ(reply.cancellations.size(), 1u);
  EXPECT_EQ(reply.cancellations[0].reason, "generation 1 is replaced");
  EXPECT_TRUE(reply.dropped.empty());
  EXPECT_EQ(State(id), TrainerState::kBusy);
  EXPECT_TRUE(MustBeat(s).freed);

  // Released without one (the job succeeded), or its exit reported before the trainer
  // registers again: forgotten.
  ASSERT_TRUE(registry_->ExpectAdoption(TrainerIdForName("t2"), Work("b")).ok());
  EXPECT_FALSE(registry_->Release(TrainerIdForName("t2"), Work("b").ref, "", false));
  EXPECT_EQ(MustRegister(Reg("t2")).trainer.state, TrainerState::kIdle);
  ASSERT_TRUE(registry_->ExpectAdoption(TrainerIdForName("t3"), Work("c")).ok());
  registry_->ResolveExit(TrainerIdForName("t3"), Work("c").ref);
  EXPECT_EQ(MustRegister(Reg("t3")).trainer.state, TrainerState::kIdle);
}

TEST_F(RegistryTest, AdoptionOfALiveTrainer) {
  RegisterResult s = MustRegister(Reg("t1"));
  ASSERT_TRUE(registry_->ExpectAdoption(s.trainer_id, Work("a")).ok());  // idle: held at once
  EXPECT_EQ(State(s.trainer_id), TrainerState::kBusy);
  EXPECT_EQ(registry_->ExpectAdoption(s.trainer_id, Work("b")).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(MustBeat(s, {Listed(Work("a").ref)}).adopted.size(), 1u);
  // Released after confirmation: a cancellation, as for any delivered work.
  EXPECT_FALSE(registry_->Release(s.trainer_id, Work("a").ref, "generation replaced", true));
  ASSERT_EQ(MustBeat(s, {Listed(Work("a").ref)}).cancellations.size(), 1u);
  EXPECT_TRUE(MustBeat(s).freed);
}

}  // namespace
}  // namespace herd::coordinator
