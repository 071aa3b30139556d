#include "coordinator/rendezvous.h"

#include <memory>

#include "absl/time/clock.h"
#include "common/strings.h"

namespace herd::coordinator {

absl::Status ValidateRendezvousKey(std::string_view key) {
  if (key.empty() || key.size() > kMaxRendezvousKeyBytes) {
    return absl::InvalidArgumentError(
        StrCat("rendezvous key must be 1 to ", kMaxRendezvousKeyBytes, " bytes, got ", key.size()));
  }
  for (char c : key) {
    const bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '_' || c == ':' || c == '-';
    if (!ok) {
      return absl::InvalidArgumentError(
          StrCat("rendezvous key \"", key.substr(0, 40), "\" has a character outside [A-Za-z0-9._:-]"));
    }
  }
  return absl::OkStatus();
}

absl::Status RendezvousOptions::Validate() const {
  if (max_value_bytes == 0) return absl::InvalidArgumentError("max_value_bytes must be positive");
  if (max_keys_per_generation == 0) return absl::InvalidArgumentError("max_keys_per_generation must be positive");
  if (max_wait < absl::ZeroDuration()) return absl::InvalidArgumentError("max_wait must not be negative");
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<RendezvousStore>> RendezvousStore::Create(const RendezvousOptions& options) {
  if (absl::Status s = options.Validate(); !s.ok()) return s;
  return std::unique_ptr<RendezvousStore>(new RendezvousStore(options));
}

absl::Status RendezvousStore::BeginGeneration(const std::string& job_id, int64_t generation) {
  if (job_id.empty() || generation < 1) {
    return absl::InvalidArgumentError("BeginGeneration needs a job id and a generation >= 1");
  }
  absl::MutexLock lock(&mu_);
  Generation& g = jobs_[job_id];
  if (generation < g.number) {
    return absl::FailedPreconditionError(
        StrCat("job ", job_id, " is at generation ", g.number, ", not ", generation));
  }
  if (generation == g.number) return absl::OkStatus();
  g.number = generation;
  g.values.clear();
  changed_.SignalAll();
  return absl::OkStatus();
}

void RendezvousStore::EndJob(const std::string& job_id) {
  absl::MutexLock lock(&mu_);
  if (jobs_.erase(job_id) > 0) changed_.SignalAll();
}

void RendezvousStore::Shutdown() {
  absl::MutexLock lock(&mu_);
  shut_down_ = true;
  changed_.SignalAll();
}

int64_t RendezvousStore::CurrentGeneration(const std::string& job_id) const {
  absl::MutexLock lock(&mu_);
  auto it = jobs_.find(job_id);
  return it == jobs_.end() ? 0 : it->second.number;
}

int64_t RendezvousStore::Waiters() const {
  absl::MutexLock lock(&mu_);
  return waiters_;
}

absl::Status RendezvousStore::CheckCurrentLocked(const std::string& job_id, int64_t generation) const {
  if (shut_down_) return absl::UnavailableError("coordinator is stopping");
  auto it = jobs_.find(job_id);
  if (it == jobs_.end()) {
    return absl::FailedPreconditionError(StrCat("job ", job_id, " has no running generation"));
  }
  if (it->second.number != generation) {
    return absl::FailedPreconditionError(StrCat("generation ", generation, " of job ", job_id,
                                                " is not current (current: ", it->second.number, ")"));
  }
  return absl::OkStatus();
}

absl::StatusOr<bool> RendezvousStore::Put(const std::string& job_id, int64_t generation,
                                          const std::string& key, const std::string& value) {
  if (absl::Status s = ValidateRendezvousKey(key); !s.ok()) return s;
  if (value.empty()) return absl::InvalidArgumentError(StrCat("rendezvous value for \"", key, "\" is empty"));
  if (value.size() > options_.max_value_bytes) {
    return absl::ResourceExhaustedError(StrCat("rendezvous value for \"", key, "\" is ", value.size(),
                                               " bytes; at most ", options_.max_value_bytes));
  }
  absl::MutexLock lock(&mu_);
  if (absl::Status s = CheckCurrentLocked(job_id, generation); !s.ok()) return s;
  Generation& g = jobs_.at(job_id);
  auto it = g.values.find(key);
  if (it != g.values.end()) {
    if (it->second == value) return false;
    return absl::AlreadyExistsError(StrCat("rendezvous key \"", key, "\" of job ", job_id, " generation ",
                                           generation, " already holds another value"));
  }
  if (g.values.size() >= options_.max_keys_per_generation) {
    return absl::ResourceExhaustedError(StrCat("generation ", generation, " of job ", job_id, " already has ",
                                               g.values.size(), " rendezvous keys"));
  }
  g.values.emplace(key, value);
  changed_.SignalAll();
  return true;
}

absl::StatusOr<std::string> RendezvousStore::Get(const std::string& job_id, int64_t generation,
                                                 const std::string& key, absl::Duration wait) {
  if (absl::Status s = ValidateRendezvousKey(key); !s.ok()) return s;
  if (wait < absl::ZeroDuration() || wait > options_.max_wait) {
    return absl::InvalidArgumentError(StrCat("rendezvous wait must be between 0 and ",
                                             absl::FormatDuration(options_.max_wait), ", got ",
                                             absl::FormatDuration(wait)));
  }
  const absl::Time deadline = absl::Now() + wait;
  absl::MutexLock lock(&mu_);
  while (true) {
    if (absl::Status s = CheckCurrentLocked(job_id, generation); !s.ok()) return s;
    const Generation& g = jobs_.at(job_id);
    if (auto it = g.values.find(key); it != g.values.end()) return it->second;
    if (wait == absl::ZeroDuration()) {
      return absl::NotFoundError(StrCat("rendezvous key \"", key, "\" is not set"));
    }
    if (absl::Now() >= deadline) {
      return absl::DeadlineExceededError(StrCat("rendezvous key \"", key, "\" was not posted within ",
                                                absl::FormatDuration(wait), "; call again"));
    }
    ++waiters_;
    changed_.WaitWithDeadline(&mu_, deadline);
    --waiters_;
  }
}

}  // namespace herd::coordinator
