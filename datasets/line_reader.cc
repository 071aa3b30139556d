// Block reads split into lines; see line_reader.h.
#include "datasets/line_reader.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "common/strings.h"

namespace herd::datasets {
namespace {

constexpr size_t kBlockBytes = 1 << 20;

absl::Status ReadError(const std::string& path) {
  return absl::InternalError(herd::StrCat("reading ", path, ": ", std::strerror(errno)));
}

}  // namespace

absl::StatusOr<std::unique_ptr<LineBatchReader>> LineBatchReader::Open(const std::string& path,
                                                                       size_t max_line_bytes,
                                                                       size_t batch_bytes) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return absl::NotFoundError(herd::StrCat("cannot open ", path));
  return std::unique_ptr<LineBatchReader>(
      new LineBatchReader(fd, path, max_line_bytes, std::max<size_t>(batch_bytes, 1)));
}

LineBatchReader::LineBatchReader(int fd, std::string path, size_t max_line_bytes,
                                 size_t batch_bytes)
    : fd_(fd), path_(std::move(path)), max_line_bytes_(max_line_bytes), batch_bytes_(batch_bytes) {}

LineBatchReader::~LineBatchReader() { ::close(fd_); }

absl::StatusOr<bool> LineBatchReader::Fill() {
  if (pos_ > 0) {
    buffer_.erase(0, pos_);
    pos_ = 0;
  }
  const size_t old = buffer_.size();
  buffer_.resize(old + kBlockBytes);
  ssize_t n;
  do n = ::read(fd_, buffer_.data() + old, kBlockBytes);
  while (n < 0 && errno == EINTR);
  if (n < 0) return ReadError(path_);
  buffer_.resize(old + static_cast<size_t>(n));
  sha_.Update(buffer_.data() + old, static_cast<size_t>(n));
  eof_ = n == 0;
  return !eof_;
}

absl::StatusOr<size_t> LineBatchReader::SkipLine() {
  size_t length = buffer_.size() - pos_;
  char last = buffer_.back();
  buffer_.clear();
  pos_ = 0;
  while (!eof_) {
    absl::StatusOr<bool> more = Fill();
    if (!more.ok()) return more.status();
    const size_t nl = buffer_.find('\n');
    if (nl != std::string::npos) {
      length += nl;
      if (nl > 0) last = buffer_[nl - 1];
      pos_ = nl + 1;
      break;
    }
    length += buffer_.size();
    if (!buffer_.empty()) last = buffer_.back();
    buffer_.clear();
  }
  return last == '\r' ? length - 1 : length;
}

absl::StatusOr<bool> LineBatchReader::Next(LineBatch* batch) {
  batch->text.clear();
  batch->lines.clear();
  batch->first_number = next_number_;
  while (batch->text.size() < batch_bytes_) {
    size_t nl = buffer_.find('\n', pos_);
    if (nl == std::string::npos) {
      const size_t pending = buffer_.size() - pos_;
      if (pending > max_line_bytes_ + 1) {  // over the limit even without a '\r': stop keeping it
        absl::StatusOr<size_t> length = SkipLine();
        if (!length.ok()) return length.status();
        batch->lines.push_back({0, *length, true});
        ++next_number_;
        continue;
      }
      if (!eof_) {
        absl::StatusOr<bool> more = Fill();
        if (!more.ok()) return more.status();
        continue;
      }
      if (pending == 0) break;
      nl = buffer_.size();  // the last line has no '\n'
    }
    const std::string_view line(buffer_.data() + pos_, nl - pos_);
    pos_ = std::min(nl + 1, buffer_.size());
    const size_t length = line.size() - (line.ends_with('\r') ? 1 : 0);
    if (length > max_line_bytes_) {
      batch->lines.push_back({0, length, true});
    } else {
      batch->lines.push_back({batch->text.size(), line.size(), false});
      batch->text.append(line);
    }
    ++next_number_;
  }
  return !batch->lines.empty();
}

std::string LineBatchReader::Sha256Hex() { return sha_.HexDigest(); }

}  // namespace herd::datasets
