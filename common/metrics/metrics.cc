// Families, handles and the registry of herd_metrics; the text format pieces are in
// text_format.cc.
#include "common/metrics/metrics.h"

#include <chrono>
#include <cstdlib>
#include <utility>

#include "common/log.h"
#include "common/metrics/text_format.h"
#include "common/strings.h"

namespace herd::metrics {
namespace {

bool EndsWith(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

// The names a family's sample lines use, besides the family name itself.
std::vector<std::string> SampleNames(const std::string& name, MetricType type) {
  if (type != MetricType::kHistogram) return {name};
  return {name, name + "_bucket", name + "_sum", name + "_count"};
}

std::shared_ptr<const std::vector<double>> NoBounds() {
  static const auto* const kEmpty =
      new std::shared_ptr<const std::vector<double>>(std::make_shared<const std::vector<double>>());
  return *kEmpty;
}

}  // namespace

std::string_view MetricTypeName(MetricType type) {
  switch (type) {
    case MetricType::kCounter:
      return "counter";
    case MetricType::kGauge:
      return "gauge";
    case MetricType::kHistogram:
      return "histogram";
  }
  return "untyped";
}

absl::Status MetricOptions::Validate(MetricType type) const {
  const std::string what = herd::StrCat(MetricTypeName(type), " '", name, "'");
  if (!IsValidMetricName(name) || name.rfind("__", 0) == 0) {
    return absl::InvalidArgumentError(herd::StrCat(
        what, ": a metric name is [a-zA-Z_:][a-zA-Z0-9_:]* and does not start with __"));
  }
  if (type == MetricType::kCounter && !EndsWith(name, "_total")) {
    return absl::InvalidArgumentError(
        herd::StrCat(what, ": counter names end in _total (Prometheus convention)"));
  }
  if (help.empty() || !IsValidUtf8(help)) {
    return absl::InvalidArgumentError(
        herd::StrCat(what, ": help is required (UTF-8: what is measured, in which unit)"));
  }
  std::set<std::string_view> seen;
  for (const std::string& label : label_names) {
    if (!IsValidLabelName(label) || label.rfind("__", 0) == 0) {
      return absl::InvalidArgumentError(herd::StrCat(
          what, ": label name '", label,
          "' is not [a-zA-Z_][a-zA-Z0-9_]* or starts with __ (reserved by Prometheus)"));
    }
    if (label == "le") {
      return absl::InvalidArgumentError(
          herd::StrCat(what, ": label name 'le' is reserved for histogram buckets"));
    }
    if (!seen.insert(label).second) {
      return absl::InvalidArgumentError(herd::StrCat(what, ": label name '", label, "' twice"));
    }
  }
  if (type != MetricType::kHistogram && !buckets.empty()) {
    return absl::InvalidArgumentError(herd::StrCat(what, ": only histograms have buckets"));
  }
  for (size_t i = 0; i < buckets.size(); ++i) {
    const bool last_is_inf = i + 1 == buckets.size() && buckets[i] == INFINITY;
    if (!std::isfinite(buckets[i]) && !last_is_inf) {
      return absl::InvalidArgumentError(herd::StrCat(
          what, ": bucket bound ", FormatValue(buckets[i]), " is not finite (+Inf is implied)"));
    }
    if (i > 0 && !(buckets[i] > buckets[i - 1])) {
      return absl::InvalidArgumentError(
          herd::StrCat(what, ": bucket bounds must be strictly increasing, ",
                       FormatValue(buckets[i]), " follows ", FormatValue(buckets[i - 1])));
    }
  }
  return absl::OkStatus();
}

std::vector<double> DefaultBuckets() {
  return {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
}

absl::StatusOr<std::vector<double>> ExponentialBuckets(double start, double factor, int count) {
  if (!(start > 0) || !(factor > 1) || count < 1 ||
      !std::isfinite(start * std::pow(factor, count))) {
    return absl::InvalidArgumentError(
        herd::StrCat("exponential buckets need start > 0, factor > 1, "
                     "count >= 1 and finite bounds; got start ",
                     start, ", factor ", factor, ", count ", count));
  }
  std::vector<double> b(count);
  for (int i = 0; i < count; ++i) b[i] = start * std::pow(factor, i);
  return b;
}

absl::StatusOr<std::vector<double>> LinearBuckets(double start, double width, int count) {
  if (!std::isfinite(start) || !(width > 0) || count < 1 || !std::isfinite(start + width * count)) {
    return absl::InvalidArgumentError(
        herd::StrCat("linear buckets need a finite start, width > 0 "
                     "and count >= 1; got start ",
                     start, ", width ", width, ", count ", count));
  }
  std::vector<double> b(count);
  for (int i = 0; i < count; ++i) b[i] = start + width * i;
  return b;
}

// ---- series cells and handles ----

double internal::CounterCell::Value() const {
  return static_cast<double>(whole.load(std::memory_order_relaxed)) +
         fraction.load(std::memory_order_relaxed);
}

internal::HistogramCell::HistogramCell(std::shared_ptr<const std::vector<double>> upper_bounds)
    : bounds(std::move(upper_bounds)), counts(new std::atomic<uint64_t>[bounds->size() + 1]()) {}

Counter::Counter() : cell_(std::make_shared<Cell>()) {}
Gauge::Gauge() : cell_(std::make_shared<Cell>()) {}
Histogram::Histogram() : cell_(std::make_shared<Cell>(NoBounds())) {}

void Gauge::SetToCurrentTime() {
  const auto since_epoch = std::chrono::system_clock::now().time_since_epoch();
  Set(std::chrono::duration<double>(since_epoch).count());
}

uint64_t Histogram::Count() const {
  uint64_t total = 0;
  for (size_t i = 0; i <= cell_->bounds->size(); ++i) {
    total += cell_->counts[i].load(std::memory_order_relaxed);
  }
  return total;
}

// ---- families ----

internal::FamilyBase::FamilyBase(MetricOptions options, MetricType type)
    : options_(std::move(options)),
      type_(type),
      bounds_(type == MetricType::kHistogram
                  ? std::make_shared<const std::vector<double>>(options_.buckets)
                  : nullptr) {}

void internal::FamilyBase::Render(std::string* out) const {
  out->append("# HELP ").append(options_.name).push_back(' ');
  AppendEscapedHelp(options_.help, out);
  out->append("\n# TYPE ").append(options_.name).push_back(' ');
  out->append(MetricTypeName(type_)).push_back('\n');
  RenderSeries(out);
}

void internal::FamilyBase::AppendLabels(const std::vector<std::string>& values, std::string_view le,
                                        std::string* out) const {
  if (values.empty() && le.empty()) return;
  out->push_back('{');
  for (size_t i = 0; i < values.size(); ++i) {
    if (i > 0) out->push_back(',');
    out->append(options_.label_names[i]).append("=\"");
    AppendEscapedLabelValue(values[i], out);
    out->push_back('"');
  }
  if (!le.empty()) {
    if (!values.empty()) out->push_back(',');
    out->append("le=\"").append(le).push_back('"');
  }
  out->push_back('}');
}

void internal::FamilyBase::DieOnArity(size_t got) const {
  HERD_LOG(Error) << "metric " << options_.name << " has " << options_.label_names.size()
                  << " label(s) (" << herd::StrJoin(options_.label_names, ",") << ") but was given "
                  << got << " value(s)";
  std::abort();
}

template <typename Metric>
Metric Family<Metric>::WithLabelValues(std::vector<std::string> values) {
  if (values.size() != options_.label_names.size()) DieOnArity(values.size());
  for (std::string& v : values) {
    if (!IsValidUtf8(v)) v = SanitizeUtf8(v);
  }
  absl::MutexLock lock(&mu_);
  std::shared_ptr<Cell>& cell = series_[std::move(values)];
  if (cell == nullptr) cell = NewCell();
  return Metric(cell);
}

template <typename Metric>
bool Family<Metric>::RemoveLabelValues(std::vector<std::string> values) {
  for (std::string& v : values) {
    if (!IsValidUtf8(v)) v = SanitizeUtf8(v);
  }
  absl::MutexLock lock(&mu_);
  return series_.erase(values) > 0;
}

template <typename Metric>
int Family<Metric>::RemoveWhere(std::string_view label_name, std::string_view value) {
  const auto& names = options_.label_names;
  const size_t index = std::find(names.begin(), names.end(), label_name) - names.begin();
  if (index == names.size()) return 0;
  const std::string wanted = IsValidUtf8(value) ? std::string(value) : SanitizeUtf8(value);
  absl::MutexLock lock(&mu_);
  int removed = 0;
  for (auto it = series_.begin(); it != series_.end();) {
    if (it->first[index] == wanted) {
      it = series_.erase(it);
      ++removed;
    } else {
      ++it;
    }
  }
  return removed;
}

template <typename Metric>
size_t Family<Metric>::series_count() const {
  absl::MutexLock lock(&mu_);
  return series_.size();
}

template <>
std::shared_ptr<Counter::Cell> Family<Counter>::NewCell() const {
  return std::make_shared<Counter::Cell>();
}
template <>
std::shared_ptr<Gauge::Cell> Family<Gauge>::NewCell() const {
  return std::make_shared<Gauge::Cell>();
}
template <>
std::shared_ptr<Histogram::Cell> Family<Histogram>::NewCell() const {
  return std::make_shared<Histogram::Cell>(bounds_);
}

template <>
void Family<Counter>::RenderSeries(std::string* out) const {
  absl::MutexLock lock(&mu_);
  for (const auto& [values, cell] : series_) {
    out->append(options_.name);
    AppendLabels(values, "", out);
    out->push_back(' ');
    AppendValue(cell->Value(), out);
    out->push_back('\n');
  }
}

template <>
void Family<Gauge>::RenderSeries(std::string* out) const {
  absl::MutexLock lock(&mu_);
  for (const auto& [values, cell] : series_) {
    out->append(options_.name);
    AppendLabels(values, "", out);
    out->push_back(' ');
    AppendValue(cell->value.load(std::memory_order_relaxed), out);
    out->push_back('\n');
  }
}

template <>
void Family<Histogram>::RenderSeries(std::string* out) const {
  absl::MutexLock lock(&mu_);
  const std::vector<double>& bounds = *bounds_;
  for (const auto& [values, cell] : series_) {
    // _count is the +Inf bucket, so the two always agree within one scrape.
    uint64_t cumulative = 0;
    for (size_t i = 0; i <= bounds.size(); ++i) {
      cumulative += cell->counts[i].load(std::memory_order_relaxed);
      out->append(options_.name).append("_bucket");
      AppendLabels(values, i < bounds.size() ? FormatValue(bounds[i]) : "+Inf", out);
      out->push_back(' ');
      AppendValue(static_cast<double>(cumulative), out);
      out->push_back('\n');
    }
    out->append(options_.name).append("_sum");
    AppendLabels(values, "", out);
    out->push_back(' ');
    AppendValue(cell->sum.load(std::memory_order_relaxed), out);
    out->append("\n").append(options_.name).append("_count");
    AppendLabels(values, "", out);
    out->push_back(' ');
    AppendValue(static_cast<double>(cumulative), out);
    out->push_back('\n');
  }
}

template class Family<Counter>;
template class Family<Gauge>;
template class Family<Histogram>;

// ---- registry ----

template <typename Metric>
absl::StatusOr<Family<Metric>*> Registry::Add(MetricOptions options, MetricType type) {
  if (absl::Status s = options.Validate(type); !s.ok()) return s;
  if (type == MetricType::kHistogram) {
    if (options.buckets.empty()) options.buckets = DefaultBuckets();
    if (options.buckets.back() == INFINITY) options.buckets.pop_back();
  }
  const std::vector<std::string> names = SampleNames(options.name, type);
  absl::MutexLock lock(&mu_);
  for (const std::string& n : names) {
    if (sample_names_.count(n) > 0) {
      return absl::AlreadyExistsError(herd::StrCat("metric '", options.name, "': the name '", n,
                                                   "' is already used by another metric"));
    }
  }
  sample_names_.insert(names.begin(), names.end());
  const bool unlabelled = options.label_names.empty();
  const std::string name = options.name;
  auto* family = new Family<Metric>(std::move(options), type);
  families_.emplace(name, std::unique_ptr<internal::FamilyBase>(family));
  if (unlabelled) family->WithLabels();  // the single series exists from the start, at 0
  return family;
}

absl::StatusOr<CounterFamily*> Registry::AddCounter(MetricOptions options) {
  return Add<Counter>(std::move(options), MetricType::kCounter);
}
absl::StatusOr<GaugeFamily*> Registry::AddGauge(MetricOptions options) {
  return Add<Gauge>(std::move(options), MetricType::kGauge);
}
absl::StatusOr<HistogramFamily*> Registry::AddHistogram(MetricOptions options) {
  return Add<Histogram>(std::move(options), MetricType::kHistogram);
}

void Registry::AddCollectHook(std::function<void()> hook) {
  absl::MutexLock lock(&mu_);
  hooks_.push_back(std::move(hook));
}

std::string Registry::Render() const {
  std::vector<std::function<void()>> hooks;
  {
    absl::MutexLock lock(&mu_);
    hooks = hooks_;
  }
  for (const auto& hook : hooks) hook();
  std::string out;
  absl::MutexLock lock(&mu_);
  for (const auto& [name, family] : families_) family->Render(&out);
  return out;
}

}  // namespace herd::metrics
