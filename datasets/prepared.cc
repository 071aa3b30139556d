// Prepared-data file: writer, reader and content checks (see PREPARED_FORMAT.md).
#include "datasets/prepared.h"

#include <bit>
#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "common/status.h"
#include "common/strings.h"

namespace herd::datasets {
namespace {

static_assert(std::endian::native == std::endian::little,
              "the file stores little-endian int32; rows are handed out without conversion");

constexpr const char* kTensorNames[] = {"input_ids", "targets", "position_ids", "doc_ids"};

absl::Status Bad(std::string_view source, std::string_view what) {
  return absl::InvalidArgumentError(herd::StrCat(source, ": ", what));
}

// Checks the rows held at the four pointers, [rows, seq_len] each.
absl::Status CheckRows(std::string_view source, const int32_t* const columns[4], int64_t rows,
                       int64_t seq_len, int64_t vocab_size) {
  const int32_t* ids = columns[0];
  const int32_t* targets = columns[1];
  const int32_t* positions = columns[2];
  const int32_t* docs = columns[3];
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t base = r * seq_len;
    for (int64_t j = 0; j < seq_len; ++j) {
      const int64_t k = base + j;
      const auto fail = [&](std::string_view what) {
        return Bad(source, herd::StrCat("row ", r, ", column ", j, ": ", what));
      };
      if (vocab_size > 0 && (ids[k] < 0 || ids[k] >= vocab_size)) {
        return fail(herd::StrCat("input id ", ids[k], " is outside [0, ", vocab_size, ")"));
      }
      const int32_t doc = docs[k];
      const int32_t prev_doc = j == 0 ? kPadDocId : docs[k - 1];
      if (doc == kPadDocId) {
        if (targets[k] != kIgnoreTarget || positions[k] != 0) {
          return fail("a padding slot has a target or a non-zero position");
        }
        if (j + 1 < seq_len && docs[k + 1] != kPadDocId) return fail("padding before a document");
        continue;
      }
      const bool starts_doc = j == 0 || doc != prev_doc;
      if (starts_doc && doc != (j == 0 ? 0 : prev_doc + 1)) {
        return fail(herd::StrCat("document index ", doc, " does not follow ", prev_doc));
      }
      if (positions[k] != (starts_doc ? 0 : positions[k - 1] + 1)) {
        return fail(herd::StrCat("position ", positions[k], " does not continue its document"));
      }
      const bool has_next = j + 1 < seq_len && docs[k + 1] == doc;
      if (targets[k] != kIgnoreTarget && (!has_next || targets[k] != ids[k + 1])) {
        return fail(
            herd::StrCat("target ", targets[k], " is not the next input id of its document"));
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status WritePreparedFile(const std::string& path, const PreparedRows& rows,
                               const PreparedMetadata& metadata) {
  const size_t n = static_cast<size_t>(rows.rows * rows.seq_len);
  const std::vector<int32_t>* columns[] = {&rows.input_ids, &rows.targets, &rows.position_ids,
                                           &rows.doc_ids};
  if (rows.rows < 0 || rows.seq_len <= 0) {
    return Bad(path, herd::StrCat("bad shape [", rows.rows, ", ", rows.seq_len, "]"));
  }
  SafetensorsWriter writer;
  for (int c = 0; c < 4; ++c) {
    if (columns[c]->size() != n) {
      return Bad(path, herd::StrCat(kTensorNames[c], " holds ", columns[c]->size(),
                                    " values, expected ", rows.rows, " x ", rows.seq_len));
    }
    HERD_RETURN_IF_ERROR(writer.Add(kTensorNames[c], Dtype::kI32, {rows.rows, rows.seq_len},
                                    columns[c]->data(), n * sizeof(int32_t)));
  }
  writer.SetMetadata("herd_prepared", kPreparedFormatVersion);
  writer.SetMetadata("seq_len", std::to_string(rows.seq_len));
  writer.SetMetadata("split", metadata.split);
  writer.SetMetadata("vocab_size", std::to_string(metadata.vocab_size));
  writer.SetMetadata("stats", metadata.stats_json);
  writer.SetMetadata("tokenizer_sha256", metadata.tokenizer_sha256);
  writer.SetMetadata("tokenizer_config_sha256", metadata.tokenizer_config_sha256);
  writer.SetMetadata("source_sha256", metadata.source_sha256);
  writer.SetMetadata("options", metadata.options_json);
  return writer.Write(path);
}

absl::StatusOr<std::unique_ptr<PreparedFile>> PreparedFile::Open(const std::string& path) {
  std::unique_ptr<PreparedFile> p(new PreparedFile());
  HERD_ASSIGN_OR_RETURN(p->file_, SafetensorsFile::Open(path));
  const auto& meta = p->file_->metadata();
  const auto get = [&](const char* key) -> std::string {
    auto it = meta.find(key);
    return it == meta.end() ? "" : it->second;
  };
  if (!meta.contains("herd_prepared")) {
    return Bad(path, "not a prepared-data file (no herd_prepared in __metadata__)");
  }
  if (get("herd_prepared") != kPreparedFormatVersion) {
    return Bad(path,
               herd::StrCat("prepared-data format version ", get("herd_prepared"),
                            " is not supported (this build reads ", kPreparedFormatVersion, ")"));
  }
  const auto parse_int = [&](const char* key, int64_t* out) -> absl::Status {
    const std::string v = get(key);
    char* end = nullptr;
    errno = 0;
    *out = std::strtoll(v.c_str(), &end, 10);
    if (v.empty() || *end != '\0' || errno != 0 || *out < 0) {
      return Bad(path, herd::StrCat("metadata ", key, " '", v, "' is not a count"));
    }
    return absl::OkStatus();
  };
  HERD_RETURN_IF_ERROR(parse_int("seq_len", &p->seq_len_));
  if (p->seq_len_ == 0) return Bad(path, "seq_len is 0");
  HERD_RETURN_IF_ERROR(parse_int("vocab_size", &p->metadata_.vocab_size));
  p->metadata_.split = get("split");
  p->metadata_.stats_json = get("stats");
  p->metadata_.tokenizer_sha256 = get("tokenizer_sha256");
  p->metadata_.tokenizer_config_sha256 = get("tokenizer_config_sha256");
  p->metadata_.source_sha256 = get("source_sha256");
  p->metadata_.options_json = get("options");

  const SafetensorsTensor* tensors[4];
  for (int c = 0; c < 4; ++c) {
    HERD_ASSIGN_OR_RETURN(tensors[c], p->file_->Get(kTensorNames[c]));
    const SafetensorsTensor& t = *tensors[c];
    if (t.dtype != Dtype::kI32 || t.shape.size() != 2 || t.shape[1] != p->seq_len_ ||
        t.shape[0] != tensors[0]->shape[0]) {
      return Bad(path, herd::StrCat("tensor ", t.name, " must be I32 [rows, ", p->seq_len_,
                                    "] like input_ids, got ", DtypeName(t.dtype), " [",
                                    herd::StrJoin(t.shape, ", "), "]"));
    }
  }
  p->rows_ = tensors[0]->shape[0];
  const size_t n = static_cast<size_t>(p->rows_ * p->seq_len_);
  bool aligned = true;
  for (const SafetensorsTensor* t : tensors) {
    aligned = aligned && reinterpret_cast<uintptr_t>(t->data.data()) % alignof(int32_t) == 0;
  }
  const int32_t** columns[] = {&p->input_ids_, &p->targets_, &p->position_ids_, &p->doc_ids_};
  if (!aligned) p->copies_.resize(4 * n);  // another writer's layout: copy rather than cast
  for (int c = 0; c < 4; ++c) {
    const uint8_t* data = tensors[c]->data.data();
    if (aligned) {
      *columns[c] = reinterpret_cast<const int32_t*>(data);
    } else {
      std::memcpy(p->copies_.data() + c * n, data, n * sizeof(int32_t));
      *columns[c] = p->copies_.data() + c * n;
    }
  }
  return p;
}

PreparedFile::Row PreparedFile::row(int64_t i) const {
  const size_t off = static_cast<size_t>(i * seq_len_);
  const size_t len = static_cast<size_t>(seq_len_);
  return Row{{input_ids_ + off, len},
             {targets_ + off, len},
             {position_ids_ + off, len},
             {doc_ids_ + off, len}};
}

absl::Status PreparedFile::Verify() const {
  const int32_t* const columns[] = {input_ids_, targets_, position_ids_, doc_ids_};
  return CheckRows(file_->source(), columns, rows_, seq_len_, metadata_.vocab_size);
}

absl::Status VerifyRows(const PreparedRows& rows, int64_t vocab_size) {
  const size_t n = static_cast<size_t>(rows.rows * rows.seq_len);
  if (rows.input_ids.size() != n || rows.targets.size() != n || rows.position_ids.size() != n ||
      rows.doc_ids.size() != n) {
    return Bad("rows", "the four columns do not all hold rows x seq_len values");
  }
  const int32_t* const columns[] = {rows.input_ids.data(), rows.targets.data(),
                                    rows.position_ids.data(), rows.doc_ids.data()};
  return CheckRows("rows", columns, rows.rows, rows.seq_len, vocab_size);
}

}  // namespace herd::datasets
