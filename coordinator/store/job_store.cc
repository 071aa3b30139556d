// Jobs and job events over SQLite (job_store.h).
#include "coordinator/store/job_store.h"

#include <limits>

#include "common/status.h"
#include "common/strings.h"
#include "coordinator/store/job_spec_json.h"
#include "nlohmann/json.hpp"

namespace herd::coordinator::store {

using Json = nlohmann::json;

namespace {

constexpr size_t kMaxFailureMessage = 4096;
constexpr size_t kMaxCancelReason = 1024;

// Column list shared by every SELECT of a job; RowToJob reads them by these positions.
constexpr std::string_view kJobColumns =
    "seq, id, tenant, spec_json, state, generation, world_size, trainer_ids_json, failure_code, "
    "failure_message, recoveries, last_checkpoint_step, idempotency_key, plan_json, "
    "progress_json, train_sha256, train_size, validation_sha256, validation_size, "
    "last_event_seq, create_us, update_us, start_us, end_us";

constexpr std::string_view kEventColumns =
    "job_id, sequence, time_us, type, state, previous_state, generation, world_size, rank, "
    "trainer_id, step, eval_loss, failure_code, failure_message, message";

std::string Sql(std::string_view a, std::string_view b = "", std::string_view c = "") {
  return herd::StrCat(a, b, c);
}

// Cuts `s` to at most `max` bytes without splitting a UTF-8 sequence.
std::string Truncate(std::string_view s, size_t max) {
  if (s.size() <= max) return std::string(s);
  size_t n = max;
  while (n > 0 && (static_cast<unsigned char>(s[n]) & 0xc0) == 0x80) --n;
  return std::string(s.substr(0, n));
}

absl::StatusOr<JobRecord> RowToJob(const Row& r) {
  JobRecord j;
  j.id = r.Text(1);
  j.tenant = r.Text(2);
  auto spec = JobSpecFromJson(r.Text(3));
  if (!spec.ok()) return Annotate(spec.status(), herd::StrCat("job ", j.id));
  j.spec = *std::move(spec);
  auto state = ParseJobState(r.Text(4));
  if (!state) {
    return absl::DataLossError(herd::StrCat("job ", j.id, " has unknown state '", r.Text(4), "'"));
  }
  j.state = *state;
  j.generation = r.Int(5);
  j.world_size = static_cast<int32_t>(r.Int(6));
  Json ids = Json::parse(r.Text(7), nullptr, false);
  if (!ids.is_array()) {
    return absl::DataLossError(herd::StrCat("job ", j.id, " has malformed trainer_ids_json"));
  }
  for (const Json& id : ids) {
    if (id.is_string()) j.trainer_ids.push_back(id.get<std::string>());
  }
  if (!r.IsNull(8)) j.failure = Failure{r.Text(8), r.Text(9)};
  j.recoveries = static_cast<int32_t>(r.Int(10));
  j.last_checkpoint_step = r.Int(11);
  j.idempotency_key = r.Text(12);
  j.plan_json = r.Text(13);
  j.progress_json = r.Text(14);
  if (!r.IsNull(15)) j.train_data = BlobRef{r.Text(15), r.Int(16)};
  if (!r.IsNull(17)) j.validation_data = BlobRef{r.Text(17), r.Int(18)};
  j.last_event_sequence = r.Int(19);
  j.create_time = FromMicros(r.Int(20));
  j.update_time = FromMicros(r.Int(21));
  if (!r.IsNull(22)) j.start_time = FromMicros(r.Int(22));
  if (!r.IsNull(23)) j.end_time = FromMicros(r.Int(23));
  return j;
}

absl::StatusOr<JobEvent> RowToEvent(const Row& r) {
  JobEvent e;
  e.job_id = r.Text(0);
  e.sequence = r.Int(1);
  e.time = FromMicros(r.Int(2));
  auto type = ParseJobEventType(r.Text(3));
  if (!type) return absl::DataLossError(herd::StrCat("unknown job event type '", r.Text(3), "'"));
  e.type = *type;
  if (!r.IsNull(4)) e.state = ParseJobState(r.Text(4)).value_or(JobState::kUnspecified);
  if (!r.IsNull(5)) e.previous_state = ParseJobState(r.Text(5)).value_or(JobState::kUnspecified);
  e.generation = r.Int(6);
  e.world_size = static_cast<int32_t>(r.Int(7));
  e.rank = static_cast<int32_t>(r.Int(8));
  e.trainer_id = r.Text(9);
  e.step = r.Int(10);
  e.eval_loss = r.OptDouble(11);
  if (!r.IsNull(12)) e.failure = Failure{r.Text(12), r.Text(13)};
  e.message = r.Text(14);
  return e;
}

std::optional<std::string_view> StateOrNull(JobState s) {
  if (s == JobState::kUnspecified) return std::nullopt;
  return JobStateName(s);
}

// ",RUNNING,QUEUED," for an instr() membership test; "" for no filter.
std::string StateSet(const std::vector<JobState>& states) {
  if (states.empty()) return "";
  std::string out = ",";
  for (JobState s : states) out += herd::StrCat(JobStateName(s), ",");
  return out;
}

absl::Status CheckStoredBlob(const BlobStore* blobs, const BlobRef& ref, std::string_view what) {
  if (!IsSha256Hex(ref.sha256)) {
    return absl::InvalidArgumentError(herd::StrCat(what, ": '", ref.sha256, "' is not a sha256"));
  }
  auto size = blobs->Touch(ref.sha256);
  if (!size.ok()) {
    return absl::FailedPreconditionError(
        herd::StrCat(what, ": blob ", ref.sha256, " is not stored (", size.status().message(), ")"));
  }
  if (*size != ref.size_bytes) {
    return absl::FailedPreconditionError(herd::StrCat(what, ": blob ", ref.sha256, " holds ",
                                                      *size, " bytes, not ", ref.size_bytes));
  }
  return absl::OkStatus();
}

// Applies a legal move to the row and writes its STATE_CHANGED event.
absl::Status ApplyTransition(Tx& tx, const JobRecord& job, JobState to,
                             const TransitionInfo& info, absl::Time now) {
  if (info.expected_from && *info.expected_from != job.state) {
    return absl::FailedPreconditionError(
        herd::StrCat("job ", job.id, " is ", JobStateName(job.state), ", not ",
                     JobStateName(*info.expected_from)));
  }
  HERD_RETURN_IF_ERROR(CheckTransition(job.id, job.state, to));
  std::optional<Failure> failure;
  if (to == JobState::kFailed) {
    failure = info.failure.value_or(Failure{"INTERNAL", "unknown"});
  } else if (to == JobState::kCancelled) {
    failure = info.failure.value_or(Failure{"CANCELLED", "cancelled"});
  }
  if (failure) failure->message = Truncate(failure->message, kMaxFailureMessage);
  const bool clear_world = to == JobState::kRecovering || IsFinal(to);
  const int64_t now_us = ToMicros(now);
  HERD_RETURN_IF_ERROR(
      tx.Exec("UPDATE jobs SET state = ?1, update_us = ?2,"
              " start_us = CASE WHEN ?3 THEN COALESCE(start_us, ?2) ELSE start_us END,"
              " end_us = CASE WHEN ?4 THEN ?2 ELSE end_us END,"
              " recoveries = recoveries + ?5,"
              " world_size = CASE WHEN ?6 THEN 0 ELSE world_size END,"
              " trainer_ids_json = CASE WHEN ?6 THEN '[]' ELSE trainer_ids_json END,"
              " failure_code = COALESCE(?7, failure_code),"
              " failure_message = COALESCE(?8, failure_message)"
              " WHERE id = ?9",
              {JobStateName(to), now_us, to == JobState::kRunning, IsFinal(to),
               to == JobState::kRecovering ? 1 : 0, clear_world,
               failure ? std::optional<std::string>(failure->code) : std::nullopt,
               failure ? std::optional<std::string>(failure->message) : std::nullopt, job.id})
          .status());
  JobEvent event;
  event.type = JobEventType::kStateChanged;
  event.state = to;
  event.previous_state = job.state;
  event.failure = failure;
  // Every state change names both states, then says why.
  const std::string why = !info.message.empty() ? info.message : failure ? failure->message : "";
  event.message = herd::StrCat(JobStateName(job.state), " -> ", JobStateName(to), why.empty() ? "" : ": ", why);
  return internal::InsertEvent(tx, job.id, std::move(event), now).status();
}

}  // namespace

namespace internal {

absl::Status NotFoundJob(std::string_view id) {
  return absl::NotFoundError(herd::StrCat("job ", id, " not found"));
}

absl::StatusOr<JobRecord> LoadJob(Tx& tx, std::string_view id) {
  HERD_ASSIGN_OR_RETURN(auto row, tx.QueryOne(Sql("SELECT ", kJobColumns, " FROM jobs WHERE id = ?"),
                                              {id}));
  if (!row) return NotFoundJob(id);
  return RowToJob(*row);
}

absl::StatusOr<JobEvent> InsertEvent(Tx& tx, std::string_view job_id, JobEvent e,
                                     absl::Time now) {
  HERD_ASSIGN_OR_RETURN(
      auto row, tx.QueryOne("UPDATE jobs SET last_event_seq = last_event_seq + 1 WHERE id = ?"
                            " RETURNING last_event_seq",
                            {job_id}));
  if (!row) return NotFoundJob(job_id);
  e.job_id = std::string(job_id);
  e.sequence = row->Int(0);
  e.time = now;
  if (e.message.empty()) e.message = std::string(JobEventTypeName(e.type));
  if (e.failure) e.failure->message = Truncate(e.failure->message, kMaxFailureMessage);
  tx.Signal(kJobEventsSignal);
  HERD_RETURN_IF_ERROR(
      tx.Exec(Sql("INSERT INTO job_events (", kEventColumns,
                  ") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"),
              {e.job_id, e.sequence, ToMicros(now), JobEventTypeName(e.type), StateOrNull(e.state),
               StateOrNull(e.previous_state), e.generation, e.world_size, e.rank, e.trainer_id,
               e.step, e.eval_loss,
               e.failure ? std::optional<std::string>(e.failure->code) : std::nullopt,
               e.failure ? std::optional<std::string>(e.failure->message) : std::nullopt,
               e.message})
          .status());
  return e;
}

}  // namespace internal

absl::Status JobStoreOptions::Validate() const {
  if (max_unfinished_jobs_per_tenant < 0) {
    return absl::InvalidArgumentError("JobStoreOptions.max_unfinished_jobs_per_tenant: must be >= 0");
  }
  if (max_idempotency_key_bytes < 1) {
    return absl::InvalidArgumentError("JobStoreOptions.max_idempotency_key_bytes: must be >= 1");
  }
  if (clock == nullptr) return absl::InvalidArgumentError("JobStoreOptions.clock: required");
  return absl::OkStatus();
}

JobStore::JobStore(Db* db, const BlobStore* blobs, JobStoreOptions options)
    : db_(db), blobs_(blobs), options_(std::move(options)) {}

absl::StatusOr<JobRecord> JobStore::Create(std::string_view tenant, const JobSpec& spec,
                                           std::string_view idempotency_key, bool* created) {
  if (created != nullptr) *created = false;
  if (!spec.name.empty()) HERD_RETURN_IF_ERROR(ValidateName("spec.name", spec.name));
  HERD_RETURN_IF_ERROR(ValidateName("spec.base_model", spec.base_model));
  for (auto [field, id] : {std::pair<std::string_view, std::string_view>{"spec.dataset", spec.dataset},
                           {"spec.validation_dataset", spec.validation_dataset}}) {
    if (id.size() > 64) {
      return absl::InvalidArgumentError(herd::StrCat(field, ": an id is at most 64 bytes"));
    }
  }
  if (idempotency_key.size() > static_cast<size_t>(options_.max_idempotency_key_bytes)) {
    return absl::InvalidArgumentError(herd::StrCat("idempotency_key is ", idempotency_key.size(),
                                                   " bytes; at most ",
                                                   options_.max_idempotency_key_bytes));
  }
  HERD_RETURN_IF_ERROR(spec.Validate());
  const std::string spec_json = JobSpecToJson(spec);
  JobRecord result;
  HERD_RETURN_IF_ERROR(db_->Write([&](Tx& tx) -> absl::Status {
    if (!idempotency_key.empty()) {
      HERD_ASSIGN_OR_RETURN(auto row, tx.QueryOne("SELECT id, spec_json FROM jobs"
                                                  " WHERE tenant = ? AND idempotency_key = ?",
                                                  {tenant, idempotency_key}));
      if (row) {
        if (row->Text(1) != spec_json) {
          return absl::AlreadyExistsError(
              herd::StrCat("idempotency_key '", idempotency_key, "' was used for job ",
                           row->Text(0), " with a different spec"));
        }
        HERD_ASSIGN_OR_RETURN(result, internal::LoadJob(tx, row->Text(0)));
        return absl::OkStatus();
      }
    }
    for (auto [field, id] : {std::pair<std::string_view, std::string_view>{"spec.dataset", spec.dataset},
                             {"spec.validation_dataset", spec.validation_dataset}}) {
      if (id.empty()) continue;
      HERD_ASSIGN_OR_RETURN(auto row, tx.QueryOne("SELECT 1 FROM datasets WHERE tenant = ? AND id = ?",
                                                  {tenant, id}));
      if (!row) return absl::NotFoundError(herd::StrCat(field, ": dataset ", id, " not found"));
    }
    if (options_.max_unfinished_jobs_per_tenant > 0) {
      HERD_ASSIGN_OR_RETURN(
          auto row, tx.QueryOne("SELECT COUNT(*) FROM jobs WHERE tenant = ?"
                                " AND state NOT IN ('SUCCEEDED', 'FAILED', 'CANCELLED')",
                                {tenant}));
      if (row->Int(0) >= options_.max_unfinished_jobs_per_tenant) {
        return absl::ResourceExhaustedError(herd::StrCat(
            "tenant has ", row->Int(0), " unfinished jobs; the limit is ",
            options_.max_unfinished_jobs_per_tenant, " (wait for some to finish or cancel them)"));
      }
    }
    HERD_ASSIGN_OR_RETURN(std::string id, NewId("job_"));
    const absl::Time now = options_.clock->Now();
    HERD_RETURN_IF_ERROR(
        tx.Exec("INSERT INTO jobs (id, tenant, name, spec_json, dataset_id, validation_dataset_id,"
                " state, idempotency_key, create_us, update_us)"
                " VALUES (?, ?, ?, ?, ?, ?, 'VALIDATING', ?, ?, ?)",
                {id, tenant, spec.name, spec_json, spec.dataset, spec.validation_dataset,
                 idempotency_key, ToMicros(now), ToMicros(now)})
            .status());
    JobEvent event;
    event.type = JobEventType::kStateChanged;
    event.state = JobState::kValidating;
    event.message = "submitted";
    HERD_RETURN_IF_ERROR(internal::InsertEvent(tx, id, std::move(event), now).status());
    HERD_ASSIGN_OR_RETURN(result, internal::LoadJob(tx, id));
    if (created != nullptr) *created = true;
    return absl::OkStatus();
  }));
  return result;
}

absl::StatusOr<JobRecord> JobStore::Get(std::string_view tenant, std::string_view id) const {
  JobRecord job;
  HERD_RETURN_IF_ERROR(db_->Read([&](Tx& tx) -> absl::Status {
    HERD_ASSIGN_OR_RETURN(auto row, tx.QueryOne(Sql("SELECT ", kJobColumns,
                                                    " FROM jobs WHERE id = ? AND tenant = ?"),
                                                {id, tenant}));
    if (!row) return internal::NotFoundJob(id);
    HERD_ASSIGN_OR_RETURN(job, RowToJob(*row));
    return absl::OkStatus();
  }));
  return job;
}

absl::StatusOr<JobRecord> JobStore::GetById(std::string_view id) const {
  JobRecord job;
  HERD_RETURN_IF_ERROR(db_->Read([&](Tx& tx) -> absl::Status {
    HERD_ASSIGN_OR_RETURN(job, internal::LoadJob(tx, id));
    return absl::OkStatus();
  }));
  return job;
}

absl::StatusOr<ListJobsResponse> JobStore::List(std::string_view tenant,
                                                const ListJobsRequest& request) const {
  HERD_ASSIGN_OR_RETURN(int page_size, NormalizePageSize(request.page_size));
  for (JobState s : request.states) {
    if (s == JobState::kUnspecified) {
      return absl::InvalidArgumentError("states: UNSPECIFIED is not a state to filter on");
    }
  }
  const std::string states = StateSet(request.states);
  const std::string filter_key = herd::StrCat(tenant, "\n", states, "\n", request.name_prefix);
  HERD_ASSIGN_OR_RETURN(auto cursor, DecodePageToken(request.page_token, "jobs", filter_key));
  ListJobsResponse response;
  HERD_RETURN_IF_ERROR(db_->Read([&](Tx& tx) -> absl::Status {
    HERD_ASSIGN_OR_RETURN(
        auto rows,
        tx.Query(Sql("SELECT ", kJobColumns,
                     " FROM jobs WHERE tenant = ?1 AND seq < ?2"
                     " AND (?3 = '' OR instr(?3, ',' || state || ',') > 0)"
                     " AND (?4 = '' OR substr(CAST(name AS BLOB), 1, length(CAST(?4 AS BLOB)))"
                     " = CAST(?4 AS BLOB))"
                     " ORDER BY seq DESC LIMIT ?5"),
                 {tenant, cursor.value_or(std::numeric_limits<int64_t>::max()), states,
                  request.name_prefix, page_size + 1}));
    for (size_t i = 0; i < rows.size() && i < static_cast<size_t>(page_size); ++i) {
      HERD_ASSIGN_OR_RETURN(JobRecord job, RowToJob(rows[i]));
      response.jobs.push_back(std::move(job));
    }
    if (rows.size() > static_cast<size_t>(page_size)) {
      response.next_page_token =
          EncodePageToken("jobs", rows[page_size - 1].Int(0), filter_key);
    }
    return absl::OkStatus();
  }));
  return response;
}

absl::StatusOr<std::vector<JobRecord>> JobStore::ListByState(
    const std::vector<JobState>& states) const {
  std::vector<JobRecord> jobs;
  const std::string set = StateSet(states);
  if (set.empty()) return jobs;
  HERD_RETURN_IF_ERROR(db_->Read([&](Tx& tx) -> absl::Status {
    HERD_ASSIGN_OR_RETURN(auto rows, tx.Query(Sql("SELECT ", kJobColumns,
                                                  " FROM jobs WHERE instr(?, ',' || state || ',') > 0"
                                                  " ORDER BY seq"),
                                              {set}));
    for (const Row& row : rows) {
      HERD_ASSIGN_OR_RETURN(JobRecord job, RowToJob(row));
      jobs.push_back(std::move(job));
    }
    return absl::OkStatus();
  }));
  return jobs;
}

absl::StatusOr<std::vector<std::pair<JobState, int64_t>>> JobStore::CountByState(
    std::string_view tenant) const {
  std::vector<std::pair<JobState, int64_t>> counts;
  for (JobState s : kAllJobStates) counts.emplace_back(s, 0);
  HERD_RETURN_IF_ERROR(db_->Read([&](Tx& tx) -> absl::Status {
    HERD_ASSIGN_OR_RETURN(auto rows, tx.Query("SELECT state, COUNT(*) FROM jobs"
                                              " WHERE ?1 = '' OR tenant = ?1 GROUP BY state",
                                              {tenant}));
    for (const Row& row : rows) {
      auto state = ParseJobState(row.Text(0));
      for (auto& [s, n] : counts) {
        if (state && s == *state) n = row.Int(1);
      }
    }
    return absl::OkStatus();
  }));
  return counts;
}

absl::StatusOr<JobRecord> JobStore::Transition(std::string_view id, JobState to,
                                               const TransitionInfo& info) {
  JobRecord job;
  HERD_RETURN_IF_ERROR(db_->Write([&](Tx& tx) -> absl::Status {
    HERD_ASSIGN_OR_RETURN(JobRecord current, internal::LoadJob(tx, id));
    HERD_RETURN_IF_ERROR(ApplyTransition(tx, current, to, info, options_.clock->Now()));
    HERD_ASSIGN_OR_RETURN(job, internal::LoadJob(tx, id));
    return absl::OkStatus();
  }));
  return job;
}

absl::StatusOr<JobRecord> JobStore::Cancel(std::string_view tenant, std::string_view id,
                                           std::string_view reason) {
  if (reason.size() > kMaxCancelReason) {
    return absl::InvalidArgumentError(
        herd::StrCat("reason is ", reason.size(), " bytes; at most ", kMaxCancelReason));
  }
  JobRecord job;
  HERD_RETURN_IF_ERROR(db_->Write([&](Tx& tx) -> absl::Status {
    HERD_ASSIGN_OR_RETURN(JobRecord current, internal::LoadJob(tx, id));
    if (current.tenant != tenant) return internal::NotFoundJob(id);
    if (current.state == JobState::kCancelled) {
      job = std::move(current);
      return absl::OkStatus();
    }
    if (IsFinal(current.state)) {
      return absl::FailedPreconditionError(
          herd::StrCat("job ", id, " already ", JobStateName(current.state)));
    }
    TransitionInfo info;
    info.failure = Failure{"CANCELLED", reason.empty() ? "cancelled by user" : std::string(reason)};
    HERD_RETURN_IF_ERROR(ApplyTransition(tx, current, JobState::kCancelled, info, options_.clock->Now()));
    HERD_ASSIGN_OR_RETURN(job, internal::LoadJob(tx, id));
    return absl::OkStatus();
  }));
  return job;
}

absl::StatusOr<JobRecord> JobStore::Prepared(std::string_view id, const PreparedInfo& info) {
  HERD_RETURN_IF_ERROR(CheckStoredBlob(blobs_, info.train_data, "train_data"));
  if (info.validation_data) {
    HERD_RETURN_IF_ERROR(CheckStoredBlob(blobs_, *info.validation_data, "validation_data"));
  }
  JobRecord job;
  HERD_RETURN_IF_ERROR(db_->Write([&](Tx& tx) -> absl::Status {
    HERD_ASSIGN_OR_RETURN(JobRecord current, internal::LoadJob(tx, id));
    HERD_RETURN_IF_ERROR(CheckTransition(id, current.state, JobState::kQueued));
    const absl::Time now = options_.clock->Now();
    HERD_RETURN_IF_ERROR(
        tx.Exec("UPDATE jobs SET plan_json = ?, train_sha256 = ?, train_size = ?,"
                " validation_sha256 = ?, validation_size = ? WHERE id = ?",
                {info.plan_json, info.train_data.sha256, info.train_data.size_bytes,
                 info.validation_data ? std::optional<std::string>(info.validation_data->sha256)
                                      : std::nullopt,
                 info.validation_data ? std::optional<int64_t>(info.validation_data->size_bytes)
                                      : std::nullopt,
                 id})
            .status());
    JobEvent event;
    event.type = JobEventType::kPrepared;
    event.message = info.message.empty() ? "prepared" : info.message;
    HERD_RETURN_IF_ERROR(internal::InsertEvent(tx, id, std::move(event), now).status());
    HERD_RETURN_IF_ERROR(ApplyTransition(tx, current, JobState::kQueued, {}, now));
    HERD_ASSIGN_OR_RETURN(job, internal::LoadJob(tx, id));
    return absl::OkStatus();
  }));
  return job;
}

absl::StatusOr<JobRecord> JobStore::FormWorld(std::string_view id, const WorldInfo& world) {
  if (world.trainer_ids.empty()) {
    return absl::InvalidArgumentError("a world needs at least one trainer");
  }
  if (world.resume_step < 0) return absl::InvalidArgumentError("resume_step must be >= 0");
  JobRecord job;
  HERD_RETURN_IF_ERROR(db_->Write([&](Tx& tx) -> absl::Status {
    HERD_ASSIGN_OR_RETURN(JobRecord current, internal::LoadJob(tx, id));
    HERD_RETURN_IF_ERROR(CheckTransition(id, current.state, JobState::kRunning));
    if (world.generation != current.generation + 1) {
      return absl::FailedPreconditionError(
          herd::StrCat("job ", id, " is at generation ", current.generation,
                       "; the next world must be generation ", current.generation + 1, ", not ",
                       world.generation));
    }
    if (static_cast<int64_t>(world.trainer_ids.size()) > current.spec.resources.trainers) {
      return absl::InvalidArgumentError(
          herd::StrCat("job ", id, " asks for ", current.spec.resources.trainers,
                       " trainers; a world of ", world.trainer_ids.size(), " is too large"));
    }
    const absl::Time now = options_.clock->Now();
    HERD_RETURN_IF_ERROR(tx.Exec("UPDATE jobs SET generation = ?, world_size = ?,"
                                 " trainer_ids_json = ? WHERE id = ?",
                                 {world.generation, static_cast<int64_t>(world.trainer_ids.size()),
                                  Json(world.trainer_ids).dump(-1, ' ', false, Json::error_handler_t::replace), id})
                             .status());
    JobEvent event;
    event.type = JobEventType::kWorldFormed;
    event.generation = world.generation;
    event.world_size = static_cast<int32_t>(world.trainer_ids.size());
    event.step = world.resume_step;
    event.message = world.message.empty()
                        ? herd::StrCat("generation ", world.generation, " formed with ",
                                       world.trainer_ids.size(), " rank(s)",
                                       world.resume_step > 0
                                           ? herd::StrCat(", resuming after step ", world.resume_step)
                                           : "")
                        : world.message;
    HERD_RETURN_IF_ERROR(internal::InsertEvent(tx, id, std::move(event), now).status());
    HERD_RETURN_IF_ERROR(ApplyTransition(tx, current, JobState::kRunning, {}, now));
    HERD_ASSIGN_OR_RETURN(job, internal::LoadJob(tx, id));
    return absl::OkStatus();
  }));
  return job;
}

absl::Status JobStore::SaveProgress(std::string_view id, std::string_view progress_json) {
  return db_->Write([&](Tx& tx) -> absl::Status {
    HERD_ASSIGN_OR_RETURN(int64_t n, tx.Exec("UPDATE jobs SET progress_json = ? WHERE id = ?",
                                             {progress_json, id}));
    if (n == 0) return internal::NotFoundJob(id);
    return absl::OkStatus();
  });
}

absl::StatusOr<JobEvent> JobStore::AppendEvent(std::string_view id, const JobEvent& event) {
  switch (event.type) {
    case JobEventType::kRankFailed:
    case JobEventType::kEvaluated:
    case JobEventType::kNotice:
      break;
    default:
      return absl::InvalidArgumentError(
          herd::StrCat("AppendEvent takes RANK_FAILED, EVALUATED or NOTICE, not ",
                       JobEventTypeName(event.type)));
  }
  JobEvent stored;
  HERD_RETURN_IF_ERROR(db_->Write([&](Tx& tx) -> absl::Status {
    HERD_ASSIGN_OR_RETURN(JobRecord current, internal::LoadJob(tx, id));
    if (IsFinal(current.state)) {
      return absl::FailedPreconditionError(
          herd::StrCat("job ", id, " is ", JobStateName(current.state), "; its history is closed"));
    }
    JobEvent e = event;
    e.state = JobState::kUnspecified;
    e.previous_state = JobState::kUnspecified;
    HERD_ASSIGN_OR_RETURN(stored, internal::InsertEvent(tx, id, std::move(e), options_.clock->Now()));
    return absl::OkStatus();
  }));
  return stored;
}

absl::StatusOr<std::vector<JobEvent>> JobStore::Events(std::string_view id, int64_t after_sequence,
                                                       int limit) const {
  std::vector<JobEvent> events;
  HERD_RETURN_IF_ERROR(db_->Read([&](Tx& tx) -> absl::Status {
    HERD_ASSIGN_OR_RETURN(auto job, tx.QueryOne("SELECT 1 FROM jobs WHERE id = ?", {id}));
    if (!job) return internal::NotFoundJob(id);
    HERD_ASSIGN_OR_RETURN(auto rows, tx.Query(Sql("SELECT ", kEventColumns,
                                                  " FROM job_events WHERE job_id = ?"
                                                  " AND sequence > ? ORDER BY sequence LIMIT ?"),
                                              {id, after_sequence, limit > 0 ? limit : -1}));
    for (const Row& row : rows) {
      HERD_ASSIGN_OR_RETURN(JobEvent e, RowToEvent(row));
      events.push_back(std::move(e));
    }
    return absl::OkStatus();
  }));
  return events;
}

absl::StatusOr<std::vector<JobEvent>> JobStore::WaitForEvents(std::string_view id,
                                                              int64_t after_sequence,
                                                              absl::Time deadline) const {
  while (true) {
    // Read the counter before querying, so a commit in between is not missed.
    const int64_t seen = db_->SignalCount(internal::kJobEventsSignal);
    std::vector<JobEvent> events;
    bool final = false;
    HERD_RETURN_IF_ERROR(db_->Read([&](Tx& tx) -> absl::Status {
      HERD_ASSIGN_OR_RETURN(JobRecord job, internal::LoadJob(tx, id));
      final = IsFinal(job.state);
      HERD_ASSIGN_OR_RETURN(events, Events(id, after_sequence));  // joins this snapshot
      return absl::OkStatus();
    }));
    if (!events.empty() || final) return events;
    if (!db_->AwaitSignal(internal::kJobEventsSignal, seen, deadline)) return events;
  }
}

absl::StatusOr<ListEventsResponse> JobStore::ListEvents(std::string_view tenant,
                                                        std::string_view id,
                                                        int64_t after_sequence, int page_size,
                                                        std::string_view page_token) const {
  if (after_sequence < 0) {
    return absl::InvalidArgumentError(
        herd::StrCat("after_sequence ", after_sequence, " is negative"));
  }
  HERD_ASSIGN_OR_RETURN(int size, NormalizePageSize(page_size));
  const std::string filter_key = herd::StrCat(tenant, "\n", id, "\n", after_sequence);
  HERD_ASSIGN_OR_RETURN(auto cursor, DecodePageToken(page_token, "job_events", filter_key));
  ListEventsResponse response;
  HERD_RETURN_IF_ERROR(db_->Read([&](Tx& tx) -> absl::Status {
    HERD_ASSIGN_OR_RETURN(auto job, tx.QueryOne("SELECT 1 FROM jobs WHERE id = ? AND tenant = ?",
                                                {id, tenant}));
    if (!job) return internal::NotFoundJob(id);
    HERD_ASSIGN_OR_RETURN(auto rows, tx.Query(Sql("SELECT ", kEventColumns,
                                                  " FROM job_events WHERE job_id = ?"
                                                  " AND sequence > ? ORDER BY sequence LIMIT ?"),
                                              {id, std::max(after_sequence, cursor.value_or(0)),
                                               size + 1}));
    for (size_t i = 0; i < rows.size() && i < static_cast<size_t>(size); ++i) {
      HERD_ASSIGN_OR_RETURN(JobEvent e, RowToEvent(rows[i]));
      response.events.push_back(std::move(e));
    }
    if (rows.size() > static_cast<size_t>(size)) {
      response.next_page_token =
          EncodePageToken("job_events", response.events.back().sequence, filter_key);
    }
    return absl::OkStatus();
  }));
  return response;
}

}  // namespace herd::coordinator::store
