// Tokenised documents between preparation's two passes (prepare.cc): each document's kept tokens
// (ids, then trained flags) appended to an unlinked temporary file beside the output, so that
// memory holds only an offset per document and the file vanishes with the process however it
// ends. Read back in any order, from several threads.
#ifndef HERD_DATASETS_DOCUMENT_SPILL_H_
#define HERD_DATASETS_DOCUMENT_SPILL_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "datasets/examples.h"
#include "datasets/packing.h"

namespace herd::datasets {

class DocumentSpill {
 public:
  // A spill file named after `near` (near + ".spill.XXXXXX", unlinked at once).
  static absl::StatusOr<std::unique_ptr<DocumentSpill>> Create(const std::string& near);
  ~DocumentSpill();
  DocumentSpill(const DocumentSpill&) = delete;
  DocumentSpill& operator=(const DocumentSpill&) = delete;

  // Appends the first `kept` tokens of `ex` as the next document (buffered). One thread.
  absl::Status Add(const Example& ex, size_t kept);
  // Writes out what Add buffered; call before reading.
  absl::Status Flush();
  // Document `i`'s kept tokens, read into `buffer` (valid until its next use). Thread-safe.
  absl::StatusOr<DocumentTokens> Read(uint32_t i, std::vector<int32_t>* buffer) const;

 private:
  DocumentSpill(int fd, std::string path) : fd_(fd), path_(std::move(path)) {}
  absl::Status Error(std::string_view what) const;

  const int fd_;
  const std::string path_;
  std::vector<uint64_t> offsets_ = {0};  // document i is at [offsets_[i], offsets_[i + 1])
  std::string buffer_;
};

}  // namespace herd::datasets

#endif  // HERD_DATASETS_DOCUMENT_SPILL_H_
