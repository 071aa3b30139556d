// Lints a registry's exposition with Debian's promtool (`promtool check metrics`, package
// `prometheus`): every metric kind, special values, escaped labels, and the metric names that
// DESIGN.md §11 requires, registered with the kinds their names imply. Fails without promtool.
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "common/file_util.h"
#include "common/metrics/metrics.h"
#include "gtest/gtest.h"

namespace herd::metrics {
namespace {

std::string FindPromtool() {
  if (const char* path = std::getenv("PATH")) {
    std::string dirs(path);
    size_t start = 0;
    while (start <= dirs.size()) {
      size_t end = dirs.find(':', start);
      if (end == std::string::npos) end = dirs.size();
      const std::string candidate = dirs.substr(start, end - start) + "/promtool";
      if (end > start && ::access(candidate.c_str(), X_OK) == 0) return candidate;
      start = end + 1;
    }
  }
  return ::access("/usr/bin/promtool", X_OK) == 0 ? "/usr/bin/promtool" : "";
}

struct Lint {
  int exit_code = -1;
  std::string output;
};

// `promtool check metrics` reads the exposition on stdin; exit 0 means it parsed and linted clean.
Lint RunPromtool(const std::string& text) {
  const std::string promtool = FindPromtool();
  Lint lint;
  if (promtool.empty()) {
    ADD_FAILURE() << "promtool not found on PATH or at /usr/bin/promtool: install Debian's "
                     "`prometheus` package (scripts/setup.sh does)";
    return lint;
  }
  const std::string path = ::testing::TempDir() + "/promtool_input_" + std::to_string(::getpid());
  EXPECT_TRUE(WriteFileAtomic(path, text).ok());
  const std::string command = "'" + promtool + "' check metrics < '" + path + "' 2>&1";
  FILE* pipe = ::popen(command.c_str(), "r");
  if (pipe == nullptr) {
    ADD_FAILURE() << "cannot run " << command;
    return lint;
  }
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), pipe)) > 0) lint.output.append(buf, n);
  const int status = ::pclose(pipe);
  lint.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  std::remove(path.c_str());
  return lint;
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
  const Lint lint = RunPromtool(text);
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
    const Lint lint = RunPromtool(registry.Render());
    EXPECT_NE(lint.exit_code, 0) << c.name << ": " << lint.output;
    EXPECT_NE(lint.output.find(c.expect_in_output), std::string::npos) << lint.output;
  }
}

}  // namespace
}  // namespace herd::metrics
