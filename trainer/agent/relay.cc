// Progress batching and checkpoint uploads of one assignment.
#include "trainer/agent/relay.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>

#include "common/sha256.h"
#include "common/strings.h"

namespace herd::agent {
namespace fs = std::filesystem;
namespace v1 = herd::v1;

namespace {

constexpr int kMaxPointsPerRequest = 1000;  // trainers.proto: ReportProgress
constexpr size_t kChunkBytes = 1 << 20;     // trainers.proto: UploadCheckpoint chunks

// A failed local read of the checkpoint: retrying the upload cannot help.
constexpr char kLocalFailure[] = "checkpoint folder: ";

}  // namespace

std::string ManifestDigest(const v1::Manifest& manifest) {
  std::map<std::string, std::string> sorted;
  for (const v1::FileInfo& f : manifest.files()) sorted[f.name()] = f.sha256();
  std::string text;
  for (const auto& [name, sha] : sorted) text += StrCat(sha, "  ", name, "\n");
  return Sha256Hex(text);
}

Relay::Relay(RelayOptions options, CoordinatorApi& api) : options_(std::move(options)), api_(api) {
  thread_ = std::thread([this] { Loop(); });
}

Relay::~Relay() { Stop(); }

void Relay::Log(const std::string& line) const {
  if (options_.log) options_.log(line);
}

void Relay::AddProgress(v1::ProgressPoint point) {
  std::lock_guard<std::mutex> lock(mu_);
  if (stale_) return;
  points_.push_back(std::move(point));
  while (points_.size() > options_.max_buffered) points_.pop_front();
}

void Relay::AddEval(v1::EvalPoint point) {
  std::lock_guard<std::mutex> lock(mu_);
  if (stale_) return;
  evals_.push_back(std::move(point));
  while (evals_.size() > options_.max_buffered) evals_.pop_front();
}

void Relay::AddCheckpoint(const nlohmann::json& checkpoint) {
  std::lock_guard<std::mutex> lock(mu_);
  if (stale_) return;
  checkpoints_.push_back(checkpoint);
  cv_.notify_all();
}

std::optional<absl::Status> Relay::Finish() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    finishing_ = true;
    cv_.notify_all();
  }
  if (thread_.joinable()) thread_.join();
  std::lock_guard<std::mutex> lock(mu_);
  return final_status_;
}

void Relay::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
    cv_.notify_all();
  }
  if (thread_.joinable()) thread_.join();
}

void Relay::Loop() {
  absl::Time next_send = absl::Now() + options_.interval;
  while (true) {
    nlohmann::json checkpoint;
    bool finishing = false;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait_until(lock, absl::ToChronoTime(next_send),
                     [&] { return stopping_ || finishing_ || stale_ || !checkpoints_.empty(); });
      if (stopping_ || stale_) return;
      finishing = finishing_;
      if (!checkpoints_.empty()) {
        checkpoint = checkpoints_.front();
        checkpoints_.pop_front();
      }
    }
    bool sent = SendProgress();
    next_send = absl::Now() + options_.interval;
    if (!checkpoint.is_null()) {
      absl::Status s = Upload(checkpoint);
      const bool final = checkpoint.value("final", false);
      std::lock_guard<std::mutex> lock(mu_);
      if (final) final_status_ = s;
      continue;  // more checkpoints may be queued
    }
    if (finishing) {
      // The engine's last points: a few more tries while the coordinator is away (it may be
      // restarting); the exit report follows regardless.
      absl::Duration backoff = options_.retry_backoff;
      for (int i = 0; !sent && i < 5; ++i) {
        std::unique_lock<std::mutex> lock(mu_);
        if (cv_.wait_for(lock, absl::ToChronoNanoseconds(backoff), [&] { return stopping_ || stale_; })) break;
        lock.unlock();
        sent = SendProgress();
        backoff = std::min(backoff * 2, absl::Seconds(10));
      }
      if (!sent) Log("progress not delivered before the exit report");
      return;
    }
  }
}

bool Relay::SendProgress() {
  while (true) {
    v1::ReportProgressRequest request;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stale_) return false;
      if (points_.empty() && evals_.empty()) return true;
      for (size_t i = 0; i < points_.size() && i < kMaxPointsPerRequest; ++i) *request.add_points() = points_[i];
      for (size_t i = 0; i < evals_.size() && i < kMaxPointsPerRequest; ++i) *request.add_evals() = evals_[i];
    }
    request.set_trainer_id(options_.trainer_id);
    *request.mutable_ref() = options_.ref;
    absl::Status s = api_.ReportProgress(request);
    std::lock_guard<std::mutex> lock(mu_);
    if (absl::IsFailedPrecondition(s)) {
      stale_ = true;
      points_.clear();
      evals_.clear();
      checkpoints_.clear();
      if (options_.on_stale) options_.on_stale(s);
      return false;
    }
    const bool retry_later = absl::IsUnavailable(s) || absl::IsDeadlineExceeded(s) || absl::IsAborted(s) ||
                             absl::IsNotFound(s) || absl::IsInternal(s) || absl::IsUnknown(s);
    if (!s.ok() && retry_later) {
      Log(StrCat("ReportProgress: ", s.ToString(), "; keeping ", points_.size(), " points"));
      return false;
    }
    if (!s.ok()) Log(StrCat("ReportProgress refused a batch (dropped): ", s.ToString()));
    // Sent (or refused for good): drop what the request carried.
    points_.erase(points_.begin(), points_.begin() + std::min<size_t>(points_.size(), request.points_size()));
    evals_.erase(evals_.begin(), evals_.begin() + std::min<size_t>(evals_.size(), request.evals_size()));
  }
}

absl::Status Relay::Upload(const nlohmann::json& checkpoint) {
  const std::string dir = checkpoint.value("dir", "");
  v1::CheckpointHeader header;
  header.set_trainer_id(options_.trainer_id);
  *header.mutable_ref() = options_.ref;
  header.set_step(checkpoint.value("step", int64_t{0}));
  header.set_final(checkpoint.value("final", false));
  v1::Manifest* manifest = header.mutable_manifest();
  std::map<std::string, const nlohmann::json*> by_name;  // stream order: by name
  for (const nlohmann::json& f : checkpoint["files"]) by_name[f["name"].get<std::string>()] = &f;
  for (const auto& [name, f] : by_name) {
    v1::FileInfo* info = manifest->add_files();
    info->set_name(name);
    info->set_size_bytes((*f)["size_bytes"].get<int64_t>());
    info->set_sha256((*f)["sha256"].get<std::string>());
    manifest->set_total_size_bytes(manifest->total_size_bytes() + info->size_bytes());
  }
  manifest->set_sha256(ManifestDigest(*manifest));

  absl::Duration backoff = options_.retry_backoff;
  absl::Status s;
  for (int attempt = 1; attempt <= options_.upload_attempts; ++attempt) {
    s = UploadOnce(header, dir);
    if (s.ok()) {
      std::error_code ec;
      fs::remove_all(dir, ec);
      Log(StrCat("uploaded checkpoint step ", header.step(), header.final() ? " (final)" : ""));
      return s;
    }
    if (absl::IsFailedPrecondition(s)) {
      std::lock_guard<std::mutex> lock(mu_);
      stale_ = true;
      checkpoints_.clear();
      if (options_.on_stale) options_.on_stale(s);
      return s;
    }
    const bool retry = (absl::IsUnavailable(s) || absl::IsDataLoss(s) || absl::IsAborted(s)) &&
                       s.message().rfind(kLocalFailure, 0) != 0;
    Log(StrCat("UploadCheckpoint step ", header.step(), " attempt ", attempt, ": ", s.ToString()));
    if (!retry) return s;
    {
      std::unique_lock<std::mutex> lock(mu_);
      if (cv_.wait_for(lock, absl::ToChronoNanoseconds(backoff), [&] { return stopping_; })) return s;
    }
    backoff = std::min(backoff * 2, absl::Seconds(30));
  }
  return s;
}

absl::Status Relay::UploadOnce(const v1::CheckpointHeader& header, const std::string& dir) {
  std::unique_ptr<UploadStream> stream = api_.UploadCheckpoint();
  v1::UploadCheckpointRequest first;
  *first.mutable_header() = header;
  if (!stream->Write(first)) return stream->Finish();
  int64_t offset = 0;
  std::string buffer(kChunkBytes, '\0');
  for (const v1::FileInfo& f : header.manifest().files()) {
    std::ifstream in(dir + "/" + f.name(), std::ios::binary);
    if (!in) {
      (void)stream->Finish();
      return absl::DataLossError(StrCat(kLocalFailure, "cannot read ", dir, "/", f.name()));
    }
    Sha256 hash;
    int64_t size = 0;
    while (in) {
      in.read(buffer.data(), static_cast<std::streamsize>(buffer.size()));
      const std::streamsize n = in.gcount();
      if (n <= 0) break;
      hash.Update(buffer.data(), static_cast<size_t>(n));
      size += n;
      v1::UploadCheckpointRequest chunk;
      chunk.mutable_chunk()->set_offset(offset);
      chunk.mutable_chunk()->set_data(buffer.data(), static_cast<size_t>(n));
      offset += n;
      if (!stream->Write(chunk)) return stream->Finish();
    }
    if (size != f.size_bytes() || hash.HexDigest() != f.sha256()) {
      (void)stream->Finish();
      return absl::DataLossError(StrCat(kLocalFailure, dir, "/", f.name(), " no longer matches its size and sha256"));
    }
  }
  return stream->Finish();
}

}  // namespace herd::agent
