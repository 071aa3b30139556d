// AgentMetrics: the herd-trainer table of docs/metrics.md from progress points as the runs see
// them, pre-initialised exits and engine_running, GPU-only series only on CUDA, a job's series
// gone when its run ends, and a scrape that passes promtool.
#include "trainer/agent/agent_metrics.h"

#include <google/protobuf/util/time_util.h>

#include <string>

#include "common/metrics/promtool_lint.h"
#include "gtest/gtest.h"

namespace herd::agent {
namespace {

bool Has(const std::string& text, const std::string& line) { return text.find(line) != std::string::npos; }

herd::v1::AssignmentRef Ref(const std::string& job, int rank = 0) {
  herd::v1::AssignmentRef ref;
  ref.set_job_id(job);
  ref.set_generation(1);
  ref.set_rank(rank);
  return ref;
}

herd::v1::ProgressPoint Point(int rank, int64_t step) {
  herd::v1::ProgressPoint p;
  p.set_rank(rank);
  p.set_step(step);
  p.set_total_steps(10);
  p.set_loss(2.5);
  p.set_learning_rate(1e-4);
  p.set_tokens(100);
  p.set_trained_tokens(80);
  p.set_step_seconds(0.5);
  p.set_allreduce_seconds(0.125);
  p.set_data_wait_seconds(0.001);
  p.set_device_memory_bytes(1 << 20);
  p.set_mfu(0.375);
  *p.mutable_time() = google::protobuf::util::TimeUtil::SecondsToTimestamp(1'700'000'000 + step);
  return p;
}

TEST(AgentMetricsTest, ExitReasonLabels) {
  EXPECT_EQ(ExitReasonLabel(herd::v1::ENGINE_EXIT_REASON_COMPLETED), "COMPLETED");
  EXPECT_EQ(ExitReasonLabel(herd::v1::ENGINE_EXIT_REASON_START_FAILED), "START_FAILED");
}

TEST(AgentMetricsTest, CpuTrainerExportsProgressAndDropsItWhenTheRunEnds) {
  metrics::Registry registry;
  auto m = AgentMetrics::Create(&registry, /*gpu=*/false);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(AgentMetrics::Create(&registry, false).status().code(), absl::StatusCode::kAlreadyExists);
  std::string text = registry.Render();
  EXPECT_TRUE(Has(text, "herd_engine_running 0\n")) << text;
  for (const char* reason : {"COMPLETED", "CANCELLED", "ERROR", "CRASHED", "HUNG", "START_FAILED"}) {
    EXPECT_TRUE(Has(text, std::string("herd_engine_exits_total{reason=\"") + reason + "\"} 0\n")) << reason;
  }
  EXPECT_FALSE(Has(text, "UNSPECIFIED"));
  for (const char* family : {"herd_train_loss gauge", "herd_train_tokens_total counter", "herd_step_seconds histogram",
                             "herd_allreduce_seconds histogram", "herd_data_wait_seconds histogram",
                             "herd_last_progress_timestamp_seconds gauge"}) {
    EXPECT_TRUE(Has(text, std::string("# TYPE ") + family + "\n")) << family;
  }
  EXPECT_FALSE(Has(text, "herd_device_memory_bytes"));  // GPU trainers only
  EXPECT_FALSE(Has(text, "herd_mfu_ratio"));

  (*m)->OnEngineStarted(Ref("job_a"));
  (*m)->OnProgress(Ref("job_a"), Point(0, 1));
  (*m)->OnProgress(Ref("job_a"), Point(0, 2));
  (*m)->OnProgress(Ref("job_b", 1), Point(1, 7));  // another job's rank (an old run's late line)
  text = registry.Render();
  const std::string a = "{job_id=\"job_a\",rank=\"0\"}";
  EXPECT_TRUE(Has(text, "herd_engine_running 1\n"));
  EXPECT_TRUE(Has(text, "herd_train_loss" + a + " 2.5\n")) << text;
  EXPECT_TRUE(Has(text, "herd_train_tokens_total" + a + " 200\n"));
  EXPECT_TRUE(Has(text, "herd_step_seconds_count" + a + " 2\n"));
  EXPECT_TRUE(Has(text, "herd_step_seconds_sum" + a + " 1\n"));
  EXPECT_TRUE(Has(text, "herd_allreduce_seconds_sum" + a + " 0.25\n"));
  EXPECT_TRUE(Has(text, "herd_data_wait_seconds_count" + a + " 2\n"));
  EXPECT_TRUE(Has(text, "herd_last_progress_timestamp_seconds" + a + " 1700000002\n"));
  EXPECT_TRUE(Has(text, "herd_train_tokens_total{job_id=\"job_b\",rank=\"1\"} 100\n"));

  (*m)->OnRunEnded(Ref("job_a"), herd::v1::ENGINE_EXIT_REASON_COMPLETED);
  text = registry.Render();
  EXPECT_TRUE(Has(text, "herd_engine_running 0\n"));
  EXPECT_TRUE(Has(text, "herd_engine_exits_total{reason=\"COMPLETED\"} 1\n"));
  EXPECT_FALSE(Has(text, "job_a")) << text;
  EXPECT_TRUE(Has(text, "job_b"));

  // A new run of the same job starts its series afresh.
  (*m)->OnProgress(Ref("job_a"), Point(0, 3));
  EXPECT_TRUE(Has(registry.Render(), "herd_train_tokens_total" + a + " 100\n"));
}

TEST(AgentMetricsTest, GpuTrainerAddsMemoryAndMfuAndLintsClean) {
  metrics::Registry registry;
  auto m = AgentMetrics::Create(&registry, /*gpu=*/true);
  ASSERT_TRUE(m.ok()) << m.status();
  (*m)->OnEngineStarted(Ref("job_g"));
  (*m)->OnProgress(Ref("job_g"), Point(0, 1));
  herd::v1::ProgressPoint no_mfu = Point(0, 2);
  no_mfu.clear_mfu();
  no_mfu.clear_loss();
  (*m)->OnProgress(Ref("job_g"), no_mfu);
  const std::string text = registry.Render();
  const std::string g = "{job_id=\"job_g\",rank=\"0\"}";
  EXPECT_TRUE(Has(text, "herd_device_memory_bytes" + g + " 1048576\n")) << text;
  EXPECT_TRUE(Has(text, "herd_mfu_ratio" + g + " 0.375\n"));  // the latest known value stays
  EXPECT_TRUE(Has(text, "herd_train_loss" + g + " 2.5\n"));
  auto lint = metrics::LintWithPromtool(text, ::testing::TempDir());
  ASSERT_TRUE(lint.ok()) << lint.status();
  EXPECT_EQ(lint->exit_code, 0) << lint->output << "\n" << text;
  EXPECT_EQ(lint->output, "");

  (*m)->OnRunEnded(Ref("job_g"), herd::v1::ENGINE_EXIT_REASON_ERROR);
  EXPECT_FALSE(Has(registry.Render(), "job_g"));
  EXPECT_TRUE(Has(registry.Render(), "herd_engine_exits_total{reason=\"ERROR\"} 1\n"));
}

}  // namespace
}  // namespace herd::agent
