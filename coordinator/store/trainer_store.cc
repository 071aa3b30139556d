// Trainers and models over SQLite (trainer_store.h).
#include "coordinator/store/trainer_store.h"

#include <set>

#include "common/status.h"
#include "common/strings.h"
#include "coordinator/store/store_util.h"
#include "nlohmann/json.hpp"

namespace herd::coordinator::store {

using Json = nlohmann::json;

namespace {

constexpr std::string_view kTrainerColumns =
    "id, name, state, device_kind, device_name, device_index, device_memory_bytes, "
    "metrics_address, agent_version, engine_version, models_json, register_us, last_seen_us";

absl::StatusOr<TrainerRecord> RowToTrainer(const Row& r) {
  TrainerRecord t;
  t.id = r.Text(0);
  t.name = r.Text(1);
  t.state = r.Text(2);
  t.device = DeviceRecord{r.Text(3), r.Text(4), static_cast<int32_t>(r.Int(5)), r.Int(6)};
  t.metrics_address = r.Text(7);
  t.agent_version = r.Text(8);
  t.engine_version = r.Text(9);
  Json models = Json::parse(r.Text(10), nullptr, false);
  if (!models.is_array()) {
    return absl::DataLossError(herd::StrCat("trainer ", t.id, " has malformed models_json"));
  }
  for (const Json& m : models) {
    if (m.is_string()) t.models.push_back(m.get<std::string>());
  }
  t.register_time = FromMicros(r.Int(11));
  t.last_seen_time = FromMicros(r.Int(12));
  return t;
}

absl::StatusOr<std::optional<ModelRecord>> LoadModel(Tx& tx, std::string_view name) {
  HERD_ASSIGN_OR_RETURN(auto row, tx.QueryOne("SELECT name, weights_sha256, weights_size,"
                                              " create_us, update_us FROM models WHERE name = ?",
                                              {name}));
  if (!row) return std::optional<ModelRecord>();
  ModelRecord m;
  m.name = row->Text(0);
  m.weights_sha256 = row->Text(1);
  m.weights_size_bytes = row->Int(2);
  m.create_time = FromMicros(row->Int(3));
  m.update_time = FromMicros(row->Int(4));
  HERD_ASSIGN_OR_RETURN(auto files, tx.Query("SELECT name, sha256, size_bytes FROM model_files"
                                             " WHERE model = ? ORDER BY ordinal",
                                             {name}));
  for (const Row& f : files) m.files.push_back(NamedBlob{f.Text(0), BlobRef{f.Text(1), f.Int(2)}});
  return std::optional<ModelRecord>(std::move(m));
}

absl::Status TrainerNotFound(std::string_view what) {
  return absl::NotFoundError(herd::StrCat("trainer ", what, " not found"));
}

}  // namespace

absl::Status TrainerStoreOptions::Validate() const {
  if (clock == nullptr) return absl::InvalidArgumentError("TrainerStoreOptions.clock: required");
  return absl::OkStatus();
}

TrainerStore::TrainerStore(Db* db, const BlobStore* blobs, TrainerStoreOptions options)
    : db_(db), blobs_(blobs), options_(options) {}

absl::StatusOr<TrainerRecord> TrainerStore::Register(const TrainerRecord& in) {
  HERD_RETURN_IF_ERROR(ValidateName("name", in.name));
  if (in.device.kind != "CPU" && in.device.kind != "CUDA") {
    return absl::InvalidArgumentError(
        herd::StrCat("device.kind: '", in.device.kind, "' is not CPU or CUDA"));
  }
  for (const std::string& m : in.models) HERD_RETURN_IF_ERROR(ValidateName("models", m));
  TrainerRecord out;
  HERD_RETURN_IF_ERROR(db_->Write([&](Tx& tx) -> absl::Status {
    HERD_ASSIGN_OR_RETURN(auto row, tx.QueryOne("SELECT id FROM trainers WHERE name = ?", {in.name}));
    std::string id;
    if (row) {
      id = row->Text(0);
    } else if (!in.id.empty()) {
      id = in.id;
    } else {
      HERD_ASSIGN_OR_RETURN(id, NewId("tr_"));
    }
    const int64_t now = ToMicros(options_.clock->Now());
    HERD_RETURN_IF_ERROR(
        tx.Exec(herd::StrCat("INSERT OR REPLACE INTO trainers (", kTrainerColumns,
                             ") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"),
                {id, in.name, in.state, in.device.kind, in.device.name, in.device.index,
                 in.device.memory_bytes, in.metrics_address, in.agent_version, in.engine_version,
                 Json(in.models).dump(-1, ' ', false, Json::error_handler_t::replace), now, now})
            .status());
    HERD_ASSIGN_OR_RETURN(auto stored, tx.QueryOne(herd::StrCat("SELECT ", kTrainerColumns,
                                                                " FROM trainers WHERE id = ?"),
                                                   {id}));
    HERD_ASSIGN_OR_RETURN(out, RowToTrainer(*stored));
    return absl::OkStatus();
  }));
  return out;
}

absl::Status TrainerStore::SetState(std::string_view id, std::string_view state,
                                    absl::Time last_seen) {
  return db_->Write([&](Tx& tx) -> absl::Status {
    HERD_ASSIGN_OR_RETURN(int64_t n, tx.Exec("UPDATE trainers SET state = ?, last_seen_us = ?"
                                             " WHERE id = ?",
                                             {state, ToMicros(last_seen), id}));
    if (n == 0) return TrainerNotFound(id);
    return absl::OkStatus();
  });
}

absl::StatusOr<TrainerRecord> TrainerStore::Get(std::string_view id) const {
  TrainerRecord out;
  HERD_RETURN_IF_ERROR(db_->Read([&](Tx& tx) -> absl::Status {
    HERD_ASSIGN_OR_RETURN(auto row, tx.QueryOne(herd::StrCat("SELECT ", kTrainerColumns,
                                                             " FROM trainers WHERE id = ?"),
                                                {id}));
    if (!row) return TrainerNotFound(id);
    HERD_ASSIGN_OR_RETURN(out, RowToTrainer(*row));
    return absl::OkStatus();
  }));
  return out;
}

absl::StatusOr<TrainerRecord> TrainerStore::GetByName(std::string_view name) const {
  TrainerRecord out;
  HERD_RETURN_IF_ERROR(db_->Read([&](Tx& tx) -> absl::Status {
    HERD_ASSIGN_OR_RETURN(auto row, tx.QueryOne(herd::StrCat("SELECT ", kTrainerColumns,
                                                             " FROM trainers WHERE name = ?"),
                                                {name}));
    if (!row) return TrainerNotFound(name);
    HERD_ASSIGN_OR_RETURN(out, RowToTrainer(*row));
    return absl::OkStatus();
  }));
  return out;
}

absl::StatusOr<std::vector<TrainerRecord>> TrainerStore::List() const {
  std::vector<TrainerRecord> out;
  HERD_RETURN_IF_ERROR(db_->Read([&](Tx& tx) -> absl::Status {
    HERD_ASSIGN_OR_RETURN(auto rows, tx.Query(herd::StrCat("SELECT ", kTrainerColumns,
                                                           " FROM trainers ORDER BY name")));
    for (const Row& r : rows) {
      HERD_ASSIGN_OR_RETURN(TrainerRecord t, RowToTrainer(r));
      out.push_back(std::move(t));
    }
    return absl::OkStatus();
  }));
  return out;
}

absl::StatusOr<ModelRecord> TrainerStore::PutModel(const ModelRecord& in, bool replace) {
  HERD_RETURN_IF_ERROR(ValidateName("model name", in.name));
  if (!IsSha256Hex(in.weights_sha256)) {
    return absl::InvalidArgumentError(herd::StrCat("model ", in.name, ": weights_sha256 '",
                                                   in.weights_sha256, "' is not a sha256"));
  }
  std::set<std::string_view> names;
  for (const NamedBlob& f : in.files) {
    HERD_RETURN_IF_ERROR(ValidateName(herd::StrCat("model ", in.name, " file name"), f.name));
    if (!names.insert(f.name).second) {
      return absl::InvalidArgumentError(herd::StrCat("model ", in.name, ": file ", f.name,
                                                     " is listed twice"));
    }
    auto size = IsSha256Hex(f.blob.sha256) ? blobs_->Touch(f.blob.sha256)
                                           : absl::StatusOr<int64_t>(absl::NotFoundError(""));
    if (!size.ok() || *size != f.blob.size_bytes) {
      return absl::FailedPreconditionError(herd::StrCat("model ", in.name, ": file ", f.name,
                                                        " (", f.blob.sha256, ") is not stored"));
    }
  }
  ModelRecord out;
  HERD_RETURN_IF_ERROR(db_->Write([&](Tx& tx) -> absl::Status {
    HERD_ASSIGN_OR_RETURN(auto existing, LoadModel(tx, in.name));
    const int64_t now = ToMicros(options_.clock->Now());
    if (existing) {
      std::vector<std::string> differ;
      if (existing->weights_sha256 != in.weights_sha256 ||
          existing->weights_size_bytes != in.weights_size_bytes) {
        differ.push_back("weights");
      }
      if (existing->files != in.files) differ.push_back("files");
      if (differ.empty()) {
        out = *std::move(existing);
        return absl::OkStatus();
      }
      if (!replace) {
        return absl::FailedPreconditionError(
            herd::StrCat("model ", in.name, " is already registered with different ",
                         herd::StrJoin(differ, " and ")));
      }
      HERD_RETURN_IF_ERROR(tx.Exec("DELETE FROM model_files WHERE model = ?", {in.name}).status());
      HERD_RETURN_IF_ERROR(tx.Exec("UPDATE models SET weights_sha256 = ?, weights_size = ?,"
                                   " update_us = ? WHERE name = ?",
                                   {in.weights_sha256, in.weights_size_bytes, now, in.name})
                               .status());
    } else {
      HERD_RETURN_IF_ERROR(tx.Exec("INSERT INTO models (name, weights_sha256, weights_size,"
                                   " create_us, update_us) VALUES (?, ?, ?, ?, ?)",
                                   {in.name, in.weights_sha256, in.weights_size_bytes, now, now})
                               .status());
    }
    for (size_t i = 0; i < in.files.size(); ++i) {
      const NamedBlob& f = in.files[i];
      HERD_RETURN_IF_ERROR(tx.Exec("INSERT INTO model_files (model, ordinal, name, sha256,"
                                   " size_bytes) VALUES (?, ?, ?, ?, ?)",
                                   {in.name, static_cast<int64_t>(i), f.name, f.blob.sha256,
                                    f.blob.size_bytes})
                               .status());
    }
    HERD_ASSIGN_OR_RETURN(auto stored, LoadModel(tx, in.name));
    out = *std::move(stored);
    return absl::OkStatus();
  }));
  return out;
}

absl::StatusOr<ModelRecord> TrainerStore::GetModel(std::string_view name) const {
  ModelRecord out;
  HERD_RETURN_IF_ERROR(db_->Read([&](Tx& tx) -> absl::Status {
    HERD_ASSIGN_OR_RETURN(auto m, LoadModel(tx, name));
    if (!m) return absl::NotFoundError(herd::StrCat("model ", name, " not found"));
    out = *std::move(m);
    return absl::OkStatus();
  }));
  return out;
}

absl::StatusOr<std::vector<ModelRecord>> TrainerStore::ListModels() const {
  std::vector<ModelRecord> out;
  HERD_RETURN_IF_ERROR(db_->Read([&](Tx& tx) -> absl::Status {
    HERD_ASSIGN_OR_RETURN(auto rows, tx.Query("SELECT name FROM models ORDER BY name"));
    for (const Row& r : rows) {
      HERD_ASSIGN_OR_RETURN(auto m, LoadModel(tx, r.Text(0)));
      if (m) out.push_back(*std::move(m));
    }
    return absl::OkStatus();
  }));
  return out;
}

}  // namespace herd::coordinator::store
