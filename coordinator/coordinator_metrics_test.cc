// CoordinatorMetrics and the trainers' discovery file, on a real Store, TrainerRegistry,
// Scheduler and ProgressBoard (no server): every family of docs/metrics.md's coordinator table,
// pre-initialised zeros, values after feeding the sources, a job's series gone when it ends,
// storage gauges, and the discovery file's contents as trainers come and go.
#include "coordinator/coordinator_metrics.h"

#include <string>
#include <vector>

#include "common/file_util.h"
#include "common/metrics/metrics.h"
#include "common/metrics/promtool_lint.h"
#include "common/rpc/rpc_metrics.h"
#include "coordinator/store/test_util.h"
#include "coordinator/trainer_discovery.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace herd::coordinator {
namespace {

using store::testing::kTenantA;

bool Has(const std::string& text, const std::string& line) { return text.find(line) != std::string::npos; }

HeldModel Model(const std::string& name) {
  HeldModel m;
  m.name = name;
  m.files = {{"config.json", std::string(64, '1')}, {"tokenizer.json", std::string(64, '2')}};
  m.weights_sha256 = std::string(64, 'a');
  m.weights_size_bytes = 1000;
  return m;
}

TrainerRegistration Reg(const std::string& name, const std::string& metrics_address,
                        DeviceKind kind = DeviceKind::kCpu) {
  TrainerRegistration r;
  r.name = name;
  r.device_kind = kind;
  r.device_name = "test cpu";
  r.device_memory_bytes = 1 << 30;
  r.metrics_address = metrics_address;
  r.models = {Model("tiny")};
  return r;
}

JobRequest Job(const std::string& id, int64_t trainers = 1) {
  JobRequest r;
  r.job_id = id;
  r.tenant = kTenantA;
  r.base_model = "tiny";
  r.trainers = trainers;
  r.global_batch_size = 8 * trainers;
  r.micro_batch_size = 1;
  return r;
}

ProgressSample Point(int64_t step, int64_t trained_tokens, double grad_norm) {
  ProgressSample p;
  p.rank = 0;
  p.step = step;
  p.total_steps = 10;
  p.loss = 2.0;
  p.learning_rate = 0.25 * static_cast<double>(step);
  p.grad_norm = grad_norm;
  p.tokens = 64;
  p.trained_tokens = trained_tokens;
  p.step_seconds = 0.5;
  p.time = absl::Now();
  return p;
}

class CoordinatorMetricsTest : public store::testing::StoreTest {
 protected:
  void SetUp() override {
    StoreTest::SetUp();
    registry_ = *TrainerRegistry::Create(RegistryOptions{}, &clock_);
    rendezvous_ = *RendezvousStore::Create();
    scheduler_ = *Scheduler::Create(SchedulerOptions{}, registry_.get(), rendezvous_.get(), &clock_);
  }

  CoordinatorMetricsSources Sources() {
    return {.jobs = &store_->jobs(),
            .tokens = &store_->tokens(),
            .scheduler = scheduler_.get(),
            .trainers = registry_.get(),
            .progress = &board_,
            .database_path = store_->data_dir() + "/herd.db",
            .blob_dir = store_->blobs().root(),
            .data_dir = store_->data_dir(),
            .blob_scan_interval = absl::ZeroDuration()};
  }

  std::unique_ptr<TrainerRegistry> registry_;
  std::unique_ptr<RendezvousStore> rendezvous_;
  std::unique_ptr<Scheduler> scheduler_;
  ProgressBoard board_;
  metrics::Registry metrics_;
};

TEST_F(CoordinatorMetricsTest, EveryFamilyOfTheContractWithZerosForKnownLabels) {
  auto m = CoordinatorMetrics::Create(&metrics_, {});
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(CoordinatorMetrics::Create(&metrics_, {}).status().code(), absl::StatusCode::kAlreadyExists);
  const std::string text = metrics_.Render();
  struct Family {
    std::string name, type;
  };
  const Family kFamilies[] = {
      {"herd_jobs", "gauge"},
      {"herd_queue_depth", "gauge"},
      {"herd_trainers", "gauge"},
      {"herd_storage_bytes", "gauge"},
      {"herd_data_dir_free_bytes", "gauge"},
      {"herd_data_dir_capacity_bytes", "gauge"},
      {"herd_eval_loss", "gauge"},
      {"herd_learning_rate", "gauge"},
      {"herd_grad_norm", "gauge"},
      {"herd_job_step", "gauge"},
      {"herd_job_total_steps", "gauge"},
      {"herd_checkpoint_seconds", "histogram"},
      {"herd_tenant_trained_tokens_total", "counter"},
      {"herd_preparation_seconds", "histogram"},
      {"herd_preparation_tokens_total", "counter"},
      {"herd_scheduler_decisions_total", "counter"},
  };
  for (const Family& f : kFamilies) {
    EXPECT_TRUE(Has(text, "# TYPE " + f.name + " " + f.type + "\n")) << f.name << "\n" << text;
  }
  for (const char* state : {"VALIDATING", "QUEUED", "RUNNING", "RECOVERING", "PUBLISHING", "SUCCEEDED", "FAILED",
                            "CANCELLED"}) {
    EXPECT_TRUE(Has(text, StrCat("herd_jobs{state=\"", state, "\"} 0\n"))) << state;
  }
  for (const char* state : {"idle", "busy", "lost"}) {
    EXPECT_TRUE(Has(text, StrCat("herd_trainers{state=\"", state, "\"} 0\n"))) << state;
  }
  for (const char* d : {"world_formed", "job_finished", "job_failed", "job_cancelled", "trainer_lost"}) {
    EXPECT_TRUE(Has(text, StrCat("herd_scheduler_decisions_total{decision=\"", d, "\"} 0\n"))) << d;
  }
  EXPECT_TRUE(Has(text, "herd_queue_depth 0\n"));
  EXPECT_TRUE(Has(text, "herd_storage_bytes{kind=\"database\"} 0\n"));
  EXPECT_TRUE(Has(text, "herd_storage_bytes{kind=\"blobs\"} 0\n"));
  EXPECT_TRUE(Has(text, "herd_preparation_tokens_total 0\n"));
  EXPECT_TRUE(Has(text, "herd_preparation_seconds_count 0\n"));
}

TEST_F(CoordinatorMetricsTest, TenantsArePreinitialisedAndStorageMeasured) {
  auto m = CoordinatorMetrics::Create(&metrics_, Sources());
  ASSERT_TRUE(m.ok()) << m.status();
  ASSERT_TRUE(store_->blobs().Put(std::string(1000, 'x')).ok());
  const std::string text = metrics_.Render();
  EXPECT_TRUE(Has(text, "herd_tenant_trained_tokens_total{tenant=\"acme\"} 0\n")) << text;
  EXPECT_TRUE(Has(text, "herd_tenant_trained_tokens_total{tenant=\"globex\"} 0\n"));
  EXPECT_FALSE(Has(text, "herd_storage_bytes{kind=\"database\"} 0\n")) << text;
  EXPECT_FALSE(Has(text, "herd_storage_bytes{kind=\"blobs\"} 0\n")) << text;
  EXPECT_FALSE(Has(text, "herd_data_dir_capacity_bytes 0\n")) << text;
}

TEST_F(CoordinatorMetricsTest, ValuesFromTheSourcesAndSeriesGoneWhenAJobEnds) {
  auto created = CoordinatorMetrics::Create(&metrics_, Sources());
  ASSERT_TRUE(created.ok()) << created.status();
  CoordinatorMetrics& m = **created;
  ASSERT_FALSE(MakeJob(kTenantA, "first").id.empty());
  const store::JobRecord job = MakeJob(kTenantA, "second");
  ASSERT_FALSE(job.id.empty());

  ASSERT_TRUE(registry_->Register(Reg("t1", "127.0.0.1:9401")).ok());
  ASSERT_TRUE(registry_->Register(Reg("t2", "127.0.0.1:9402")).ok());
  auto started = scheduler_->Submit(Job(job.id));
  ASSERT_TRUE(started.ok()) << started.status();
  ASSERT_EQ(started->started.size(), 1u);
  m.OnSchedulerEvents(*started);
  auto queued = scheduler_->Submit(Job("job_waits", 3));
  ASSERT_TRUE(queued.ok()) << queued.status();
  m.OnPrepared(2.5, 1234);
  m.OnCheckpointStored(job.id, 0.25);

  board_.SetTotalSteps(job.id, 10);
  board_.Report(job.id, 1, {Point(1, 100, 2.5)}, {EvalSample{.step = 1, .eval_loss = 1.75, .time = absl::Now()}});
  std::string text = metrics_.Render();
  const std::string label = StrCat("{job_id=\"", job.id, "\"}");
  EXPECT_TRUE(Has(text, "herd_jobs{state=\"VALIDATING\"} 2\n")) << text;
  EXPECT_TRUE(Has(text, "herd_queue_depth 1\n"));
  EXPECT_TRUE(Has(text, "herd_trainers{state=\"busy\"} 1\n"));
  EXPECT_TRUE(Has(text, "herd_trainers{state=\"idle\"} 1\n"));
  EXPECT_TRUE(Has(text, "herd_trainers{state=\"lost\"} 0\n"));
  EXPECT_TRUE(Has(text, "herd_scheduler_decisions_total{decision=\"world_formed\"} 1\n"));
  EXPECT_TRUE(Has(text, "herd_preparation_tokens_total 1234\n"));
  EXPECT_TRUE(Has(text, "herd_preparation_seconds_count 1\n"));
  EXPECT_TRUE(Has(text, "herd_preparation_seconds_sum 2.5\n"));
  EXPECT_TRUE(Has(text, "herd_checkpoint_seconds_count" + label + " 1\n")) << text;
  EXPECT_TRUE(Has(text, "herd_job_step" + label + " 1\n"));
  EXPECT_TRUE(Has(text, "herd_job_total_steps" + label + " 10\n"));
  EXPECT_TRUE(Has(text, "herd_learning_rate" + label + " 0.25\n"));
  EXPECT_TRUE(Has(text, "herd_grad_norm" + label + " 2.5\n"));
  EXPECT_TRUE(Has(text, "herd_eval_loss" + label + " 1.75\n"));
  EXPECT_TRUE(Has(text, "herd_tenant_trained_tokens_total{tenant=\"acme\"} 100\n"));

  // The counter follows the board's running total by differences.
  board_.Report(job.id, 1, {Point(2, 50, 1.5)}, {});
  text = metrics_.Render();
  EXPECT_TRUE(Has(text, "herd_tenant_trained_tokens_total{tenant=\"acme\"} 150\n")) << text;
  EXPECT_TRUE(Has(text, "herd_grad_norm" + label + " 1.5\n"));
  EXPECT_TRUE(Has(text, "herd_job_step" + label + " 2\n"));

  // A step reported after the last scrape still counts when the job ends; its series go.
  board_.Report(job.id, 1, {Point(3, 30, 1.0)}, {});
  auto ended = scheduler_->Finish(job.id, JobEnd::kSucceeded, "adapter published");
  ASSERT_TRUE(ended.ok()) << ended.status();
  m.OnSchedulerEvents(*ended);
  m.OnJobFinal(job.id);
  board_.Forget(job.id);
  text = metrics_.Render();
  EXPECT_TRUE(Has(text, "herd_tenant_trained_tokens_total{tenant=\"acme\"} 180\n")) << text;
  EXPECT_TRUE(Has(text, "herd_scheduler_decisions_total{decision=\"job_finished\"} 1\n"));
  EXPECT_FALSE(Has(text, job.id)) << text;
  EXPECT_TRUE(Has(text, "# TYPE herd_job_step gauge\n"));  // the family stays, empty
}

// The whole coordinator exposition (with the RPC families and a running job) lints clean.
TEST_F(CoordinatorMetricsTest, ScrapeTextPassesPromtool) {
  auto m = CoordinatorMetrics::Create(&metrics_, Sources());
  ASSERT_TRUE(m.ok()) << m.status();
  auto rpc = rpc::RpcMetrics::Create(&metrics_);
  ASSERT_TRUE(rpc.ok()) << rpc.status();
  (*rpc)->OnRpcDone("TrainerService/Heartbeat", grpc::StatusCode::OK, 0.0005);
  (*rpc)->OnRpcDone("JobService/GetJob", grpc::StatusCode::NOT_FOUND, 0.002);
  ASSERT_TRUE(registry_->Register(Reg("t1", "127.0.0.1:9401")).ok());
  ASSERT_TRUE(scheduler_->Submit(Job("job_lint")).ok());
  board_.Report("job_lint", 1, {Point(1, 100, 2.5)}, {EvalSample{.step = 1, .eval_loss = 1.75, .time = absl::Now()}});
  (*m)->OnCheckpointStored("job_lint", 1.5);
  (*m)->OnPrepared(3, 10);
  const std::string text = metrics_.Render();
  ASSERT_TRUE(Has(text, "herd_grad_norm{job_id=\"job_lint\"} 2.5\n")) << text;
  auto lint = metrics::LintWithPromtool(text, dir_.path());
  ASSERT_TRUE(lint.ok()) << lint.status();
  EXPECT_EQ(lint->exit_code, 0) << lint->output << "\n" << text;
  EXPECT_EQ(lint->output, "");
}

TEST(TrainerDiscoveryTest, RendersLiveTrainersWithMetricsAddresses) {
  std::vector<TrainerInfo> trainers(4);
  trainers[0].registration = Reg("a-cpu", "127.0.0.1:9401");
  trainers[1].registration = Reg("b-gpu", "127.0.0.1:9402", DeviceKind::kCuda);
  trainers[1].state = TrainerState::kBusy;
  trainers[2].registration = Reg("c-lost", "127.0.0.1:9403");
  trainers[2].state = TrainerState::kLost;
  trainers[3].registration = Reg("d-none", "");
  const nlohmann::json got = nlohmann::json::parse(RenderTrainerDiscovery(trainers));
  const nlohmann::json want = nlohmann::json::parse(R"([
      {"targets": ["127.0.0.1:9401"], "labels": {"trainer": "a-cpu", "device": "cpu"}},
      {"targets": ["127.0.0.1:9402"], "labels": {"trainer": "b-gpu", "device": "cuda"}}])");
  EXPECT_EQ(got, want) << got.dump();
  EXPECT_EQ(RenderTrainerDiscovery({}), "[]\n");
}

TEST_F(CoordinatorMetricsTest, DiscoveryFileFollowsTheLiveTrainers) {
  const std::string path = dir_.path() + "/prometheus/trainers.json";
  TrainerDiscoveryFile file(path, registry_.get());
  ASSERT_TRUE(file.Refresh().ok());
  auto text = ReadFile(path);
  ASSERT_TRUE(text.ok()) << text.status();
  EXPECT_EQ(*text, "[]\n");

  ASSERT_TRUE(registry_->Register(Reg("t1", "127.0.0.1:9401")).ok());
  clock_.Advance(absl::Seconds(10));
  auto t2 = registry_->Register(Reg("t2", "127.0.0.1:9402"));
  ASSERT_TRUE(t2.ok());
  ASSERT_TRUE(file.Refresh().ok());
  nlohmann::json got = nlohmann::json::parse(*ReadFile(path));
  ASSERT_EQ(got.size(), 2u) << got.dump();
  EXPECT_EQ(got[0]["targets"][0], "127.0.0.1:9401");
  EXPECT_EQ(got[1]["labels"]["trainer"], "t2");

  // t1's lease runs out (t2 heartbeats): it leaves the file.
  clock_.Advance(absl::Seconds(10));
  ASSERT_TRUE(registry_->Heartbeat(t2->trainer_id, t2->session_id, {}).ok());
  EXPECT_EQ(registry_->ExpireLeases().size(), 1u);
  ASSERT_TRUE(file.Refresh().ok());
  got = nlohmann::json::parse(*ReadFile(path));
  ASSERT_EQ(got.size(), 1u) << got.dump();
  EXPECT_EQ(got[0]["labels"]["trainer"], "t2");
}

}  // namespace
}  // namespace herd::coordinator
