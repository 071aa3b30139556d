// The content-addressed blob directory of blob_store.h, over POSIX calls.
#include "coordinator/store/blob_store.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>

#include "common/file_util.h"
#include "common/status.h"
#include "common/strings.h"
#include "coordinator/store/store_util.h"

namespace herd::coordinator::store {
namespace {

absl::Status Errno(int err, std::string_view what, std::string_view path) {
  std::string msg = herd::StrCat(what, " ", path, ": ", std::strerror(err));
  switch (err) {
    case ENOENT:
      return absl::NotFoundError(msg);
    case EACCES:
    case EPERM:
      return absl::PermissionDeniedError(msg);
    case ENOSPC:
    case EDQUOT:
      return absl::ResourceExhaustedError(msg);
    case EIO:
      return absl::UnavailableError(msg);
    default:
      return absl::InternalError(msg);
  }
}

absl::Status CheckDigest(std::string_view sha256) {
  if (IsSha256Hex(sha256)) return absl::OkStatus();
  return absl::InvalidArgumentError(
      herd::StrCat("'", sha256.substr(0, 80), "' is not a sha256 (64 lower-case hex characters)"));
}

absl::Status MakeDir(const std::string& dir) {
  if (::mkdir(dir.c_str(), 0755) == 0 || errno == EEXIST) return absl::OkStatus();
  return Errno(errno, "mkdir", dir);
}

absl::Status WriteAll(int fd, std::string_view data, const std::string& path) {
  while (!data.empty()) {
    ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return Errno(errno, "write", path);
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
  return absl::OkStatus();
}

std::atomic<uint64_t> tmp_counter{0};

}  // namespace

absl::Status BlobStoreOptions::Validate() const {
  if (root.empty()) return absl::InvalidArgumentError("BlobStoreOptions.root: required");
  return absl::OkStatus();
}

// ---- BlobWriter ----

BlobWriter::~BlobWriter() {
  if (fd_ >= 0) {
    ::close(fd_);
    ::unlink(tmp_path_.c_str());
  }
}

absl::Status BlobWriter::Append(std::string_view data) {
  if (fd_ < 0) return absl::FailedPreconditionError("blob writer already committed or failed");
  absl::Status status = WriteAll(fd_, data, tmp_path_);
  if (!status.ok()) {
    ::close(fd_);
    ::unlink(tmp_path_.c_str());
    fd_ = -1;
    return status;
  }
  hash_.Update(data);
  size_ += static_cast<int64_t>(data.size());
  return absl::OkStatus();
}

absl::StatusOr<BlobRef> BlobWriter::Commit(std::string_view expected_sha256) {
  if (fd_ < 0) return absl::FailedPreconditionError("blob writer already committed or failed");
  if (!expected_sha256.empty()) HERD_RETURN_IF_ERROR(CheckDigest(expected_sha256));
  int fd = fd_;
  fd_ = -1;
  BlobRef ref{hash_.HexDigest(), size_};
  absl::Status status;
  if (!expected_sha256.empty() && ref.sha256 != expected_sha256) {
    status = absl::DataLossError(herd::StrCat("bytes hash to ", ref.sha256, ", expected ",
                                              expected_sha256));
  }
  if (status.ok() && ::fsync(fd) != 0) status = Errno(errno, "fsync", tmp_path_);
  ::close(fd);
  if (status.ok()) status = store_->Install(tmp_path_, ref);
  if (!status.ok()) {
    ::unlink(tmp_path_.c_str());
    return status;
  }
  return ref;
}

// ---- BlobReader ----

BlobReader::~BlobReader() { ::close(fd_); }

absl::Status BlobReader::ReadAt(int64_t offset, size_t max_bytes, std::string* out) const {
  out->clear();
  if (offset < 0 || offset > size_) {
    return absl::OutOfRangeError(
        herd::StrCat("offset ", offset, " is outside the blob's ", size_, " bytes"));
  }
  size_t want = static_cast<size_t>(std::min<int64_t>(static_cast<int64_t>(max_bytes), size_ - offset));
  out->resize(want);
  size_t got = 0;
  while (got < want) {
    ssize_t n = ::pread(fd_, out->data() + got, want - got, offset + static_cast<int64_t>(got));
    if (n < 0) {
      if (errno == EINTR) continue;
      out->clear();
      return Errno(errno, "read", path_);
    }
    if (n == 0) {
      out->clear();
      return absl::DataLossError(herd::StrCat(path_, " is shorter than its recorded size"));
    }
    got += static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

// ---- BlobStore ----

BlobStore::BlobStore(std::string root)
    : root_(std::move(root)), tmp_dir_(herd::StrCat(root_, "/tmp")) {}

absl::StatusOr<std::unique_ptr<BlobStore>> BlobStore::Open(const BlobStoreOptions& options) {
  HERD_RETURN_IF_ERROR(options.Validate());
  std::unique_ptr<BlobStore> store(new BlobStore(options.root));
  HERD_RETURN_IF_ERROR(MakeDir(store->root_));
  HERD_RETURN_IF_ERROR(MakeDir(herd::StrCat(store->root_, "/sha256")));
  HERD_RETURN_IF_ERROR(MakeDir(store->tmp_dir_));
  // Temp files of writers that never committed (a crash): never visible, now deleted.
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(store->tmp_dir_, ec)) {
    std::filesystem::remove_all(entry.path(), ec);
  }
  if (ec) {
    return absl::InternalError(herd::StrCat("cleaning ", store->tmp_dir_, ": ", ec.message()));
  }
  HERD_RETURN_IF_ERROR(SyncDirectory(store->tmp_dir_));
  HERD_RETURN_IF_ERROR(SyncDirectory(store->root_));
  return store;
}

std::string BlobStore::PathOf(std::string_view sha256) const {
  return herd::StrCat(root_, "/sha256/", sha256.substr(0, 2), "/", sha256);
}

absl::StatusOr<std::unique_ptr<BlobWriter>> BlobStore::NewWriter() const {
  std::string tmp = herd::StrCat(tmp_dir_, "/", ::getpid(), ".", tmp_counter.fetch_add(1), ".tmp");
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) return Errno(errno, "create", tmp);
  return std::unique_ptr<BlobWriter>(new BlobWriter(this, std::move(tmp), fd));
}

absl::Status BlobStore::Install(const std::string& tmp, const BlobRef& ref) const {
  std::string path = PathOf(ref.sha256);
  struct stat st;
  if (::stat(path.c_str(), &st) == 0 && st.st_size == ref.size_bytes) {
    // Already stored (same name, so the same bytes unless the disk lied; Verify checks that).
    // Its mtime is renewed: the garbage collector spares young blobs, and the caller is about
    // to write a row that references this one.
    ::utimensat(AT_FDCWD, path.c_str(), nullptr, 0);
    ::unlink(tmp.c_str());
    return absl::OkStatus();
  }
  std::string shard = herd::StrCat(root_, "/sha256/", ref.sha256.substr(0, 2));
  if (::mkdir(shard.c_str(), 0755) == 0) {
    HERD_RETURN_IF_ERROR(SyncDirectory(herd::StrCat(root_, "/sha256")));
  } else if (errno != EEXIST) {
    return Errno(errno, "mkdir", shard);
  }
  ::chmod(tmp.c_str(), 0444);  // blobs are immutable; best effort
  // mtime = when it was stored (an adopted upload's part file may be old), for the GC's grace.
  ::utimensat(AT_FDCWD, tmp.c_str(), nullptr, 0);
  if (::rename(tmp.c_str(), path.c_str()) != 0) return Errno(errno, "rename to", path);
  HERD_RETURN_IF_ERROR(SyncDirectory(shard));
  // The temp folder lost an entry; syncing it is not needed for the blob's durability.
  return absl::OkStatus();
}

absl::StatusOr<BlobRef> BlobStore::Put(std::string_view data) const {
  HERD_ASSIGN_OR_RETURN(auto writer, NewWriter());
  HERD_RETURN_IF_ERROR(writer->Append(data));
  return writer->Commit();
}

absl::StatusOr<BlobRef> BlobStore::PutStream(std::istream& in) const {
  HERD_ASSIGN_OR_RETURN(auto writer, NewWriter());
  std::string buf(1 << 16, '\0');
  while (in) {
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    std::streamsize n = in.gcount();
    if (n > 0) HERD_RETURN_IF_ERROR(writer->Append(std::string_view(buf.data(), static_cast<size_t>(n))));
  }
  if (in.bad()) return absl::InternalError("reading the input stream failed");
  return writer->Commit();
}

absl::StatusOr<BlobRef> BlobStore::PutFile(const std::string& path) const {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Errno(errno, "open", path);
  HERD_ASSIGN_OR_RETURN(auto writer, NewWriter());
  std::string buf(1 << 16, '\0');
  absl::Status status;
  while (status.ok()) {
    ssize_t n = ::read(fd, buf.data(), buf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) status = Errno(errno, "read", path);
    if (n <= 0) break;
    status = writer->Append(std::string_view(buf.data(), static_cast<size_t>(n)));
  }
  ::close(fd);
  if (!status.ok()) return status;
  return writer->Commit();
}

absl::StatusOr<BlobRef> BlobStore::Adopt(const std::string& path, std::string_view expected_sha256,
                                         int64_t expected_size) const {
  HERD_RETURN_IF_ERROR(CheckDigest(expected_sha256));
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return Errno(errno, "stat", path);
  if (st.st_size != expected_size) {
    return absl::DataLossError(
        herd::StrCat(path, " holds ", st.st_size, " bytes, expected ", expected_size));
  }
  HERD_ASSIGN_OR_RETURN(std::string digest, Sha256File(path));
  if (digest != expected_sha256) {
    return absl::DataLossError(
        herd::StrCat("bytes hash to ", digest, ", expected ", expected_sha256));
  }
  BlobRef ref{digest, expected_size};
  absl::Status status = Install(path, ref);
  if (status.ok()) return ref;
  if (status.code() != absl::StatusCode::kInternal) return status;
  // Not the same file system (EXDEV) or similar: copy instead.
  HERD_ASSIGN_OR_RETURN(BlobRef copied, PutFile(path));
  if (copied != ref) return absl::DataLossError(herd::StrCat(path, " changed while stored"));
  ::unlink(path.c_str());
  return ref;
}

bool BlobStore::Has(std::string_view sha256) const {
  if (!IsSha256Hex(sha256)) return false;
  struct stat st;
  return ::stat(PathOf(sha256).c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

absl::StatusOr<int64_t> BlobStore::Size(std::string_view sha256) const {
  HERD_RETURN_IF_ERROR(CheckDigest(sha256));
  struct stat st;
  std::string path = PathOf(sha256);
  if (::stat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return absl::NotFoundError(herd::StrCat("blob ", sha256, " not found"));
    return Errno(errno, "stat", path);
  }
  return static_cast<int64_t>(st.st_size);
}

absl::StatusOr<int64_t> BlobStore::Touch(std::string_view sha256) const {
  HERD_ASSIGN_OR_RETURN(int64_t size, Size(sha256));
  std::string path = PathOf(sha256);
  if (::utimensat(AT_FDCWD, path.c_str(), nullptr, 0) != 0) return Errno(errno, "touch", path);
  return size;
}

absl::StatusOr<std::unique_ptr<BlobReader>> BlobStore::NewReader(std::string_view sha256) const {
  HERD_RETURN_IF_ERROR(CheckDigest(sha256));
  std::string path = PathOf(sha256);
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return absl::NotFoundError(herd::StrCat("blob ", sha256, " not found"));
    return Errno(errno, "open", path);
  }
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    absl::Status status = Errno(errno, "stat", path);
    ::close(fd);
    return status;
  }
  return std::unique_ptr<BlobReader>(new BlobReader(path, fd, st.st_size));
}

absl::StatusOr<std::string> BlobStore::Read(std::string_view sha256, int64_t offset,
                                            int64_t length) const {
  HERD_ASSIGN_OR_RETURN(auto reader, NewReader(sha256));
  if (offset < 0 || offset > reader->size()) {
    return absl::OutOfRangeError(
        herd::StrCat("offset ", offset, " is outside the blob's ", reader->size(), " bytes"));
  }
  int64_t n = length < 0 ? reader->size() - offset : std::min(length, reader->size() - offset);
  std::string out;
  HERD_RETURN_IF_ERROR(reader->ReadAt(offset, static_cast<size_t>(n), &out));
  return out;
}

absl::StatusOr<std::string> BlobStore::ReadConcatenated(const std::vector<BlobRef>& parts,
                                                        int64_t offset, size_t max_bytes) const {
  int64_t total = 0;
  for (const BlobRef& p : parts) total += p.size_bytes;
  if (offset < 0 || offset > total) {
    return absl::OutOfRangeError(
        herd::StrCat("offset ", offset, " is outside the ", total, " bytes of the artifact"));
  }
  std::string out;
  int64_t start = 0;  // offset of the current part in the stream
  for (const BlobRef& p : parts) {
    const int64_t end = start + p.size_bytes;
    if (out.size() >= max_bytes) break;
    if (offset < end) {
      HERD_ASSIGN_OR_RETURN(auto reader, NewReader(p.sha256));
      if (reader->size() != p.size_bytes) {
        return absl::DataLossError(herd::StrCat("blob ", p.sha256, " holds ", reader->size(),
                                                " bytes, not ", p.size_bytes));
      }
      const int64_t from = std::max(offset, start) - start;
      std::string piece;
      HERD_RETURN_IF_ERROR(reader->ReadAt(from, max_bytes - out.size(), &piece));
      out += piece;
    }
    start = end;
  }
  return out;
}

absl::Status BlobStore::Verify(std::string_view sha256) const {
  HERD_RETURN_IF_ERROR(CheckDigest(sha256));
  auto digest = Sha256File(PathOf(sha256));
  if (!digest.ok()) {
    if (digest.status().code() == absl::StatusCode::kNotFound) {
      return absl::NotFoundError(herd::StrCat("blob ", sha256, " not found"));
    }
    return digest.status();
  }
  if (*digest != sha256) {
    return absl::DataLossError(
        herd::StrCat("blob ", sha256, " is corrupt: its bytes hash to ", *digest));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<BlobStore::Info>> BlobStore::List() const {
  std::vector<Info> out;
  std::error_code ec;
  for (const auto& shard : std::filesystem::directory_iterator(root_ + "/sha256", ec)) {
    if (!shard.is_directory()) continue;
    for (const auto& entry : std::filesystem::directory_iterator(shard.path(), ec)) {
      std::string name = entry.path().filename().string();
      if (!IsSha256Hex(name)) continue;
      struct stat st;
      if (::stat(entry.path().c_str(), &st) != 0) continue;  // deleted meanwhile
      out.push_back(Info{BlobRef{name, static_cast<int64_t>(st.st_size)},
                         absl::FromUnixSeconds(st.st_mtim.tv_sec) +
                             absl::Nanoseconds(st.st_mtim.tv_nsec)});
    }
    if (ec) break;
  }
  if (ec) return absl::InternalError(herd::StrCat("listing ", root_, ": ", ec.message()));
  return out;
}

absl::Status BlobStore::Delete(std::string_view sha256) const {
  HERD_RETURN_IF_ERROR(CheckDigest(sha256));
  std::string path = PathOf(sha256);
  if (::unlink(path.c_str()) != 0) {
    if (errno == ENOENT) return absl::NotFoundError(herd::StrCat("blob ", sha256, " not found"));
    return Errno(errno, "unlink", path);
  }
  return SyncDirectory(herd::StrCat(root_, "/sha256/", sha256.substr(0, 2)));
}

}  // namespace herd::coordinator::store
