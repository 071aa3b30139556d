// Assignments in, one engine at a time, statuses out.
#include "trainer/agent/supervisor.h"

#include <filesystem>
#include <iostream>

#include "common/strings.h"
#include "trainer/agent/assignment_run.h"
#include "trainer/agent/blob_cache.h"

namespace herd::agent {
namespace v1 = herd::v1;

namespace {
constexpr size_t kFinishedKept = 1000;  // refs remembered so a resent assignment is not run twice
}  // namespace

std::string RefName(const v1::AssignmentRef& ref) {
  return StrCat(ref.job_id(), "/g", ref.generation(), "/r", ref.rank());
}

absl::Status SupervisorOptions::Validate() const {
  if (engine_path.empty()) return absl::InvalidArgumentError("engine: the herd-engine path is empty");
  if (scratch_dir.empty()) return absl::InvalidArgumentError("scratch_dir: required");
  if (rendezvous_wait <= absl::ZeroDuration() || rendezvous_wait > absl::Seconds(60)) {
    return absl::InvalidArgumentError("rendezvous_wait must be in (0, 60 s]");
  }
  if (omp_threads < 1) return absl::InvalidArgumentError("omp_threads must be at least 1");
  return absl::OkStatus();
}

Supervisor::Supervisor(SupervisorOptions options, CoordinatorApi* api)
    : options_([&] {
        if (!options.log) options.log = [](const std::string& line) { std::cerr << "herd-trainer: " << line << std::endl; };
        // The engine runs in its scratch folder: every path it is given must be absolute.
        options.scratch_dir = std::filesystem::absolute(options.scratch_dir).lexically_normal().string();
        return std::move(options);
      }()),
      api_(api),
      blobs_(std::make_unique<BlobCache>(BlobCacheOptions{.root = options_.scratch_dir + "/blobs",
                                                          .initial_backoff = options_.retry_backoff,
                                                          .max_bytes = options_.blob_cache_bytes})) {}

Supervisor::~Supervisor() { Shutdown(); }

void Supervisor::Log(const std::string& line) const { options_.log(line); }

void Supervisor::SetTrainerId(const std::string& trainer_id) {
  std::lock_guard<std::mutex> lock(mu_);
  trainer_id_ = trainer_id;
}

void Supervisor::ReapLocked() {
  if (!run_ || !run_->done()) return;
  run_->Join();
  const std::string name = RefName(run_->Status().ref());
  if (finished_.insert(name).second) finished_order_.push_back(name);
  while (finished_order_.size() > kFinishedKept) {
    finished_.erase(finished_order_.front());
    finished_order_.pop_front();
  }
  run_.reset();
  // Between assignments nothing is being fetched: keep the cache within its bound.
  if (const int64_t freed = blobs_->Trim(); freed > 0) {
    Log(StrCat("blob cache: freed ", freed, " bytes of least recently used blobs"));
  }
}

bool Supervisor::Offer(const v1::Assignment& assignment) {
  std::lock_guard<std::mutex> lock(mu_);
  ReapLocked();
  const std::string name = RefName(assignment.ref());
  if (finished_.count(name)) return true;
  if (run_ && RefName(run_->Status().ref()) == name) return true;
  if (shut_down_ || run_) {
    if (refused_.insert(name).second) {
      Log(StrCat("assignment ", name, " refused: ",
                 shut_down_ ? "the agent is stopping" : StrCat("already running ", RefName(run_->Status().ref()))));
    }
    return false;
  }
  Log(StrCat("assignment ", name, " accepted (world ", assignment.world_size(), ", model ", assignment.base_model(),
             ")"));
  run_ = std::make_unique<AssignmentRun>(options_, *api_, *blobs_, trainer_id_, assignment);
  run_->Start();
  return true;
}

void Supervisor::Cancel(const v1::AssignmentRef& ref, const std::string& reason) {
  std::lock_guard<std::mutex> lock(mu_);
  if (run_ && RefName(run_->Status().ref()) == RefName(ref)) run_->Cancel(reason);
}

std::vector<v1::AssignmentStatus> Supervisor::Held() {
  std::lock_guard<std::mutex> lock(mu_);
  ReapLocked();
  std::vector<v1::AssignmentStatus> held;
  if (run_) held.push_back(run_->Status());
  return held;
}

void Supervisor::Shutdown() {
  std::unique_ptr<AssignmentRun> run;
  {
    std::lock_guard<std::mutex> lock(mu_);
    shut_down_ = true;
    run = std::move(run_);
  }
  if (!run) return;
  run->Cancel("the trainer agent is stopping", /*shutdown=*/true);
  run->Join();
}

bool Supervisor::WaitIdle(absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (true) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      ReapLocked();
      if (!run_) return true;
    }
    if (absl::Now() >= deadline) return false;
    absl::SleepFor(absl::Milliseconds(20));
  }
}

}  // namespace herd::agent
