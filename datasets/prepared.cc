// Prepared-data file: writer, reader and content checks (see PREPARED_FORMAT.md).
#include "datasets/prepared.h"

#include <fcntl.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <bit>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>

#include "common/status.h"
#include "common/strings.h"
#include "nlohmann/json.hpp"

namespace herd::datasets {
namespace {

static_assert(std::endian::native == std::endian::little,
              "the file stores little-endian int32; rows are handed out without conversion");

// PreparedRows' columns, in this order everywhere below.
constexpr const char* kTensorNames[] = {"input_ids", "targets", "position_ids", "doc_ids"};
// The columns in file order: by name, as SafetensorsWriter lays out tensors of one element size.
constexpr int kFileOrder[] = {3, 0, 2, 1};  // doc_ids, input_ids, position_ids, targets

int FilePosition(int column) {
  for (int k = 0; k < 4; ++k) {
    if (kFileOrder[k] == column) return k;
  }
  return -1;
}

std::array<const std::vector<int32_t>*, 4> Columns(const PreparedRows& rows) {
  return {&rows.input_ids, &rows.targets, &rows.position_ids, &rows.doc_ids};
}

absl::Status Errno(std::string_view what, std::string_view path) {
  return absl::InternalError(herd::StrCat(what, " ", path, ": ", std::strerror(errno)));
}

absl::Status Bad(std::string_view source, std::string_view what) {
  return absl::InvalidArgumentError(herd::StrCat(source, ": ", what));
}

absl::Status CheckColumns(std::string_view path, const PreparedRows& rows) {
  const size_t n = static_cast<size_t>(rows.rows * rows.seq_len);
  for (int c = 0; c < 4; ++c) {
    if (Columns(rows)[c]->size() != n) {
      return Bad(path, herd::StrCat(kTensorNames[c], " holds ", Columns(rows)[c]->size(),
                                    " values, expected ", rows.rows, " x ", rows.seq_len));
    }
  }
  return absl::OkStatus();
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
  if (rows.rows < 0 || rows.seq_len <= 0) {
    return Bad(path, herd::StrCat("bad shape [", rows.rows, ", ", rows.seq_len, "]"));
  }
  HERD_RETURN_IF_ERROR(CheckColumns(path, rows));
  HERD_ASSIGN_OR_RETURN(std::unique_ptr<PreparedFileWriter> writer,
                        PreparedFileWriter::Create(path, rows.rows, rows.seq_len, metadata));
  HERD_RETURN_IF_ERROR(writer->Write(0, rows));
  return writer->Finish();
}

absl::StatusOr<std::unique_ptr<PreparedFileWriter>> PreparedFileWriter::Create(
    const std::string& path, int64_t rows, int64_t seq_len, const PreparedMetadata& metadata) {
  if (rows < 0 || seq_len <= 0 || rows > INT64_MAX / 4 / seq_len) {
    return Bad(path, herd::StrCat("bad shape [", rows, ", ", seq_len, "]"));
  }
  // SafetensorsWriter's layout: metadata first, keys sorted; tensors of one element size in name
  // order, back to back; the header padded with spaces to a multiple of 8.
  const std::map<std::string, std::string> meta = {
      {"herd_prepared", kPreparedFormatVersion},
      {"seq_len", std::to_string(seq_len)},
      {"split", metadata.split},
      {"vocab_size", std::to_string(metadata.vocab_size)},
      {"stats", metadata.stats_json},
      {"tokenizer_sha256", metadata.tokenizer_sha256},
      {"tokenizer_config_sha256", metadata.tokenizer_config_sha256},
      {"source_sha256", metadata.source_sha256},
      {"options", metadata.options_json},
  };
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  header["__metadata__"] = meta;
  const uint64_t column_bytes = static_cast<uint64_t>(rows * seq_len) * sizeof(int32_t);
  for (int c : kFileOrder) {
    const uint64_t begin = column_bytes * static_cast<uint64_t>(FilePosition(c));
    header[kTensorNames[c]] = {{"dtype", DtypeName(Dtype::kI32)},
                               {"shape", {rows, seq_len}},
                               {"data_offsets", {begin, begin + column_bytes}}};
  }
  std::string text =
      header.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
  text.append((8 - text.size() % 8) % 8, ' ');
  std::string head(8, '\0');
  for (int i = 0; i < 8; ++i) head[i] = static_cast<char>((text.size() >> (8 * i)) & 0xff);
  head += text;

  static std::atomic<uint64_t> counter{0};
  std::string tmp = herd::StrCat(path, ".tmp.", ::getpid(), ".", counter.fetch_add(1));
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) return Errno("create", tmp);
  std::unique_ptr<PreparedFileWriter> w(
      new PreparedFileWriter(path, std::move(tmp), fd, rows, seq_len, head.size()));
  HERD_RETURN_IF_ERROR(w->WriteAt(head.data(), head.size(), 0));
  return w;
}

PreparedFileWriter::PreparedFileWriter(std::string path, std::string tmp, int fd, int64_t rows,
                                       int64_t seq_len, uint64_t data_start)
    : path_(std::move(path)),
      tmp_(std::move(tmp)),
      fd_(fd),
      rows_(rows),
      seq_len_(seq_len),
      data_start_(data_start) {}

PreparedFileWriter::~PreparedFileWriter() {
  if (fd_ >= 0) {
    ::close(fd_);
    ::unlink(tmp_.c_str());
  }
}

absl::Status PreparedFileWriter::WriteAt(const void* data, size_t size, uint64_t offset) {
  const char* p = static_cast<const char*>(data);
  while (size > 0) {
    const ssize_t n = ::pwrite(fd_, p, size, static_cast<off_t>(offset));
    if (n < 0) {
      if (errno == EINTR) continue;
      return Errno("write", tmp_);
    }
    p += n;
    size -= static_cast<size_t>(n);
    offset += static_cast<uint64_t>(n);
  }
  return absl::OkStatus();
}

absl::Status PreparedFileWriter::Write(int64_t first_row, const PreparedRows& rows) {
  if (fd_ < 0) return absl::FailedPreconditionError(herd::StrCat(path_, ": already finished"));
  if (rows.seq_len != seq_len_) {
    return Bad(path_, herd::StrCat("rows of ", rows.seq_len, " written to a file of ", seq_len_));
  }
  if (first_row < 0 || rows.rows < 0 || rows.rows > rows_ - first_row) {
    return Bad(path_, herd::StrCat("rows [", first_row, ", ", first_row + rows.rows,
                                   ") are outside the file's ", rows_));
  }
  HERD_RETURN_IF_ERROR(CheckColumns(path_, rows));
  const uint64_t column_bytes = static_cast<uint64_t>(rows_ * seq_len_) * sizeof(int32_t);
  const uint64_t at = static_cast<uint64_t>(first_row * seq_len_) * sizeof(int32_t);
  const size_t size = static_cast<size_t>(rows.rows * rows.seq_len) * sizeof(int32_t);
  for (int c = 0; c < 4; ++c) {
    const uint64_t offset =
        data_start_ + column_bytes * static_cast<uint64_t>(FilePosition(c)) + at;
    HERD_RETURN_IF_ERROR(WriteAt(Columns(rows)[c]->data(), size, offset));
  }
  written_ += rows.rows;
  return absl::OkStatus();
}

absl::Status PreparedFileWriter::Finish() {
  if (fd_ < 0) return absl::FailedPreconditionError(herd::StrCat(path_, ": already finished"));
  if (written_ != rows_) {
    return absl::FailedPreconditionError(
        herd::StrCat(path_, ": ", written_.load(), " of ", rows_, " rows written"));
  }
  absl::Status status;
  if (::fsync(fd_) != 0) status = Errno("fsync", tmp_);
  if (::close(fd_) != 0 && status.ok()) status = Errno("close", tmp_);
  fd_ = -1;
  if (status.ok() && ::rename(tmp_.c_str(), path_.c_str()) != 0) {
    status = Errno("rename to", path_);
  }
  if (!status.ok()) {
    ::unlink(tmp_.c_str());
    return status;
  }
  return SyncDirectory(std::filesystem::path(path_).parent_path().string());
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
