// herd.v1.DatasetService: see dataset_service.h.
#include "coordinator/services/dataset_service.h"

#include <algorithm>
#include <string>
#include <utility>

#include <google/protobuf/util/json_util.h>

#include "absl/time/time.h"
#include "common/rpc/rpc.h"
#include "common/status.h"
#include "common/strings.h"
#include "coordinator/services/convert.h"
#include "coordinator/services/auth.h"
#include "datasets/records.h"

namespace herd::coordinator::services {
namespace {

using herd::rpc::ToGrpc;

// Uncommitted bytes a stream may hold before it fsyncs them; bounds what a broken connection
// makes the client send again.
constexpr int64_t kCommitEveryBytes = int64_t{8} << 20;


// herd.v1.RecordFormat <-> the store's format names ("" = detect). The enum values are the
// datasets::RecordFormat ones plus one.
absl::StatusOr<std::string> FormatFromProto(herd::v1::RecordFormat format) {
  if (format == herd::v1::RECORD_FORMAT_UNSPECIFIED) return std::string();
  if (format < herd::v1::RECORD_FORMAT_TEXT || format > herd::v1::RECORD_FORMAT_TOKENIZED) {
    return absl::InvalidArgumentError(StrCat("format: unknown value ", static_cast<int>(format)));
  }
  return std::string(
      datasets::FormatName(static_cast<datasets::RecordFormat>(static_cast<int>(format) - 1)));
}

herd::v1::RecordFormat FormatToProto(std::string_view name) {
  std::optional<datasets::RecordFormat> f = datasets::ParseFormatName(name);
  if (!f) return herd::v1::RECORD_FORMAT_UNSPECIFIED;
  return static_cast<herd::v1::RecordFormat>(static_cast<int>(*f) + 1);
}

void ToProto(const store::DatasetRecord& in, herd::v1::Dataset* out) {
  out->set_id(in.id);
  out->set_name(in.name);
  out->set_sha256(in.sha256);
  out->set_size_bytes(in.size_bytes);
  out->set_record_count(in.record_count);
  out->set_format(FormatToProto(in.format));
  out->set_state(static_cast<herd::v1::DatasetState>(static_cast<int>(in.state)));
  out->set_skip_invalid(in.skip_invalid);
  if (!in.validation_json.empty()) {
    google::protobuf::util::JsonParseOptions options;
    options.ignore_unknown_fields = true;
    // Written by EncodeValidationReport; a report that does not parse is left empty rather than
    // failing a read of the dataset.
    (void)google::protobuf::util::JsonStringToMessage(in.validation_json, out->mutable_validation(),
                                                      options);
  }
  ToTimestamp(in.create_time, out->mutable_create_time());
}

void ToProto(const store::UploadRecord& in, herd::v1::Upload* out) {
  out->set_upload_id(in.id);
  out->set_name(in.params.name);
  out->set_format(FormatToProto(in.params.format));
  out->set_skip_invalid(in.params.skip_invalid);
  out->set_total_size_bytes(in.params.total_size_bytes);
  out->set_sha256(in.params.sha256);
  out->set_committed_offset(in.committed_offset);
  ToTimestamp(in.expire_time, out->mutable_expire_time());
  if (in.state == store::UploadState::kFinished && in.result) ToProto(*in.result, out->mutable_result());
}

}  // namespace

grpc::Status DatasetService::StartUpload(grpc::ServerContext* context,
                                         const herd::v1::StartUploadRequest* request,
                                         herd::v1::Upload* response) {
  auto tenant = AuthenticateUser(*context, *tokens_);
  if (!tenant.ok()) return ToGrpc(tenant.status());
  auto format = FormatFromProto(request->format());
  if (!format.ok()) return ToGrpc(format.status());
  auto upload = uploads_->Start(*tenant, {.name = request->name(),
                                          .format = *format,
                                          .skip_invalid = request->skip_invalid(),
                                          .total_size_bytes = request->total_size_bytes(),
                                          .sha256 = request->sha256()});
  if (!upload.ok()) return ToGrpc(upload.status());
  ToProto(*upload, response);
  return grpc::Status::OK;
}

grpc::Status DatasetService::QueryUpload(grpc::ServerContext* context,
                                         const herd::v1::QueryUploadRequest* request,
                                         herd::v1::Upload* response) {
  auto tenant = AuthenticateUser(*context, *tokens_);
  if (!tenant.ok()) return ToGrpc(tenant.status());
  if (absl::Status bad_id = CheckId("upload_id", request->upload_id()); !bad_id.ok()) {
    return ToGrpc(bad_id);
  }
  auto upload = uploads_->Query(*tenant, request->upload_id());
  if (!upload.ok()) return ToGrpc(upload.status());
  ToProto(*upload, response);
  return grpc::Status::OK;
}

grpc::Status DatasetService::UploadDataset(
    grpc::ServerContext* context, grpc::ServerReader<herd::v1::UploadDatasetRequest>* reader,
    herd::v1::Dataset* response) {
  auto tenant = AuthenticateUser(*context, *tokens_);
  if (!tenant.ok()) return ToGrpc(tenant.status());
  herd::v1::UploadDatasetRequest message;
  if (!reader->Read(&message) || !message.has_header()) {
    return ToGrpc(absl::InvalidArgumentError("the first message must be an UploadHeader"));
  }
  const std::string upload_id = message.header().upload_id();
  if (absl::Status bad_id = CheckId("header.upload_id", upload_id); !bad_id.ok()) return ToGrpc(bad_id);
  auto upload = uploads_->Query(*tenant, upload_id);
  if (!upload.ok()) return ToGrpc(upload.status());

  if (upload->state != store::UploadState::kOpen) {
    // A finished (or sealed) upload takes no bytes; a header alone asks for its answer again.
    if (reader->Read(&message)) {
      return ToGrpc(absl::FailedPreconditionError(
          StrCat("upload ", upload_id, " has all its bytes already; it takes no more")));
    }
    auto answer = uploads_->Answer(*tenant, *upload);
    if (!answer.ok()) return ToGrpc(answer.status());
    ToProto(*answer, response);
    return grpc::Status::OK;
  }

  auto writer = uploads_->OpenWriter(*tenant, upload_id);
  if (!writer.ok()) return ToGrpc(writer.status());
  store::UploadWriter& w = **writer;
  // On any error keep what arrived in order, so the client resumes after it.
  auto fail = [&](const absl::Status& status) {
    (void)w.Commit();
    return ToGrpc(status);
  };
  while (reader->Read(&message)) {
    if (message.has_header()) {
      return fail(absl::InvalidArgumentError("a second UploadHeader in one stream"));
    }
    const herd::v1::DataChunk& chunk = message.chunk();
    if (static_cast<int64_t>(chunk.data().size()) > DatasetUploads::kMaxChunkBytes) {
      return fail(absl::ResourceExhaustedError(
          StrCat("chunk of ", chunk.data().size(), " bytes; at most ",
                 DatasetUploads::kMaxChunkBytes, " per chunk")));
    }
    if (absl::Status s = w.Append(chunk.offset(), chunk.data()); !s.ok()) return fail(s);
    if (w.written_offset() - w.committed_offset() >= kCommitEveryBytes) {
      if (absl::Status s = w.Commit(); !s.ok()) return ToGrpc(s);
    }
  }
  if (context->IsCancelled()) return fail(absl::CancelledError("the client cancelled the upload"));
  if (w.written_offset() < w.total_size_bytes()) {
    return fail(absl::FailedPreconditionError(
        StrCat("upload ", upload_id, " has ", w.written_offset(), " of ", w.total_size_bytes(),
               " bytes; send the rest from offset ", w.written_offset())));
  }
  auto dataset = uploads_->Complete(*tenant, w);
  if (!dataset.ok()) return ToGrpc(dataset.status());
  ToProto(*dataset, response);
  return grpc::Status::OK;
}

grpc::Status DatasetService::GetDataset(grpc::ServerContext* context,
                                        const herd::v1::GetDatasetRequest* request,
                                        herd::v1::Dataset* response) {
  auto tenant = AuthenticateUser(*context, *tokens_);
  if (!tenant.ok()) return ToGrpc(tenant.status());
  if (absl::Status bad_id = CheckId("id", request->id()); !bad_id.ok()) return ToGrpc(bad_id);
  auto dataset = uploads_->Get(*tenant, request->id());
  if (!dataset.ok()) return ToGrpc(dataset.status());
  ToProto(*dataset, response);
  return grpc::Status::OK;
}

grpc::Status DatasetService::ListDatasets(grpc::ServerContext* context,
                                          const herd::v1::ListDatasetsRequest* request,
                                          herd::v1::ListDatasetsResponse* response) {
  auto tenant = AuthenticateUser(*context, *tokens_);
  if (!tenant.ok()) return ToGrpc(tenant.status());
  if (request->page_size() < 0) {
    return ToGrpc(absl::InvalidArgumentError("page_size: must not be negative"));
  }
  auto page = uploads_->List(*tenant, {.page_size = request->page_size(),
                                       .page_token = request->page_token(),
                                       .name_prefix = request->name_prefix()});
  if (!page.ok()) return ToGrpc(page.status());
  for (const store::DatasetRecord& d : page->datasets) ToProto(d, response->add_datasets());
  response->set_next_page_token(page->next_page_token);
  return grpc::Status::OK;
}

grpc::Status DatasetService::DeleteDataset(grpc::ServerContext* context,
                                           const herd::v1::DeleteDatasetRequest* request,
                                           google::protobuf::Empty* /*response*/) {
  auto tenant = AuthenticateUser(*context, *tokens_);
  if (!tenant.ok()) return ToGrpc(tenant.status());
  if (absl::Status bad_id = CheckId("id", request->id()); !bad_id.ok()) return ToGrpc(bad_id);
  return ToGrpc(uploads_->Delete(*tenant, request->id()));
}

grpc::Status DatasetService::InspectDataset(grpc::ServerContext* context,
                                            const herd::v1::InspectDatasetRequest* request,
                                            herd::v1::InspectDatasetResponse* response) {
  constexpr int32_t kDefaultLimit = 3, kMaxLimit = 100;
  auto tenant = AuthenticateUser(*context, *tokens_);
  if (!tenant.ok()) return ToGrpc(tenant.status());
  if (absl::Status bad_id = CheckId("dataset_id", request->dataset_id()); !bad_id.ok()) return ToGrpc(bad_id);
  // The dataset first: another tenant's id answers NOT_FOUND whatever else the request says.
  auto dataset = uploads_->Get(*tenant, request->dataset_id());
  if (!dataset.ok()) return ToGrpc(dataset.status());
  if (request->model().empty()) return ToGrpc(absl::InvalidArgumentError("model: must not be empty"));
  if (request->limit() < 0) return ToGrpc(absl::InvalidArgumentError("limit: must not be negative"));
  if (request->max_seq_len() < 0) {
    return ToGrpc(absl::InvalidArgumentError("max_seq_len: must not be negative"));
  }
  auto format = FormatFromProto(request->format());
  if (!format.ok()) return ToGrpc(format.status());
  std::string chat_template;
  switch (request->chat_template()) {
    case herd::v1::CHAT_TEMPLATE_UNSPECIFIED:
      break;
    case herd::v1::CHAT_TEMPLATE_LLAMA2:
      chat_template = "llama2";
      break;
    case herd::v1::CHAT_TEMPLATE_LLAMA3:
      chat_template = "llama3";
      break;
    default:
      return ToGrpc(absl::InvalidArgumentError(
          StrCat("chat_template: unknown value ", static_cast<int>(request->chat_template()))));
  }
  auto inspection = inspector_.Inspect(
      *dataset, {.model = request->model(),
                 .limit = request->limit() == 0 ? kDefaultLimit : std::min(request->limit(), kMaxLimit),
                 .format = *format,
                 .chat_template = chat_template,
                 .train_on_inputs = request->train_on_inputs(),
                 .max_seq_len = request->max_seq_len()});
  if (!inspection.ok()) return ToGrpc(inspection.status());
  response->set_format(FormatToProto(inspection->format));
  if (inspection->chat_template == "llama2") response->set_chat_template(herd::v1::CHAT_TEMPLATE_LLAMA2);
  if (inspection->chat_template == "llama3") response->set_chat_template(herd::v1::CHAT_TEMPLATE_LLAMA3);
  for (const InspectedExample& in : inspection->examples) {
    herd::v1::InspectedExample* out = response->add_examples();
    out->set_line(in.line);
    out->mutable_token_ids()->Add(in.ids.begin(), in.ids.end());
    for (const std::string& piece : in.pieces) out->add_pieces(piece);
    for (bool trained : in.trained) out->add_trained(trained);
    out->set_length(in.length);
    out->set_error(in.error);
  }
  return grpc::Status::OK;
}

}  // namespace herd::coordinator::services
