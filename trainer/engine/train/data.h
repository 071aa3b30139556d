// The engine's view of a prepared-data file (datasets/PREPARED_FORMAT.md): memory-mapped rows of
// input ids, targets, positions and document ids, turned into batches on the model's device.
// Reads the file through herd_common only: the engine never links the tokenizer.
#ifndef HERD_TRAINER_ENGINE_TRAIN_DATA_H_
#define HERD_TRAINER_ENGINE_TRAIN_DATA_H_

#include <ATen/ATen.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/safetensors.h"
#include "trainer/engine/model/llama.h"

namespace herd::engine {

class PreparedData {
 public:
  // Checks the four tensors exist, are I32 and share one [N, T] shape.
  static absl::StatusOr<std::unique_ptr<PreparedData>> Open(const std::string& path);

  int64_t num_rows() const { return rows_; }
  int64_t seq_len() const { return seq_len_; }
  const std::string& path() const { return file_->source(); }

  // Rows `rows` as a batch on `device`. [B, T] each; `stream_positions` become sequence_ids.
  Batch MakeBatch(const std::vector<int64_t>& rows, const std::vector<int64_t>& stream_positions,
                  at::Device device) const;
  // Trained tokens (targets != -100) in `rows`.
  int64_t TrainedTokens(const std::vector<int64_t>& rows) const;

 private:
  PreparedData() = default;
  const int32_t* Row(const SafetensorsTensor* t, int64_t row) const;

  std::unique_ptr<SafetensorsFile> file_;
  const SafetensorsTensor* input_ids_ = nullptr;
  const SafetensorsTensor* targets_ = nullptr;
  const SafetensorsTensor* position_ids_ = nullptr;
  const SafetensorsTensor* doc_ids_ = nullptr;
  int64_t rows_ = 0;
  int64_t seq_len_ = 0;
};

}  // namespace herd::engine

#endif  // HERD_TRAINER_ENGINE_TRAIN_DATA_H_
