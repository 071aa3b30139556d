// Families, handles and the registry: golden exposition text, validation, removal, and exact
// totals under concurrent updates.
#include "common/metrics/metrics.h"

#include <cmath>
#include <functional>
#include <limits>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace herd::metrics {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

// Golden tests: a registry filled by `fill` renders exactly `want`.
struct GoldenCase {
  std::string name;
  std::function<void(Registry&)> fill;
  std::string want;
};

TEST(MetricsTest, GoldenExposition) {
  const GoldenCase kCases[] = {
      {"empty registry", [](Registry&) {}, ""},
      {"unlabelled counter starts at 0",
       [](Registry& r) { ASSERT_TRUE(r.AddCounter({.name = "a_total", .help = "A."}).ok()); },
       "# HELP a_total A.\n# TYPE a_total counter\na_total 0\n"},
      {"labelled family without series renders HELP and TYPE only",
       [](Registry& r) {
         ASSERT_TRUE(r.AddGauge({.name = "g", .help = "G.", .label_names = {"x"}}).ok());
       },
       "# HELP g G.\n# TYPE g gauge\n"},
      {"escaping in HELP and label values",
       [](Registry& r) {
         auto f = r.AddCounter(
             {.name = "e_total", .help = "Back\\slash and\nnewline \"q\".", .label_names = {"v"}});
         ASSERT_TRUE(f.ok());
         (*f)->WithLabels("a\\b").Increment();
         (*f)->WithLabels("say \"hi\"\nbye").Increment(2);
       },
       "# HELP e_total Back\\\\slash and\\nnewline \"q\".\n"
       "# TYPE e_total counter\n"
       "e_total{v=\"a\\\\b\"} 1\n"
       "e_total{v=\"say \\\"hi\\\"\\nbye\"} 2\n"},
      {"families sorted by name, labels in declared order, series sorted by values",
       [](Registry& r) {
         auto z = r.AddGauge({.name = "z", .help = "Z."});
         auto m = r.AddGauge({.name = "m", .help = "M.", .label_names = {"rank", "job_id"}});
         ASSERT_TRUE(z.ok() && m.ok());
         (*m)->WithLabels("1", "j2").Set(4);
         (*m)->WithLabels("0", "j2").Set(3);
         (*m)->WithLabels("1", "j1").Set(2);
         (*m)->WithLabels("0", "j1").Set(1);
       },
       "# HELP m M.\n# TYPE m gauge\n"
       "m{rank=\"0\",job_id=\"j1\"} 1\n"
       "m{rank=\"0\",job_id=\"j2\"} 3\n"
       "m{rank=\"1\",job_id=\"j1\"} 2\n"
       "m{rank=\"1\",job_id=\"j2\"} 4\n"
       "# HELP z Z.\n# TYPE z gauge\nz 0\n"},
      {"gauge special values",
       [](Registry& r) {
         auto g = r.AddGauge({.name = "s", .help = "S.", .label_names = {"k"}});
         ASSERT_TRUE(g.ok());
         (*g)->WithLabels("a").Set(std::nan(""));
         (*g)->WithLabels("b").Set(kInf);
         (*g)->WithLabels("c").Set(-kInf);
         (*g)->WithLabels("d").Set(-2.5);
         (*g)->WithLabels("e").Set(1e-9);
       },
       "# HELP s S.\n# TYPE s gauge\n"
       "s{k=\"a\"} NaN\ns{k=\"b\"} +Inf\ns{k=\"c\"} -Inf\ns{k=\"d\"} -2.5\ns{k=\"e\"} 1e-09\n"},
      {"counter mixes whole and fractional amounts",
       [](Registry& r) {
         auto c = r.AddCounter({.name = "c_total", .help = "C."});
         ASSERT_TRUE(c.ok());
         Counter h = (*c)->WithLabels();
         h.Increment(2);
         h.Add(0.5);
         h.Add(3);
         h.Add(-1);            // dropped
         h.Add(std::nan(""));  // dropped
       },
       "# HELP c_total C.\n# TYPE c_total counter\nc_total 5.5\n"},
      {"histogram: cumulative buckets, bound is inclusive, +Inf, _sum, _count",
       [](Registry& r) {
         auto h = r.AddHistogram(
             {.name = "h_seconds", .help = "H.", .label_names = {"op"}, .buckets = {0.5, 1, 2}});
         ASSERT_TRUE(h.ok());
         Histogram read = (*h)->WithLabels("read");
         for (double v : {0.25, 0.5, 1.5, 3.0, 100.0}) read.Observe(v);
         (*h)->WithLabels("write");
       },
       "# HELP h_seconds H.\n# TYPE h_seconds histogram\n"
       "h_seconds_bucket{op=\"read\",le=\"0.5\"} 2\n"
       "h_seconds_bucket{op=\"read\",le=\"1\"} 2\n"
       "h_seconds_bucket{op=\"read\",le=\"2\"} 3\n"
       "h_seconds_bucket{op=\"read\",le=\"+Inf\"} 5\n"
       "h_seconds_sum{op=\"read\"} 105.25\n"
       "h_seconds_count{op=\"read\"} 5\n"
       "h_seconds_bucket{op=\"write\",le=\"0.5\"} 0\n"
       "h_seconds_bucket{op=\"write\",le=\"1\"} 0\n"
       "h_seconds_bucket{op=\"write\",le=\"2\"} 0\n"
       "h_seconds_bucket{op=\"write\",le=\"+Inf\"} 0\n"
       "h_seconds_sum{op=\"write\"} 0\n"
       "h_seconds_count{op=\"write\"} 0\n"},
      {"unlabelled histogram with default buckets and a trailing +Inf given",
       [](Registry& r) {
         auto h = r.AddHistogram({.name = "d", .help = "D."});
         auto i = r.AddHistogram({.name = "i", .help = "I.", .buckets = {1, kInf}});
         ASSERT_TRUE(h.ok() && i.ok());
         (*h)->WithLabels().Observe(0.007);
         (*i)->WithLabels().Observe(std::nan(""));  // +Inf bucket only; the sum turns NaN
       },
       "# HELP d D.\n# TYPE d histogram\n"
       "d_bucket{le=\"0.005\"} 0\nd_bucket{le=\"0.01\"} 1\nd_bucket{le=\"0.025\"} 1\n"
       "d_bucket{le=\"0.05\"} 1\nd_bucket{le=\"0.1\"} 1\nd_bucket{le=\"0.25\"} 1\n"
       "d_bucket{le=\"0.5\"} 1\nd_bucket{le=\"1\"} 1\nd_bucket{le=\"2.5\"} 1\n"
       "d_bucket{le=\"5\"} 1\nd_bucket{le=\"10\"} 1\nd_bucket{le=\"+Inf\"} 1\n"
       "d_sum 0.007\nd_count 1\n"
       "# HELP i I.\n# TYPE i histogram\n"
       "i_bucket{le=\"1\"} 0\ni_bucket{le=\"+Inf\"} 1\ni_sum NaN\ni_count 1\n"},
      {"removed series disappear; invalid UTF-8 is repaired",
       [](Registry& r) {
         auto g = r.AddGauge({.name = "r", .help = "R.", .label_names = {"job_id", "rank"}});
         ASSERT_TRUE(g.ok());
         (*g)->WithLabels("j1", "0").Set(1);
         (*g)->WithLabels("j1", "1").Set(1);
         (*g)->WithLabels("j2", "0").Set(2);
         (*g)->WithLabels("bad\xFF", "0").Set(3);
         EXPECT_EQ((*g)->RemoveWhere("job_id", "j1"), 2);
         EXPECT_FALSE((*g)->Remove("j1", "0"));
       },
       "# HELP r R.\n# TYPE r gauge\n"
       "r{job_id=\"bad\xEF\xBF\xBD\",rank=\"0\"} 3\n"
       "r{job_id=\"j2\",rank=\"0\"} 2\n"},
  };
  for (const GoldenCase& c : kCases) {
    SCOPED_TRACE(c.name);
    Registry registry;
    c.fill(registry);
    EXPECT_EQ(registry.Render(), c.want);
  }
}

TEST(MetricsTest, OptionsValidation) {
  struct Case {
    MetricType type;
    MetricOptions options;
    bool ok;
  };
  const Case kCases[] = {
      {MetricType::kCounter, {.name = "herd_x_total", .help = "h"}, true},
      {MetricType::kCounter, {.name = "herd_x", .help = "h"}, false},  // counters end in _total
      {MetricType::kGauge, {.name = "ns:rate5m", .help = "h"}, true},
      {MetricType::kGauge, {.name = "__x", .help = "h"}, false},
      {MetricType::kGauge, {.name = "1x", .help = "h"}, false},
      {MetricType::kGauge, {.name = "x-y", .help = "h"}, false},
      {MetricType::kGauge, {.name = "x", .help = ""}, false},
      {MetricType::kGauge, {.name = "x", .help = "bad\xFF"}, false},
      {MetricType::kGauge, {.name = "x", .help = "h", .label_names = {"a", "b_2"}}, true},
      {MetricType::kGauge, {.name = "x", .help = "h", .label_names = {"a", "a"}}, false},
      {MetricType::kGauge, {.name = "x", .help = "h", .label_names = {"__a"}}, false},
      {MetricType::kGauge, {.name = "x", .help = "h", .label_names = {"a:b"}}, false},
      {MetricType::kGauge, {.name = "x", .help = "h", .label_names = {""}}, false},
      {MetricType::kGauge, {.name = "x", .help = "h", .label_names = {"le"}}, false},
      {MetricType::kHistogram, {.name = "x", .help = "h", .label_names = {"le"}}, false},
      {MetricType::kGauge, {.name = "x", .help = "h", .buckets = {1}}, false},
      {MetricType::kHistogram, {.name = "x", .help = "h", .buckets = {1, 2, kInf}}, true},
      {MetricType::kHistogram, {.name = "x", .help = "h", .buckets = {1, 1}}, false},
      {MetricType::kHistogram, {.name = "x", .help = "h", .buckets = {2, 1}}, false},
      {MetricType::kHistogram, {.name = "x", .help = "h", .buckets = {kInf, 1}}, false},
      {MetricType::kHistogram, {.name = "x", .help = "h", .buckets = {-kInf, 1}}, false},
      {MetricType::kHistogram, {.name = "x", .help = "h", .buckets = {std::nan(""), 1}}, false},
      {MetricType::kHistogram, {.name = "x", .help = "h", .buckets = {-1, 0, 1}}, true},
  };
  for (const Case& c : kCases) {
    const absl::Status s = c.options.Validate(c.type);
    EXPECT_EQ(s.ok(), c.ok) << MetricTypeName(c.type) << " " << c.options.name << ": " << s;
    if (!s.ok()) {
      EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
    }
  }
}

TEST(MetricsTest, RegistryRejectsTakenNames) {
  Registry r;
  ASSERT_TRUE(r.AddHistogram({.name = "lat_seconds", .help = "h"}).ok());
  ASSERT_TRUE(r.AddCounter({.name = "n_total", .help = "h"}).ok());
  for (const std::string name :
       {"lat_seconds", "lat_seconds_count", "lat_seconds_sum", "lat_seconds_bucket", "n_total"}) {
    EXPECT_EQ(r.AddGauge({.name = name, .help = "h"}).status().code(),
              absl::StatusCode::kAlreadyExists)
        << name;
  }
  ASSERT_TRUE(r.AddGauge({.name = "q_sum", .help = "h"}).ok());
  EXPECT_EQ(r.AddHistogram({.name = "q", .help = "h"}).status().code(),
            absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(r.AddCounter({.name = "bad", .help = "h"}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(MetricsTest, Buckets) {
  EXPECT_EQ(*ExponentialBuckets(0.001, 10, 4), (std::vector<double>{0.001, 0.01, 0.1, 1}));
  EXPECT_EQ(*ExponentialBuckets(1, 2, 3), (std::vector<double>{1, 2, 4}));
  EXPECT_EQ(*LinearBuckets(0, 0.5, 3), (std::vector<double>{0, 0.5, 1}));
  EXPECT_FALSE(ExponentialBuckets(0, 2, 3).ok());
  EXPECT_FALSE(ExponentialBuckets(1, 1, 3).ok());
  EXPECT_FALSE(ExponentialBuckets(1, 2, 0).ok());
  EXPECT_FALSE(ExponentialBuckets(1, 1e300, 5).ok());
  EXPECT_FALSE(LinearBuckets(0, 0, 3).ok());
  EXPECT_FALSE(LinearBuckets(std::nan(""), 1, 3).ok());
  MetricOptions o{.name = "x", .help = "h", .buckets = *ExponentialBuckets(0.01, 2, 16)};
  EXPECT_TRUE(o.Validate(MetricType::kHistogram).ok());
}

TEST(MetricsTest, HandlesShareTheirSeriesAndOutliveRemoval) {
  Registry r;
  CounterFamily* f = *r.AddCounter({.name = "x_total", .help = "h", .label_names = {"k"}});
  Counter a = f->WithLabels("v");
  Counter b = f->WithLabels(std::string("v"));
  a.Increment();
  b.Increment();
  EXPECT_EQ(a.Value(), 2);
  EXPECT_EQ(f->series_count(), 1u);

  EXPECT_TRUE(f->Remove("v"));
  a.Increment();  // still safe, rendered nowhere
  EXPECT_EQ(a.Value(), 3);
  EXPECT_EQ(f->series_count(), 0u);
  EXPECT_EQ(f->WithLabels("v").Value(), 0);  // a fresh series
  EXPECT_EQ(f->RemoveWhere("no_such_label", "v"), 0);

  Counter detached;
  detached.Increment(5);
  EXPECT_EQ(detached.Value(), 5);
  Histogram dh;
  dh.Observe(3);
  EXPECT_EQ(dh.Count(), 1u);
  Gauge dg;
  dg.SetToCurrentTime();
  EXPECT_GT(dg.Value(), 1.6e9);
}

TEST(MetricsTest, CollectHooksRunBeforeEachRender) {
  Registry r;
  GaugeFamily* f = *r.AddGauge({.name = "depth", .help = "h"});
  Gauge g = f->WithLabels();
  int calls = 0;
  r.AddCollectHook([&] { g.Set(++calls); });
  EXPECT_NE(r.Render().find("depth 1\n"), std::string::npos);
  EXPECT_NE(r.Render().find("depth 2\n"), std::string::npos);
}

TEST(MetricsDeathTest, WrongNumberOfLabelValuesAborts) {
  Registry r;
  CounterFamily* f = *r.AddCounter({.name = "x_total", .help = "h", .label_names = {"a", "b"}});
  EXPECT_DEATH(f->WithLabels("only one"), "2 label\\(s\\) \\(a,b\\) but was given 1");
}

TEST(MetricsTest, ConcurrentUpdatesAreExact) {
  constexpr int kThreads = 8;
  constexpr int kPerThread = 100000;
  Registry r;
  Counter c = (*r.AddCounter({.name = "c_total", .help = "h"}))->WithLabels();
  Counter frac = (*r.AddCounter({.name = "f_total", .help = "h"}))->WithLabels();
  Gauge g = (*r.AddGauge({.name = "g", .help = "h"}))->WithLabels();
  Histogram h = (*r.AddHistogram({.name = "h", .help = "h", .buckets = {1, 2}}))->WithLabels();
  GaugeFamily* churn = *r.AddGauge({.name = "churn", .help = "h", .label_names = {"t"}});
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        c.Increment();
        frac.Add(0.5);
        g.Add(t % 2 == 0 ? 2 : -1);
        h.Observe(i % 3);     // 0, 1, 2: one each into le=1, le=1, le=2 (sum exact in doubles)
        if (i % 1000 == 0) {  // series come and go while others scrape
          churn->WithLabels(std::to_string(t)).Set(i);
          if (i % 2000 == 0) churn->Remove(std::to_string(t));
          (void)r.Render();
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  const double n = double{kThreads} * kPerThread;
  EXPECT_EQ(c.Value(), n);
  EXPECT_EQ(frac.Value(), n / 2);
  EXPECT_EQ(g.Value(), kThreads / 2 * kPerThread * 2.0 - kThreads / 2 * kPerThread);
  EXPECT_EQ(h.Count(), static_cast<uint64_t>(n));
  double want_sum = 0;
  for (int i = 0; i < kPerThread; ++i) want_sum += i % 3;
  EXPECT_EQ(h.Sum(), want_sum * kThreads);
  const std::string text = r.Render();
  EXPECT_NE(text.find("c_total 800000\n"), std::string::npos) << text;
  EXPECT_NE(text.find("h_count 800000\n"), std::string::npos) << text;
}

}  // namespace
}  // namespace herd::metrics
