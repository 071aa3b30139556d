// Resumable uploads: part files + the uploads table (upload_store.h).
#include "coordinator/store/upload_store.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <map>

#include "common/file_util.h"
#include "common/log.h"
#include "common/status.h"
#include "common/strings.h"
#include "coordinator/store/store_util.h"
#include "datasets/records.h"

namespace herd::coordinator::store {
namespace {

constexpr std::string_view kColumns =
    "id, tenant, name, format, skip_invalid, total_size, sha256, committed_offset, state, "
    "result_json, create_us, update_us, expire_us";

std::string_view StateName(UploadState s) {
  switch (s) {
    case UploadState::kOpen:
      return "OPEN";
    case UploadState::kSealed:
      return "SEALED";
    case UploadState::kFinished:
      return "FINISHED";
  }
  return "OPEN";
}

absl::StatusOr<UploadRecord> RowToUpload(const Row& r) {
  UploadRecord u;
  u.id = r.Text(0);
  u.tenant = r.Text(1);
  u.params.name = r.Text(2);
  u.params.format = r.Text(3);
  u.params.skip_invalid = r.Int(4) != 0;
  u.params.total_size_bytes = r.Int(5);
  u.params.sha256 = r.Text(6);
  u.committed_offset = r.Int(7);
  std::string state = r.Text(8);
  u.state = state == "SEALED"     ? UploadState::kSealed
            : state == "FINISHED" ? UploadState::kFinished
                                  : UploadState::kOpen;
  if (u.state == UploadState::kFinished) {
    auto result = DatasetFromJson(r.Text(9));
    if (!result.ok()) return Annotate(result.status(), herd::StrCat("upload ", u.id));
    u.result = *std::move(result);
  }
  u.create_time = FromMicros(r.Int(10));
  u.update_time = FromMicros(r.Int(11));
  u.expire_time = FromMicros(r.Int(12));
  return u;
}

absl::Status NotFound(std::string_view id) {
  return absl::NotFoundError(herd::StrCat("upload ", id, " not found"));
}

absl::Status Errno(std::string_view what, const std::string& path) {
  int err = errno;
  std::string msg = herd::StrCat(what, " ", path, ": ", std::strerror(err));
  if (err == ENOSPC || err == EDQUOT) return absl::ResourceExhaustedError(msg);
  if (err == EIO) return absl::UnavailableError(msg);
  return absl::InternalError(msg);
}

}  // namespace

absl::Status UploadStoreOptions::Validate() const {
  if (dir.empty()) return absl::InvalidArgumentError("UploadStoreOptions.dir: required");
  if (max_upload_bytes < 1) {
    return absl::InvalidArgumentError("UploadStoreOptions.max_upload_bytes: must be >= 1");
  }
  if (max_open_uploads_per_tenant < 1) {
    return absl::InvalidArgumentError("UploadStoreOptions.max_open_uploads_per_tenant: must be >= 1");
  }
  if (ttl <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("UploadStoreOptions.ttl: must be > 0");
  }
  if (clock == nullptr) return absl::InvalidArgumentError("UploadStoreOptions.clock: required");
  return absl::OkStatus();
}

// ---- UploadWriter ----

UploadWriter::~UploadWriter() {
  if (fd_ >= 0) ::close(fd_);
  store_->Release(id_);
}

absl::Status UploadWriter::Append(int64_t offset, std::string_view data) {
  if (fd_ < 0) return absl::FailedPreconditionError(herd::StrCat("upload ", id_, ": writer is spent"));
  if (data.empty()) return absl::InvalidArgumentError("empty chunk");
  if (offset != written_) {
    return absl::AbortedError(herd::StrCat("chunk starts at offset ", offset, " but upload ", id_,
                                           " continues at ", written_, " (committed_offset ",
                                           committed_, ")"));
  }
  if (offset + static_cast<int64_t>(data.size()) > total_) {
    return absl::OutOfRangeError(herd::StrCat("chunk ends at ", offset + data.size(),
                                              ", past total_size_bytes ", total_));
  }
  size_t done = 0;
  while (done < data.size()) {
    ssize_t n = ::pwrite(fd_, data.data() + done, data.size() - done,
                         offset + static_cast<int64_t>(done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return Errno("write", path_);
    }
    done += static_cast<size_t>(n);
  }
  written_ += static_cast<int64_t>(data.size());
  return absl::OkStatus();
}

absl::Status UploadWriter::Commit() {
  if (fd_ < 0) return absl::FailedPreconditionError(herd::StrCat("upload ", id_, ": writer is spent"));
  if (written_ == committed_) return absl::OkStatus();
  if (::fdatasync(fd_) != 0) return Errno("fdatasync", path_);
  const absl::Time now = store_->options_.clock->Now();
  HERD_RETURN_IF_ERROR(store_->db_->Write([&](Tx& tx) -> absl::Status {
    HERD_ASSIGN_OR_RETURN(int64_t n, tx.Exec("UPDATE uploads SET committed_offset = ?,"
                                             " update_us = ?, expire_us = ?"
                                             " WHERE id = ? AND state = 'OPEN'",
                                             {written_, ToMicros(now),
                                              ToMicros(now + store_->options_.ttl), id_}));
    if (n == 0) return NotFound(id_);
    return absl::OkStatus();
  }));
  committed_ = written_;
  return absl::OkStatus();
}

absl::StatusOr<BlobRef> UploadWriter::Seal() {
  HERD_RETURN_IF_ERROR(Commit());
  if (committed_ != total_) {
    return absl::FailedPreconditionError(
        herd::StrCat("upload ", id_, " has ", committed_, " of ", total_,
                     " bytes; send the rest from offset ", committed_));
  }
  ::close(fd_);
  fd_ = -1;
  auto ref = store_->blobs_->Adopt(path_, sha256_, total_);
  if (!ref.ok()) {
    if (ref.status().code() == absl::StatusCode::kDataLoss) {
      HERD_RETURN_IF_ERROR(store_->DeleteSession(id_));
      return absl::DataLossError(herd::StrCat(
          "upload ", id_, ": ", ref.status().message(),
          " (the sha256 given at StartUpload); the upload was deleted, start again"));
    }
    return ref.status();
  }
  const absl::Time now = store_->options_.clock->Now();
  HERD_RETURN_IF_ERROR(store_->db_->Write([&](Tx& tx) -> absl::Status {
    return tx.Exec("UPDATE uploads SET state = 'SEALED', update_us = ?, expire_us = ?"
                   " WHERE id = ?",
                   {ToMicros(now), ToMicros(now + store_->options_.ttl), id_})
        .status();
  }));
  return ref;
}

// ---- UploadStore ----

absl::StatusOr<std::unique_ptr<UploadStore>> UploadStore::Open(Db* db, const BlobStore* blobs,
                                                               UploadStoreOptions options) {
  HERD_RETURN_IF_ERROR(options.Validate());
  if (::mkdir(options.dir.c_str(), 0755) != 0 && errno != EEXIST) {
    return Errno("mkdir", options.dir);
  }
  std::unique_ptr<UploadStore> store(new UploadStore(db, blobs, std::move(options)));
  HERD_RETURN_IF_ERROR(store->Reconcile());
  return store;
}

std::string UploadStore::PartPath(std::string_view id) const {
  return herd::StrCat(options_.dir, "/", id, ".part");
}

void UploadStore::Release(const std::string& id) {
  absl::MutexLock lock(&mu_);
  writing_.erase(id);
}

absl::Status UploadStore::Reconcile() {
  std::map<std::string, UploadRecord> open;
  HERD_RETURN_IF_ERROR(db_->Read([&](Tx& tx) -> absl::Status {
    HERD_ASSIGN_OR_RETURN(auto rows, tx.Query(herd::StrCat("SELECT ", kColumns,
                                                           " FROM uploads WHERE state = 'OPEN'")));
    for (const Row& row : rows) {
      HERD_ASSIGN_OR_RETURN(UploadRecord u, RowToUpload(row));
      open.emplace(u.id, std::move(u));
    }
    return absl::OkStatus();
  }));
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(options_.dir, ec)) {
    std::string name = entry.path().filename().string();
    bool keep = name.size() > 5 && name.ends_with(".part") &&
                open.count(name.substr(0, name.size() - 5)) > 0;
    if (!keep) std::filesystem::remove_all(entry.path(), ec);
  }
  if (ec) return absl::InternalError(herd::StrCat("cleaning ", options_.dir, ": ", ec.message()));
  for (auto& [id, u] : open) {
    std::string path = PartPath(id);
    struct stat st;
    int64_t size = -1;
    if (::stat(path.c_str(), &st) == 0) size = st.st_size;
    std::optional<int64_t> fix;
    bool sealed = false;
    if (size < 0) {
      // Seal() moved the file into the blob store and the crash came before the row said so.
      if (u.committed_offset == u.params.total_size_bytes && blobs_->Has(u.params.sha256)) {
        sealed = true;
      } else if (u.committed_offset > 0) {
        fix = 0;
      }
    } else if (size > u.committed_offset) {
      if (::truncate(path.c_str(), u.committed_offset) != 0) return Errno("truncate", path);
    } else if (size < u.committed_offset) {
      fix = size;
    }
    if (fix) {
      HERD_LOG(Warning) << "upload " << id << ": part file holds " << std::max<int64_t>(size, 0)
                        << " bytes but " << u.committed_offset
                        << " were committed; the client resumes from " << *fix;
    }
    if (fix || sealed) {
      HERD_RETURN_IF_ERROR(db_->Write([&](Tx& tx) -> absl::Status {
        if (sealed) return tx.Exec("UPDATE uploads SET state = 'SEALED' WHERE id = ?", {id}).status();
        return tx.Exec("UPDATE uploads SET committed_offset = ? WHERE id = ?", {*fix, id}).status();
      }));
    }
  }
  return SyncDirectory(options_.dir);
}

absl::StatusOr<UploadRecord> UploadStore::Start(std::string_view tenant,
                                                const UploadParams& params) {
  HERD_RETURN_IF_ERROR(ValidateName("name", params.name));
  if (!params.format.empty() && !datasets::ParseFormatName(params.format)) {
    return absl::InvalidArgumentError(herd::StrCat(
        "format: '", params.format,
        "' is not one of text, prompt_completion, chat, alpaca, tokenized (or empty to detect)"));
  }
  if (params.total_size_bytes < 1) {
    return absl::InvalidArgumentError(
        herd::StrCat("total_size_bytes ", params.total_size_bytes, " must be at least 1"));
  }
  if (!IsSha256Hex(params.sha256)) {
    return absl::InvalidArgumentError("sha256: must be 64 lower-case hex characters");
  }
  if (params.total_size_bytes > options_.max_upload_bytes) {
    return absl::ResourceExhaustedError(herd::StrCat("total_size_bytes ", params.total_size_bytes,
                                                     " is over the limit of ",
                                                     options_.max_upload_bytes, " bytes"));
  }
  UploadRecord out;
  HERD_RETURN_IF_ERROR(db_->Write([&](Tx& tx) -> absl::Status {
    const absl::Time now = options_.clock->Now();
    HERD_ASSIGN_OR_RETURN(
        auto rows, tx.Query(herd::StrCat("SELECT ", kColumns,
                                         " FROM uploads WHERE tenant = ? AND name = ?"
                                         " AND format = ? AND skip_invalid = ? AND total_size = ?"
                                         " AND sha256 = ? AND state IN ('OPEN', 'SEALED')"
                                         " AND expire_us > ? ORDER BY create_us LIMIT 1"),
                            {tenant, params.name, params.format, params.skip_invalid,
                             params.total_size_bytes, params.sha256, ToMicros(now)}));
    if (!rows.empty()) {
      HERD_ASSIGN_OR_RETURN(out, RowToUpload(rows[0]));
      return absl::OkStatus();
    }
    HERD_ASSIGN_OR_RETURN(auto count, tx.QueryOne("SELECT COUNT(*) FROM uploads WHERE tenant = ?"
                                                  " AND state IN ('OPEN', 'SEALED')"
                                                  " AND expire_us > ?",
                                                  {tenant, ToMicros(now)}));
    if (count->Int(0) >= options_.max_open_uploads_per_tenant) {
      return absl::ResourceExhaustedError(herd::StrCat(
          "tenant has ", count->Int(0), " unfinished uploads; the limit is ",
          options_.max_open_uploads_per_tenant));
    }
    HERD_ASSIGN_OR_RETURN(std::string id, NewId("up_"));
    HERD_RETURN_IF_ERROR(
        tx.Exec("INSERT INTO uploads (id, tenant, name, format, skip_invalid, total_size, sha256,"
                " part_path, state, create_us, update_us, expire_us)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'OPEN', ?, ?, ?)",
                {id, tenant, params.name, params.format, params.skip_invalid,
                 params.total_size_bytes, params.sha256, herd::StrCat(id, ".part"),
                 ToMicros(now), ToMicros(now), ToMicros(now + options_.ttl)})
            .status());
    HERD_ASSIGN_OR_RETURN(auto row, tx.QueryOne(herd::StrCat("SELECT ", kColumns,
                                                             " FROM uploads WHERE id = ?"),
                                                {id}));
    HERD_ASSIGN_OR_RETURN(out, RowToUpload(*row));
    return absl::OkStatus();
  }));
  return out;
}

absl::StatusOr<UploadRecord> UploadStore::Get(std::string_view tenant, std::string_view id) const {
  UploadRecord out;
  HERD_RETURN_IF_ERROR(db_->Read([&](Tx& tx) -> absl::Status {
    HERD_ASSIGN_OR_RETURN(auto row, tx.QueryOne(herd::StrCat("SELECT ", kColumns,
                                                             " FROM uploads WHERE id = ?"
                                                             " AND tenant = ? AND expire_us > ?"),
                                                {id, tenant, ToMicros(options_.clock->Now())}));
    if (!row) return NotFound(id);
    HERD_ASSIGN_OR_RETURN(out, RowToUpload(*row));
    return absl::OkStatus();
  }));
  return out;
}

absl::StatusOr<std::unique_ptr<UploadWriter>> UploadStore::OpenWriter(std::string_view tenant,
                                                                      std::string_view id) {
  HERD_ASSIGN_OR_RETURN(UploadRecord u, Get(tenant, id));  // NOT_FOUND first
  {
    absl::MutexLock lock(&mu_);
    if (!writing_.insert(u.id).second) {
      return absl::AbortedError(herd::StrCat("another stream is writing upload ", id,
                                             "; call QueryUpload and resume"));
    }
  }
  // From here on the writer (or this function, on error) releases the id.
  std::unique_ptr<UploadWriter> writer;
  auto fail = [&](absl::Status status) {
    Release(u.id);
    return status;
  };
  auto again = Get(tenant, id);  // re-read now that no other writer can seal it
  if (!again.ok()) return fail(again.status());
  u = *std::move(again);
  if (u.state != UploadState::kOpen) {
    return fail(absl::FailedPreconditionError(herd::StrCat(
        "upload ", id, " is ", StateName(u.state), "; it takes no more bytes")));
  }
  std::string path = PartPath(u.id);
  bool existed = ::access(path.c_str(), F_OK) == 0;
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return fail(Errno("open", path));
  // Bytes a previous writer appended without committing do not count.
  if (::ftruncate(fd, u.committed_offset) != 0) {
    absl::Status status = Errno("truncate", path);
    ::close(fd);
    return fail(status);
  }
  if (!existed) {
    absl::Status status = SyncDirectory(options_.dir);
    if (!status.ok()) {
      ::close(fd);
      return fail(status);
    }
  }
  return std::unique_ptr<UploadWriter>(new UploadWriter(this, u.id, path, fd,
                                                        u.committed_offset,
                                                        u.params.total_size_bytes, u.params.sha256));
}

absl::StatusOr<UploadRecord> UploadStore::Finish(std::string_view tenant, std::string_view id,
                                                 const DatasetRecord& result) {
  UploadRecord out;
  HERD_RETURN_IF_ERROR(db_->Write([&](Tx& tx) -> absl::Status {
    const absl::Time now = options_.clock->Now();
    auto select = herd::StrCat("SELECT ", kColumns,
                               " FROM uploads WHERE id = ? AND tenant = ? AND expire_us > ?");
    HERD_ASSIGN_OR_RETURN(auto row, tx.QueryOne(select, {id, tenant, ToMicros(now)}));
    if (!row) return NotFound(id);
    HERD_ASSIGN_OR_RETURN(out, RowToUpload(*row));
    if (out.state == UploadState::kFinished) return absl::OkStatus();
    if (out.state != UploadState::kSealed) {
      return absl::FailedPreconditionError(
          herd::StrCat("upload ", id, " has not received and verified all its bytes yet"));
    }
    HERD_RETURN_IF_ERROR(tx.Exec("UPDATE uploads SET state = 'FINISHED', result_json = ?,"
                                 " update_us = ?, expire_us = ? WHERE id = ?",
                                 {DatasetToJson(result), ToMicros(now),
                                  ToMicros(now + options_.ttl), id})
                             .status());
    HERD_ASSIGN_OR_RETURN(row, tx.QueryOne(select, {id, tenant, ToMicros(now)}));
    HERD_ASSIGN_OR_RETURN(out, RowToUpload(*row));
    return absl::OkStatus();
  }));
  return out;
}

absl::Status UploadStore::DeleteSession(std::string_view id) {
  HERD_RETURN_IF_ERROR(db_->Write([&](Tx& tx) -> absl::Status {
    return tx.Exec("DELETE FROM uploads WHERE id = ?", {id}).status();
  }));
  ::unlink(PartPath(id).c_str());
  return SyncDirectory(options_.dir);
}

absl::StatusOr<int> UploadStore::DeleteExpired() {
  std::vector<std::string> deleted;
  HERD_RETURN_IF_ERROR(db_->Write([&](Tx& tx) -> absl::Status {
    HERD_ASSIGN_OR_RETURN(auto rows, tx.Query("SELECT id FROM uploads WHERE expire_us <= ?",
                                              {ToMicros(options_.clock->Now())}));
    absl::MutexLock lock(&mu_);
    for (const Row& row : rows) {
      std::string id = row.Text(0);
      if (writing_.count(id) > 0) continue;
      HERD_RETURN_IF_ERROR(tx.Exec("DELETE FROM uploads WHERE id = ?", {id}).status());
      deleted.push_back(std::move(id));
    }
    return absl::OkStatus();
  }));
  // After the commit: a crash before this leaves part files that Reconcile deletes.
  for (const std::string& id : deleted) ::unlink(PartPath(id).c_str());
  if (!deleted.empty()) HERD_RETURN_IF_ERROR(SyncDirectory(options_.dir));
  return static_cast<int>(deleted.size());
}

}  // namespace herd::coordinator::store
