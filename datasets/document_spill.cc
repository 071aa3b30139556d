// The document spill file; see document_spill.h.
#include "datasets/document_spill.h"

#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "common/strings.h"

namespace herd::datasets {
namespace {

constexpr size_t kFlushBytes = 1 << 20;
constexpr uint64_t kBytesPerToken = sizeof(int32_t) + 1;  // id, trained flag

}  // namespace

absl::StatusOr<std::unique_ptr<DocumentSpill>> DocumentSpill::Create(const std::string& near) {
  std::string path = near + ".spill.XXXXXX";
  const int fd = ::mkostemp(path.data(), O_CLOEXEC);
  if (fd < 0) {
    return absl::InternalError(herd::StrCat("create ", path, ": ", std::strerror(errno)));
  }
  ::unlink(path.c_str());
  return std::unique_ptr<DocumentSpill>(new DocumentSpill(fd, path));
}

DocumentSpill::~DocumentSpill() { ::close(fd_); }

absl::Status DocumentSpill::Error(std::string_view what) const {
  return absl::InternalError(herd::StrCat(what, " ", path_, ": ", std::strerror(errno)));
}

absl::Status DocumentSpill::Add(const Example& ex, size_t kept) {
  buffer_.append(reinterpret_cast<const char*>(ex.ids.data()), kept * sizeof(int32_t));
  buffer_.append(reinterpret_cast<const char*>(ex.trained.data()), kept);
  offsets_.push_back(offsets_.back() + kept * kBytesPerToken);
  if (buffer_.size() >= kFlushBytes) return Flush();
  return absl::OkStatus();
}

absl::Status DocumentSpill::Flush() {
  const char* p = buffer_.data();
  size_t left = buffer_.size();
  while (left > 0) {
    const ssize_t n = ::write(fd_, p, left);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Error("write");
    p += n;
    left -= static_cast<size_t>(n);
  }
  buffer_.clear();
  return absl::OkStatus();
}

absl::StatusOr<DocumentTokens> DocumentSpill::Read(uint32_t i,
                                                   std::vector<int32_t>* buffer) const {
  const uint64_t begin = offsets_[i], bytes = offsets_[i + 1] - begin;
  const size_t kept = static_cast<size_t>(bytes / kBytesPerToken);
  buffer->resize((bytes + sizeof(int32_t) - 1) / sizeof(int32_t));
  char* p = reinterpret_cast<char*>(buffer->data());
  for (uint64_t done = 0; done < bytes;) {
    const ssize_t n = ::pread(fd_, p + done, bytes - done, static_cast<off_t>(begin + done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return Error("read");
    done += static_cast<uint64_t>(n);
  }
  return DocumentTokens{{buffer->data(), kept},
                        {reinterpret_cast<const uint8_t*>(p) + kept * sizeof(int32_t), kept}};
}

}  // namespace herd::datasets
