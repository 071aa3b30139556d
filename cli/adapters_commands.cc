// `herd adapters ...`: see adapters_commands.h.
#include "cli/adapters_commands.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <memory>
#include <thread>
#include <vector>

#include <google/protobuf/util/json_util.h>
#include <grpcpp/grpcpp.h>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "cli/call.h"
#include "cli/exit_codes.h"
#include "common/file_util.h"
#include "common/rpc/rpc.h"
#include "common/sha256.h"
#include "common/status.h"
#include "common/strings.h"
#include "herd/v1/adapters.grpc.pb.h"

namespace herd::cli {
namespace {

namespace fs = std::filesystem;

// A stream may take long for a big adapter; one that runs out of time resumes where it stopped.
constexpr absl::Duration kStreamDeadline = absl::Minutes(30);
// The checkpoint a partial folder is fetching (a herd.v1.Checkpoint as JSON).
constexpr char kStateFile[] = ".herd-download";

struct Client {
  ClientConfig config;
  std::unique_ptr<herd::v1::AdapterService::Stub> stub;
};

absl::StatusOr<Client> Connect(const ClientConfig& config) {
  auto channel = herd::rpc::MakeChannel({.target = config.endpoint, .ca_file = config.ca_file});
  if (!channel.ok()) return channel.status();
  return Client{config, herd::v1::AdapterService::NewStub(*channel)};
}

int Fail(const Client* client, const absl::Status& status) {
  return FailCall(client ? &client->config : nullptr, status);
}

bool Transient(const absl::Status& status) {
  return status.code() == absl::StatusCode::kUnavailable ||
         status.code() == absl::StatusCode::kDeadlineExceeded;
}

std::string TimeText(const google::protobuf::Timestamp& t) {
  return absl::FormatTime("%Y-%m-%d %H:%M:%S UTC", absl::FromUnixSeconds(t.seconds()),
                          absl::UTCTimeZone());
}

std::string SizeText(int64_t bytes) {
  char buf[32];
  if (bytes < 1024) {
    std::snprintf(buf, sizeof(buf), "%lld B", static_cast<long long>(bytes));
  } else if (bytes < (int64_t{1} << 20)) {
    std::snprintf(buf, sizeof(buf), "%.1f KiB", static_cast<double>(bytes) / 1024);
  } else if (bytes < (int64_t{1} << 30)) {
    std::snprintf(buf, sizeof(buf), "%.1f MiB", static_cast<double>(bytes) / (1 << 20));
  } else {
    std::snprintf(buf, sizeof(buf), "%.2f GiB", static_cast<double>(bytes) / (1 << 30));
  }
  return buf;
}

std::string LossText(bool has, double value) {
  if (!has) return "-";
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.4f", value);
  return buf;
}

bool IsHexDigest(const std::string& s) {
  return s.size() == 64 && std::all_of(s.begin(), s.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
}

// The server names the files we create: accept only plain, visible names.
absl::Status CheckManifest(const herd::v1::Manifest& m) {
  if (m.files_size() == 0) return absl::DataLossError("the server sent an adapter with no files");
  int64_t total = 0;
  for (const herd::v1::FileInfo& f : m.files()) {
    const std::string& n = f.name();
    if (n.empty() || n.size() > 128 || n[0] == '.' || n.find_first_of("/\\", 0) != std::string::npos ||
        n.find('\0') != std::string::npos) {
      return absl::DataLossError(StrCat("the server sent a file name that is not a plain name: '", n, "'"));
    }
    if (f.size_bytes() < 0 || !IsHexDigest(f.sha256())) {
      return absl::DataLossError(StrCat("the server sent a bad size or sha256 for ", n));
    }
    total += f.size_bytes();
  }
  if (total != m.total_size_bytes() || !IsHexDigest(m.sha256())) {
    return absl::DataLossError("the server sent an inconsistent adapter manifest");
  }
  return absl::OkStatus();
}

// common.proto's manifest digest, from the files' own digests.
std::string ManifestDigest(const herd::v1::Manifest& m) {
  std::vector<const herd::v1::FileInfo*> sorted;
  for (const auto& f : m.files()) sorted.push_back(&f);
  std::sort(sorted.begin(), sorted.end(), [](auto* a, auto* b) { return a->name() < b->name(); });
  Sha256 h;
  for (const auto* f : sorted) h.Update(StrCat(f->sha256(), "  ", f->name(), "\n"));
  return h.HexDigest();
}

absl::Status Errno(std::string_view what, const fs::path& path) {
  return absl::FailedPreconditionError(StrCat("cannot ", what, " ", path.string(), ": ", std::strerror(errno)));
}

absl::Status FsError(std::string_view what, const fs::path& path, const std::error_code& ec) {
  return absl::FailedPreconditionError(StrCat("cannot ", what, " ", path.string(), ": ", ec.message()));
}

absl::Status FsyncFile(const fs::path& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Errno("open", path);
  const int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0) return Errno("fsync", path);
  return absl::OkStatus();
}

// The partial folder of one download: the checkpoint it fetches and the files so far.
class Partial {
 public:
  explicit Partial(fs::path dir) : dir_(std::move(dir)) {}

  const fs::path& dir() const { return dir_; }
  const std::optional<herd::v1::Checkpoint>& checkpoint() const { return checkpoint_; }

  // Opens the folder, reading the checkpoint a previous run was fetching. A folder without a
  // readable state is left over from a crash at the very start or the very end: started over.
  absl::Status Open() {
    std::error_code ec;
    if (fs::exists(dir_ / kStateFile, ec)) {
      auto text = ReadFile((dir_ / kStateFile).string());
      herd::v1::Checkpoint c;
      if (text.ok() && google::protobuf::util::JsonStringToMessage(*text, &c).ok() &&
          CheckManifest(c.adapter()).ok()) {
        checkpoint_ = c;
        return absl::OkStatus();
      }
    }
    return Reset();
  }

  // Forgets everything.
  absl::Status Reset() {
    checkpoint_.reset();
    std::error_code ec;
    fs::remove_all(dir_, ec);
    if (ec) return FsError("remove", dir_, ec);
    fs::create_directories(dir_, ec);
    if (ec) return FsError("create", dir_, ec);
    return absl::OkStatus();
  }

  // Records what is being fetched (the first message of a fresh stream).
  absl::Status Begin(const herd::v1::Checkpoint& checkpoint) {
    HERD_RETURN_IF_ERROR(WriteFileAtomic((dir_ / kStateFile).string(), MessageToJson(checkpoint)));
    checkpoint_ = checkpoint;
    return absl::OkStatus();
  }

  // Where the stream resumes: after every complete file and the head of the first incomplete
  // one. Removes a file longer than it should be and every file after the first incomplete one.
  absl::StatusOr<int64_t> ResumeOffset() {
    if (!checkpoint_) return 0;
    int64_t offset = 0;
    bool incomplete = false;
    for (const herd::v1::FileInfo& f : checkpoint_->adapter().files()) {
      const fs::path p = dir_ / f.name();
      std::error_code ec;
      const bool present = fs::exists(p, ec);
      int64_t have = present ? static_cast<int64_t>(fs::file_size(p, ec)) : 0;
      if (ec) return FsError("read", p, ec);
      if (present && (incomplete || have > f.size_bytes())) {
        fs::remove(p, ec);
        if (ec) return FsError("remove", p, ec);
        have = 0;
      }
      if (incomplete) continue;
      offset += have;
      incomplete = have < f.size_bytes();
    }
    return offset;
  }

  // Writes stream bytes at `offset` into the files they belong to.
  absl::Status Write(int64_t offset, std::string_view data) {
    int64_t start = 0;
    for (const herd::v1::FileInfo& f : checkpoint_->adapter().files()) {
      const int64_t end = start + f.size_bytes();
      if (!data.empty() && offset < end) {
        const size_t n = static_cast<size_t>(std::min<int64_t>(end - offset, data.size()));
        const fs::path p = dir_ / f.name();
        const int fd = ::open(p.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
        if (fd < 0) return Errno("open", p);
        size_t done = 0;
        while (done < n) {
          const ssize_t w = ::pwrite(fd, data.data() + done, n - done, offset - start + done);
          if (w < 0 && errno == EINTR) continue;
          if (w <= 0) {
            ::close(fd);
            return Errno("write", p);
          }
          done += static_cast<size_t>(w);
        }
        ::close(fd);
        offset += static_cast<int64_t>(n);
        data.remove_prefix(n);
      }
      start = end;
    }
    if (!data.empty()) return absl::DataLossError("the server sent bytes past the end of the adapter");
    return absl::OkStatus();
  }

  // Checks every file's size and sha256 and the manifest digest, and fsyncs the files. A file
  // that fails is removed (so the next stream fetches it again) and named in the DATA_LOSS.
  absl::Status Verify() const {
    const herd::v1::Manifest& m = checkpoint_->adapter();
    if (ManifestDigest(m) != m.sha256()) {
      return absl::DataLossError("the adapter's manifest digest does not match its files' digests");
    }
    std::vector<std::string> bad;
    for (const herd::v1::FileInfo& f : m.files()) {
      const fs::path p = dir_ / f.name();
      if (f.size_bytes() == 0 && !fs::exists(p)) {
        HERD_RETURN_IF_ERROR(WriteFileAtomic(p.string(), ""));
      }
      auto sha = Sha256File(p.string());
      if (!sha.ok() || *sha != f.sha256()) {
        std::error_code ec;
        fs::remove(p, ec);
        bad.push_back(f.name());
        continue;
      }
      HERD_RETURN_IF_ERROR(FsyncFile(p));
    }
    if (!bad.empty()) {
      return absl::DataLossError(StrCat(StrJoin(bad, ", "), " failed the sha256 check"));
    }
    return SyncDirectory(dir_.string());
  }

  // Moves the verified files to `dest`: the whole folder when `dest` does not exist yet, else
  // file by file (each rename atomic), replacing files of the same names.
  absl::Status Install(const fs::path& dest) {
    std::error_code ec;
    fs::remove(dir_ / kStateFile, ec);
    if (ec) return FsError("remove", dir_ / kStateFile, ec);
    if (!fs::exists(dest, ec)) {
      fs::rename(dir_, dest, ec);
      if (ec) return FsError("create", dest, ec);
      return SyncDirectory(dest.parent_path().string());
    }
    for (const herd::v1::FileInfo& f : checkpoint_->adapter().files()) {
      fs::rename(dir_ / f.name(), dest / f.name(), ec);
      if (ec) return FsError("write", dest / f.name(), ec);
    }
    HERD_RETURN_IF_ERROR(SyncDirectory(dest.string()));
    fs::remove_all(dir_, ec);
    return absl::OkStatus();
  }

 private:
  const fs::path dir_;
  std::optional<herd::v1::Checkpoint> checkpoint_;
};

// "herd: job_x step 20: [#####.....] 12.0 MiB / 24.0 MiB" on one stderr line, when stderr is a
// terminal; nothing otherwise.
class ProgressBar {
 public:
  explicit ProgressBar(bool wanted) : on_(wanted && ::isatty(STDERR_FILENO) == 1) {}
  ~ProgressBar() { Done(); }

  void Show(const std::string& label, int64_t done, int64_t total, bool force = false) {
    if (!on_) return;
    const absl::Time now = absl::Now();
    if (!force && now - last_ < absl::Milliseconds(100)) return;
    last_ = now;
    constexpr int kWidth = 30;
    const int filled = total > 0 ? static_cast<int>(kWidth * done / total) : kWidth;
    std::cerr << "\rherd: " << label << " [" << std::string(filled, '#')
              << std::string(kWidth - filled, '.') << "] " << SizeText(done) << " / "
              << SizeText(total) << "   " << std::flush;
    shown_ = true;
  }
  void Done() {
    if (shown_) std::cerr << "\n";
    shown_ = false;
  }

 private:
  const bool on_;
  bool shown_ = false;
  absl::Time last_ = absl::InfinitePast();
};

// One DownloadAdapter stream from where `partial` stands. OK when every byte arrived.
absl::Status StreamOnce(const Client& client, const DownloadOptions& options, Partial& partial,
                        ProgressBar& bar) {
  HERD_ASSIGN_OR_RETURN(const int64_t offset, partial.ResumeOffset());
  herd::v1::DownloadAdapterRequest request;
  request.set_job_id(options.job_id);
  if (options.step) request.set_step(*options.step);
  request.set_offset(offset);
  if (partial.checkpoint()) request.set_if_sha256(partial.checkpoint()->adapter().sha256());

  grpc::ClientContext context;
  PrepareCall(client.config, &context, kStreamDeadline);
  auto reader = client.stub->DownloadAdapter(&context, request);
  herd::v1::DownloadAdapterResponse message;
  absl::Status local;
  int64_t next = offset;
  bool first = true;
  std::string label;
  while (local.ok() && reader->Read(&message)) {
    if (first) {
      first = false;
      if (!message.has_checkpoint()) {
        local = absl::DataLossError("the server's stream did not start with the checkpoint");
        break;
      }
      const herd::v1::Checkpoint& c = message.checkpoint();
      local = CheckManifest(c.adapter());
      if (!local.ok()) break;
      if (!partial.checkpoint()) {
        local = partial.Begin(c);
      } else if (c.adapter().sha256() != partial.checkpoint()->adapter().sha256()) {
        local = absl::AbortedError("the server sent another checkpoint than the one asked for");
      }
      if (offset > 0) {
        std::cerr << "herd: resuming " << options.job_id << " step " << c.step() << " at byte "
                  << offset << " of " << c.adapter().total_size_bytes() << "\n";
      }
      label = StrCat(options.job_id, " step ", c.step());
      continue;
    }
    const herd::v1::DataChunk& chunk = message.chunk();
    if (!message.has_chunk() || chunk.offset() != next || chunk.data().empty()) {
      local = absl::DataLossError(StrCat("the server sent a chunk at ", chunk.offset(),
                                         " where byte ", next, " was due"));
      break;
    }
    local = partial.Write(next, chunk.data());
    next += static_cast<int64_t>(chunk.data().size());
    bar.Show(label, next, partial.checkpoint()->adapter().total_size_bytes());
  }
  if (!local.ok()) {
    context.TryCancel();
    (void)reader->Finish();
    return local;
  }
  HERD_RETURN_IF_ERROR(herd::rpc::FromGrpc(reader->Finish()));
  const int64_t total = partial.checkpoint() ? partial.checkpoint()->adapter().total_size_bytes() : -1;
  if (next != total) {
    return absl::UnavailableError(StrCat("the stream ended at byte ", next, " of ", total));
  }
  bar.Show(label, next, total, /*force=*/true);
  bar.Done();
  return absl::OkStatus();
}

}  // namespace

std::string PartialDirFor(const std::string& out_dir) {
  fs::path dest = fs::absolute(fs::path(out_dir)).lexically_normal();
  if (dest.filename().empty()) dest = dest.parent_path();  // "out/"
  return (dest.parent_path() / StrCat(".", dest.filename().string(), ".herd-partial")).string();
}

int ListAdapters(const ClientConfig& config, const std::string& job_id, bool json) {
  auto client = Connect(config);
  if (!client.ok()) return Fail(nullptr, client.status());
  herd::v1::ListCheckpointsRequest request;
  request.set_job_id(job_id);
  request.set_page_size(1000);
  std::vector<herd::v1::Checkpoint> all;
  do {
    grpc::ClientContext context;
    PrepareCall(client->config, &context);
    herd::v1::ListCheckpointsResponse page;
    absl::Status s = herd::rpc::FromGrpc(client->stub->ListCheckpoints(&context, request, &page));
    if (!s.ok()) return Fail(&*client, s);
    for (const auto& c : page.checkpoints()) all.push_back(c);
    request.set_page_token(page.next_page_token());
  } while (!request.page_token().empty());
  if (json) {
    PrintJsonArray(all);
    return kOk;
  }
  std::printf("%8s  %-5s  %4s  %9s  %9s  %10s  %-23s  %s\n", "STEP", "FINAL", "GEN", "LOSS",
              "EVAL_LOSS", "SIZE", "CREATED", "SHA256");
  for (const auto& c : all) {
    std::printf("%8lld  %-5s  %4lld  %9s  %9s  %10s  %-23s  %s\n", static_cast<long long>(c.step()),
                c.final() ? "yes" : "", static_cast<long long>(c.generation()),
                LossText(c.has_loss(), c.loss()).c_str(),
                LossText(c.has_eval_loss(), c.eval_loss()).c_str(),
                SizeText(c.adapter().total_size_bytes()).c_str(), TimeText(c.create_time()).c_str(),
                c.adapter().sha256().c_str());
  }
  if (all.empty()) std::cerr << "herd: job " << job_id << " has no checkpoint yet\n";
  return kOk;
}

int DownloadAdapter(const ClientConfig& config, const DownloadOptions& options, bool json) {
  if (options.job_id.empty() || options.out_dir.empty()) {
    std::cerr << "herd: adapters download needs a job id and --out DIR\n";
    return kUsage;
  }
  if (options.step && *options.step < 1) {
    std::cerr << "herd: --step must be >= 1\n";
    return kUsage;
  }
  fs::path dest = fs::absolute(fs::path(options.out_dir)).lexically_normal();
  if (dest.filename().empty()) dest = dest.parent_path();
  std::error_code ec;
  if (fs::exists(dest, ec) && !fs::is_directory(dest, ec)) {
    std::cerr << "herd: " << dest.string() << " exists and is not a folder\n";
    return kInvalid;
  }
  fs::create_directories(dest.parent_path(), ec);
  if (ec) return Fail(nullptr, FsError("create", dest.parent_path(), ec));
  Partial partial{fs::path(PartialDirFor(options.out_dir))};
  if (absl::Status s = partial.Open(); !s.ok()) return Fail(nullptr, s);

  auto client = Connect(config);
  if (!client.ok()) return Fail(nullptr, client.status());
  ProgressBar bar(options.progress);
  absl::Status last;
  absl::Duration backoff = absl::Milliseconds(250);
  bool done = false;
  bool restarted = false;
  for (int attempt = 0; attempt < options.max_attempts && !done; ++attempt) {
    if (attempt > 0 && Transient(last)) {
      std::this_thread::sleep_for(absl::ToChronoMilliseconds(backoff));
      backoff = std::min(backoff * 2, absl::Seconds(8));
    }
    last = StreamOnce(*client, options, partial, bar);
    bar.Done();
    if (last.code() == absl::StatusCode::kAborted) {
      // The checkpoint the partial files belong to is no longer the one selected.
      std::cerr << "herd: the adapter changed since this download started; starting over\n";
      if (absl::Status s = partial.Reset(); !s.ok()) return Fail(nullptr, s);
      if (!restarted) --attempt;  // a fresh start is not a failed try (and cannot abort again)
      restarted = true;
      continue;
    }
    if (Transient(last)) continue;
    if (!last.ok()) break;
    last = partial.Verify();
    if (last.code() == absl::StatusCode::kDataLoss) {
      std::cerr << "herd: " << last.message() << "; fetching it again\n";
      continue;
    }
    if (!last.ok()) break;
    last = partial.Install(dest);
    done = last.ok();
    break;
  }
  if (!done) {
    const int rc = Fail(&*client, last);
    if (!partial.checkpoint()) {
      fs::remove_all(partial.dir(), ec);  // nothing arrived: leave nothing behind
    } else if (Transient(last) || last.code() == absl::StatusCode::kDataLoss) {
      std::cerr << "herd: what arrived stays in " << partial.dir().string()
                << "; run the same command again to resume\n";
    }
    return rc;
  }
  const herd::v1::Checkpoint& c = *partial.checkpoint();
  std::cerr << "herd: adapter of " << c.job_id() << " step " << c.step()
            << (c.final() ? " (final)" : "") << ", sha256 " << c.adapter().sha256() << ", "
            << SizeText(c.adapter().total_size_bytes()) << ", verified"
            << (json ? StrCat(", in ", dest.string()) : "") << "\n";
  if (json) {
    std::cout << MessageToJson(c) << "\n";
  } else {
    std::cout << dest.string() << "\n";
  }
  return kOk;
}

}  // namespace herd::cli
