// Dataset preparation: JSONL -> records -> examples -> packed rows -> prepared files.
#include "datasets/prepare.h"

#include <cmath>
#include <fstream>
#include <sstream>

#include "common/sha256.h"
#include "common/status.h"
#include "common/strings.h"
#include "nlohmann/json.hpp"

namespace herd::datasets {
namespace {

using nlohmann::ordered_json;

constexpr size_t kProblemsListed = 20;

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

}  // namespace

absl::Status PrepareOptions::Validate() const {
  HERD_RETURN_IF_ERROR(packing.Validate());
  if (!(validation_split >= 0.0 && validation_split < 1.0)) {
    return absl::InvalidArgumentError(
        herd::StrCat("validation_split must be in [0, 1), got ", validation_split));
  }
  if (output_path.empty()) return absl::InvalidArgumentError("no output path");
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
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(herd::StrCat("cannot open ", path));
  std::vector<Record> records;
  ValidationReport report = ValidateJsonl(in, options, &records);
  if (report_out) *report_out = report;
  if (!report.ok(options)) {
    if (report.accepted == 0 && report.invalid == 0) {
      return absl::InvalidArgumentError(herd::StrCat(path, ": no records"));
    }
    return ProblemsError(path, report.invalid, report.problems);
  }
  // ValidateJsonl does not say which lines the records came from; find them again with its rules
  // (blank lines skipped, over-long lines refused, one format per file).
  std::vector<NumberedRecord> out;
  out.reserve(records.size());
  in.clear();
  in.seekg(0);
  std::string line;
  int64_t number = 0;
  while (out.size() < records.size() && std::getline(in, line)) {
    ++number;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos ||
        line.size() > options.max_line_bytes) {
      continue;
    }
    Problem ignored;
    std::optional<Record> r = ParseRecord(line, &ignored);
    if (r && r->format == *report.format) {
      out.push_back({number, std::move(records[out.size()])});
    }
  }
  if (out.size() != records.size()) {
    return absl::InternalError(herd::StrCat(path, ": lost track of record line numbers"));
  }
  return out;
}

absl::StatusOr<PrepareResult> PrepareJsonl(const std::string& jsonl_path,
                                           const Tokenizer& tokenizer,
                                           const PrepareOptions& options) {
  HERD_RETURN_IF_ERROR(options.Validate());
  ValidationOptions vopts;
  vopts.format = options.format;
  vopts.skip_invalid = options.skip_invalid;
  ValidationReport report;
  HERD_ASSIGN_OR_RETURN(std::vector<NumberedRecord> records,
                        ReadJsonlRecords(jsonl_path, vopts, &report));
  PrepareResult result;
  result.format = *report.format;
  result.invalid_skipped = report.invalid;

  ExampleOptions eopts = options.examples;
  if (result.format == RecordFormat::kChat && eopts.chat_template == ChatTemplate::kAuto) {
    HERD_ASSIGN_OR_RETURN(eopts.chat_template, DetectChatTemplate(tokenizer.info().chat_template));
  }
  result.chat_template =
      result.format == RecordFormat::kChat ? eopts.chat_template : ChatTemplate::kAuto;

  // Examples, in file order; records the template refuses are problems like invalid lines.
  std::vector<Example> examples;
  examples.reserve(records.size());
  std::vector<Problem> problems;
  int64_t refused = 0;
  for (const NumberedRecord& nr : records) {
    absl::StatusOr<Example> ex = BuildExample(nr.record, tokenizer, eopts);
    if (ex.ok()) {
      examples.push_back(*std::move(ex));
      continue;
    }
    if (!absl::IsInvalidArgument(ex.status())) {
      return Annotate(ex.status(), herd::StrCat(jsonl_path, ": line ", nr.line));
    }
    ++refused;
    if (problems.size() < kProblemsListed) {
      problems.push_back({nr.line, "", std::string(ex.status().message())});
    }
  }
  if (refused > 0 && !options.skip_invalid) return ProblemsError(jsonl_path, refused, problems);
  result.invalid_skipped += refused;
  result.records = static_cast<int64_t>(examples.size());

  // Seeded split and order: the first k of one permutation are held out, the rest are the
  // training documents in their global order.
  const int64_t n = result.records;
  int64_t k = 0;
  if (options.validation_split > 0) {
    if (n < 2) {
      return absl::InvalidArgumentError(herd::StrCat(
          jsonl_path, ": a validation split needs at least 2 records, the file has ", n));
    }
    k = std::clamp<int64_t>(std::llround(options.validation_split * static_cast<double>(n)), 1,
                            n - 1);
  }
  const std::vector<int64_t> order = SeededPermutation(n, options.seed);
  std::vector<Example> train, validation;
  train.reserve(n - k);
  validation.reserve(k);
  for (int64_t i = 0; i < n; ++i) {
    (i < k ? validation : train).push_back(std::move(examples[order[i]]));
  }
  result.train_records = n - k;
  result.validation_records = k;

  HERD_ASSIGN_OR_RETURN(PreparedRows train_rows, Pack(train, options.packing, &result.train));
  if (train_rows.rows == 0) {
    return absl::InvalidArgumentError(
        herd::StrCat(jsonl_path, ": no documents left to train on (", result.train.dropped_too_long,
                     " longer than max_seq_len ", options.packing.max_seq_len, " dropped, ",
                     result.train.dropped_untrained, " with no trained tokens)"));
  }
  PreparedMetadata meta;
  meta.vocab_size = tokenizer.vocab_size();
  meta.tokenizer_sha256 = tokenizer.info().model_sha256;
  meta.tokenizer_config_sha256 = tokenizer.info().config_sha256;
  HERD_ASSIGN_OR_RETURN(meta.source_sha256, Sha256File(jsonl_path));
  meta.options_json = OptionsJson(options, result.format, result.chat_template);
  meta.split = "train";
  meta.stats_json = SplitStatsJson("train", result.train_records, result.train);
  HERD_RETURN_IF_ERROR(WritePreparedFile(options.output_path, train_rows, meta));

  if (k > 0) {
    HERD_ASSIGN_OR_RETURN(PreparedRows val_rows,
                          Pack(validation, options.packing, &result.validation));
    meta.split = "validation";
    meta.stats_json = SplitStatsJson("validation", k, result.validation);
    HERD_RETURN_IF_ERROR(WritePreparedFile(options.validation_output_path, val_rows, meta));
    result.wrote_validation = true;
  }
  return result;
}

}  // namespace herd::datasets
