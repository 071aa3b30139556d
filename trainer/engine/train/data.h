// The engine's view of a prepared-data file (datasets/PREPARED_FORMAT.md): the rows of
// datasets/prepared.h's reader (memory-mapped, checked there) turned into batches on the model's
// device. The engine links that reader only (herd_prepared), never the tokenizer.
#ifndef HERD_TRAINER_ENGINE_TRAIN_DATA_H_
#define HERD_TRAINER_ENGINE_TRAIN_DATA_H_

#include <ATen/ATen.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "datasets/prepared.h"
#include "trainer/engine/model/llama.h"

namespace herd::engine {

class PreparedData {
 public:
  // Opens the file and checks its structure; a file without rows is INVALID_ARGUMENT (nothing
  // to train on).
  static absl::StatusOr<std::unique_ptr<PreparedData>> Open(const std::string& path);

  int64_t num_rows() const { return file_->rows(); }
  int64_t seq_len() const { return file_->seq_len(); }
  const std::string& path() const { return path_; }

  // Rows `rows` as a batch on `device`. [B, T] each; `stream_positions` become sequence_ids.
  Batch MakeBatch(const std::vector<int64_t>& rows, const std::vector<int64_t>& stream_positions,
                  at::Device device) const;
  // Trained tokens (targets != -100) in `rows`.
  int64_t TrainedTokens(const std::vector<int64_t>& rows) const;

 private:
  PreparedData(std::string path, std::unique_ptr<datasets::PreparedFile> file)
      : path_(std::move(path)), file_(std::move(file)) {}

  const std::string path_;
  const std::unique_ptr<datasets::PreparedFile> file_;
};

}  // namespace herd::engine

#endif  // HERD_TRAINER_ENGINE_TRAIN_DATA_H_
