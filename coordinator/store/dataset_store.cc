// Datasets over SQLite (dataset_store.h).
#include "coordinator/store/dataset_store.h"

#include <limits>

#include "common/status.h"
#include "common/strings.h"
#include "coordinator/store/store_util.h"
#include "datasets/records.h"
#include "nlohmann/json.hpp"

namespace herd::coordinator::store {

using Json = nlohmann::json;

namespace {

constexpr std::string_view kColumns =
    "seq, id, tenant, name, sha256, size_bytes, record_count, format, skip_invalid, "
    "validation_json, create_us";

DatasetRecord RowToDataset(const Row& r) {
  DatasetRecord d;
  d.id = r.Text(1);
  d.tenant = r.Text(2);
  d.name = r.Text(3);
  d.sha256 = r.Text(4);
  d.size_bytes = r.Int(5);
  d.record_count = r.Int(6);
  d.format = r.Text(7);
  d.state = DatasetState::kReady;
  d.skip_invalid = r.Int(8) != 0;
  d.validation_json = r.Text(9);
  d.create_time = FromMicros(r.Int(10));
  return d;
}

absl::Status NotFound(std::string_view id) {
  return absl::NotFoundError(herd::StrCat("dataset ", id, " not found"));
}

}  // namespace

absl::Status DatasetStoreOptions::Validate() const {
  if (clock == nullptr) return absl::InvalidArgumentError("DatasetStoreOptions.clock: required");
  return absl::OkStatus();
}

DatasetStore::DatasetStore(Db* db, const BlobStore* blobs, DatasetStoreOptions options)
    : db_(db), blobs_(blobs), options_(options) {}

absl::StatusOr<DatasetRecord> DatasetStore::Create(std::string_view tenant,
                                                   const NewDataset& in) {
  HERD_RETURN_IF_ERROR(ValidateName("name", in.name));
  if (!datasets::ParseFormatName(in.format)) {
    return absl::InvalidArgumentError(herd::StrCat(
        "format: '", in.format, "' is not one of text, prompt_completion, chat, alpaca, tokenized"));
  }
  if (in.record_count < 1) {
    return absl::InvalidArgumentError("record_count: a READY dataset has at least one record");
  }
  if (!IsSha256Hex(in.blob.sha256)) {
    return absl::InvalidArgumentError(herd::StrCat("blob: '", in.blob.sha256, "' is not a sha256"));
  }
  auto size = blobs_->Touch(in.blob.sha256);
  if (!size.ok() || *size != in.blob.size_bytes) {
    return absl::FailedPreconditionError(herd::StrCat(
        "blob ", in.blob.sha256, " of ", in.blob.size_bytes, " bytes is not stored",
        size.ok() ? herd::StrCat(" (it holds ", *size, " bytes)") : ""));
  }
  DatasetRecord out;
  HERD_RETURN_IF_ERROR(db_->Write([&](Tx& tx) -> absl::Status {
    HERD_ASSIGN_OR_RETURN(std::string id, NewId("ds_"));
    HERD_RETURN_IF_ERROR(
        tx.Exec("INSERT INTO datasets (id, tenant, name, sha256, size_bytes, record_count, format,"
                " skip_invalid, validation_json, create_us) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                {id, tenant, in.name, in.blob.sha256, in.blob.size_bytes, in.record_count,
                 in.format, in.skip_invalid, in.validation_json,
                 ToMicros(options_.clock->Now())})
            .status());
    HERD_ASSIGN_OR_RETURN(auto row, tx.QueryOne(herd::StrCat("SELECT ", kColumns,
                                                             " FROM datasets WHERE id = ?"),
                                                {id}));
    out = RowToDataset(*row);
    return absl::OkStatus();
  }));
  return out;
}

absl::StatusOr<DatasetRecord> DatasetStore::Get(std::string_view tenant,
                                                std::string_view id) const {
  DatasetRecord out;
  HERD_RETURN_IF_ERROR(db_->Read([&](Tx& tx) -> absl::Status {
    HERD_ASSIGN_OR_RETURN(auto row, tx.QueryOne(herd::StrCat("SELECT ", kColumns,
                                                             " FROM datasets WHERE id = ? AND tenant = ?"),
                                                {id, tenant}));
    if (!row) return NotFound(id);
    out = RowToDataset(*row);
    return absl::OkStatus();
  }));
  return out;
}

absl::StatusOr<ListDatasetsResponse> DatasetStore::List(std::string_view tenant,
                                                        const ListDatasetsRequest& request) const {
  HERD_ASSIGN_OR_RETURN(int page_size, NormalizePageSize(request.page_size));
  const std::string filter_key = herd::StrCat(tenant, "\n", request.name_prefix);
  HERD_ASSIGN_OR_RETURN(auto cursor, DecodePageToken(request.page_token, "datasets", filter_key));
  ListDatasetsResponse response;
  HERD_RETURN_IF_ERROR(db_->Read([&](Tx& tx) -> absl::Status {
    HERD_ASSIGN_OR_RETURN(
        auto rows,
        tx.Query(herd::StrCat("SELECT ", kColumns,
                              " FROM datasets WHERE tenant = ?1 AND seq < ?2"
                              " AND (?3 = '' OR substr(CAST(name AS BLOB), 1,"
                              " length(CAST(?3 AS BLOB))) = CAST(?3 AS BLOB))"
                              " ORDER BY seq DESC LIMIT ?4"),
                 {tenant, cursor.value_or(std::numeric_limits<int64_t>::max()),
                  request.name_prefix, page_size + 1}));
    for (size_t i = 0; i < rows.size() && i < static_cast<size_t>(page_size); ++i) {
      response.datasets.push_back(RowToDataset(rows[i]));
    }
    if (rows.size() > static_cast<size_t>(page_size)) {
      response.next_page_token =
          EncodePageToken("datasets", rows[page_size - 1].Int(0), filter_key);
    }
    return absl::OkStatus();
  }));
  return response;
}

absl::StatusOr<DatasetRecord> DatasetStore::Delete(std::string_view tenant, std::string_view id) {
  DatasetRecord out;
  HERD_RETURN_IF_ERROR(db_->Write([&](Tx& tx) -> absl::Status {
    HERD_ASSIGN_OR_RETURN(auto row, tx.QueryOne(herd::StrCat("SELECT ", kColumns,
                                                             " FROM datasets WHERE id = ? AND tenant = ?"),
                                                {id, tenant}));
    if (!row) return NotFound(id);
    out = RowToDataset(*row);
    HERD_ASSIGN_OR_RETURN(
        auto user, tx.QueryOne("SELECT id, state FROM jobs WHERE tenant = ?1"
                               " AND (dataset_id = ?2 OR validation_dataset_id = ?2)"
                               " AND state NOT IN ('SUCCEEDED', 'FAILED', 'CANCELLED')"
                               " ORDER BY seq LIMIT 1",
                               {tenant, id}));
    if (user) {
      return absl::FailedPreconditionError(
          herd::StrCat("dataset ", id, " is used by job ", user->Text(0), ", which is ",
                       user->Text(1), "; cancel it or wait until it ends"));
    }
    return tx.Exec("DELETE FROM datasets WHERE id = ?", {id}).status();
  }));
  return out;
}

std::string DatasetToJson(const DatasetRecord& d) {
  Json j = {{"id", d.id},
            {"tenant", d.tenant},
            {"name", d.name},
            {"sha256", d.sha256},
            {"size_bytes", d.size_bytes},
            {"record_count", d.record_count},
            {"format", d.format},
            {"state", static_cast<int>(d.state)},
            {"skip_invalid", d.skip_invalid},
            {"validation_json", d.validation_json},
            {"create_us", ToMicros(d.create_time)}};
  return j.dump(-1, ' ', false, Json::error_handler_t::replace);  // never throws on bad UTF-8
}

absl::StatusOr<DatasetRecord> DatasetFromJson(std::string_view json) {
  Json j = Json::parse(json.begin(), json.end(), nullptr, false);
  if (!j.is_object()) return absl::DataLossError("stored dataset is not a JSON object");
  DatasetRecord d;
  try {
    d.id = j.value("id", "");
    d.tenant = j.value("tenant", "");
    d.name = j.value("name", "");
    d.sha256 = j.value("sha256", "");
    d.size_bytes = j.value("size_bytes", int64_t{0});
    d.record_count = j.value("record_count", int64_t{0});
    d.format = j.value("format", "");
    d.state = static_cast<DatasetState>(j.value("state", 0));
    d.skip_invalid = j.value("skip_invalid", false);
    d.validation_json = j.value("validation_json", "");
    d.create_time = FromMicros(j.value("create_us", int64_t{0}));
  } catch (const Json::exception& e) {
    return absl::DataLossError(herd::StrCat("stored dataset has a field of the wrong type: ", e.what()));
  }
  return d;
}

}  // namespace herd::coordinator::store
