// Reading a JSONL file as batches of whole lines in constant memory, for preparation's streaming
// pass (prepare.h): a line is what std::getline returns (no '\n'; a last line without one counts),
// a line longer than the limit is measured but not kept, and the file's SHA-256 is taken on the way
// so the file is read once.
#ifndef HERD_DATASETS_LINE_READER_H_
#define HERD_DATASETS_LINE_READER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "common/sha256.h"

namespace herd::datasets {

// Consecutive lines of a file. A line's bytes are text[offset, offset + size), as in the file
// (a trailing '\r' is still there: ParseJsonlLine drops it); an overlong line keeps no bytes and
// `size` is its length without the '\r'.
struct LineBatch {
  struct Line {
    size_t offset = 0;
    size_t size = 0;
    bool overlong = false;
  };
  int64_t first_number = 1;  // 1-based number of lines[0]
  std::string text;
  std::vector<Line> lines;

  std::string_view line(size_t i) const { return {text.data() + lines[i].offset, lines[i].size}; }
};

class LineBatchReader {
 public:
  // NOT_FOUND when `path` cannot be opened. Lines longer than `max_line_bytes` (after '\r') are
  // overlong; a batch holds about `batch_bytes` of text.
  static absl::StatusOr<std::unique_ptr<LineBatchReader>> Open(const std::string& path,
                                                               size_t max_line_bytes,
                                                               size_t batch_bytes = 256 << 10);
  ~LineBatchReader();
  LineBatchReader(const LineBatchReader&) = delete;
  LineBatchReader& operator=(const LineBatchReader&) = delete;

  // Fills `batch` with the next lines; false (and an empty batch) at the end of the file.
  absl::StatusOr<bool> Next(LineBatch* batch);

  // Hex SHA-256 of the whole file; only after Next has returned false.
  std::string Sha256Hex();

 private:
  LineBatchReader(int fd, std::string path, size_t max_line_bytes, size_t batch_bytes);
  // Reads the next block after the unconsumed bytes; false at the end of the file.
  absl::StatusOr<bool> Fill();
  // Skips the rest of an overlong line whose first bytes are buffered; its length after '\r'.
  absl::StatusOr<size_t> SkipLine();

  const int fd_;
  const std::string path_;
  const size_t max_line_bytes_;
  const size_t batch_bytes_;
  std::string buffer_;  // bytes read and not yet handed out start at pos_
  size_t pos_ = 0;
  bool eof_ = false;
  int64_t next_number_ = 1;
  Sha256 sha_;
};

}  // namespace herd::datasets

#endif  // HERD_DATASETS_LINE_READER_H_
