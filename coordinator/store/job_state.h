// A job's states and the legal moves between them (DESIGN.md §3):
//   VALIDATING -> QUEUED -> RUNNING <-> RECOVERING -> ... RUNNING -> PUBLISHING -> SUCCEEDED,
//   and FAILED or CANCELLED from any non-final state.
// Enum values equal herd.v1.JobState and herd.v1.JobEventType, so the services convert with a
// static_cast.
#ifndef HERD_COORDINATOR_STORE_JOB_STATE_H_
#define HERD_COORDINATOR_STORE_JOB_STATE_H_

#include <optional>
#include <string>
#include <string_view>

#include "absl/status/status.h"

namespace herd::coordinator::store {

enum class JobState {
  kUnspecified = 0,
  kValidating = 1,
  kQueued = 2,
  kRunning = 3,
  kRecovering = 4,
  kPublishing = 5,
  kSucceeded = 6,
  kFailed = 7,
  kCancelled = 8,
};
inline constexpr JobState kAllJobStates[] = {
    JobState::kValidating, JobState::kQueued,    JobState::kRunning,
    JobState::kRecovering, JobState::kPublishing, JobState::kSucceeded,
    JobState::kFailed,     JobState::kCancelled};

enum class JobEventType {
  kUnspecified = 0,
  kStateChanged = 1,
  kPrepared = 2,
  kWorldFormed = 3,
  kRankFailed = 4,
  kCheckpointSaved = 5,
  kEvaluated = 6,
  kNotice = 7,
};

// "VALIDATING", "QUEUED", ... ("UNSPECIFIED" for kUnspecified); the stored spelling.
std::string_view JobStateName(JobState state);
std::optional<JobState> ParseJobState(std::string_view name);
std::string_view JobEventTypeName(JobEventType type);  // "STATE_CHANGED", ...
std::optional<JobEventType> ParseJobEventType(std::string_view name);

// SUCCEEDED, FAILED and CANCELLED: the job never changes again.
bool IsFinal(JobState state);
// Whether `from -> to` is a move of the state machine (never from a final state, never to
// VALIDATING or UNSPECIFIED, never to the same state).
bool CanTransition(JobState from, JobState to);
// OK, or FAILED_PRECONDITION "job job_x cannot go from RUNNING to QUEUED".
absl::Status CheckTransition(std::string_view job_id, JobState from, JobState to);

// Why a job failed or was cancelled: a canonical status code name and a message for people.
struct Failure {
  std::string code;     // "RESOURCE_EXHAUSTED", "CANCELLED", ...
  std::string message;  // at most 4 KiB (longer messages are cut)
  bool operator==(const Failure&) const = default;
};

}  // namespace herd::coordinator::store

#endif  // HERD_COORDINATOR_STORE_JOB_STATE_H_
