// The agent's registration client and heartbeat loop against the real TrainerService skin on
// 127.0.0.1 (port 0), in process: describing a model, the missing-files round trip, the loop's
// heartbeats, re-registration after the session is lost, and a clean stop.
#include "trainer/agent/registration.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <mutex>
#include <sstream>
#include <thread>

#include "common/file_util.h"
#include "common/rpc/rpc.h"
#include "common/sha256.h"
#include "coordinator/clock.h"
#include "coordinator/registry.h"
#include "coordinator/rendezvous.h"
#include "coordinator/scheduler.h"
#include "coordinator/services/trainer_service.h"
#include "coordinator/store/store.h"
#include "coordinator/store/test_util.h"
#include "gtest/gtest.h"
#include "trainer/agent/coordinator_client.h"
#include "trainer/agent/model_scan.h"
#include "trainer/agent/supervisor.h"

namespace herd::agent {
namespace {

namespace co = herd::coordinator;
constexpr char kToken[] = "cluster-token-for-agent-tests-0123456789";

class RegistrationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto store = co::store::Store::Open({.data_dir = dir_.path() + "/data"});
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = *std::move(store);
    ASSERT_TRUE(store_->tokens().ImportToken(co::store::TokenKind::kCluster, "", kToken, "agents").ok());
    // Short intervals so the loop's heartbeats happen within the test.
    registry_ = *co::TrainerRegistry::Create(
        {.heartbeat_interval = absl::Milliseconds(50), .lease = absl::Seconds(5)}, &clock_);
    rendezvous_ = *co::RendezvousStore::Create();
    scheduler_ = *co::Scheduler::Create({}, registry_.get(), rendezvous_.get(), &clock_);
    service_ = std::make_unique<co::services::TrainerService>(store_.get(), scheduler_.get(), rendezvous_.get());
    auto server = rpc::StartServer({.listen = "127.0.0.1:0", .max_message_bytes = kMaxRequestBytes}, {service_.get()});
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(server->server);
    port_ = server->port;
    channel_ = *rpc::MakeChannel(
        {.target = "127.0.0.1:" + std::to_string(server->port), .max_message_bytes = kMaxRequestBytes});

    models_ = dir_.path() + "/models";
    const std::string m = models_ + "/tiny-llama";
    std::filesystem::create_directories(m);
    ASSERT_TRUE(WriteFileAtomic(m + "/config.json",
                                R"({"model_type": "llama", "architectures": ["LlamaForCausalLM"],
                                    "num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 4,
                                    "vocab_size": 256})")
                    .ok());
    ASSERT_TRUE(WriteFileAtomic(m + "/tokenizer.json", R"({"model": {"type": "BPE"}})").ok());
    ASSERT_TRUE(WriteFileAtomic(m + "/model.safetensors", "weights").ok());
  }

  void TearDown() override {
    rendezvous_->Shutdown();
    if (server_) server_->Shutdown();
  }

  TrainerClient Client(const std::string& token = kToken) {
    auto found = ScanModels(models_);
    EXPECT_TRUE(found.ok()) << found.status();
    herd::v1::RegisterTrainerRequest request;
    request.set_name("cpu-test");
    request.mutable_device()->set_kind(herd::v1::DEVICE_KIND_CPU);
    std::map<std::string, std::string> dirs;
    for (const auto& m : *found) {
      auto described = DescribeModel(m);
      EXPECT_TRUE(described.ok()) << described.status();
      *request.add_models() = *described;
      dirs[m.name] = m.path;
    }
    return TrainerClient(channel_, token, request, dirs);
  }

  // A supervisor whose log lines are kept; its engine never needs to run here.
  std::unique_ptr<Supervisor> MakeSupervisor() {
    api_ = std::make_unique<GrpcCoordinator>(channel_, kToken);
    SupervisorOptions o{.engine_path = dir_.path() + "/no-such-engine", .scratch_dir = dir_.path() + "/scratch",
                        .retry_backoff = absl::Milliseconds(20),
                        .report_give_up_on_shutdown = absl::Seconds(1)};
    o.log = [this](const std::string& line) {
      std::lock_guard<std::mutex> lock(log_mu_);
      supervisor_log_ += line + "\n";
    };
    return std::make_unique<Supervisor>(std::move(o), api_.get());
  }
  std::string SupervisorLog() {
    std::lock_guard<std::mutex> lock(log_mu_);
    return supervisor_log_;
  }

  std::mutex log_mu_;
  std::string supervisor_log_;
  std::unique_ptr<GrpcCoordinator> api_;
  co::store::testing::TempDir dir_;
  co::FakeClock clock_;  // leases move only when the test says so; the agent's waits are real
  std::string models_;
  std::unique_ptr<co::store::Store> store_;
  std::unique_ptr<co::TrainerRegistry> registry_;
  std::unique_ptr<co::RendezvousStore> rendezvous_;
  std::unique_ptr<co::Scheduler> scheduler_;
  std::unique_ptr<co::services::TrainerService> service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
  std::shared_ptr<grpc::Channel> channel_;
};

TEST_F(RegistrationTest, DescribeModelHashesFilesAndWeights) {
  auto found = ScanModels(models_);
  ASSERT_TRUE(found.ok());
  auto d = DescribeModel(found->at(0));
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->name(), "tiny-llama");
  ASSERT_EQ(d->files_size(), 2);
  EXPECT_EQ(d->files(0).name(), "config.json");
  EXPECT_FALSE(d->files(0).has_content());
  EXPECT_EQ(d->weights_sha256(), Sha256Hex(Sha256Hex("weights") + "  model.safetensors\n"));
  EXPECT_EQ(d->weights_size_bytes(), 7);
}

TEST_F(RegistrationTest, RegisterSendsMissingFilesAndHeartbeats) {
  TrainerClient client = Client();
  auto session = client.Register();
  ASSERT_TRUE(session.ok()) << session.status();
  EXPECT_EQ(session->trainer_id, co::TrainerIdForName("cpu-test"));
  EXPECT_EQ(session->heartbeat_interval, absl::Milliseconds(50));
  EXPECT_TRUE(store_->blobs().Has(*Sha256File(models_ + "/tiny-llama/config.json")));
  auto beat = client.Heartbeat(*session, {});
  ASSERT_TRUE(beat.ok()) << beat.status();
  EXPECT_EQ(beat->assignments_size(), 0);
}

// Files too big to go together travel in more than one round, each request under 16 MiB.
TEST_F(RegistrationTest, BigFilesTakeSeveralRounds) {
  const std::string m = models_ + "/tiny-llama";
  ASSERT_TRUE(WriteFileAtomic(m + "/tokenizer.json", std::string(9 << 20, 't')).ok());
  ASSERT_TRUE(WriteFileAtomic(m + "/tokenizer_config.json", "{\"x\": \"" + std::string(9 << 20, 'c') + "\"}").ok());
  TrainerClient client = Client();
  auto session = client.Register();
  ASSERT_TRUE(session.ok()) << session.status();
  EXPECT_TRUE(store_->blobs().Has(*Sha256File(m + "/tokenizer.json")));
  EXPECT_TRUE(store_->blobs().Has(*Sha256File(m + "/tokenizer_config.json")));
}

TEST_F(RegistrationTest, LoopReregistersAfterTheSessionEndsAndStops) {
  TrainerClient client = Client();
  auto supervisor = MakeSupervisor();
  absl::Notification stop;
  std::ostringstream log;
  absl::Status result;
  std::thread loop([&] { result = RunAgentLoop(client, *supervisor, stop, log); });
  auto registered_after = [&](absl::Time t) {
    for (int i = 0; i < 500; ++i) {
      auto info = registry_->GetTrainer(co::TrainerIdForName("cpu-test"));
      if (info.has_value() && info->state != co::TrainerState::kLost && info->register_time >= t) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return false;
  };
  ASSERT_TRUE(registered_after(clock_.Now()));
  // The coordinator declares the trainer LOST (its lease ran out): the next heartbeat is
  // NOT_FOUND and the loop registers again.
  clock_.Advance(absl::Seconds(6));
  ASSERT_EQ(scheduler_->Tick().lost.size(), 1u);
  ASSERT_TRUE(registered_after(clock_.Now()));

  stop.Notify();
  loop.join();
  supervisor->Shutdown();
  EXPECT_TRUE(result.ok()) << result;
  // Assignments need a job row with prepared data (TrainerService::FillAssignment); the
  // supervisor's handling of them is tested in supervisor_test.cc against a fake coordinator.
  EXPECT_EQ(SupervisorLog().find("refused"), std::string::npos) << SupervisorLog();
  EXPECT_NE(log.str().find("registering again"), std::string::npos) << log.str();
  EXPECT_NE(log.str().find("stopping"), std::string::npos) << log.str();
}

TEST_F(RegistrationTest, LoopReturnsWhenTheTokenIsRefused) {
  TrainerClient client = Client("wrong-token-wrong-token-wrong-token-0000");
  auto supervisor = MakeSupervisor();
  absl::Notification stop;
  std::ostringstream log;
  absl::Status result = RunAgentLoop(client, *supervisor, stop, log);
  EXPECT_EQ(result.code(), absl::StatusCode::kUnauthenticated);
}

// herd-trainer itself (built beside this test): registers, heartbeats, exits 0 on SIGTERM.
TEST_F(RegistrationTest, HerdTrainerRegistersAndStopsOnSigterm) {
  const std::string binary = std::filesystem::read_symlink("/proc/self/exe").parent_path() / "herd-trainer";
  ASSERT_TRUE(std::filesystem::exists(binary)) << binary;
  const std::string token_file = dir_.path() + "/token";
  ASSERT_TRUE(WriteFileAtomic(token_file, std::string(kToken) + "\n").ok());
  const std::string target = "127.0.0.1:" + std::to_string(port_);
  const std::string out = dir_.path() + "/trainer.log";
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    FILE* f = std::freopen(out.c_str(), "w", stderr);
    (void)f;
    execl(binary.c_str(), binary.c_str(), "--coordinator", target.c_str(), "--models", models_.c_str(), "--name",
          "proc-test", "--token-file", token_file.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  bool registered = false;
  for (int i = 0; i < 1000 && !registered; ++i) {
    registered = registry_->GetTrainer(co::TrainerIdForName("proc-test")).has_value();
    if (!registered) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_TRUE(registered);
  std::this_thread::sleep_for(std::chrono::milliseconds(200));  // a few heartbeats
  kill(pid, SIGTERM);
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  std::string log = ReadFile(out).value_or("");
  EXPECT_TRUE(WIFEXITED(status)) << log;
  EXPECT_EQ(WEXITSTATUS(status), 0) << log;
  EXPECT_NE(log.find("registered as"), std::string::npos) << log;
}

}  // namespace
}  // namespace herd::agent
