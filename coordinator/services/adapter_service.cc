// herd.v1.AdapterService: see adapter_service.h.
#include "coordinator/services/adapter_service.h"

#include <optional>
#include <string>
#include <vector>

#include "common/rpc/rpc.h"
#include "common/status.h"
#include "common/strings.h"
#include "coordinator/services/auth.h"
#include "coordinator/services/convert.h"
#include "coordinator/store/store_util.h"

namespace herd::coordinator::services {
namespace {

using herd::rpc::ToGrpc;

void ToProto(const store::CheckpointRecord& in, herd::v1::Checkpoint* out) {
  out->set_job_id(in.job_id);
  out->set_step(in.step);
  out->set_final(in.final);
  out->set_generation(in.generation);
  herd::v1::Manifest* manifest = out->mutable_adapter();
  for (const store::NamedBlob& f : in.adapter) {
    herd::v1::FileInfo* file = manifest->add_files();
    file->set_name(f.name);
    file->set_size_bytes(f.blob.size_bytes);
    file->set_sha256(f.blob.sha256);
  }
  manifest->set_total_size_bytes(in.adapter_size_bytes);
  manifest->set_sha256(in.adapter_sha256);
  if (in.loss) out->set_loss(*in.loss);
  if (in.eval_loss) out->set_eval_loss(*in.eval_loss);
  ToTimestamp(in.create_time, out->mutable_create_time());
}

absl::Status CheckDownloadRequest(const herd::v1::DownloadAdapterRequest& request) {
  HERD_RETURN_IF_ERROR(CheckId("job_id", request.job_id()));
  if (request.has_step() && request.step() < 0) {
    return absl::InvalidArgumentError(StrCat("step: ", request.step(), " is negative"));
  }
  if (request.offset() < 0) {
    return absl::InvalidArgumentError(StrCat("offset: ", request.offset(), " is negative"));
  }
  if (!request.if_sha256().empty() && !store::IsSha256Hex(request.if_sha256())) {
    return absl::InvalidArgumentError(
        "if_sha256: must be empty or a sha256 of 64 lower-case hex characters");
  }
  return absl::OkStatus();
}

}  // namespace

grpc::Status AdapterService::ListCheckpoints(grpc::ServerContext* context,
                                             const herd::v1::ListCheckpointsRequest* request,
                                             herd::v1::ListCheckpointsResponse* response) {
  auto tenant = AuthenticateUser(*context, *tokens_);
  if (!tenant.ok()) return ToGrpc(tenant.status());
  if (absl::Status bad_id = CheckId("job_id", request->job_id()); !bad_id.ok()) {
    return ToGrpc(bad_id);
  }
  if (request->page_size() < 0) {
    return ToGrpc(absl::InvalidArgumentError("page_size: must not be negative"));
  }
  auto page = checkpoints_->List(*tenant, request->job_id(), request->page_size(),
                                 request->page_token());
  if (!page.ok()) return ToGrpc(page.status());
  for (const store::CheckpointRecord& c : page->checkpoints) ToProto(c, response->add_checkpoints());
  response->set_next_page_token(page->next_page_token);
  return grpc::Status::OK;
}

grpc::Status AdapterService::DownloadAdapter(
    grpc::ServerContext* context, const herd::v1::DownloadAdapterRequest* request,
    grpc::ServerWriter<herd::v1::DownloadAdapterResponse>* writer) {
  auto tenant = AuthenticateUser(*context, *tokens_);
  if (!tenant.ok()) return ToGrpc(tenant.status());
  if (absl::Status s = CheckDownloadRequest(*request); !s.ok()) return ToGrpc(s);
  const std::optional<int64_t> step =
      request->has_step() ? std::optional<int64_t>(request->step()) : std::nullopt;
  auto checkpoint = checkpoints_->ForDownload(*tenant, request->job_id(), step);
  if (!checkpoint.ok()) return ToGrpc(checkpoint.status());
  // A digest check before the offset check: an offset into other bytes means nothing.
  if (!request->if_sha256().empty() && request->if_sha256() != checkpoint->adapter_sha256) {
    return ToGrpc(absl::AbortedError(StrCat(
        "job ", request->job_id(), ": the selected checkpoint (step ", checkpoint->step,
        ") has sha256 ", checkpoint->adapter_sha256, ", not ", request->if_sha256(),
        "; restart the download from offset 0, or ask for the step explicitly")));
  }
  const int64_t total = checkpoint->adapter_size_bytes;
  if (request->offset() > total) {
    return ToGrpc(absl::OutOfRangeError(StrCat("offset: ", request->offset(), " is beyond the ",
                                               total, " bytes of the adapter")));
  }

  herd::v1::DownloadAdapterResponse message;
  ToProto(*checkpoint, message.mutable_checkpoint());
  if (!writer->Write(message)) return ToGrpc(absl::CancelledError("the client went away"));

  std::vector<store::BlobRef> parts;
  for (const store::NamedBlob& f : checkpoint->adapter) parts.push_back(f.blob);
  int64_t offset = request->offset();
  while (offset < total) {
    if (context->IsCancelled()) return ToGrpc(absl::CancelledError("the client cancelled"));
    auto data = blobs_->ReadConcatenated(parts, offset, kChunkBytes);
    if (!data.ok()) return ToGrpc(data.status());
    if (data->empty()) {
      return ToGrpc(absl::DataLossError(StrCat("adapter of job ", request->job_id(), " step ",
                                               checkpoint->step, " ends at ", offset, " of ",
                                               total, " bytes")));
    }
    message.Clear();
    herd::v1::DataChunk* chunk = message.mutable_chunk();
    chunk->set_offset(offset);
    offset += static_cast<int64_t>(data->size());
    chunk->set_data(*std::move(data));
    if (!writer->Write(message)) return ToGrpc(absl::CancelledError("the client went away"));
  }
  return grpc::Status::OK;
}

}  // namespace herd::coordinator::services
