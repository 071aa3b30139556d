// The prepared-data file (PREPARED_FORMAT.md): packed token rows as one safetensors file, and a
// reader that hands out row spans. Depends on herd_common only, in its own library
// (herd_prepared), so that herd-engine can read prepared data without the tokenizer code.
//
//   input_ids, targets, position_ids, doc_ids   I32 [rows, seq_len]
//   __metadata__: herd_prepared = "1", seq_len, stats (JSON), tokenizer_sha256, ...
#ifndef HERD_DATASETS_PREPARED_H_
#define HERD_DATASETS_PREPARED_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/safetensors.h"

namespace herd::datasets {

// A position without a label (PyTorch's ignore_index).
inline constexpr int32_t kIgnoreTarget = -100;
// doc_ids of padding slots.
inline constexpr int32_t kPadDocId = -1;
inline constexpr char kPreparedFormatVersion[] = "1";

// Rows in memory, row-major [rows, seq_len] each. Per slot: the input id; the id it must predict
// (the next token of the same document when that token is trained, else kIgnoreTarget); its
// position within its document (from 0); the index of its document within the row (kPadDocId on
// padding, whose input id is a pad id and position 0).
struct PreparedRows {
  int64_t seq_len = 0;
  int64_t rows = 0;
  std::vector<int32_t> input_ids, targets, position_ids, doc_ids;
};

// What the file says about how it was made. Strings are stored as metadata values; stats_json
// is a JSON object (packing.h's PackStats::ToJson).
struct PreparedMetadata {
  std::string split = "train";  // "train" | "validation"
  int64_t vocab_size = 0;       // ids are below this
  std::string stats_json = "{}";
  std::string tokenizer_sha256;         // of tokenizer.model (or tokenizer.json)
  std::string tokenizer_config_sha256;  // of tokenizer_config.json; "" when absent
  std::string source_sha256;            // of the JSONL the rows came from
  std::string options_json = "{}";      // the preparation options (format, template, packing, seed)
};

// Writes `rows` atomically (temp file, fsync, rename). INVALID_ARGUMENT when the vectors do not
// hold rows * seq_len values.
absl::Status WritePreparedFile(const std::string& path, const PreparedRows& rows,
                               const PreparedMetadata& metadata);

// Writes a prepared file a few rows at a time, for data larger than memory: the shape is fixed up
// front, Write puts rows in place (from several threads at once if need be), Finish makes the file
// appear (fsync, rename). The bytes are those of WritePreparedFile (Herd's SafetensorsWriter
// layout). Abandoned unfinished, it leaves no file behind.
class PreparedFileWriter {
 public:
  static absl::StatusOr<std::unique_ptr<PreparedFileWriter>> Create(
      const std::string& path, int64_t rows, int64_t seq_len, const PreparedMetadata& metadata);
  ~PreparedFileWriter();
  PreparedFileWriter(const PreparedFileWriter&) = delete;
  PreparedFileWriter& operator=(const PreparedFileWriter&) = delete;

  // Rows [first_row, first_row + rows.rows) of the file. Thread-safe for disjoint ranges, which
  // is the caller's business; INVALID_ARGUMENT on another seq_len, wrong column sizes or rows
  // outside the announced ones.
  absl::Status Write(int64_t first_row, const PreparedRows& rows);
  // FAILED_PRECONDITION unless as many rows were written as announced.
  absl::Status Finish();

 private:
  PreparedFileWriter(std::string path, std::string tmp, int fd, int64_t rows, int64_t seq_len,
                     uint64_t data_start);
  absl::Status WriteAt(const void* data, size_t size, uint64_t offset);

  const std::string path_;
  const std::string tmp_;
  int fd_;
  const int64_t rows_;
  const int64_t seq_len_;
  const uint64_t data_start_;  // file offset of the first tensor's bytes
  std::atomic<int64_t> written_{0};
};

// A prepared file, memory-mapped. Row spans stay valid while the object lives.
class PreparedFile {
 public:
  struct Row {
    std::span<const int32_t> input_ids, targets, position_ids, doc_ids;  // [seq_len] each
  };

  // Opens and checks the structure: the marker and version, the four I32 tensors of one shape
  // [rows, seq_len], seq_len matching the metadata. NOT_FOUND / INVALID_ARGUMENT naming the file.
  static absl::StatusOr<std::unique_ptr<PreparedFile>> Open(const std::string& path);

  int64_t rows() const { return rows_; }
  int64_t seq_len() const { return seq_len_; }
  const PreparedMetadata& metadata() const { return metadata_; }
  // 0 <= i < rows().
  Row row(int64_t i) const;

  // Checks every row's contents (O(file)): ids in [0, vocab_size), targets equal to the next
  // input id of the same document or kIgnoreTarget, positions counting from 0 per document,
  // document indices counting from 0, padding only at the end of a row. The engine can call it
  // once after a download; INVALID_ARGUMENT naming the row and column of the first problem.
  absl::Status Verify() const;

 private:
  PreparedFile() = default;

  std::unique_ptr<SafetensorsFile> file_;
  std::vector<int32_t> copies_;  // only when a tensor in the file is not 4-byte aligned
  const int32_t* input_ids_ = nullptr;
  const int32_t* targets_ = nullptr;
  const int32_t* position_ids_ = nullptr;
  const int32_t* doc_ids_ = nullptr;
  int64_t rows_ = 0;
  int64_t seq_len_ = 0;
  PreparedMetadata metadata_;
};

// The same checks as PreparedFile::Verify on rows in memory.
absl::Status VerifyRows(const PreparedRows& rows, int64_t vocab_size);

}  // namespace herd::datasets

#endif  // HERD_DATASETS_PREPARED_H_
