// herd-metrics-bench: what one metric update costs on the hot path, and what a scrape costs.
// Prints figures only (DESIGN.md §12: speed is measured by programs, not asserted by tests).
//   herd-metrics-bench [iterations per thread, default 20000000]
// Each figure is the best of 3 runs: ns per operation per thread. "shared" = every thread
// updates one handle (one contended cache line); "own" = one series per thread.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "common/metrics/metrics.h"

namespace herd::metrics {
namespace {

// Runs body(thread_index, iterations) on `threads` threads; ns per operation, best of 3.
double NsPerOp(int threads, long iterations, const std::function<void(int, long)>& body) {
  double best = 1e300;
  for (int rep = 0; rep < 3; ++rep) {
    std::vector<std::thread> pool;
    const auto start = std::chrono::steady_clock::now();
    for (int t = 0; t < threads; ++t) pool.emplace_back(body, t, iterations);
    for (auto& t : pool) t.join();
    const std::chrono::duration<double, std::nano> elapsed =
        std::chrono::steady_clock::now() - start;
    best = std::min(best, elapsed.count() / static_cast<double>(iterations));
  }
  return best;
}

int Main(int argc, char** argv) {
  const long n = argc > 1 ? std::atol(argv[1]) : 20000000;
  Registry registry;
  CounterFamily* counters =
      *registry.AddCounter({.name = "bench_total", .help = "h", .label_names = {"t"}});
  GaugeFamily* gauges = *registry.AddGauge({.name = "bench", .help = "h", .label_names = {"t"}});
  HistogramFamily* histograms =
      *registry.AddHistogram({.name = "bench_seconds", .help = "h", .label_names = {"t"}});
  const Counter shared_counter = counters->WithLabels("shared");
  const Histogram shared_histogram = histograms->WithLabels("shared");
  const Gauge shared_gauge = gauges->WithLabels("shared");
  std::vector<Counter> own_counters;
  std::vector<Histogram> own_histograms;
  for (int t = 0; t < 2; ++t) {
    own_counters.push_back(counters->WithLabels(std::to_string(t)));
    own_histograms.push_back(histograms->WithLabels(std::to_string(t)));
  }

  std::printf("herd-metrics-bench: %ld operations per thread, best of 3, %u hardware threads\n", n,
              std::thread::hardware_concurrency());
  std::printf("%-44s %10s\n", "operation", "ns/op");
  const auto row = [](const char* what, double ns) { std::printf("%-44s %10.2f\n", what, ns); };
  row("counter Increment(), 1 thread", NsPerOp(1, n, [&](int, long k) {
        Counter c = shared_counter;
        for (long i = 0; i < k; ++i) c.Increment();
      }));
  row("counter Add(0.5) (CAS loop), 1 thread", NsPerOp(1, n, [&](int, long k) {
        Counter c = shared_counter;
        for (long i = 0; i < k; ++i) c.Add(0.5);
      }));
  row("gauge Set(), 1 thread", NsPerOp(1, n, [&](int, long k) {
        Gauge g = shared_gauge;
        for (long i = 0; i < k; ++i) g.Set(static_cast<double>(i));
      }));
  row("histogram Observe() (11 buckets), 1 thread", NsPerOp(1, n, [&](int, long k) {
        Histogram h = shared_histogram;
        for (long i = 0; i < k; ++i) h.Observe(static_cast<double>(i & 1023) * 0.01);
      }));
  row("counter Increment(), 2 threads, shared", NsPerOp(2, n, [&](int, long k) {
        Counter c = shared_counter;
        for (long i = 0; i < k; ++i) c.Increment();
      }));
  row("counter Increment(), 2 threads, own", NsPerOp(2, n, [&](int t, long k) {
        Counter c = own_counters[t];
        for (long i = 0; i < k; ++i) c.Increment();
      }));
  row("histogram Observe(), 2 threads, shared", NsPerOp(2, n, [&](int, long k) {
        Histogram h = shared_histogram;
        for (long i = 0; i < k; ++i) h.Observe(static_cast<double>(i & 1023) * 0.01);
      }));
  row("histogram Observe(), 2 threads, own", NsPerOp(2, n, [&](int t, long k) {
        Histogram h = own_histograms[t];
        for (long i = 0; i < k; ++i) h.Observe(static_cast<double>(i & 1023) * 0.01);
      }));
  row("WithLabels() lookup (not for hot paths)", NsPerOp(1, n / 20, [&](int, long k) {
        for (long i = 0; i < k; ++i) counters->WithLabels("shared").Increment();
      }));

  // A scrape's size and cost: every per-job series for 2 jobs x 2 ranks.
  Registry scrape;
  const std::vector<std::string> kRankGauges = {"herd_train_loss", "herd_device_memory_bytes",
                                                "herd_mfu_ratio",
                                                "herd_last_progress_timestamp_seconds"};
  const std::vector<std::string> kRankHistograms = {"herd_step_seconds", "herd_allreduce_seconds",
                                                    "herd_data_wait_seconds"};
  std::vector<GaugeFamily*> rank_gauges;
  std::vector<HistogramFamily*> rank_histograms;
  for (const auto& name : kRankGauges) {
    rank_gauges.push_back(
        *scrape.AddGauge({.name = name, .help = "h", .label_names = {"job_id", "rank"}}));
  }
  for (const auto& name : kRankHistograms) {
    rank_histograms.push_back(
        *scrape.AddHistogram({.name = name, .help = "h", .label_names = {"job_id", "rank"}}));
  }
  CounterFamily* tokens = *scrape.AddCounter(
      {.name = "herd_train_tokens_total", .help = "h", .label_names = {"job_id", "rank"}});
  for (const char* job : {"job_00000000000000000001", "job_00000000000000000002"}) {
    for (const char* rank : {"0", "1"}) {
      for (auto* f : rank_gauges) f->WithLabels(job, rank).Set(1.2345);
      for (auto* f : rank_histograms) f->WithLabels(job, rank).Observe(0.3);
      tokens->WithLabels(job, rank).Increment(123456789);
    }
  }
  size_t bytes = 0;
  const double render_ns = NsPerOp(1, 1000, [&](int, long k) {
    for (long i = 0; i < k; ++i) bytes = scrape.Render().size();
  });
  std::printf("Render() of per-rank metrics, 2 jobs x 2 ranks: %zu bytes, %.1f us\n", bytes,
              render_ns / 1000);
  return 0;
}

}  // namespace
}  // namespace herd::metrics

int main(int argc, char** argv) { return herd::metrics::Main(argc, argv); }
