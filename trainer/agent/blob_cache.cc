// Resumable, verified blob downloads into the agent's cache.
#include "trainer/agent/blob_cache.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <thread>

#include "common/file_util.h"
#include "common/sha256.h"
#include "common/status.h"
#include "common/strings.h"

namespace herd::agent {
namespace fs = std::filesystem;
namespace v1 = herd::v1;

namespace {

bool IsHexDigest(const std::string& s) {
  return s.size() == 64 && std::all_of(s.begin(), s.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
}

int64_t FileSize(const std::string& path) {
  std::error_code ec;
  const auto size = fs::file_size(path, ec);
  return ec ? 0 : static_cast<int64_t>(size);
}

// Our own verdict on the bytes, as opposed to a DATA_LOSS the coordinator answers.
constexpr char kDigestMismatch[] = "fetched bytes do not match";

}  // namespace

std::string BlobCache::PathFor(const std::string& sha256) const {
  return StrCat(options_.root, "/sha256/", sha256.substr(0, 2), "/", sha256);
}

absl::Status BlobCache::FetchOnce(CoordinatorApi& api, const v1::FetchBlobRequest& request, const std::string& partial,
                                  int64_t* size_bytes, const std::function<bool()>& stop) {
  const int fd = ::open(partial.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) return absl::UnavailableError(StrCat("open ", partial, ": ", std::strerror(errno)));
  int64_t offset = request.offset();
  bool header = false;
  absl::Status s = api.FetchBlob(request, [&](const v1::FetchBlobResponse& m) -> absl::Status {
    if (stop()) return absl::CancelledError("stopped while fetching");
    if (m.has_blob()) {
      if (header || m.blob().sha256() != request.sha256()) {
        return absl::InternalError(StrCat("FetchBlob sent an unexpected header for ", request.sha256()));
      }
      header = true;
      *size_bytes = m.blob().size_bytes();
      return absl::OkStatus();
    }
    if (!header) return absl::InternalError("FetchBlob sent data before the blob header");
    if (m.chunk().offset() != offset) {
      return absl::AbortedError(StrCat("FetchBlob chunk at ", m.chunk().offset(), ", expected ", offset));
    }
    const std::string& data = m.chunk().data();
    size_t done = 0;
    while (done < data.size()) {
      const ssize_t n = ::write(fd, data.data() + done, data.size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return absl::UnavailableError(StrCat("write ", partial, ": ", std::strerror(errno)));
      done += static_cast<size_t>(n);
    }
    offset += static_cast<int64_t>(data.size());
    if (offset > *size_bytes) return absl::DataLossError(StrCat("FetchBlob sent more bytes than ", *size_bytes));
    return absl::OkStatus();
  });
  const bool synced = ::fsync(fd) == 0;
  ::close(fd);
  HERD_RETURN_IF_ERROR(s);
  if (!synced) return absl::UnavailableError(StrCat("fsync ", partial, ": ", std::strerror(errno)));
  if (offset != *size_bytes) {
    return absl::UnavailableError(StrCat("FetchBlob ended at byte ", offset, " of ", *size_bytes));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> BlobCache::Fetch(CoordinatorApi& api, const std::string& trainer_id,
                                             const v1::AssignmentRef& ref, const std::string& sha256,
                                             int64_t size_bytes, const std::function<bool()>& stop) {
  if (!IsHexDigest(sha256)) return absl::InvalidArgumentError(StrCat("blob digest '", sha256, "' is not sha256 hex"));
  const std::string path = PathFor(sha256), partial = path + ".partial";
  std::error_code ec;
  if (fs::is_regular_file(path, ec) && (size_bytes < 0 || FileSize(path) == size_bytes)) {
    fs::last_write_time(path, fs::file_time_type::clock::now(), ec);  // recently used, for Trim()
    return path;
  }
  fs::create_directories(fs::path(path).parent_path(), ec);
  if (ec) return absl::UnavailableError(StrCat("cannot create ", fs::path(path).parent_path().string(), ": ", ec.message()));

  absl::Duration backoff = options_.initial_backoff;
  absl::Status last;
  for (int attempt = 0; attempt < options_.max_attempts; ++attempt) {
    if (stop()) return absl::CancelledError("stopped while fetching");
    if (attempt > 0) std::this_thread::sleep_for(absl::ToChronoNanoseconds(backoff));
    backoff = std::min(backoff * 2, options_.max_backoff);
    int64_t held = FileSize(partial);
    if (size_bytes >= 0 && held > size_bytes) {
      fs::remove(partial, ec);
      held = 0;
    }
    v1::FetchBlobRequest request;
    request.set_trainer_id(trainer_id);
    *request.mutable_ref() = ref;
    request.set_sha256(sha256);
    request.set_offset(held);
    int64_t size = size_bytes >= 0 ? size_bytes : held;
    last = FetchOnce(api, request, partial, &size, stop);
    if (last.ok()) {
      HERD_ASSIGN_OR_RETURN(std::string got, Sha256File(partial));
      if (got != sha256) {
        fs::remove(partial, ec);
        last = absl::DataLossError(StrCat(kDigestMismatch, " ", sha256, " (got ", got, ")"));
        continue;
      }
      fs::rename(partial, path, ec);
      if (ec) return absl::UnavailableError(StrCat("rename ", partial, ": ", ec.message()));
      HERD_RETURN_IF_ERROR(SyncDirectory(fs::path(path).parent_path().string()));
      return path;
    }
    switch (last.code()) {
      case absl::StatusCode::kUnavailable:
      case absl::StatusCode::kAborted:
      case absl::StatusCode::kDeadlineExceeded:
      case absl::StatusCode::kResourceExhausted:
        continue;
      case absl::StatusCode::kOutOfRange:  // our partial file is longer than the blob: start over
        fs::remove(partial, ec);
        continue;
      default:
        return Annotate(last, StrCat("fetching blob ", sha256));
    }
  }
  return Annotate(last, StrCat("fetching blob ", sha256, " (", options_.max_attempts, " attempts)"));
}

int64_t BlobCache::Trim() {
  if (options_.max_bytes <= 0) return 0;
  struct Held {
    fs::file_time_type used;
    int64_t bytes;
    fs::path path;
  };
  std::vector<Held> held;
  int64_t total = 0;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(fs::path(options_.root) / "sha256", ec);
       !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (!it->is_regular_file(ec) || it->path().extension() == ".partial") continue;
    const int64_t bytes = static_cast<int64_t>(it->file_size(ec));
    held.push_back({it->last_write_time(ec), bytes, it->path()});
    total += bytes;
  }
  std::sort(held.begin(), held.end(), [](const Held& a, const Held& b) { return a.used < b.used; });
  int64_t freed = 0;
  for (const Held& h : held) {
    if (total - freed <= options_.max_bytes) break;
    if (fs::remove(h.path, ec)) freed += h.bytes;
  }
  return freed;
}

}  // namespace herd::agent
