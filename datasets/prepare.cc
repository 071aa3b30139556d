// Dataset preparation in two passes over bounded memory. Pass one streams the JSONL: a reader
// cuts it into batches of lines, a pool of threads parses and tokenises each batch, and the batches
// are accounted for in file order (validation, template refusals) while their documents go to a
// spill file; memory keeps only each document's size. Pass two fixes the seeded split and order,
// plans the packing from the sizes and writes the rows a block at a time, reading the documents
// back from the spill. Results do not depend on the number of threads.
#include "datasets/prepare.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <deque>
#include <thread>

#include "absl/synchronization/mutex.h"
#include "common/sha256.h"
#include "common/status.h"
#include "common/strings.h"
#include "datasets/document_spill.h"
#include "datasets/line_reader.h"
#include "nlohmann/json.hpp"

namespace herd::datasets {
namespace {

using nlohmann::ordered_json;

constexpr size_t kProblemsListed = 20;
constexpr int kMaxDefaultThreads = 8;
// Rows of output laid out at a time (about this many bytes of the four columns).
constexpr int64_t kLayoutBlockBytes = 4 << 20;

// SplitMix64: a tiny generator whose output is fixed by its definition (std::shuffle and the
// standard distributions are not the same across standard libraries).
class SplitMix64 {
 public:
  explicit SplitMix64(uint64_t seed) : state_(seed) {}
  uint64_t Next() {
    uint64_t z = (state_ += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }
  // Uniform in [0, n), n > 0, without modulo bias.
  uint64_t Below(uint64_t n) {
    const uint64_t limit = UINT64_MAX - UINT64_MAX % n;
    uint64_t x;
    do x = Next();
    while (x >= limit);
    return x % n;
  }

 private:
  uint64_t state_;
};

absl::Status ProblemsError(std::string_view path, int64_t count,
                           const std::vector<Problem>& problems) {
  std::vector<std::string> lines;
  for (const Problem& p : problems) lines.push_back(DescribeProblem(p));
  return absl::InvalidArgumentError(herd::StrCat(path, ": ", count, " invalid record",
                                                 count == 1 ? "" : "s", ":\n  ",
                                                 herd::StrJoin(lines, "\n  ")));
}

// The file's stats: the split's record count, then the packer's figures.
std::string SplitStatsJson(std::string_view split, int64_t records, const PackStats& stats) {
  ordered_json j = {{"split", split}, {"records", records}};
  const ordered_json figures = ordered_json::parse(stats.ToJson());
  for (const auto& [k, v] : figures.items()) j[k] = v;
  return j.dump();
}

std::string OptionsJson(const PrepareOptions& o, RecordFormat format, ChatTemplate t) {
  ordered_json j = {
      {"format", FormatName(format)},
      {"chat_template", ChatTemplateName(t)},
      {"train_on_inputs", o.examples.train_on_inputs},
      {"max_seq_len", o.packing.max_seq_len},
      {"packing", o.packing.packing},
      {"overflow", OverflowName(o.packing.overflow)},
      {"pad_id", o.packing.pad_id},
      {"validation_split", o.validation_split},
      {"seed", o.seed},
  };
  return j.dump();
}


// One batch of lines on its way through the workers, and what they made of each line.
struct Work {
  struct Line {
    ParsedLine parsed;  // a record is cut down to its format once tokenised
    std::optional<absl::StatusOr<Example>> example;
  };
  LineBatch batch;
  std::vector<Line> lines;
  bool done = false;  // guarded by the pool's mutex
};

// Runs `fn` on submitted work on N threads (on the caller's thread when N = 1). The caller owns
// the work and waits for each item before touching it; destroying the pool drops queued items.
class WorkerPool {
 public:
  WorkerPool(int threads, std::function<void(Work*)> fn) : fn_(std::move(fn)) {
    if (threads > 1) {
      for (int t = 0; t < threads; ++t) threads_.emplace_back([this] { Loop(); });
    }
  }
  ~WorkerPool() {
    {
      absl::MutexLock lock(&mu_);
      stop_ = true;
    }
    for (std::thread& t : threads_) t.join();
  }

  void Submit(Work* w) {
    if (threads_.empty()) {
      fn_(w);
      w->done = true;
      return;
    }
    absl::MutexLock lock(&mu_);
    queue_.push_back(w);
  }

  void Wait(Work* w) {
    absl::MutexLock lock(&mu_, absl::Condition(&w->done));
  }

 private:
  void Loop() {
    for (;;) {
      Work* w;
      {
        absl::MutexLock lock(&mu_, absl::Condition(this, &WorkerPool::Ready));
        if (stop_) return;
        w = queue_.front();
        queue_.pop_front();
      }
      fn_(w);
      absl::MutexLock lock(&mu_);
      w->done = true;
    }
  }
  bool Ready() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stop_ || !queue_.empty(); }

  const std::function<void(Work*)> fn_;
  absl::Mutex mu_;
  std::deque<Work*> queue_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> threads_;
};

int ThreadCount(const PrepareOptions& o) {
  if (o.threads > 0) return o.threads;
  const int hw = static_cast<int>(std::thread::hardware_concurrency());
  return std::clamp(hw, 1, kMaxDefaultThreads);
}

// One PrepareJsonl call.
class Preparation {
 public:
  Preparation(const std::string& path, const Tokenizer& tokenizer, const PrepareOptions& options)
      : path_(path),
        tokenizer_(tokenizer),
        options_(options),
        vopts_{.format = options.format, .skip_invalid = options.skip_invalid},
        validator_(vopts_),
        chat_template_(options.examples.chat_template == ChatTemplate::kAuto
                           ? DetectChatTemplate(tokenizer.info().chat_template)
                           : absl::StatusOr<ChatTemplate>(options.examples.chat_template)) {
    eopts_ = options.examples;
    if (chat_template_.ok()) eopts_.chat_template = *chat_template_;
  }

  absl::StatusOr<PrepareResult> Run();

 private:
  absl::Status Tokenise();  // pass one
  void TokeniseBatch(Work* w) const;
  absl::Status Commit(Work& w);
  // True once the outcome is an error whatever follows: documents need not be kept.
  bool Failing() const {
    const bool strict = !options_.skip_invalid;
    return !fatal_.ok() || template_missing_ ||
           (strict && (validator_.report().invalid > 0 || refused_ > 0));
  }
  // Packs and writes one split: the documents in `order`.
  absl::Status WriteSplit(std::span<const int64_t> order, const std::string& out_path,
                          std::string_view split, int64_t records, PreparedMetadata meta,
                          PackStats* stats, bool must_have_rows);

  const std::string& path_;
  const Tokenizer& tokenizer_;
  const PrepareOptions& options_;
  const ValidationOptions vopts_;
  JsonlValidator validator_;
  const absl::StatusOr<ChatTemplate> chat_template_;
  ExampleOptions eopts_;
  std::unique_ptr<DocumentSpill> spill_;
  std::string source_sha256_;
  std::atomic<bool> tokenise_{true};  // off once no example can matter

  // Accounted in file order by Commit.
  std::vector<DocumentSize> sizes_;  // of the documents kept, by record index
  int64_t refused_ = 0;              // records the template refused
  std::vector<Problem> refusals_;    // the first of them
  absl::Status fatal_;               // the first error that is not the record's fault
  bool template_missing_ = false;    // a chat record, and the model has no usable template
};

void Preparation::TokeniseBatch(Work* w) const {
  const LineBatch& b = w->batch;
  w->lines.resize(b.lines.size());
  for (size_t i = 0; i < b.lines.size(); ++i) {
    const int64_t number = b.first_number + static_cast<int64_t>(i);
    Work::Line& out = w->lines[i];
    out.parsed = b.lines[i].overlong ? OverlongJsonlLine(b.lines[i].size, number, vopts_)
                                     : ParseJsonlLine(b.line(i), number, vopts_);
    if (out.parsed.kind != ParsedLine::Kind::kRecord) continue;
    const RecordFormat format = out.parsed.record->format;
    if (!tokenise_.load(std::memory_order_relaxed) ||
        (options_.format && format != *options_.format) ||
        (format == RecordFormat::kChat && !chat_template_.ok())) {
      continue;  // refused, or no example can matter
    }
    out.example = BuildExample(*out.parsed.record, tokenizer_, eopts_);
    out.parsed.record.emplace().format = format;
  }
}

absl::Status Preparation::Commit(Work& w) {
  const int64_t T = options_.packing.max_seq_len;
  for (size_t i = 0; i < w.lines.size(); ++i) {
    const int64_t number = w.batch.first_number + static_cast<int64_t>(i);
    Work::Line& line = w.lines[i];
    const bool accepted = validator_.Accept(line.parsed, number);
    if (validator_.done()) break;
    if (accepted) {
      if (line.parsed.record->format == RecordFormat::kChat && !chat_template_.ok()) {
        template_missing_ = true;
      } else if (!line.example.has_value()) {
        // Not tokenised: the outcome was already an error.
      } else if (absl::StatusOr<Example>& ex = *line.example; !ex.ok()) {
        if (!absl::IsInvalidArgument(ex.status())) {
          if (fatal_.ok()) fatal_ = Annotate(ex.status(), herd::StrCat(path_, ": line ", number));
        } else {
          ++refused_;
          if (refusals_.size() < kProblemsListed) {
            refusals_.push_back({number, "", std::string(ex.status().message())});
          }
        }
      } else if (!Failing()) {
        DocumentSize size = SizeOf(*ex, options_.packing);
        const bool dropped = (size.tokens > T && options_.packing.overflow == Overflow::kDrop) ||
                             size.trained_targets == 0;
        const size_t kept = dropped ? 0 : std::min<size_t>(size.tokens, static_cast<size_t>(T));
        HERD_RETURN_IF_ERROR(spill_->Add(*ex, kept));
        sizes_.push_back(size);
      }
    }
    // What is left to learn from the file does not need examples.
    if (!fatal_.ok() || template_missing_ ||
        (!options_.skip_invalid && validator_.report().invalid > 0)) {
      tokenise_.store(false, std::memory_order_relaxed);
    }
  }
  return absl::OkStatus();
}

absl::Status Preparation::Tokenise() {
  HERD_ASSIGN_OR_RETURN(std::unique_ptr<LineBatchReader> reader,
                        LineBatchReader::Open(path_, vopts_.max_line_bytes));
  HERD_ASSIGN_OR_RETURN(spill_, DocumentSpill::Create(options_.output_path));
  const int threads = ThreadCount(options_);
  const size_t max_in_flight = threads == 1 ? 1 : static_cast<size_t>(3 * threads);
  std::deque<std::unique_ptr<Work>> in_flight;  // oldest first; outlives the pool
  WorkerPool pool(threads, [this](Work* w) { TokeniseBatch(w); });
  bool eof = false;
  while (!validator_.done()) {
    while (!eof && in_flight.size() < max_in_flight) {
      auto w = std::make_unique<Work>();
      HERD_ASSIGN_OR_RETURN(const bool more, reader->Next(&w->batch));
      if (!more) {
        eof = true;
        break;
      }
      pool.Submit(w.get());
      in_flight.push_back(std::move(w));
    }
    if (in_flight.empty()) break;
    pool.Wait(in_flight.front().get());
    HERD_RETURN_IF_ERROR(Commit(*in_flight.front()));
    in_flight.pop_front();
  }
  if (eof) {
    source_sha256_ = reader->Sha256Hex();
  } else {  // the record limit stopped the reading; the hash is still of the whole file
    HERD_ASSIGN_OR_RETURN(source_sha256_, Sha256File(path_));
  }
  return spill_->Flush();
}

absl::Status Preparation::WriteSplit(std::span<const int64_t> order, const std::string& out_path,
                                     std::string_view split, int64_t records,
                                     PreparedMetadata meta, PackStats* stats,
                                     bool must_have_rows) {
  std::vector<DocumentSize> sizes;
  sizes.reserve(order.size());
  for (int64_t r : order) sizes.push_back(sizes_[r]);
  HERD_ASSIGN_OR_RETURN(const PackPlan plan, PlanPacking(sizes, options_.packing, stats));
  sizes = {};
  if (must_have_rows && plan.rows() == 0) {
    return absl::InvalidArgumentError(
        herd::StrCat(path_, ": no documents left to train on (", stats->dropped_too_long,
                     " longer than max_seq_len ", options_.packing.max_seq_len, " dropped, ",
                     stats->dropped_untrained, " with no trained tokens)"));
  }
  meta.split = std::string(split);
  meta.stats_json = SplitStatsJson(split, records, *stats);
  HERD_ASSIGN_OR_RETURN(std::unique_ptr<PreparedFileWriter> writer,
                        PreparedFileWriter::Create(out_path, plan.rows(), plan.seq_len, meta));
  // Blocks of rows are laid out and written in place on all the threads.
  const int64_t block =
      std::max<int64_t>(1, kLayoutBlockBytes / (plan.seq_len * 4 * int64_t{sizeof(int32_t)}));
  std::atomic<int64_t> next{0};
  absl::Mutex mu;
  absl::Status error;
  const auto work = [&] {
    std::vector<int32_t> buffer;
    const DocumentSource source = [&](uint32_t d) {
      return spill_->Read(static_cast<uint32_t>(order[d]), &buffer);
    };
    PreparedRows rows;
    for (int64_t first; (first = next.fetch_add(block)) < plan.rows();) {
      absl::Status s = LayoutRows(plan, first, std::min(first + block, plan.rows()),
                                  options_.packing, source, &rows);
      if (s.ok()) s = writer->Write(first, rows);
      if (!s.ok()) {
        absl::MutexLock lock(&mu);
        if (error.ok()) error = s;
        next = plan.rows();
      }
    }
  };
  std::vector<std::thread> helpers;
  const int64_t blocks = (plan.rows() + block - 1) / block;
  for (int t = 1; t < std::min<int64_t>(ThreadCount(options_), blocks); ++t) {
    helpers.emplace_back(work);
  }
  work();
  for (std::thread& t : helpers) t.join();
  HERD_RETURN_IF_ERROR(error);
  return writer->Finish();
}

absl::StatusOr<PrepareResult> Preparation::Run() {
  HERD_RETURN_IF_ERROR(Tokenise());
  const ValidationReport& report = validator_.report();
  if (!report.ok(vopts_)) {
    if (report.accepted == 0 && report.invalid == 0) {
      return absl::InvalidArgumentError(herd::StrCat(path_, ": no records"));
    }
    return ProblemsError(path_, report.invalid, report.problems);
  }
  PrepareResult result;
  result.format = *report.format;
  result.invalid_skipped = report.invalid;
  if (result.format == RecordFormat::kChat && !chat_template_.ok()) return chat_template_.status();
  result.chat_template =
      result.format == RecordFormat::kChat ? eopts_.chat_template : ChatTemplate::kAuto;
  if (!fatal_.ok()) return fatal_;
  if (refused_ > 0 && !options_.skip_invalid) return ProblemsError(path_, refused_, refusals_);
  result.invalid_skipped += refused_;
  result.records = static_cast<int64_t>(sizes_.size());

  // Seeded split and order: the first k of one permutation are held out, the rest are the
  // training documents in their global order.
  const int64_t n = result.records;
  int64_t k = 0;
  if (options_.validation_split > 0) {
    if (n < 2) {
      return absl::InvalidArgumentError(herd::StrCat(
          path_, ": a validation split needs at least 2 records, the file has ", n));
    }
    k = std::clamp<int64_t>(std::llround(options_.validation_split * static_cast<double>(n)), 1,
                            n - 1);
  }
  const std::vector<int64_t> order = SeededPermutation(n, options_.seed);
  result.train_records = n - k;
  result.validation_records = k;

  PreparedMetadata meta;
  meta.vocab_size = tokenizer_.vocab_size();
  meta.tokenizer_sha256 = tokenizer_.info().model_sha256;
  meta.tokenizer_config_sha256 = tokenizer_.info().config_sha256;
  meta.source_sha256 = source_sha256_;
  meta.options_json = OptionsJson(options_, result.format, result.chat_template);
  const std::span<const int64_t> all(order);
  HERD_RETURN_IF_ERROR(WriteSplit(all.subspan(k), options_.output_path, "train",
                                  result.train_records, meta, &result.train, true));
  if (k > 0) {
    HERD_RETURN_IF_ERROR(WriteSplit(all.subspan(0, k), options_.validation_output_path,
                                    "validation", k, meta, &result.validation, false));
    result.wrote_validation = true;
  }
  return result;
}

}  // namespace

absl::Status PrepareOptions::Validate() const {
  HERD_RETURN_IF_ERROR(packing.Validate());
  if (!(validation_split >= 0.0 && validation_split < 1.0)) {
    return absl::InvalidArgumentError(
        herd::StrCat("validation_split must be in [0, 1), got ", validation_split));
  }
  if (output_path.empty()) return absl::InvalidArgumentError("no output path");
  if (threads < 0 || threads > PrepareOptions::kMaxThreads) {
    return absl::InvalidArgumentError(
        herd::StrCat("threads must be in [0, ", PrepareOptions::kMaxThreads, "], got ", threads));
  }
  if (validation_split > 0 && validation_output_path.empty()) {
    return absl::InvalidArgumentError("validation_split > 0 needs a validation output path");
  }
  return absl::OkStatus();
}

std::string PrepareResult::ToJson() const {
  ordered_json j = {
      {"format", FormatName(format)},
      {"chat_template", ChatTemplateName(chat_template)},
      {"records", records},
      {"invalid_skipped", invalid_skipped},
      {"train_records", train_records},
      {"validation_records", validation_records},
      {"train", ordered_json::parse(train.ToJson())},
      {"validation", wrote_validation ? ordered_json::parse(validation.ToJson()) : ordered_json()},
  };
  return j.dump();
}

std::vector<int64_t> SeededPermutation(int64_t n, uint64_t seed) {
  std::vector<int64_t> p(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) p[i] = i;
  SplitMix64 rng(seed);
  for (int64_t i = n - 1; i > 0; --i) {
    std::swap(p[i], p[rng.Below(static_cast<uint64_t>(i) + 1)]);
  }
  return p;
}

absl::StatusOr<std::vector<NumberedRecord>> ReadJsonlRecords(const std::string& path,
                                                             const ValidationOptions& options,
                                                             ValidationReport* report_out) {
  HERD_ASSIGN_OR_RETURN(std::unique_ptr<LineBatchReader> reader,
                        LineBatchReader::Open(path, options.max_line_bytes));
  JsonlValidator validator(options);
  std::vector<NumberedRecord> out;
  LineBatch batch;
  while (!validator.done()) {
    HERD_ASSIGN_OR_RETURN(const bool more, reader->Next(&batch));
    if (!more) break;
    for (size_t i = 0; i < batch.lines.size() && !validator.done(); ++i) {
      const int64_t number = batch.first_number + static_cast<int64_t>(i);
      ParsedLine parsed = batch.lines[i].overlong
                              ? OverlongJsonlLine(batch.lines[i].size, number, options)
                              : ParseJsonlLine(batch.line(i), number, options);
      if (validator.Accept(parsed, number)) out.push_back({number, std::move(*parsed.record)});
    }
  }
  const ValidationReport& report = validator.report();
  if (report_out) *report_out = report;
  if (!report.ok(options)) {
    if (report.accepted == 0 && report.invalid == 0) {
      return absl::InvalidArgumentError(herd::StrCat(path, ": no records"));
    }
    return ProblemsError(path, report.invalid, report.problems);
  }
  return out;
}

absl::StatusOr<PrepareResult> PrepareJsonl(const std::string& jsonl_path,
                                           const Tokenizer& tokenizer,
                                           const PrepareOptions& options) {
  HERD_RETURN_IF_ERROR(options.Validate());
  return Preparation(jsonl_path, tokenizer, options).Run();
}

}  // namespace herd::datasets
