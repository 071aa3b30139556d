// A fake coordinator for the supervisor's tests: serves blobs (optionally breaking the first
// stream), keeps rendezvous values, records progress, evals and exit reports, and checks every
// uploaded checkpoint the way TrainerService does (contiguous chunks, sizes, sha256, manifest
// digest). Tests wait on what it records with deadlines, never with sleeps.
#ifndef HERD_TRAINER_AGENT_FAKE_COORDINATOR_H_
#define HERD_TRAINER_AGENT_FAKE_COORDINATOR_H_

#include <algorithm>
#include <condition_variable>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "common/sha256.h"
#include "common/strings.h"
#include "trainer/agent/coordinator_api.h"

namespace herd::agent {

struct UploadedCheckpoint {
  herd::v1::CheckpointHeader header;
  std::map<std::string, std::string> files;  // name -> bytes
};

class FakeCoordinator final : public CoordinatorApi {
 public:
  void AddBlob(std::string content) {
    std::lock_guard<std::mutex> lock(mu_);
    blobs_[Sha256Hex(content)] = std::move(content);
  }
  // Serves `content` under the digest `sha` (a corrupted blob).
  void AddBlobAs(const std::string& sha, std::string content) {
    std::lock_guard<std::mutex> lock(mu_);
    blobs_[sha] = std::move(content);
  }
  // The first FetchBlob stream ends with UNAVAILABLE after about `bytes` bytes.
  void BreakFirstFetchAfter(int64_t bytes) {
    std::lock_guard<std::mutex> lock(mu_);
    break_after_ = bytes;
  }
  // What ReportProgress answers (after recording nothing when not OK).
  void SetProgressStatus(absl::Status s) {
    std::lock_guard<std::mutex> lock(mu_);
    progress_status_ = std::move(s);
  }

  std::vector<int64_t> FetchOffsets(const std::string& sha) {
    std::lock_guard<std::mutex> lock(mu_);
    return fetch_offsets_[sha];
  }
  std::vector<herd::v1::ProgressPoint> Points() {
    std::lock_guard<std::mutex> lock(mu_);
    return points_;
  }
  std::vector<herd::v1::EvalPoint> Evals() {
    std::lock_guard<std::mutex> lock(mu_);
    return evals_;
  }
  std::vector<UploadedCheckpoint> Uploads() {
    std::lock_guard<std::mutex> lock(mu_);
    return uploads_;
  }
  bool WaitForPoints(size_t n, absl::Duration timeout) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, absl::ToChronoNanoseconds(timeout), [&] { return points_.size() >= n; });
  }
  // The exit reports once there are `n` (or what there is after `timeout`).
  std::vector<herd::v1::ReportEngineExitRequest> WaitForExits(size_t n, absl::Duration timeout) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait_for(lock, absl::ToChronoNanoseconds(timeout), [&] { return exits_.size() >= n; });
    return exits_;
  }

  absl::Status PutRendezvousValue(const herd::v1::PutRendezvousValueRequest& r) override {
    std::lock_guard<std::mutex> lock(mu_);
    auto [it, added] = rendezvous_.emplace(r.key(), r.value());
    if (!added && it->second != r.value()) return absl::AlreadyExistsError(r.key());
    cv_.notify_all();
    return absl::OkStatus();
  }
  absl::StatusOr<std::string> GetRendezvousValue(const herd::v1::GetRendezvousValueRequest& r) override {
    std::unique_lock<std::mutex> lock(mu_);
    const auto wait = std::chrono::seconds(r.wait().seconds()) + std::chrono::nanoseconds(r.wait().nanos());
    if (!cv_.wait_for(lock, wait, [&] { return rendezvous_.count(r.key()) > 0; })) {
      return absl::DeadlineExceededError(r.key());
    }
    return rendezvous_[r.key()];
  }
  absl::Status FetchBlob(const herd::v1::FetchBlobRequest& r,
                         const std::function<absl::Status(const herd::v1::FetchBlobResponse&)>& on_message) override {
    std::string blob;
    int64_t break_at = -1;
    {
      std::lock_guard<std::mutex> lock(mu_);
      fetch_offsets_[r.sha256()].push_back(r.offset());
      auto it = blobs_.find(r.sha256());
      if (it == blobs_.end()) return absl::NotFoundError(StrCat("no blob ", r.sha256()));
      blob = it->second;
      if (break_after_ > 0) break_at = r.offset() + std::exchange(break_after_, 0);
    }
    if (r.offset() > static_cast<int64_t>(blob.size())) return absl::OutOfRangeError("offset");
    herd::v1::FetchBlobResponse m;
    m.mutable_blob()->set_sha256(r.sha256());
    m.mutable_blob()->set_size_bytes(static_cast<int64_t>(blob.size()));
    if (absl::Status s = on_message(m); !s.ok()) return s;
    for (int64_t off = r.offset(); off < static_cast<int64_t>(blob.size()); off += kChunk) {
      if (break_at >= 0 && off >= break_at) return absl::UnavailableError("stream broken by the test");
      herd::v1::FetchBlobResponse c;
      c.mutable_chunk()->set_offset(off);
      c.mutable_chunk()->set_data(blob.substr(static_cast<size_t>(off), kChunk));
      if (absl::Status s = on_message(c); !s.ok()) return s;
    }
    return absl::OkStatus();
  }
  absl::Status ReportProgress(const herd::v1::ReportProgressRequest& r) override {
    std::lock_guard<std::mutex> lock(mu_);
    if (!progress_status_.ok()) return progress_status_;
    for (const auto& p : r.points()) points_.push_back(p);
    for (const auto& e : r.evals()) evals_.push_back(e);
    cv_.notify_all();
    return absl::OkStatus();
  }
  std::unique_ptr<UploadStream> UploadCheckpoint() override { return std::make_unique<Stream>(this); }
  absl::Status ReportEngineExit(const herd::v1::ReportEngineExitRequest& r) override {
    std::lock_guard<std::mutex> lock(mu_);
    exits_.push_back(r);
    cv_.notify_all();
    return absl::OkStatus();
  }

 private:
  static constexpr int64_t kChunk = 64 << 10;

  class Stream final : public UploadStream {
   public:
    explicit Stream(FakeCoordinator* fake) : fake_(fake) {}
    bool Write(const herd::v1::UploadCheckpointRequest& r) override {
      messages_.push_back(r);
      return true;
    }
    absl::Status Finish() override { return fake_->Check(messages_); }

   private:
    FakeCoordinator* fake_;
    std::vector<herd::v1::UploadCheckpointRequest> messages_;
  };

  absl::Status Check(const std::vector<herd::v1::UploadCheckpointRequest>& messages) {
    if (messages.empty() || !messages[0].has_header()) return absl::InvalidArgumentError("first message not a header");
    UploadedCheckpoint up{.header = messages[0].header()};
    std::string bytes;
    for (size_t i = 1; i < messages.size(); ++i) {
      const auto& c = messages[i].chunk();
      if (c.offset() != static_cast<int64_t>(bytes.size())) return absl::AbortedError("gap between chunks");
      if (c.data().empty() || c.data().size() > (1u << 20)) return absl::ResourceExhaustedError("chunk size");
      bytes += c.data();
    }
    const auto& manifest = up.header.manifest();
    if (static_cast<int64_t>(bytes.size()) != manifest.total_size_bytes()) {
      return absl::FailedPreconditionError("stream ended before the total size");
    }
    size_t at = 0;
    std::vector<std::string> lines;
    for (const auto& f : manifest.files()) {
      std::string content = bytes.substr(at, static_cast<size_t>(f.size_bytes()));
      at += content.size();
      if (Sha256Hex(content) != f.sha256()) return absl::DataLossError(StrCat(f.name(), " does not match"));
      lines.push_back(StrCat(f.sha256(), "  ", f.name(), "\n"));
      up.files[f.name()] = std::move(content);
    }
    std::sort(lines.begin(), lines.end(), [](const std::string& a, const std::string& b) {
      return a.substr(66) < b.substr(66);
    });
    if (Sha256Hex(StrJoin(lines, "")) != manifest.sha256()) return absl::DataLossError("manifest digest");
    std::lock_guard<std::mutex> lock(mu_);
    uploads_.push_back(std::move(up));
    return absl::OkStatus();
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::string, std::string> blobs_;
  std::map<std::string, std::vector<int64_t>> fetch_offsets_;
  std::map<std::string, std::string> rendezvous_;
  int64_t break_after_ = 0;
  absl::Status progress_status_;
  std::vector<herd::v1::ProgressPoint> points_;
  std::vector<herd::v1::EvalPoint> evals_;
  std::vector<UploadedCheckpoint> uploads_;
  std::vector<herd::v1::ReportEngineExitRequest> exits_;
};

}  // namespace herd::agent

#endif  // HERD_TRAINER_AGENT_FAKE_COORDINATOR_H_
