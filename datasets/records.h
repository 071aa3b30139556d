// Dataset records (DESIGN.md §4): the JSONL formats users upload, parsed and validated line by
// line. Problems name the line, the field and the reason, so a user can fix the file.
#ifndef HERD_DATASETS_RECORDS_H_
#define HERD_DATASETS_RECORDS_H_

#include <cstdint>
#include <istream>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace herd::datasets {

enum class RecordFormat { kText, kPromptCompletion, kChat, kAlpaca, kTokenized };

std::string_view FormatName(RecordFormat format);  // "text", "prompt_completion", ...
std::optional<RecordFormat> ParseFormatName(std::string_view name);

struct Message {
  std::string role;  // system | user | assistant
  std::string content;
  std::optional<int> weight;  // 0 or 1; absent = the default policy decides
};

// One parsed record; only the fields of its format are set.
struct Record {
  RecordFormat format = RecordFormat::kText;
  std::string text;                       // text
  std::string prompt, completion;         // prompt_completion
  std::vector<Message> messages;          // chat
  std::string instruction, input, output; // alpaca (input optional)
  std::vector<int64_t> input_ids, labels; // tokenized (labels optional, -100 = not trained)
};

// Why one line was refused.
struct Problem {
  int64_t line = 0;   // 1-based
  std::string field;  // "messages[2].role", "" for the whole line
  std::string reason;
};

// Parses one JSONL line. On failure returns nullopt and fills `problem` (line left 0).
std::optional<Record> ParseRecord(std::string_view json_line, Problem* problem);

struct ValidationOptions {
  std::optional<RecordFormat> format;   // nullopt = detect from the first valid record
  bool skip_invalid = false;            // keep the valid records instead of rejecting the file
  size_t max_problems = 20;             // problems listed in the report
  size_t max_line_bytes = 4 << 20;      // a longer line is a problem, not an allocation
  int64_t max_records = 10'000'000;
};

struct ValidationReport {
  std::optional<RecordFormat> format;
  int64_t accepted = 0;                 // valid records
  int64_t invalid = 0;                  // invalid records (all of them, not only those listed)
  int64_t blank_lines = 0;              // ignored
  std::vector<Problem> problems;        // the first max_problems
  // True when the file is usable under the options: no invalid records, or skip_invalid and at
  // least one valid record.
  bool ok(const ValidationOptions& options) const;
};

// Streams a JSONL file through ParseRecord, enforcing one format per file.
ValidationReport ValidateJsonl(std::istream& in, const ValidationOptions& options,
                               std::vector<Record>* records_out = nullptr);

// ValidateJsonl in two halves, for callers that parse lines on several threads: ParseJsonlLine
// looks at one line alone (thread-safe), JsonlValidator then accounts for the lines in file order
// (one format per file, the record limit, the problem list), so the report is ValidateJsonl's.
struct ParsedLine {
  enum class Kind { kBlank, kRecord, kProblem };
  Kind kind = Kind::kBlank;
  std::optional<Record> record;  // kRecord
  Problem problem;               // kProblem, with its line set
};

// `line` without its '\n' (a trailing '\r' is dropped here); `number` is 1-based. A line longer
// than options.max_line_bytes is a problem and is not parsed.
ParsedLine ParseJsonlLine(std::string_view line, int64_t number, const ValidationOptions& options);
// The problem of a line of `bytes` bytes (after its '\r') that a reader did not keep because it
// is longer than options.max_line_bytes.
ParsedLine OverlongJsonlLine(size_t bytes, int64_t number, const ValidationOptions& options);

class JsonlValidator {
 public:
  explicit JsonlValidator(const ValidationOptions& options);

  // Accounts for the next line in file order (`number` as given to ParseJsonlLine). True when
  // its record is accepted. After the record limit is passed, done() is true and nothing more is
  // accepted: the rest of the file is not read.
  bool Accept(const ParsedLine& line, int64_t number);
  bool done() const { return done_; }
  const ValidationReport& report() const { return report_; }

 private:
  void AddProblem(Problem p);

  const ValidationOptions options_;
  ValidationReport report_;
  bool done_ = false;
};

// "line 7: messages[1].role: must be one of system, user, assistant (got 'bot')".
std::string DescribeProblem(const Problem& problem);

}  // namespace herd::datasets

#endif  // HERD_DATASETS_RECORDS_H_
