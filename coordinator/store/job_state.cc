// The job state machine (job_state.h).
#include "coordinator/store/job_state.h"

#include <utility>

#include "common/strings.h"

namespace herd::coordinator::store {
namespace {

constexpr std::pair<JobState, std::string_view> kStateNames[] = {
    {JobState::kUnspecified, "UNSPECIFIED"}, {JobState::kValidating, "VALIDATING"},
    {JobState::kQueued, "QUEUED"},           {JobState::kRunning, "RUNNING"},
    {JobState::kRecovering, "RECOVERING"},   {JobState::kPublishing, "PUBLISHING"},
    {JobState::kSucceeded, "SUCCEEDED"},     {JobState::kFailed, "FAILED"},
    {JobState::kCancelled, "CANCELLED"},
};

constexpr std::pair<JobEventType, std::string_view> kEventNames[] = {
    {JobEventType::kUnspecified, "UNSPECIFIED"},
    {JobEventType::kStateChanged, "STATE_CHANGED"},
    {JobEventType::kPrepared, "PREPARED"},
    {JobEventType::kWorldFormed, "WORLD_FORMED"},
    {JobEventType::kRankFailed, "RANK_FAILED"},
    {JobEventType::kCheckpointSaved, "CHECKPOINT_SAVED"},
    {JobEventType::kEvaluated, "EVALUATED"},
    {JobEventType::kNotice, "NOTICE"},
};

}  // namespace

std::string_view JobStateName(JobState state) {
  for (const auto& [s, name] : kStateNames) {
    if (s == state) return name;
  }
  return "UNSPECIFIED";
}

std::optional<JobState> ParseJobState(std::string_view name) {
  for (const auto& [s, n] : kStateNames) {
    if (n == name && s != JobState::kUnspecified) return s;
  }
  return std::nullopt;
}

std::string_view JobEventTypeName(JobEventType type) {
  for (const auto& [t, name] : kEventNames) {
    if (t == type) return name;
  }
  return "UNSPECIFIED";
}

std::optional<JobEventType> ParseJobEventType(std::string_view name) {
  for (const auto& [t, n] : kEventNames) {
    if (n == name && t != JobEventType::kUnspecified) return t;
  }
  return std::nullopt;
}

bool IsFinal(JobState state) {
  return state == JobState::kSucceeded || state == JobState::kFailed ||
         state == JobState::kCancelled;
}

bool CanTransition(JobState from, JobState to) {
  if (from == JobState::kUnspecified || IsFinal(from)) return false;
  if (to == JobState::kFailed || to == JobState::kCancelled) return true;
  switch (from) {
    case JobState::kValidating:
      return to == JobState::kQueued;
    case JobState::kQueued:
      return to == JobState::kRunning;
    case JobState::kRunning:
      return to == JobState::kRecovering || to == JobState::kPublishing;
    case JobState::kRecovering:
      return to == JobState::kRunning;
    case JobState::kPublishing:
      return to == JobState::kSucceeded;
    default:
      return false;
  }
}

absl::Status CheckTransition(std::string_view job_id, JobState from, JobState to) {
  if (CanTransition(from, to)) return absl::OkStatus();
  return absl::FailedPreconditionError(herd::StrCat("job ", job_id, " cannot go from ",
                                                    JobStateName(from), " to ",
                                                    JobStateName(to)));
}

}  // namespace herd::coordinator::store
