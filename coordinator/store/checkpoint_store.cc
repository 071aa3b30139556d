// Checkpoints over SQLite (checkpoint_store.h).
#include "coordinator/store/checkpoint_store.h"

#include <algorithm>
#include <set>

#include "common/sha256.h"
#include "common/status.h"
#include "common/strings.h"
#include "coordinator/store/job_store.h"
#include "coordinator/store/store_util.h"

namespace herd::coordinator::store {
namespace {

constexpr std::string_view kColumns =
    "job_id, step, final, generation, files_sha256, adapter_sha256, adapter_size, loss, "
    "eval_loss, create_us";

std::vector<NamedBlob> AdapterFiles(const std::vector<NamedBlob>& files) {
  std::vector<NamedBlob> out;
  for (std::string_view name : {kAdapterConfigFile, kAdapterWeightsFile}) {
    for (const NamedBlob& f : files) {
      if (f.name == name) out.push_back(f);
    }
  }
  return out;
}

// Reads checkpoints selected by `where` (with `args`) and their files.
absl::StatusOr<std::vector<CheckpointRecord>> Load(Tx& tx, std::string_view where,
                                                   absl::Span<const Value> args) {
  HERD_ASSIGN_OR_RETURN(auto rows,
                        tx.Query(herd::StrCat("SELECT ", kColumns, " FROM checkpoints ", where), args));
  std::vector<CheckpointRecord> out;
  for (const Row& r : rows) {
    CheckpointRecord c;
    c.job_id = r.Text(0);
    c.step = r.Int(1);
    c.final = r.Int(2) != 0;
    c.generation = r.Int(3);
    c.files_sha256 = r.Text(4);
    c.adapter_sha256 = r.Text(5);
    c.adapter_size_bytes = r.Int(6);
    c.loss = r.OptDouble(7);
    c.eval_loss = r.OptDouble(8);
    c.create_time = FromMicros(r.Int(9));
    HERD_ASSIGN_OR_RETURN(auto files, tx.Query("SELECT name, sha256, size_bytes FROM checkpoint_files"
                                               " WHERE job_id = ? AND step = ? ORDER BY ordinal",
                                               {c.job_id, c.step}));
    for (const Row& f : files) c.files.push_back(NamedBlob{f.Text(0), BlobRef{f.Text(1), f.Int(2)}});
    c.adapter = AdapterFiles(c.files);
    out.push_back(std::move(c));
  }
  return out;
}

absl::Status CheckTenant(Tx& tx, std::string_view tenant, std::string_view job_id) {
  HERD_ASSIGN_OR_RETURN(auto row, tx.QueryOne("SELECT 1 FROM jobs WHERE id = ? AND tenant = ?",
                                              {job_id, tenant}));
  if (!row) return internal::NotFoundJob(job_id);
  return absl::OkStatus();
}

absl::Status NoStep(std::string_view job_id, int64_t step) {
  return absl::NotFoundError(herd::StrCat("job ", job_id, " has no checkpoint at step ", step,
                                          " (never written, or pruned by checkpoints.keep)"));
}

}  // namespace

std::string ManifestDigest(const std::vector<NamedBlob>& files) {
  std::vector<const NamedBlob*> sorted;
  for (const NamedBlob& f : files) sorted.push_back(&f);
  std::sort(sorted.begin(), sorted.end(),
            [](const NamedBlob* a, const NamedBlob* b) { return a->name < b->name; });
  Sha256 h;
  for (const NamedBlob* f : sorted) h.Update(herd::StrCat(f->blob.sha256, "  ", f->name, "\n"));
  return h.HexDigest();
}

absl::Status CheckpointStoreOptions::Validate() const {
  if (clock == nullptr) return absl::InvalidArgumentError("CheckpointStoreOptions.clock: required");
  if (max_files < 2) return absl::InvalidArgumentError("CheckpointStoreOptions.max_files: must be >= 2");
  return absl::OkStatus();
}

CheckpointStore::CheckpointStore(Db* db, const BlobStore* blobs, CheckpointStoreOptions options)
    : db_(db), blobs_(blobs), options_(options) {}

absl::StatusOr<AddCheckpointResult> CheckpointStore::Add(std::string_view job_id,
                                                         const NewCheckpoint& in) {
  if (in.step < 1) return absl::InvalidArgumentError(herd::StrCat("step ", in.step, " must be >= 1"));
  if (in.files.size() > static_cast<size_t>(options_.max_files)) {
    return absl::ResourceExhaustedError(herd::StrCat("a checkpoint has at most ", options_.max_files,
                                                     " files, not ", in.files.size()));
  }
  std::set<std::string_view> names;
  for (size_t i = 0; i < in.files.size(); ++i) {
    const NamedBlob& f = in.files[i];
    HERD_RETURN_IF_ERROR(ValidateName(herd::StrCat("files[", i, "].name"), f.name));
    if (!names.insert(f.name).second) {
      return absl::InvalidArgumentError(herd::StrCat("file ", f.name, " is listed twice"));
    }
    if (!IsSha256Hex(f.blob.sha256)) {
      return absl::InvalidArgumentError(herd::StrCat("file ", f.name, ": '", f.blob.sha256,
                                                     "' is not a sha256"));
    }
    auto size = blobs_->Touch(f.blob.sha256);
    if (!size.ok() || *size != f.blob.size_bytes) {
      return absl::FailedPreconditionError(herd::StrCat("file ", f.name, ": blob ", f.blob.sha256,
                                                        " of ", f.blob.size_bytes,
                                                        " bytes is not stored"));
    }
  }
  for (std::string_view required : {kAdapterConfigFile, kAdapterWeightsFile}) {
    if (names.count(required) == 0) {
      return absl::InvalidArgumentError(herd::StrCat("a checkpoint must include ", required));
    }
  }
  CheckpointRecord c;
  c.job_id = std::string(job_id);
  c.step = in.step;
  c.final = in.final;
  c.generation = in.generation;
  c.files = in.files;
  c.files_sha256 = ManifestDigest(in.files);
  c.adapter = AdapterFiles(in.files);
  c.adapter_sha256 = ManifestDigest(c.adapter);
  for (const NamedBlob& f : c.adapter) c.adapter_size_bytes += f.blob.size_bytes;
  c.loss = in.loss;
  c.eval_loss = in.eval_loss;

  AddCheckpointResult result;
  HERD_RETURN_IF_ERROR(db_->Write([&](Tx& tx) -> absl::Status {
    HERD_ASSIGN_OR_RETURN(JobRecord job, internal::LoadJob(tx, job_id));
    if (IsFinal(job.state)) {
      return absl::FailedPreconditionError(herd::StrCat("job ", job_id, " is ",
                                                        JobStateName(job.state),
                                                        "; it takes no more checkpoints"));
    }
    if (in.generation != job.generation) {
      return absl::FailedPreconditionError(herd::StrCat("generation ", in.generation,
                                                        " is not job ", job_id,
                                                        "'s current generation ", job.generation));
    }
    HERD_ASSIGN_OR_RETURN(auto existing, Load(tx, "WHERE job_id = ? AND step = ?", {job_id, in.step}));
    if (!existing.empty()) {
      const CheckpointRecord& old = existing[0];
      if (old.final == in.final && old.files_sha256 == c.files_sha256) {
        result.checkpoint = old;  // a retry
        return absl::OkStatus();
      }
      if (old.final || !in.final) {
        return absl::AlreadyExistsError(herd::StrCat("job ", job_id, " has step ", in.step,
                                                     " stored with digest ", old.files_sha256,
                                                     ", not ", c.files_sha256));
      }
      // A final adapter replaces the periodic checkpoint of its step.
      HERD_RETURN_IF_ERROR(
          tx.Exec("DELETE FROM checkpoints WHERE job_id = ? AND step = ?", {job_id, in.step}).status());
    }
    if (in.final) {
      HERD_ASSIGN_OR_RETURN(auto other, tx.QueryOne("SELECT step FROM checkpoints"
                                                    " WHERE job_id = ? AND final = 1",
                                                    {job_id}));
      if (other) {
        return absl::AlreadyExistsError(herd::StrCat("job ", job_id,
                                                     " already has a final adapter at step ",
                                                     other->Int(0)));
      }
    }
    const absl::Time now = options_.clock->Now();
    int64_t total = 0;
    for (const NamedBlob& f : c.files) total += f.blob.size_bytes;
    HERD_RETURN_IF_ERROR(
        tx.Exec(herd::StrCat("INSERT INTO checkpoints (", kColumns,
                             ", total_size) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"),
                {job_id, c.step, c.final, c.generation, c.files_sha256, c.adapter_sha256,
                 c.adapter_size_bytes, c.loss, c.eval_loss, ToMicros(now), total})
            .status());
    for (size_t i = 0; i < c.files.size(); ++i) {
      const NamedBlob& f = c.files[i];
      HERD_RETURN_IF_ERROR(
          tx.Exec("INSERT INTO checkpoint_files (job_id, step, ordinal, name, sha256, size_bytes)"
                  " VALUES (?, ?, ?, ?, ?, ?)",
                  {job_id, c.step, static_cast<int64_t>(i), f.name, f.blob.sha256, f.blob.size_bytes})
              .status());
    }
    HERD_RETURN_IF_ERROR(tx.Exec("UPDATE jobs SET last_checkpoint_step ="
                                 " MAX(last_checkpoint_step, ?) WHERE id = ?",
                                 {c.step, job_id})
                             .status());
    JobEvent event;
    event.type = JobEventType::kCheckpointSaved;
    event.step = c.step;
    event.generation = c.generation;
    event.message = herd::StrCat(c.final ? "final adapter" : "checkpoint", " at step ", c.step,
                                 " stored (", c.adapter_sha256.substr(0, 12), ")");
    HERD_RETURN_IF_ERROR(internal::InsertEvent(tx, job_id, std::move(event), now).status());
    HERD_ASSIGN_OR_RETURN(auto prune, tx.Query("SELECT step FROM checkpoints WHERE job_id = ?"
                                               " AND final = 0 ORDER BY step DESC LIMIT -1 OFFSET ?",
                                               {job_id, job.spec.checkpoints.keep}));
    for (const Row& row : prune) {
      HERD_RETURN_IF_ERROR(tx.Exec("DELETE FROM checkpoints WHERE job_id = ? AND step = ?",
                                   {job_id, row.Int(0)})
                               .status());
      result.pruned_steps.push_back(row.Int(0));
    }
    c.create_time = now;
    result.checkpoint = c;
    result.created = true;
    return absl::OkStatus();
  }));
  return result;
}

absl::StatusOr<CheckpointRecord> CheckpointStore::Get(std::string_view job_id, int64_t step) const {
  CheckpointRecord out;
  HERD_RETURN_IF_ERROR(db_->Read([&](Tx& tx) -> absl::Status {
    HERD_ASSIGN_OR_RETURN(auto found, Load(tx, "WHERE job_id = ? AND step = ?", {job_id, step}));
    if (found.empty()) {
      HERD_RETURN_IF_ERROR(internal::LoadJob(tx, job_id).status());
      return NoStep(job_id, step);
    }
    out = std::move(found[0]);
    return absl::OkStatus();
  }));
  return out;
}

absl::StatusOr<std::optional<CheckpointRecord>> CheckpointStore::Latest(
    std::string_view job_id) const {
  std::optional<CheckpointRecord> out;
  HERD_RETURN_IF_ERROR(db_->Read([&](Tx& tx) -> absl::Status {
    HERD_RETURN_IF_ERROR(internal::LoadJob(tx, job_id).status());
    HERD_ASSIGN_OR_RETURN(auto found,
                          Load(tx, "WHERE job_id = ? ORDER BY step DESC LIMIT 1", {job_id}));
    if (!found.empty()) out = std::move(found[0]);
    return absl::OkStatus();
  }));
  return out;
}

absl::StatusOr<ListCheckpointsResponse> CheckpointStore::List(std::string_view tenant,
                                                              std::string_view job_id,
                                                              int page_size,
                                                              std::string_view page_token) const {
  HERD_ASSIGN_OR_RETURN(int size, NormalizePageSize(page_size));
  const std::string filter_key = herd::StrCat(tenant, "\n", job_id);
  HERD_ASSIGN_OR_RETURN(auto cursor, DecodePageToken(page_token, "checkpoints", filter_key));
  ListCheckpointsResponse response;
  HERD_RETURN_IF_ERROR(db_->Read([&](Tx& tx) -> absl::Status {
    HERD_RETURN_IF_ERROR(CheckTenant(tx, tenant, job_id));
    HERD_ASSIGN_OR_RETURN(auto found, Load(tx, "WHERE job_id = ? AND step > ? ORDER BY step LIMIT ?",
                                           {job_id, cursor.value_or(0), size + 1}));
    if (found.size() > static_cast<size_t>(size)) {
      found.resize(size);
      response.next_page_token = EncodePageToken("checkpoints", found.back().step, filter_key);
    }
    response.checkpoints = std::move(found);
    return absl::OkStatus();
  }));
  return response;
}

absl::StatusOr<CheckpointRecord> CheckpointStore::ForDownload(std::string_view tenant,
                                                              std::string_view job_id,
                                                              std::optional<int64_t> step) const {
  if (step && *step < 0) return absl::InvalidArgumentError(herd::StrCat("step ", *step, " is negative"));
  CheckpointRecord out;
  HERD_RETURN_IF_ERROR(db_->Read([&](Tx& tx) -> absl::Status {
    HERD_ASSIGN_OR_RETURN(JobRecord job, internal::LoadJob(tx, job_id));
    if (job.tenant != tenant) return internal::NotFoundJob(job_id);
    std::vector<CheckpointRecord> found;
    if (step) {
      HERD_ASSIGN_OR_RETURN(found, Load(tx, "WHERE job_id = ? AND step = ?", {job_id, *step}));
      if (found.empty()) return NoStep(job_id, *step);
    } else {
      if (job.state == JobState::kSucceeded) {
        HERD_ASSIGN_OR_RETURN(found, Load(tx, "WHERE job_id = ? AND final = 1", {job_id}));
      }
      if (found.empty()) {
        HERD_ASSIGN_OR_RETURN(found, Load(tx, "WHERE job_id = ? ORDER BY step DESC LIMIT 1", {job_id}));
      }
      if (found.empty()) {
        return absl::NotFoundError(herd::StrCat("job ", job_id, " has no checkpoint yet"));
      }
    }
    out = std::move(found[0]);
    return absl::OkStatus();
  }));
  return out;
}

}  // namespace herd::coordinator::store
