// herd.v1.JobService.WatchJob (jobs.proto): the job, its stored events after after_sequence,
// then new events as they commit and the live progress at most once a second, until the event
// that puts the job in a final state.
//
// The handler waits in short slices (JobStore::WaitForEvents with a deadline kPollInterval
// away) so that a client that went away, or a server shutting down, frees its thread promptly;
// the ProgressBoard is polled by version at the same pace (no progress is stored, DESIGN.md §1).
#include <map>
#include <string>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/rpc/rpc.h"
#include "common/strings.h"
#include "coordinator/progress_board.h"
#include "coordinator/services/auth.h"
#include "coordinator/services/convert.h"
#include "coordinator/services/job_convert.h"
#include "coordinator/services/job_service.h"

namespace herd::coordinator::services {
namespace {

using herd::rpc::ToGrpc;

// jobs.proto: RESOURCE_EXHAUSTED past this many open watches of one tenant.
constexpr int kMaxWatchesPerTenant = 64;
// Longest a handler waits before it looks at the client and the progress again.
constexpr absl::Duration kPollInterval = absl::Milliseconds(250);
// jobs.proto: progress is coalesced to at most one message a second.
constexpr absl::Duration kProgressInterval = absl::Seconds(1);

// Open watches per (service, tenant). JobService keeps nothing mutable itself, so the count
// lives here, keyed by the service so that two services (in tests) do not share it.
class WatchCounts {
 public:
  static WatchCounts& Instance() {
    static WatchCounts* const counts = new WatchCounts();
    return *counts;
  }
  bool Acquire(const void* service, const std::string& tenant) {
    absl::MutexLock lock(&mu_);
    int& open = open_[{service, tenant}];
    if (open >= kMaxWatchesPerTenant) return false;
    ++open;
    return true;
  }
  void Release(const void* service, const std::string& tenant) {
    absl::MutexLock lock(&mu_);
    auto it = open_.find({service, tenant});
    if (it != open_.end() && --it->second <= 0) open_.erase(it);
  }

 private:
  absl::Mutex mu_;
  std::map<std::pair<const void*, std::string>, int> open_ ABSL_GUARDED_BY(mu_);
};

// One open watch, released on scope exit.
class WatchSlot {
 public:
  WatchSlot(const void* service, std::string tenant)
      : service_(service), tenant_(std::move(tenant)),
        held_(WatchCounts::Instance().Acquire(service_, tenant_)) {}
  ~WatchSlot() {
    if (held_) WatchCounts::Instance().Release(service_, tenant_);
  }
  WatchSlot(const WatchSlot&) = delete;
  WatchSlot& operator=(const WatchSlot&) = delete;
  bool held() const { return held_; }

 private:
  const void* const service_;
  const std::string tenant_;
  const bool held_;
};

bool EndsJob(const store::JobEvent& e) {
  return e.type == store::JobEventType::kStateChanged && store::IsFinal(e.state);
}

grpc::Status ClientGone() {
  return grpc::Status(grpc::StatusCode::CANCELLED, "the client went away");
}

}  // namespace

grpc::Status JobService::WatchJob(grpc::ServerContext* context,
                                  const herd::v1::WatchJobRequest* request,
                                  grpc::ServerWriter<herd::v1::WatchJobResponse>* writer) {
  auto tenant = AuthenticateUser(*context, *tokens_);
  if (!tenant.ok()) return ToGrpc(tenant.status());
  if (absl::Status bad_id = CheckId("id", request->id()); !bad_id.ok()) return ToGrpc(bad_id);
  if (request->after_sequence() < 0) {
    return ToGrpc(absl::InvalidArgumentError(
        StrCat("after_sequence: ", request->after_sequence(), " is negative")));
  }
  auto job = jobs_->Get(*tenant, request->id());
  if (!job.ok()) return ToGrpc(job.status());
  WatchSlot slot(this, *tenant);
  if (!slot.held()) {
    return ToGrpc(absl::ResourceExhaustedError(StrCat(
        "too many open watches for this tenant (at most ", kMaxWatchesPerTenant,
        "); close some and retry")));
  }

  herd::v1::WatchJobResponse first;
  ToProto(*job, first.mutable_job());
  int64_t progress_version = SetLiveProgress(progress_, first.mutable_job());
  if (!writer->Write(first)) return ClientGone();
  // The job message carried the progress there was; the next may follow a second later.
  absl::Time last_progress = progress_version > 0 ? absl::Now() : absl::InfinitePast();

  int64_t after = request->after_sequence();
  // Sends events; true when one of them ended the job (the stream ends after it).
  bool ended = false;
  auto send_events = [&](const std::vector<store::JobEvent>& events) -> bool {
    for (const store::JobEvent& e : events) {
      herd::v1::WatchJobResponse message;
      ToProto(e, message.mutable_event());
      if (!writer->Write(message)) return false;
      after = e.sequence;
      if (EndsJob(e)) {
        ended = true;
        return true;
      }
    }
    return true;
  };

  // Replay what is stored now; a job that was final when read has its whole history in it.
  auto replay = jobs_->Events(job->id, after);
  if (!replay.ok()) return ToGrpc(replay.status());
  if (!send_events(*replay)) return ClientGone();
  if (ended || store::IsFinal(job->state)) return grpc::Status::OK;

  while (true) {
    if (context->IsCancelled()) return ClientGone();
    const absl::Time deadline = absl::Now() + kPollInterval;
    auto events = jobs_->WaitForEvents(job->id, after, deadline);
    if (!events.ok()) return ToGrpc(events.status());
    if (!send_events(*events)) return ClientGone();
    if (ended) return grpc::Status::OK;
    if (events->empty() && absl::Now() < deadline) {
      // WaitForEvents returns early with nothing only for a final job, whose events up to the
      // final one were sent (or lay at or below the caller's after_sequence).
      auto current = jobs_->GetById(job->id);
      if (!current.ok()) return ToGrpc(current.status());
      if (store::IsFinal(current->state)) return grpc::Status::OK;
    }
    const absl::Time now = absl::Now();
    if (progress_ != nullptr && now - last_progress >= kProgressInterval &&
        progress_->Version(job->id) > progress_version) {
      std::optional<JobProgressView> view = progress_->Get(job->id);
      if (view) {
        herd::v1::WatchJobResponse message;
        ToProto(*view, message.mutable_progress());
        if (!writer->Write(message)) return ClientGone();
        progress_version = view->version;
        last_progress = now;
      }
    }
  }
}

}  // namespace herd::coordinator::services
