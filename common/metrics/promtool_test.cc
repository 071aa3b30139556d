// Lints a registry's exposition with Debian's promtool (`promtool check metrics`, package
// `prometheus`): every metric kind, special values, escaped labels, and the metric names that
// DESIGN.md §11 requires, registered with the kinds their names imply. Fails without promtool.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "common/file_util.h"
#include "common/metrics/metrics.h"
#include "common/metrics/promtool_lint.h"
#include "gtest/gtest.h"

namespace herd::metrics {
namespace {

// `promtool check metrics` on the text; exit 0 means it parsed and linted clean.
PromtoolLint RunPromtool(const std::string& text) {
  auto lint = LintWithPromtool(text, ::testing::TempDir());
  if (!lint.ok()) {
    ADD_FAILURE() << lint.status() << " (install Debian's `prometheus` package; scripts/setup.sh does)";
    return {};
  }
  return *lint;
}

struct Required {
  MetricType type;
  std::string name;
  std::vector<std::string> labels;
};

TEST(PromtoolTest, EveryKindAndTheRequiredNamesLintClean) {
  const Required kRequired[] = {
      {MetricType::kGauge, "herd_jobs", {"state"}},
      {MetricType::kGauge, "herd_queue_depth", {}},
      {MetricType::kGauge, "herd_trainers", {"state"}},
      {MetricType::kCounter, "herd_rpc_requests_total", {"method", "code"}},
      {MetricType::kHistogram, "herd_rpc_duration_seconds", {"method"}},
      {MetricType::kGauge, "herd_storage_bytes", {"kind"}},
      {MetricType::kGauge, "herd_train_loss", {"job_id", "rank"}},
      {MetricType::kGauge, "herd_eval_loss", {"job_id"}},
      {MetricType::kGauge, "herd_learning_rate", {"job_id"}},
      {MetricType::kGauge, "herd_grad_norm", {"job_id"}},
      {MetricType::kCounter, "herd_train_tokens_total", {"job_id", "rank"}},
      {MetricType::kHistogram, "herd_step_seconds", {"job_id", "rank"}},
      {MetricType::kHistogram, "herd_allreduce_seconds", {"job_id", "rank"}},
      {MetricType::kHistogram, "herd_data_wait_seconds", {"job_id", "rank"}},
      {MetricType::kHistogram, "herd_checkpoint_seconds", {"job_id"}},
      {MetricType::kGauge, "herd_device_memory_bytes", {"job_id", "rank"}},
      {MetricType::kGauge, "herd_mfu_ratio", {"job_id", "rank"}},
      {MetricType::kGauge, "herd_last_progress_timestamp_seconds", {"job_id", "rank"}},
      {MetricType::kCounter, "herd_tenant_trained_tokens_total", {"tenant"}},
  };
  Registry registry;
  for (const Required& m : kRequired) {
    MetricOptions o{
        .name = m.name, .help = "Required by DESIGN.md section 11.", .label_names = m.labels};
    std::vector<std::string> values;
    for (const std::string& l : m.labels) values.push_back(l == "rank" ? "0" : "job_0123");
    switch (m.type) {
      case MetricType::kCounter: {
        auto f = registry.AddCounter(o);
        ASSERT_TRUE(f.ok()) << f.status();
        (*f)->WithLabelValues(values).Increment(42);
        break;
      }
      case MetricType::kGauge: {
        auto f = registry.AddGauge(o);
        ASSERT_TRUE(f.ok()) << f.status();
        (*f)->WithLabelValues(values).Set(0.75);
        break;
      }
      case MetricType::kHistogram: {
        o.buckets = *ExponentialBuckets(0.001, 4, 10);
        auto f = registry.AddHistogram(o);
        ASSERT_TRUE(f.ok()) << f.status();
        (*f)->WithLabelValues(values).Observe(0.3);
        break;
      }
    }
  }
  // Beyond the required names: special values, escapes, empty and unlabelled families.
  GaugeFamily* odd = *registry.AddGauge(
      {.name = "herd_test_values", .help = "Odd values \\ and a\nnewline.", .label_names = {"v"}});
  odd->WithLabels("nan").Set(std::nan(""));
  odd->WithLabels("inf").Set(INFINITY);
  odd->WithLabels("-inf").Set(-INFINITY);
  odd->WithLabels("quote \" backslash \\ newline \n end").Set(-1e-300);
  odd->WithLabels("caf\xC3\xA9 \xFF").Set(1e300);
  ASSERT_TRUE(registry
                  .AddCounter({.name = "herd_test_empty_total",
                               .help = "No series yet.",
                               .label_names = {"tenant"}})
                  .ok());
  ASSERT_TRUE(
      registry.AddHistogram({.name = "herd_test_default_seconds", .help = "Defaults."}).ok());

  const std::string text = registry.Render();
  const PromtoolLint lint = RunPromtool(text);
  EXPECT_EQ(lint.exit_code, 0) << lint.output << "\n--- exposition ---\n" << text;
  EXPECT_EQ(lint.output, "") << lint.output;
}

// The check has teeth: names promtool's linter rejects make it fail.
TEST(PromtoolTest, LintProblemsAreReported) {
  struct Case {
    std::string name;
    std::string expect_in_output;
  };
  const Case kCases[] = {
      {"herd_latency_milliseconds", "base unit"},
      {"herd_stepTime_seconds", "snake_case"},
  };
  for (const Case& c : kCases) {
    Registry registry;
    ASSERT_TRUE(registry.AddGauge({.name = c.name, .help = "Bad name."}).ok());
    const PromtoolLint lint = RunPromtool(registry.Render());
    EXPECT_NE(lint.exit_code, 0) << c.name << ": " << lint.output;
    EXPECT_NE(lint.output.find(c.expect_in_output), std::string::npos) << lint.output;
  }
}

}  // namespace
}  // namespace herd::metrics
