// herd_metrics: Prometheus counters, gauges and histograms with labels, and the registry that
// renders them in the text exposition format (DESIGN.md §7). No gRPC, no torch.
//
// Use: register a family once, keep the handles for the label values you update, update them
// on the hot path (one relaxed atomic operation, no lock, no map lookup):
//
//   Registry registry;
//   auto tokens = registry.AddCounter({.name = "herd_train_tokens_total",
//                                      .help = "Tokens trained on.",
//                                      .label_names = {"job_id", "rank"}});
//   if (!tokens.ok()) return tokens.status();
//   Counter c = (*tokens)->WithLabels(job_id, "0");   // creates the series at 0
//   c.Increment(batch_tokens);                         // hot path
//   ...
//   (*tokens)->RemoveWhere("job_id", job_id);          // the job ended
//
// Handles share ownership of their series: a handle outlives the removal of its series (its
// updates then go nowhere) and is cheap to copy, though callers should keep it, not re-fetch it.
#ifndef HERD_COMMON_METRICS_METRICS_H_
#define HERD_COMMON_METRICS_METRICS_H_

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"

namespace herd::metrics {

enum class MetricType { kCounter, kGauge, kHistogram };
// "counter", "gauge", "histogram": the word on the # TYPE line.
std::string_view MetricTypeName(MetricType type);

// What a family is called and how it is labelled.
struct MetricOptions {
  // Full metric name, [a-zA-Z_:][a-zA-Z0-9_:]*, no "__" prefix. By convention (DESIGN.md §7):
  // "herd_" prefix, base units (_seconds, _bytes, _ratio), and counters must end in "_total".
  std::string name;
  // Required: one line saying what is measured and in which unit.
  std::string help;
  // Label names in the order WithLabels takes the values. Default: none, a single series.
  // [a-zA-Z_][a-zA-Z0-9_]*, unique, no "__" prefix, never "le" (histogram buckets own it).
  std::vector<std::string> label_names = {};
  // Histograms only: finite, strictly increasing bucket upper bounds; +Inf is always added.
  // Empty: DefaultBuckets().
  std::vector<double> buckets = {};

  absl::Status Validate(MetricType type) const;
};

// Prometheus's defaults, for latencies in seconds: 0.005 ... 10.
std::vector<double> DefaultBuckets();
// start, start*factor, ..., count bounds. start > 0, factor > 1, count >= 1.
absl::StatusOr<std::vector<double>> ExponentialBuckets(double start, double factor, int count);
// start, start+width, ..., count bounds. width > 0, count >= 1.
absl::StatusOr<std::vector<double>> LinearBuckets(double start, double width, int count);

namespace internal {

// One cache line each, so that threads updating different series do not contend.
struct alignas(64) CounterCell {
  std::atomic<uint64_t> whole{0};  // integral increments: exact and a single lock xadd
  std::atomic<double> fraction{0.0};
  double Value() const;
};

struct alignas(64) GaugeCell {
  std::atomic<double> value{0.0};
};

struct HistogramCell {
  explicit HistogramCell(std::shared_ptr<const std::vector<double>> upper_bounds);
  const std::shared_ptr<const std::vector<double>> bounds;  // finite bounds; +Inf is implied
  const std::unique_ptr<std::atomic<uint64_t>[]> counts;  // per bucket (not cumulative), +Inf last
  alignas(64) std::atomic<double> sum{0.0};
};

}  // namespace internal

// A monotonic counter series.
class Counter {
 public:
  using Cell = internal::CounterCell;
  Counter();  // a detached series: counts, but is rendered nowhere (a placeholder member)

  void Increment(uint64_t n = 1) { cell_->whole.fetch_add(n, std::memory_order_relaxed); }
  // Negative and NaN amounts are dropped: a counter never goes down.
  void Add(double amount) {
    if (!(amount >= 0)) return;
    if (amount < 0x1p53 && amount == static_cast<double>(static_cast<uint64_t>(amount))) {
      Increment(static_cast<uint64_t>(amount));
    } else {
      cell_->fraction.fetch_add(amount, std::memory_order_relaxed);
    }
  }
  double Value() const { return cell_->Value(); }

 private:
  template <typename Metric>
  friend class Family;
  explicit Counter(std::shared_ptr<Cell> cell) : cell_(std::move(cell)) {}
  std::shared_ptr<Cell> cell_;
};

// A gauge series: a value that goes up and down.
class Gauge {
 public:
  using Cell = internal::GaugeCell;
  Gauge();  // detached, like Counter()

  void Set(double value) { cell_->value.store(value, std::memory_order_relaxed); }
  void Add(double delta) { cell_->value.fetch_add(delta, std::memory_order_relaxed); }
  void Increment() { Add(1); }
  void Decrement() { Add(-1); }
  // Seconds since the Unix epoch, for *_timestamp_seconds gauges.
  void SetToCurrentTime();
  double Value() const { return cell_->value.load(std::memory_order_relaxed); }

 private:
  template <typename Metric>
  friend class Family;
  explicit Gauge(std::shared_ptr<Cell> cell) : cell_(std::move(cell)) {}
  std::shared_ptr<Cell> cell_;
};

// A histogram series with fixed buckets.
class Histogram {
 public:
  using Cell = internal::HistogramCell;
  Histogram();  // detached, with only the +Inf bucket

  // A value equal to a bound falls in that bound's bucket (le is "less or equal"); NaN falls in
  // +Inf only, as in Prometheus's Go client.
  void Observe(double value) {
    const std::vector<double>& b = *cell_->bounds;
    const size_t i =
        std::isnan(value)
            ? b.size()
            : static_cast<size_t>(std::lower_bound(b.begin(), b.end(), value) - b.begin());
    cell_->counts[i].fetch_add(1, std::memory_order_relaxed);
    cell_->sum.fetch_add(value, std::memory_order_relaxed);
  }
  uint64_t Count() const;
  double Sum() const { return cell_->sum.load(std::memory_order_relaxed); }

 private:
  template <typename Metric>
  friend class Family;
  explicit Histogram(std::shared_ptr<Cell> cell) : cell_(std::move(cell)) {}
  std::shared_ptr<Cell> cell_;
};

class Registry;

namespace internal {

// What every family has, whatever its kind: the name, HELP, TYPE and label names.
class FamilyBase {
 public:
  virtual ~FamilyBase() = default;
  FamilyBase(const FamilyBase&) = delete;
  FamilyBase& operator=(const FamilyBase&) = delete;

  const std::string& name() const { return options_.name; }
  MetricType type() const { return type_; }
  const std::vector<std::string>& label_names() const { return options_.label_names; }
  // Appends "# HELP", "# TYPE" and every series, in label-value order.
  void Render(std::string* out) const;

 protected:
  FamilyBase(MetricOptions options, MetricType type);
  virtual void RenderSeries(std::string* out) const = 0;
  // Appends {a="x",b="y"} (plus le="..." when given), or nothing for no labels at all.
  void AppendLabels(const std::vector<std::string>& values, std::string_view le,
                    std::string* out) const;
  [[noreturn]] void DieOnArity(size_t got) const;

  const MetricOptions options_;  // validated; histogram buckets filled in
  const MetricType type_;
  const std::shared_ptr<const std::vector<double>> bounds_;  // histograms only
};

}  // namespace internal

// All series of one metric, one per set of label values. Thread-safe.
template <typename Metric>
class Family final : public internal::FamilyBase {
 public:
  using Cell = typename Metric::Cell;

  // The series for these label values (one per label name, in order), created at 0 when new:
  // calling it for known values at startup is how series are pre-initialised. Takes a lock;
  // keep the handle. A wrong number of values is a programming error and aborts the process.
  template <typename... Values>
  Metric WithLabels(const Values&... values) {
    return WithLabelValues(std::vector<std::string>{std::string(values)...});
  }
  Metric WithLabelValues(std::vector<std::string> values);

  // Drops one series (true if it existed). Handles to it keep working but are rendered nowhere;
  // a later WithLabels with the same values starts a fresh series at 0.
  template <typename... Values>
  bool Remove(const Values&... values) {
    return RemoveLabelValues(std::vector<std::string>{std::string(values)...});
  }
  bool RemoveLabelValues(std::vector<std::string> values);
  // Drops every series whose label `label_name` equals `value` (all ranks of an ended job, say).
  int RemoveWhere(std::string_view label_name, std::string_view value);

  size_t series_count() const;

 private:
  friend class Registry;
  Family(MetricOptions options, MetricType type) : FamilyBase(std::move(options), type) {}
  std::shared_ptr<Cell> NewCell() const;
  void RenderSeries(std::string* out) const override;

  mutable absl::Mutex mu_;
  std::map<std::vector<std::string>, std::shared_ptr<Cell>> series_ ABSL_GUARDED_BY(mu_);
};

// Defined in metrics.cc; declared here so that the explicit instantiations below see them.
template <>
std::shared_ptr<Counter::Cell> Family<Counter>::NewCell() const;
template <>
std::shared_ptr<Gauge::Cell> Family<Gauge>::NewCell() const;
template <>
std::shared_ptr<Histogram::Cell> Family<Histogram>::NewCell() const;
template <>
void Family<Counter>::RenderSeries(std::string* out) const;
template <>
void Family<Gauge>::RenderSeries(std::string* out) const;
template <>
void Family<Histogram>::RenderSeries(std::string* out) const;

extern template class Family<Counter>;
extern template class Family<Gauge>;
extern template class Family<Histogram>;
using CounterFamily = Family<Counter>;
using GaugeFamily = Family<Gauge>;
using HistogramFamily = Family<Histogram>;

// Owns families by name and renders them all. Thread-safe. Families live as long as the
// registry, so the pointers it hands out stay valid; the registry must outlive every scrape.
class Registry {
 public:
  Registry() = default;
  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;

  // INVALID_ARGUMENT for options that fail Validate; ALREADY_EXISTS when the name, or a
  // sample name it renders (a histogram's _bucket/_sum/_count), is taken.
  absl::StatusOr<CounterFamily*> AddCounter(MetricOptions options);
  absl::StatusOr<GaugeFamily*> AddGauge(MetricOptions options);
  absl::StatusOr<HistogramFamily*> AddHistogram(MetricOptions options);

  // Runs `hook` at the start of every Render, outside the registry's lock: for gauges that are
  // cheaper to compute at scrape time (queue depth, bytes on disk). Must be thread-safe.
  void AddCollectHook(std::function<void()> hook);

  // Every family sorted by name, in the text exposition format 0.0.4.
  std::string Render() const;

 private:
  template <typename Metric>
  absl::StatusOr<Family<Metric>*> Add(MetricOptions options, MetricType type);

  mutable absl::Mutex mu_;
  std::map<std::string, std::unique_ptr<internal::FamilyBase>> families_ ABSL_GUARDED_BY(mu_);
  std::set<std::string> sample_names_ ABSL_GUARDED_BY(mu_);  // every name a sample line uses
  std::vector<std::function<void()>> hooks_ ABSL_GUARDED_BY(mu_);
};

}  // namespace herd::metrics

#endif  // HERD_COMMON_METRICS_METRICS_H_
