// DatasetUploads: see dataset_uploads.h.
#include "coordinator/dataset_uploads.h"

#include <fstream>
#include <optional>
#include <utility>

#include "absl/time/clock.h"
#include "common/status.h"
#include "common/strings.h"
#include "nlohmann/json.hpp"

namespace herd::coordinator {

std::string EncodeValidationReport(const datasets::ValidationReport& report) {
  nlohmann::json problems = nlohmann::json::array();
  for (const datasets::Problem& p : report.problems) {
    problems.push_back({{"line", p.line}, {"field", p.field}, {"reason", p.reason}});
  }
  nlohmann::json out = {{"records_total", report.accepted + report.invalid},
                        {"records_accepted", report.accepted},
                        {"records_invalid", report.invalid},
                        {"problems", std::move(problems)}};
  // Lines of a broken file may hold invalid UTF-8; replace it rather than fail the upload.
  return out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

absl::StatusOr<store::UploadRecord> DatasetUploads::Start(std::string_view tenant,
                                                          const store::UploadParams& params) {
  return store_->uploads().Start(tenant, params);
}

absl::StatusOr<store::UploadRecord> DatasetUploads::Query(std::string_view tenant,
                                                          std::string_view id) const {
  return store_->uploads().Get(tenant, id);
}

absl::StatusOr<std::unique_ptr<store::UploadWriter>> DatasetUploads::OpenWriter(
    std::string_view tenant, std::string_view id) {
  return store_->uploads().OpenWriter(tenant, id);
}

absl::StatusOr<store::DatasetRecord> DatasetUploads::Complete(std::string_view tenant,
                                                              store::UploadWriter& writer) {
  HERD_ASSIGN_OR_RETURN(store::BlobRef blob, writer.Seal());
  HERD_ASSIGN_OR_RETURN(store::UploadRecord upload, Query(tenant, writer.upload_id()));
  return ValidateAndFinish(tenant, upload, blob);
}

absl::StatusOr<store::DatasetRecord> DatasetUploads::Answer(std::string_view tenant,
                                                            const store::UploadRecord& upload) {
  switch (upload.state) {
    case store::UploadState::kFinished:
      if (!upload.result) return absl::InternalError(StrCat("upload ", upload.id, " has no answer"));
      return *upload.result;
    case store::UploadState::kSealed:
      return ValidateAndFinish(tenant, upload,
                               {upload.params.sha256, upload.params.total_size_bytes});
    case store::UploadState::kOpen:
      break;
  }
  return absl::FailedPreconditionError(
      StrCat("upload ", upload.id, " has ", upload.committed_offset, " of ",
             upload.params.total_size_bytes, " bytes; send the rest from offset ",
             upload.committed_offset));
}

absl::StatusOr<store::DatasetRecord> DatasetUploads::ValidateAndFinish(
    std::string_view tenant, const store::UploadRecord& upload, const store::BlobRef& blob) {
  datasets::ValidationOptions options{.skip_invalid = upload.params.skip_invalid};
  if (!upload.params.format.empty()) {
    options.format = datasets::ParseFormatName(upload.params.format);
    if (!options.format) {
      return absl::InternalError(StrCat("upload ", upload.id, " has unknown format ",
                                        upload.params.format));
    }
  }
  std::ifstream in(store_->blobs().PathOf(blob.sha256), std::ios::binary);
  if (!in) return absl::UnavailableError(StrCat("cannot read the blob of upload ", upload.id));
  const datasets::ValidationReport report = datasets::ValidateJsonl(in, options);
  if (in.bad()) return absl::UnavailableError(StrCat("reading the blob of upload ", upload.id));

  const bool ok = report.ok(options);
  const std::string format = report.format ? std::string(datasets::FormatName(*report.format))
                                           : upload.params.format;
  store::DatasetRecord answer;
  HERD_RETURN_IF_ERROR(store_->db().Write([&](store::Tx&) -> absl::Status {
    // Two streams may race to answer a SEALED upload; the first recorded answer wins and no
    // second dataset is made.
    HERD_ASSIGN_OR_RETURN(store::UploadRecord current, Query(tenant, upload.id));
    if (current.state == store::UploadState::kFinished && current.result) {
      answer = *current.result;
      return absl::OkStatus();
    }
    if (ok) {
      HERD_ASSIGN_OR_RETURN(answer, store_->datasets().Create(
                                        tenant, {.name = upload.params.name,
                                                 .blob = blob,
                                                 .record_count = report.accepted,
                                                 .format = format,
                                                 .skip_invalid = upload.params.skip_invalid,
                                                 .validation_json = EncodeValidationReport(report)}));
    } else {
      // Nothing is kept: no dataset row names the blob, so the garbage collector removes it.
      answer = {.tenant = std::string(tenant),
                .name = upload.params.name,
                .sha256 = blob.sha256,
                .size_bytes = blob.size_bytes,
                .record_count = 0,
                .format = format,
                .state = store::DatasetState::kRejected,
                .skip_invalid = upload.params.skip_invalid,
                .validation_json = EncodeValidationReport(report),
                .create_time = absl::Now()};
    }
    return store_->uploads().Finish(tenant, upload.id, answer).status();
  }));
  return answer;
}

absl::StatusOr<store::DatasetRecord> DatasetUploads::Get(std::string_view tenant,
                                                         std::string_view id) const {
  return store_->datasets().Get(tenant, id);
}

absl::StatusOr<store::ListDatasetsResponse> DatasetUploads::List(
    std::string_view tenant, const store::ListDatasetsRequest& request) const {
  return store_->datasets().List(tenant, request);
}

absl::Status DatasetUploads::Delete(std::string_view tenant, std::string_view id) {
  return store_->datasets().Delete(tenant, id).status();
}

}  // namespace herd::coordinator
