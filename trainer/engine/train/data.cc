// Batches from prepared-data rows.
#include "trainer/engine/train/data.h"

#include <cstring>

#include "common/status.h"
#include "common/strings.h"

namespace herd::engine {

absl::StatusOr<std::unique_ptr<PreparedData>> PreparedData::Open(const std::string& path) {
  HERD_ASSIGN_OR_RETURN(auto file, datasets::PreparedFile::Open(path));
  if (file->rows() == 0) return absl::InvalidArgumentError(herd::StrCat(path, ": holds no sequences"));
  return std::unique_ptr<PreparedData>(new PreparedData(path, std::move(file)));
}

Batch PreparedData::MakeBatch(const std::vector<int64_t>& rows, const std::vector<int64_t>& stream_positions,
                              at::Device device) const {
  const int64_t B = static_cast<int64_t>(rows.size()), T = seq_len();
  at::Tensor input_ids = at::empty({B, T}, at::kInt), targets = at::empty({B, T}, at::kInt);
  at::Tensor position_ids = at::empty({B, T}, at::kInt), doc_ids = at::empty({B, T}, at::kInt);
  for (int64_t b = 0; b < B; ++b) {
    const datasets::PreparedFile::Row row = file_->row(rows[b]);
    std::memcpy(input_ids.data_ptr<int32_t>() + b * T, row.input_ids.data(), T * sizeof(int32_t));
    std::memcpy(targets.data_ptr<int32_t>() + b * T, row.targets.data(), T * sizeof(int32_t));
    std::memcpy(position_ids.data_ptr<int32_t>() + b * T, row.position_ids.data(), T * sizeof(int32_t));
    std::memcpy(doc_ids.data_ptr<int32_t>() + b * T, row.doc_ids.data(), T * sizeof(int32_t));
  }
  Batch batch;
  batch.input_ids = input_ids.to(device, at::kLong);        // [B, T]
  batch.targets = targets.to(device, at::kLong);            // [B, T]
  batch.position_ids = position_ids.to(device, at::kLong);  // [B, T]
  batch.doc_ids = doc_ids.to(device, at::kLong);            // [B, T]
  batch.trained = TrainedPositions(targets, device);         // [N]
  batch.sequence_ids = stream_positions;
  return batch;
}

int64_t PreparedData::TrainedTokens(const std::vector<int64_t>& rows) const {
  int64_t n = 0;
  for (int64_t r : rows) {
    for (int32_t t : file_->row(r).targets) n += t != -100;
  }
  return n;
}

}  // namespace herd::engine
