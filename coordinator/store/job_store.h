// Jobs and their event history (DESIGN.md §3), over the jobs and job_events tables. Every state
// change goes through the state machine of job_state.h and writes its STATE_CHANGED event in
// the same transaction, so the history and the state never disagree.
//
// Tenancy: methods that take a tenant are the user-facing ones; another tenant's job answers
// NOT_FOUND with exactly the message a missing job gets. Methods without a tenant serve the
// cluster side (scheduler, trainers) and find any job by id.
//
// Thread-safe (all state is in the Db).
#ifndef HERD_COORDINATOR_STORE_JOB_STORE_H_
#define HERD_COORDINATOR_STORE_JOB_STORE_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/job_spec.h"
#include "coordinator/clock.h"
#include "coordinator/store/blob_store.h"
#include "coordinator/store/db.h"
#include "coordinator/store/job_state.h"
#include "coordinator/store/store_util.h"

namespace herd::coordinator::store {

struct JobStoreOptions {
  // CreateJob answers RESOURCE_EXHAUSTED when the tenant has this many jobs that are not final
  // (jobs.proto); 0 = no limit.
  int max_unfinished_jobs_per_tenant = 100;
  // Idempotency keys longer than this are INVALID_ARGUMENT (jobs.proto).
  int max_idempotency_key_bytes = 128;
  // Where times come from (coordinator/clock.h); not owned.
  Clock* clock = Clock::Real();

  absl::Status Validate() const;
};

struct JobRecord {
  std::string id;      // "job_" + 26 base32
  std::string tenant;
  JobSpec spec;        // as given to Create (the service fills defaults in before)
  JobState state = JobState::kUnspecified;
  int64_t generation = 0;                // 0 until the first world forms
  int32_t world_size = 0;                // 0 when no world is running
  std::vector<std::string> trainer_ids;  // current generation, rank order
  std::optional<Failure> failure;        // set in FAILED and CANCELLED
  int32_t recoveries = 0;                // times it went RECOVERING
  int64_t last_checkpoint_step = 0;
  std::string idempotency_key;
  std::string plan_json;      // the PreparationPlan, encoded by the caller; "" while VALIDATING
  std::string progress_json;  // latest JobProgress snapshot written (not per step); "" if none
  std::optional<BlobRef> train_data;       // prepared data, set by Prepared()
  std::optional<BlobRef> validation_data;  // prepared validation data, if any
  int64_t last_event_sequence = 0;
  absl::Time create_time;
  absl::Time update_time;                 // last state change (or write of the row)
  std::optional<absl::Time> start_time;   // first RUNNING
  std::optional<absl::Time> end_time;     // reached a final state
};

struct JobEvent {
  std::string job_id;
  int64_t sequence = 0;  // 1, 2, 3 ... per job, no gaps
  absl::Time time;
  JobEventType type = JobEventType::kUnspecified;
  JobState state = JobState::kUnspecified;           // STATE_CHANGED
  JobState previous_state = JobState::kUnspecified;  // STATE_CHANGED
  int64_t generation = 0;                            // WORLD_FORMED, RANK_FAILED
  int32_t world_size = 0;                            // WORLD_FORMED
  int32_t rank = 0;                                  // RANK_FAILED
  std::string trainer_id;                            // RANK_FAILED
  int64_t step = 0;               // WORLD_FORMED (resume step), CHECKPOINT_SAVED, EVALUATED
  std::optional<double> eval_loss;  // EVALUATED
  std::optional<Failure> failure;   // RANK_FAILED; STATE_CHANGED to FAILED/CANCELLED
  std::string message;              // one line for people; every event has one
};

struct ListJobsRequest {
  int page_size = 0;               // 0 = 100, capped at 1000
  std::string page_token;          // from the previous page; "" for the first
  std::vector<JobState> states;    // only these; empty = all
  std::string name_prefix;         // byte-wise prefix of spec.name; "" = all
};
struct ListJobsResponse {
  std::vector<JobRecord> jobs;     // newest first
  std::string next_page_token;     // "" on the last page
};
struct ListEventsResponse {
  std::vector<JobEvent> events;    // by sequence
  std::string next_page_token;     // "" on the last page
};

// Extra facts of a transition.
struct TransitionInfo {
  // The event's message; empty = "RUNNING -> RECOVERING".
  std::string message;
  // Required for FAILED and CANCELLED (defaults: INTERNAL/"unknown", CANCELLED/"cancelled").
  std::optional<Failure> failure;
  // When set, the move happens only from this state (compare-and-set; FAILED_PRECONDITION
  // otherwise), so a caller acting on a state it read earlier cannot clobber a newer one.
  std::optional<JobState> expected_from;
};

// What the scheduler records when a world forms.
struct WorldInfo {
  int64_t generation = 0;                // must be the job's generation + 1
  std::vector<std::string> trainer_ids;  // rank order; world_size = size()
  int64_t resume_step = 0;               // 0 = from scratch
  std::string message;                   // optional event text
};

// What preparation produced (end of VALIDATING).
struct PreparedInfo {
  std::string plan_json;                   // the PreparationPlan, caller's encoding
  BlobRef train_data;                      // must be a stored blob
  std::optional<BlobRef> validation_data;  // must be a stored blob when set
  std::string message;                     // e.g. "1,234 sequences, 96% packed"
};

class JobStore {
 public:
  // `blobs` is used to check that rows only name stored blobs. Both must outlive the store.
  JobStore(Db* db, const BlobStore* blobs, JobStoreOptions options);

  // Creates a job in VALIDATING (event 1: STATE_CHANGED UNSPECIFIED -> VALIDATING).
  // Idempotency: a non-empty key already used by a job of this tenant returns that job (in
  // whatever state) when the spec is equal, and ALREADY_EXISTS when it differs (jobs.proto).
  // Errors: INVALID_ARGUMENT spec.Validate() fails, bad name or key over the limit; NOT_FOUND
  // spec.dataset or spec.validation_dataset is not a dataset of this tenant; RESOURCE_EXHAUSTED
  // too many unfinished jobs. `created` (optional) tells whether a new job was made.
  absl::StatusOr<JobRecord> Create(std::string_view tenant, const JobSpec& spec,
                                   std::string_view idempotency_key, bool* created = nullptr);

  absl::StatusOr<JobRecord> Get(std::string_view tenant, std::string_view id) const;
  absl::StatusOr<JobRecord> GetById(std::string_view id) const;  // cluster side
  // Newest first; stable under concurrent inserts (new jobs never shift later pages).
  absl::StatusOr<ListJobsResponse> List(std::string_view tenant,
                                        const ListJobsRequest& request) const;
  // Every job in one of `states`, all tenants, oldest first (scheduler, restart recovery).
  absl::StatusOr<std::vector<JobRecord>> ListByState(const std::vector<JobState>& states) const;
  // Jobs per state for a tenant ("" = all tenants); every state present, zeros included.
  absl::StatusOr<std::vector<std::pair<JobState, int64_t>>> CountByState(
      std::string_view tenant) const;

  // Moves a job (see TransitionInfo). Entering RUNNING first sets start_time; entering
  // RECOVERING counts a recovery and clears the world; a final state sets end_time and clears
  // the world. FAILED_PRECONDITION naming both states for an illegal move; NOT_FOUND.
  absl::StatusOr<JobRecord> Transition(std::string_view id, JobState to,
                                       const TransitionInfo& info = {});
  // CancelJob: CANCELLED with failure {CANCELLED, reason}; a CANCELLED job is returned
  // unchanged; FAILED_PRECONDITION when it already SUCCEEDED or FAILED.
  absl::StatusOr<JobRecord> Cancel(std::string_view tenant, std::string_view id,
                                   std::string_view reason);
  // VALIDATING -> QUEUED with the plan and prepared blobs (events PREPARED, STATE_CHANGED).
  absl::StatusOr<JobRecord> Prepared(std::string_view id, const PreparedInfo& info);
  // QUEUED or RECOVERING -> RUNNING with a new generation (events WORLD_FORMED, STATE_CHANGED).
  // FAILED_PRECONDITION when the generation is not the next one or the state does not allow it.
  absl::StatusOr<JobRecord> FormWorld(std::string_view id, const WorldInfo& world);
  // Saves the latest progress snapshot (no event). Call it rarely (at checkpoints, on
  // shutdown): DESIGN.md §1 keeps per-step progress in memory.
  absl::Status SaveProgress(std::string_view id, std::string_view progress_json);
  // Appends an event of a kind that changes no state (RANK_FAILED, EVALUATED, NOTICE).
  // INVALID_ARGUMENT for STATE_CHANGED/PREPARED/WORLD_FORMED/CHECKPOINT_SAVED (their methods
  // write those); FAILED_PRECONDITION on a final job (its history is closed).
  absl::StatusOr<JobEvent> AppendEvent(std::string_view id, const JobEvent& event);

  // Events with sequence > after_sequence, at most `limit` (0 = all) (WatchJob's replay).
  absl::StatusOr<std::vector<JobEvent>> Events(std::string_view id, int64_t after_sequence,
                                               int limit = 0) const;
  // WatchJob's wait: the events after `after_sequence`, as soon as one is committed. Returns
  // at once when there are some, or when the job is final (empty: its history is complete);
  // otherwise waits until one commits or `deadline` passes (empty). Call it in a loop with a
  // short deadline to notice a client that went away.
  absl::StatusOr<std::vector<JobEvent>> WaitForEvents(std::string_view id, int64_t after_sequence,
                                                      absl::Time deadline) const;
  // ListJobEvents: tenant-checked and paged.
  absl::StatusOr<ListEventsResponse> ListEvents(std::string_view tenant, std::string_view id,
                                                int64_t after_sequence, int page_size,
                                                std::string_view page_token) const;

 private:
  // Constant after construction.
  Db* const db_;
  const BlobStore* const blobs_;
  const JobStoreOptions options_;
};

// Helpers other stores use inside their own transactions (checkpoint_store.cc).
namespace internal {
// The Db signal raised by every committed job event (JobStore::WaitForEvents waits on it).
inline constexpr std::string_view kJobEventsSignal = "job_events";
absl::StatusOr<JobRecord> LoadJob(Tx& tx, std::string_view id);
absl::StatusOr<JobEvent> InsertEvent(Tx& tx, std::string_view job_id, JobEvent event,
                                     absl::Time now);
absl::Status NotFoundJob(std::string_view id);
}  // namespace internal

}  // namespace herd::coordinator::store

#endif  // HERD_COORDINATOR_STORE_JOB_STORE_H_
