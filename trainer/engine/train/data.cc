// Prepared-data reader.
#include "trainer/engine/train/data.h"

#include <cstring>

#include "common/status.h"
#include "common/strings.h"

namespace herd::engine {

absl::StatusOr<std::unique_ptr<PreparedData>> PreparedData::Open(const std::string& path) {
  std::unique_ptr<PreparedData> d(new PreparedData());
  HERD_ASSIGN_OR_RETURN(d->file_, SafetensorsFile::Open(path));
  const SafetensorsTensor** slots[] = {&d->input_ids_, &d->targets_, &d->position_ids_, &d->doc_ids_};
  const char* names[] = {"input_ids", "targets", "position_ids", "doc_ids"};
  for (int i = 0; i < 4; ++i) {
    HERD_ASSIGN_OR_RETURN(*slots[i], d->file_->Get(names[i]));
    const SafetensorsTensor* t = *slots[i];
    if (t->dtype != Dtype::kI32 || t->shape.size() != 2) {
      return absl::InvalidArgumentError(herd::StrCat(path, ": tensor ", names[i], " must be I32 [rows, seq_len]"));
    }
    if (t->shape != d->input_ids_->shape) {
      return absl::InvalidArgumentError(herd::StrCat(path, ": tensor ", names[i], " has shape [",
                                                     herd::StrJoin(t->shape, ", "), "], input_ids has [",
                                                     herd::StrJoin(d->input_ids_->shape, ", "), "]"));
    }
  }
  d->rows_ = d->input_ids_->shape[0];
  d->seq_len_ = d->input_ids_->shape[1];
  if (d->rows_ == 0 || d->seq_len_ == 0) return absl::InvalidArgumentError(herd::StrCat(path, ": holds no sequences"));
  return d;
}

const int32_t* PreparedData::Row(const SafetensorsTensor* t, int64_t row) const {
  return reinterpret_cast<const int32_t*>(t->data.data()) + row * seq_len_;
}

Batch PreparedData::MakeBatch(const std::vector<int64_t>& rows, const std::vector<int64_t>& stream_positions,
                              at::Device device) const {
  const int64_t B = static_cast<int64_t>(rows.size());
  auto gather = [&](const SafetensorsTensor* t) {
    at::Tensor out = at::empty({B, seq_len_}, at::kInt);  // [B, T]
    for (int64_t b = 0; b < B; ++b) {
      std::memcpy(out.data_ptr<int32_t>() + b * seq_len_, Row(t, rows[b]), seq_len_ * sizeof(int32_t));
    }
    return out.to(device, at::kLong);
  };
  Batch batch;
  batch.input_ids = gather(input_ids_);
  batch.targets = gather(targets_);
  batch.position_ids = gather(position_ids_);
  batch.doc_ids = gather(doc_ids_);
  batch.sequence_ids = stream_positions;
  return batch;
}

int64_t PreparedData::TrainedTokens(const std::vector<int64_t>& rows) const {
  int64_t n = 0;
  for (int64_t r : rows) {
    const int32_t* t = Row(targets_, r);
    for (int64_t i = 0; i < seq_len_; ++i) n += t[i] != -100;
  }
  return n;
}

}  // namespace herd::engine
