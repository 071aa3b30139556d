// The dataset side of DESIGN.md §3 step 1, without gRPC: resumable uploads into the store, and
// validation of a sealed upload (ValidateJsonl) recorded atomically with the dataset it makes.
// DatasetService (services/dataset_service.h) is the gRPC skin over this class.
#ifndef HERD_COORDINATOR_DATASET_UPLOADS_H_
#define HERD_COORDINATOR_DATASET_UPLOADS_H_

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "coordinator/store/store.h"
#include "datasets/records.h"

namespace herd::coordinator {

// A validation report as stored in DatasetRecord::validation_json: the herd.v1.ValidationReport
// fields under their proto names (records_total, records_accepted, records_invalid, problems
// [{line, field, reason}]), so the service decodes it with the protobuf JSON parser.
std::string EncodeValidationReport(const datasets::ValidationReport& report);

class DatasetUploads {
 public:
  // Largest chunk a stream may carry (common.proto: 1 MiB).
  static constexpr int64_t kMaxChunkBytes = int64_t{1} << 20;

  // `store` is not owned and must outlive this object.
  explicit DatasetUploads(store::Store* store) : store_(store) {}

  absl::StatusOr<store::UploadRecord> Start(std::string_view tenant,
                                            const store::UploadParams& params);
  absl::StatusOr<store::UploadRecord> Query(std::string_view tenant, std::string_view id) const;
  // Exclusive writer for one stream (store::UploadStore::OpenWriter).
  absl::StatusOr<std::unique_ptr<store::UploadWriter>> OpenWriter(std::string_view tenant,
                                                                  std::string_view id);
  // The last byte is in: seals the writer (size + sha256), validates the file and records the
  // answer (READY dataset, or REJECTED with its report and nothing stored).
  absl::StatusOr<store::DatasetRecord> Complete(std::string_view tenant,
                                                store::UploadWriter& writer);
  // The answer of an upload that takes no more bytes: FINISHED returns the recorded one; SEALED
  // (the coordinator stopped between sealing and recording) validates again.
  // FAILED_PRECONDITION for an OPEN upload.
  absl::StatusOr<store::DatasetRecord> Answer(std::string_view tenant,
                                              const store::UploadRecord& upload);

  absl::StatusOr<store::DatasetRecord> Get(std::string_view tenant, std::string_view id) const;
  absl::StatusOr<store::ListDatasetsResponse> List(std::string_view tenant,
                                                   const store::ListDatasetsRequest& request) const;
  absl::Status Delete(std::string_view tenant, std::string_view id);

 private:
  // Validates the sealed blob of `upload` and records the answer.
  absl::StatusOr<store::DatasetRecord> ValidateAndFinish(std::string_view tenant,
                                                         const store::UploadRecord& upload,
                                                         const store::BlobRef& blob);

  store::Store* const store_;
};

}  // namespace herd::coordinator

#endif  // HERD_COORDINATOR_DATASET_UPLOADS_H_
