// Preparation of one dataset for one job (DESIGN.md §3 step 4): validate the JSONL (records.h),
// hold out a seeded validation split by record, build examples with the job's template and mask,
// fix a seeded global order, pack, and write the prepared files (prepared.h). Pure over a
// Tokenizer; the tokenizer itself comes from LoadTokenizer (herd_tokenizer_spm), which is why
// the model-directory convenience lives in the herd-prepare tool rather than here.
//
// Streaming: memory does not grow with the tokens of the dataset (only a few small figures per
// record); tokenised documents wait in a temporary file beside the output. Records are tokenised
// on several threads and the files are byte-identical for any number of them.
#ifndef HERD_DATASETS_PREPARE_H_
#define HERD_DATASETS_PREPARE_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "datasets/examples.h"
#include "datasets/packing.h"
#include "datasets/records.h"
#include "datasets/tokenizer.h"

namespace herd::datasets {

struct PrepareOptions {
  std::optional<RecordFormat> format;  // nullopt: detected from the first valid record
  bool skip_invalid = false;           // drop invalid records instead of rejecting the file
  ExampleOptions examples;             // train_on_inputs, chat template
  PackingOptions packing;              // max_seq_len, packing, overflow
  double validation_split = 0.0;       // fraction of records held out, in [0, 1)
  uint64_t seed = 42;                  // validation split and global order
  std::string output_path;             // training rows (required)
  std::string validation_output_path;  // validation rows (required when validation_split > 0)
  int threads = 0;                     // tokenising threads; 0 = the hardware's, at most 8

  static constexpr int kMaxThreads = 256;

  absl::Status Validate() const;
};

struct PrepareResult {
  RecordFormat format = RecordFormat::kText;
  ChatTemplate chat_template = ChatTemplate::kAuto;  // as resolved (chat data only)
  int64_t records = 0;                               // valid records
  int64_t invalid_skipped = 0;                       // invalid records dropped under skip_invalid
  int64_t train_records = 0;
  int64_t validation_records = 0;
  PackStats train, validation;
  bool wrote_validation = false;

  std::string ToJson() const;  // everything above, for --dry-run style reports
};

// A record and its 1-based line in the file.
struct NumberedRecord {
  int64_t line = 0;
  Record record;
};

// Validates and reads a JSONL file. A file that is not ok() under `options` is INVALID_ARGUMENT
// listing the first problems ("line 7: messages[1].role: ..."). `report` may be null.
absl::StatusOr<std::vector<NumberedRecord>> ReadJsonlRecords(const std::string& path,
                                                             const ValidationOptions& options,
                                                             ValidationReport* report);

// The whole preparation. Records the template cannot render count as invalid (rejected unless
// skip_invalid), named by line. INVALID_ARGUMENT when nothing is left to train on.
absl::StatusOr<PrepareResult> PrepareJsonl(const std::string& jsonl_path,
                                           const Tokenizer& tokenizer,
                                           const PrepareOptions& options);

// A permutation of [0, n) that depends only on (n, seed), the same on every platform.
std::vector<int64_t> SeededPermutation(int64_t n, uint64_t seed);

}  // namespace herd::datasets

#endif  // HERD_DATASETS_PREPARE_H_
