// herd.v1.TrainerService, the work an assignment does (trainers.proto): the assignment's job
// part, FetchBlob, ReportProgress, UploadCheckpoint, ReportEngineExit. Registration, heartbeats
// and rendezvous are in trainer_service.cc.
#include <algorithm>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/engine_protocol.h"
#include "common/log.h"
#include "common/rpc/job_spec_proto.h"
#include "common/rpc/rpc.h"
#include "common/status.h"
#include "common/strings.h"
#include "coordinator/preparation.h"
#include "coordinator/services/auth.h"
#include "coordinator/services/convert.h"
#include "coordinator/services/trainer_convert.h"
#include "coordinator/services/trainer_service.h"

namespace herd::coordinator::services {
namespace {

namespace v1 = herd::v1;

absl::Time FromProtoTime(const google::protobuf::Timestamp& t) {
  if (t.seconds() == 0 && t.nanos() == 0) return absl::Now();
  return absl::FromUnixSeconds(t.seconds()) + absl::Nanoseconds(t.nanos());
}

absl::StatusOr<ExitReason> FromProto(v1::EngineExitReason reason) {
  switch (reason) {
    case v1::ENGINE_EXIT_REASON_COMPLETED: return ExitReason::kCompleted;
    case v1::ENGINE_EXIT_REASON_CANCELLED: return ExitReason::kCancelled;
    case v1::ENGINE_EXIT_REASON_ERROR: return ExitReason::kError;
    case v1::ENGINE_EXIT_REASON_WATCHDOG: return ExitReason::kWatchdog;
    case v1::ENGINE_EXIT_REASON_CRASHED: return ExitReason::kCrashed;
    case v1::ENGINE_EXIT_REASON_HUNG: return ExitReason::kHung;
    case v1::ENGINE_EXIT_REASON_PROTOCOL_VIOLATION: return ExitReason::kProtocolViolation;
    case v1::ENGINE_EXIT_REASON_START_FAILED: return ExitReason::kStartFailed;
    case v1::ENGINE_EXIT_REASON_UPLOAD_FAILED: return ExitReason::kUploadFailed;
    default: return absl::InvalidArgumentError("reason: UNSPECIFIED");
  }
}

// Plain file names only (common.proto name rules).
absl::Status CheckFileName(const std::string& name) {
  if (name.empty() || name.size() > 255 || name == "." || name == ".." ||
      name.find_first_of(std::string("/\\\0", 3)) != std::string::npos) {
    return absl::InvalidArgumentError(StrCat("manifest: file name \"", name, "\" is not a plain file name"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status TrainerService::Persist(const SchedulerEvents& events) {
  if (control_ != nullptr) return control_->Persist(events);
  return PersistSchedulerEvents(*store_, events);
}

absl::Status TrainerService::FillAssignment(const Assignment& a, v1::Assignment* out) const {
  ToProto(a, out);
  HERD_ASSIGN_OR_RETURN(store::JobRecord job, store_->jobs().GetById(a.ref.job_id));
  rpc::JobSpecToProto(job.spec, out->mutable_spec());
  if (job.plan_json.empty() || !job.train_data) {
    return absl::FailedPreconditionError(StrCat("job ", job.id, " has no prepared data"));
  }
  HERD_ASSIGN_OR_RETURN(PreparationPlan plan, PreparationPlan::FromProtoJson(job.plan_json));
  out->set_total_steps(plan.total_steps);
  out->set_steps_per_epoch(plan.steps_per_epoch);
  out->mutable_train_data()->set_sha256(job.train_data->sha256);
  out->mutable_train_data()->set_size_bytes(job.train_data->size_bytes);
  if (job.validation_data) {
    out->mutable_validation_data()->set_sha256(job.validation_data->sha256);
    out->mutable_validation_data()->set_size_bytes(job.validation_data->size_bytes);
    out->set_eval_every_steps(job.spec.checkpoints.every_steps);
  }
  // The step this generation resumes from is in its WORLD_FORMED event.
  int64_t resume_step = 0;
  HERD_ASSIGN_OR_RETURN(std::vector<store::JobEvent> events, store_->jobs().Events(job.id, 0));
  for (const store::JobEvent& e : events) {
    if (e.type == store::JobEventType::kWorldFormed && e.generation == a.ref.generation) resume_step = e.step;
  }
  if (resume_step > 0) {
    HERD_ASSIGN_OR_RETURN(store::CheckpointRecord ck, store_->checkpoints().Get(job.id, resume_step));
    v1::ResumeCheckpoint* resume = out->mutable_resume_from();
    resume->set_step(ck.step);
    for (const store::NamedBlob& f : ck.files) {
      v1::FileInfo* info = resume->add_files();
      info->set_name(f.name);
      info->set_size_bytes(f.blob.size_bytes);
      info->set_sha256(f.blob.sha256);
    }
  }
  ToDurationProto(options_.collective_timeout, out->mutable_collective_timeout());
  return absl::OkStatus();
}

grpc::Status TrainerService::FetchBlob(grpc::ServerContext* context, const v1::FetchBlobRequest* request,
                                       grpc::ServerWriter<v1::FetchBlobResponse>* writer) {
  if (auto p = AuthenticateCaller(*context, store_->tokens(), true); !p.ok()) return rpc::ToGrpc(p.status());
  const AssignmentRef ref = FromProto(request->ref());
  if (absl::Status s = scheduler_->CheckAssignment(request->trainer_id(), ref); !s.ok()) return rpc::ToGrpc(s);
  if (request->offset() < 0) return rpc::ToGrpc(absl::InvalidArgumentError("offset: negative"));
  const std::string& sha = request->sha256();
  // Only blobs the assignment names: its data, or a file of one of the job's checkpoints.
  auto job = store_->jobs().GetById(ref.job_id);
  if (!job.ok()) return rpc::ToGrpc(job.status());
  bool named = (job->train_data && job->train_data->sha256 == sha) ||
               (job->validation_data && job->validation_data->sha256 == sha);
  if (!named && job->last_checkpoint_step > 0) {
    // The newest checkpoint is the one a generation resumes from.
    if (auto ck = store_->checkpoints().Get(job->id, job->last_checkpoint_step); ck.ok()) {
      for (const store::NamedBlob& f : ck->files) named = named || f.blob.sha256 == sha;
    }
  }
  if (!named) return rpc::ToGrpc(absl::NotFoundError(StrCat("blob ", sha, " is not one assignment ", ref.ToString(), " names")));
  auto reader = store_->blobs().NewReader(sha);
  if (!reader.ok()) return rpc::ToGrpc(reader.status());
  if (request->offset() > (*reader)->size()) {
    return rpc::ToGrpc(absl::OutOfRangeError(StrCat("offset ", request->offset(), " is beyond the blob's ", (*reader)->size(), " bytes")));
  }
  v1::FetchBlobResponse first;
  first.mutable_blob()->set_sha256(sha);
  first.mutable_blob()->set_size_bytes((*reader)->size());
  if (!writer->Write(first)) return grpc::Status(grpc::StatusCode::CANCELLED, "client went away");
  std::string buf;
  for (int64_t offset = request->offset(); offset < (*reader)->size();) {
    if (absl::Status s = (*reader)->ReadAt(offset, 1 << 20, &buf); !s.ok()) return rpc::ToGrpc(s);
    if (buf.empty()) return rpc::ToGrpc(absl::DataLossError(StrCat("blob ", sha, " is shorter than its size")));
    v1::FetchBlobResponse chunk;
    chunk.mutable_chunk()->set_offset(offset);
    chunk.mutable_chunk()->set_data(buf);
    if (!writer->Write(chunk)) return grpc::Status(grpc::StatusCode::CANCELLED, "client went away");
    offset += static_cast<int64_t>(buf.size());
  }
  return grpc::Status::OK;
}

absl::Status TrainerService::Progress(const v1::ReportProgressRequest& request) {
  const AssignmentRef ref = FromProto(request.ref());
  HERD_RETURN_IF_ERROR(scheduler_->CheckAssignment(request.trainer_id(), ref));
  if (request.points_size() > 1000 || request.evals_size() > 1000) {
    return absl::ResourceExhaustedError("at most 1000 points and 1000 evals per request");
  }
  std::vector<ProgressSample> points;
  int64_t last = -1;
  for (const v1::ProgressPoint& p : request.points()) {
    if (p.rank() != ref.rank) {
      return absl::InvalidArgumentError(StrCat("points[].rank ", p.rank(), " differs from ref.rank ", ref.rank));
    }
    if (p.step() <= last) return absl::InvalidArgumentError("points: steps not increasing");
    last = p.step();
    ProgressSample s;
    s.rank = p.rank();
    s.step = p.step();
    s.total_steps = p.total_steps();
    s.epoch = p.epoch();
    if (p.has_loss()) s.loss = p.loss();
    s.learning_rate = p.learning_rate();
    if (p.has_grad_norm()) s.grad_norm = p.grad_norm();
    s.tokens = p.tokens();
    s.trained_tokens = p.trained_tokens();
    s.step_seconds = p.step_seconds();
    s.allreduce_seconds = p.allreduce_seconds();
    s.data_wait_seconds = p.data_wait_seconds();
    s.device_memory_bytes = p.device_memory_bytes();
    if (p.has_mfu()) s.mfu = p.mfu();
    s.time = FromProtoTime(p.time());
    points.push_back(s);
  }
  std::vector<EvalSample> evals;
  last = -1;
  for (const v1::EvalPoint& e : request.evals()) {
    if (e.step() <= last) return absl::InvalidArgumentError("evals: steps not increasing");
    last = e.step();
    EvalSample s{.step = e.step(), .token_accuracy = e.token_accuracy(), .time = FromProtoTime(e.time())};
    if (e.has_eval_loss()) s.eval_loss = e.eval_loss();
    evals.push_back(s);
  }
  auto running = scheduler_->GetRunning(ref.job_id);
  const int world = running ? static_cast<int>(running->trainer_ids.size()) : ref.rank + 1;
  if (progress_ != nullptr) progress_->Report(ref.job_id, world, points, evals);
  // Evaluations are rare and worth keeping: one EVALUATED event each (once, retries ignored).
  for (const EvalSample& e : evals) {
    {
      absl::MutexLock lock(&mu_);
      int64_t& seen = last_eval_step_[StrCat(ref.job_id, "/", ref.generation)];
      if (e.step <= seen) continue;
      seen = e.step;
    }
    store::JobEvent event;
    event.type = store::JobEventType::kEvaluated;
    event.generation = ref.generation;
    event.step = e.step;
    event.eval_loss = e.eval_loss;
    event.message = e.eval_loss ? StrCat("eval loss ", *e.eval_loss, " after step ", e.step, ", token accuracy ", e.token_accuracy)
                                : StrCat("eval loss not finite after step ", e.step);
    if (auto appended = store_->jobs().AppendEvent(ref.job_id, event); !appended.ok()) {
      HERD_LOG(Warning) << "could not record the evaluation of " << ref.ToString() << ": " << appended.status();
    }
  }
  return absl::OkStatus();
}

grpc::Status TrainerService::ReportProgress(grpc::ServerContext* context, const v1::ReportProgressRequest* request,
                                            google::protobuf::Empty* /*response*/) {
  if (auto p = AuthenticateCaller(*context, store_->tokens(), true); !p.ok()) return rpc::ToGrpc(p.status());
  return rpc::ToGrpc(Progress(*request));
}

absl::Status TrainerService::Upload(grpc::ServerReader<v1::UploadCheckpointRequest>& reader) {
  v1::UploadCheckpointRequest message;
  const absl::Time start = absl::Now();
  if (!reader.Read(&message) || !message.has_header()) {
    return absl::InvalidArgumentError("the first message of UploadCheckpoint must be a header");
  }
  const v1::CheckpointHeader header = message.header();
  const AssignmentRef ref = FromProto(header.ref());
  if (ref.rank != 0) return absl::InvalidArgumentError(StrCat("ref.rank is ", ref.rank, "; only rank 0 uploads"));
  HERD_RETURN_IF_ERROR(scheduler_->CheckAssignment(header.trainer_id(), ref));
  if (header.step() < 1) return absl::InvalidArgumentError("step: must be at least 1");
  const v1::Manifest& manifest = header.manifest();
  if (manifest.files_size() > 16) {
    return absl::ResourceExhaustedError(StrCat("manifest: ", manifest.files_size(), " files, at most 16"));
  }
  std::vector<store::NamedBlob> declared;
  int64_t total = 0;
  bool has_config = false, has_weights = false;
  for (const v1::FileInfo& f : manifest.files()) {
    HERD_RETURN_IF_ERROR(CheckFileName(f.name()));
    if (f.size_bytes() < 0) return absl::InvalidArgumentError(StrCat("manifest: ", f.name(), " has a negative size"));
    has_config = has_config || f.name() == store::kAdapterConfigFile;
    has_weights = has_weights || f.name() == store::kAdapterWeightsFile;
    total += f.size_bytes();
    declared.push_back({.name = f.name(), .blob = {.sha256 = f.sha256(), .size_bytes = f.size_bytes()}});
  }
  if (!has_config || !has_weights) {
    return absl::InvalidArgumentError("manifest: adapter_config.json and adapter_model.safetensors are required");
  }
  if (total > options_.max_checkpoint_bytes) {
    return absl::ResourceExhaustedError(StrCat("checkpoint of ", total, " bytes is over the limit of ", options_.max_checkpoint_bytes));
  }
  if (total != manifest.total_size_bytes()) {
    return absl::InvalidArgumentError("manifest: total_size_bytes is not the sum of the files' sizes");
  }
  if (store::ManifestDigest(declared) != manifest.sha256()) {
    return absl::InvalidArgumentError("manifest: sha256 is not the manifest digest of its files");
  }
  // A retry of a stored step answers OK at once.
  if (auto stored = store_->checkpoints().Get(ref.job_id, header.step());
      stored.ok() && stored->files_sha256 == manifest.sha256() && stored->final == header.final()) {
    return absl::OkStatus();
  }

  // The files back to back, each into its own blob, checked against its sha256. file_ends[i]:
  // the stream offset where file i ends.
  std::vector<int64_t> file_ends;
  for (int64_t end = 0; const store::NamedBlob& f : declared) file_ends.push_back(end += f.blob.size_bytes);
  int64_t offset = 0;
  size_t index = 0;
  std::unique_ptr<store::BlobWriter> writer;
  auto finish_files = [&]() -> absl::Status {
    // Closes every file that ends at `offset` (empty files included).
    while (index < declared.size()) {
      if (file_ends[index] != offset) break;
      if (writer == nullptr) {
        HERD_ASSIGN_OR_RETURN(writer, store_->blobs().NewWriter());
      }
      auto committed = writer->Commit(declared[index].blob.sha256);
      writer.reset();
      if (!committed.ok()) {
        return absl::DataLossError(StrCat(declared[index].name, ": bytes do not match its sha256; upload again"));
      }
      ++index;
    }
    return absl::OkStatus();
  };
  HERD_RETURN_IF_ERROR(finish_files());
  while (reader.Read(&message)) {
    if (!message.has_chunk()) return absl::InvalidArgumentError("only the first message may be a header");
    const v1::DataChunk& chunk = message.chunk();
    if (chunk.data().size() > (1u << 20)) return absl::ResourceExhaustedError("a chunk is over 1 MiB");
    if (chunk.offset() != offset) {
      return absl::AbortedError(StrCat("chunk at offset ", chunk.offset(), " where ", offset, " was expected"));
    }
    std::string_view data = chunk.data();
    if (offset + static_cast<int64_t>(data.size()) > total) {
      return absl::OutOfRangeError("bytes past the manifest's total size");
    }
    while (!data.empty()) {
      const size_t take =
          static_cast<size_t>(std::min<int64_t>(file_ends[index] - offset, static_cast<int64_t>(data.size())));
      if (writer == nullptr) {
        HERD_ASSIGN_OR_RETURN(writer, store_->blobs().NewWriter());
      }
      HERD_RETURN_IF_ERROR(writer->Append(data.substr(0, take)));
      data.remove_prefix(take);
      offset += static_cast<int64_t>(take);
      HERD_RETURN_IF_ERROR(finish_files());
    }
  }
  if (offset != total || index != declared.size()) {
    return absl::FailedPreconditionError(StrCat("the stream ended after ", offset, " of ", total, " bytes"));
  }

  store::NewCheckpoint checkpoint;
  checkpoint.step = header.step();
  checkpoint.final = header.final();
  checkpoint.generation = ref.generation;
  checkpoint.files = declared;
  if (progress_ != nullptr) {
    if (auto view = progress_->Get(ref.job_id); view) {
      checkpoint.loss = view->loss;
      checkpoint.eval_loss = view->eval_loss;
    }
  }
  auto stored = [&] {
    if (options_.on_checkpoint_stored) options_.on_checkpoint_stored(ref.job_id, absl::ToDoubleSeconds(absl::Now() - start));
  };
  if (header.final()) {
    if (control_ == nullptr) return absl::UnavailableError("this coordinator cannot publish adapters");
    stored();  // the files are stored; publishing ends the job and drops its series
    return control_->PublishFinal(ref.job_id, checkpoint);
  }
  HERD_RETURN_IF_ERROR(store_->checkpoints().Add(ref.job_id, checkpoint).status());
  stored();
  return absl::OkStatus();
}

grpc::Status TrainerService::UploadCheckpoint(grpc::ServerContext* context,
                                              grpc::ServerReader<v1::UploadCheckpointRequest>* reader,
                                              google::protobuf::Empty* /*response*/) {
  if (auto p = AuthenticateCaller(*context, store_->tokens(), true); !p.ok()) return rpc::ToGrpc(p.status());
  return rpc::ToGrpc(Upload(*reader));
}

grpc::Status TrainerService::ReportEngineExit(grpc::ServerContext* context, const v1::ReportEngineExitRequest* request,
                                              google::protobuf::Empty* /*response*/) {
  if (auto p = AuthenticateCaller(*context, store_->tokens(), true); !p.ok()) return rpc::ToGrpc(p.status());
  auto reason = FromProto(request->reason());
  if (!reason.ok()) return rpc::ToGrpc(reason.status());
  if (request->stderr_tail().size() > 16 * 1024) {
    return rpc::ToGrpc(absl::InvalidArgumentError("stderr_tail: over 16 KiB"));
  }
  const AssignmentRef ref = FromProto(request->ref());
  EngineExit exit;
  exit.reason = *reason;
  exit.step = request->step();
  if (request->has_failure()) {
    exit.code = StatusCodeFromName(request->failure().code());
    exit.message = request->failure().message();
  }
  const bool failed = *reason != ExitReason::kCompleted && *reason != ExitReason::kCancelled;
  if (failed && scheduler_->CheckAssignment(request->trainer_id(), ref).ok()) {
    // The history keeps what the engine said; the job's own failure follows from the scheduler.
    store::JobEvent event;
    event.type = store::JobEventType::kRankFailed;
    event.generation = ref.generation;
    event.rank = ref.rank;
    event.trainer_id = request->trainer_id();
    event.step = request->step();
    event.failure = store::Failure{.code = std::string(ExitReasonName(*reason)),
                                   .message = StrCat(exit.message, request->stderr_tail().empty() ? "" : "\n",
                                                     request->stderr_tail().substr(0, 3000))};
    event.message = StrCat("rank ", ref.rank, " on ", request->trainer_id(), ": engine ", ExitReasonName(*reason),
                           exit.message.empty() ? "" : ": ", exit.message);
    if (auto appended = store_->jobs().AppendEvent(ref.job_id, event); !appended.ok()) {
      HERD_LOG(Warning) << "could not record " << event.message << ": " << appended.status();
    }
  }
  auto events = scheduler_->ReportEngineExit(request->trainer_id(), ref, exit);
  if (!events.ok()) return rpc::ToGrpc(events.status());
  if (absl::Status s = Persist(*events); !s.ok()) return rpc::ToGrpc(Unrecorded("scheduler events", s));
  return grpc::Status::OK;
}

}  // namespace herd::coordinator::services
