// herd.v1.JobService: see job_service.h.
#include "coordinator/services/job_service.h"

#include <algorithm>
#include <string>
#include <string_view>

#include <google/protobuf/util/json_util.h>

#include "common/rpc/job_spec_proto.h"
#include "common/rpc/rpc.h"
#include "common/status.h"
#include "common/strings.h"
#include "coordinator/services/auth.h"
#include "coordinator/services/convert.h"
#include "coordinator/job_control.h"
#include "coordinator/progress_board.h"
#include "coordinator/services/job_convert.h"
#include "coordinator/store/store_util.h"

namespace herd::coordinator::services {
namespace {

using herd::rpc::ToGrpc;

constexpr size_t kMaxCancelReasonBytes = 1024;  // jobs.proto: CancelJobRequest.reason

}  // namespace

herd::v1::JobState JobStateToProto(store::JobState s) {
  return static_cast<herd::v1::JobState>(static_cast<int>(s));
}

static void ToProto(const store::Failure& in, herd::v1::Failure* out) {
  out->set_code(in.code);
  out->set_message(in.message);
}

void ToProto(const store::JobRecord& in, herd::v1::Job* out) {
  out->set_id(in.id);
  rpc::JobSpecToProto(in.spec, out->mutable_spec());
  out->set_state(JobStateToProto(in.state));
  out->set_generation(in.generation);
  out->set_world_size(in.world_size);
  for (const std::string& t : in.trainer_ids) out->add_trainer_ids(t);
  google::protobuf::util::JsonParseOptions options;
  options.ignore_unknown_fields = true;
  // Both are written by the coordinator itself; one that does not parse is left unset rather
  // than failing a read of the job.
  if (!in.progress_json.empty()) {
    (void)google::protobuf::util::JsonStringToMessage(in.progress_json, out->mutable_progress(), options);
  }
  if (!in.plan_json.empty()) {
    (void)google::protobuf::util::JsonStringToMessage(in.plan_json, out->mutable_plan(), options);
  }
  if (in.failure) ToProto(*in.failure, out->mutable_failure());
  out->set_recoveries(in.recoveries);
  out->set_last_checkpoint_step(in.last_checkpoint_step);
  out->set_idempotency_key(in.idempotency_key);
  ToTimestamp(in.create_time, out->mutable_create_time());
  if (in.start_time) ToTimestamp(*in.start_time, out->mutable_start_time());
  ToTimestamp(in.update_time, out->mutable_update_time());
  if (in.end_time) ToTimestamp(*in.end_time, out->mutable_end_time());
}

void ToProto(const store::JobEvent& in, herd::v1::JobEvent* out) {
  out->set_job_id(in.job_id);
  out->set_sequence(in.sequence);
  ToTimestamp(in.time, out->mutable_time());
  out->set_type(static_cast<herd::v1::JobEventType>(static_cast<int>(in.type)));
  out->set_state(JobStateToProto(in.state));
  out->set_previous_state(JobStateToProto(in.previous_state));
  out->set_generation(in.generation);
  out->set_world_size(in.world_size);
  out->set_rank(in.rank);
  out->set_trainer_id(in.trainer_id);
  out->set_step(in.step);
  if (in.eval_loss) out->set_eval_loss(*in.eval_loss);
  if (in.failure) ToProto(*in.failure, out->mutable_failure());
  out->set_message(in.message);
}

grpc::Status JobService::CreateJob(grpc::ServerContext* context,
                                   const herd::v1::CreateJobRequest* request,
                                   herd::v1::Job* response) {
  auto tenant = AuthenticateUser(*context, *tokens_);
  if (!tenant.ok()) return ToGrpc(tenant.status());
  auto spec = rpc::JobSpecFromProto(request->spec());
  if (!spec.ok()) return ToGrpc(spec.status());
  if (absl::Status s = spec->Validate(); !s.ok()) return ToGrpc(s);
  // Names first (common.proto rules), before anything looks them up or echoes them.
  if (!spec->name.empty()) {
    if (absl::Status s = store::ValidateName("spec.name", spec->name); !s.ok()) return ToGrpc(s);
  }
  if (absl::Status s = store::ValidateName("spec.base_model", spec->base_model); !s.ok()) return ToGrpc(s);
  if (control_ != nullptr) {
    if (absl::Status s = control_->CheckSpec(*spec); !s.ok()) return ToGrpc(s);
  }
  if (request->dry_run()) {
    if (control_ == nullptr) return ToGrpc(absl::UnavailableError("dry_run: this coordinator cannot prepare data"));
    auto plan = control_->DryRun(*tenant, *spec);
    if (!plan.ok()) return ToGrpc(plan.status());
    rpc::JobSpecToProto(*spec, response->mutable_spec());
    google::protobuf::util::JsonParseOptions options;
    options.ignore_unknown_fields = true;
    if (!google::protobuf::util::JsonStringToMessage(plan->ToProtoJson(), response->mutable_plan(), options).ok()) {
      return ToGrpc(absl::InternalError("could not encode the preparation plan"));
    }
    return grpc::Status::OK;
  }
  // The job starts in VALIDATING; preparation (tokenise, pack, fix the global order; DESIGN.md
  // §3 step 4) runs in the background and moves it to QUEUED or FAILED.
  bool created = false;
  auto job = jobs_->Create(*tenant, *spec, request->idempotency_key(), &created);
  if (!job.ok()) return ToGrpc(job.status());
  if (created && control_ != nullptr) control_->Prepare(job->id);
  ToProto(*job, response);
  return grpc::Status::OK;
}

grpc::Status JobService::GetJob(grpc::ServerContext* context, const herd::v1::GetJobRequest* request,
                                herd::v1::Job* response) {
  auto tenant = AuthenticateUser(*context, *tokens_);
  if (!tenant.ok()) return ToGrpc(tenant.status());
  if (absl::Status bad_id = CheckId("id", request->id()); !bad_id.ok()) return ToGrpc(bad_id);
  auto job = jobs_->Get(*tenant, request->id());
  if (!job.ok()) return ToGrpc(job.status());
  ToProto(*job, response);
  if (progress_ != nullptr) {
    if (auto live = progress_->Get(job->id); live) ToProto(*live, response->mutable_progress());
  }
  if (request->include_loss_history()) SetLossHistory(progress_, job->progress_json, response);
  return grpc::Status::OK;
}

grpc::Status JobService::ListJobs(grpc::ServerContext* context,
                                  const herd::v1::ListJobsRequest* request,
                                  herd::v1::ListJobsResponse* response) {
  auto tenant = AuthenticateUser(*context, *tokens_);
  if (!tenant.ok()) return ToGrpc(tenant.status());
  if (request->page_size() < 0) {
    return ToGrpc(absl::InvalidArgumentError("page_size: must not be negative"));
  }
  store::ListJobsRequest list{.page_size = request->page_size(),
                              .page_token = request->page_token(),
                              .name_prefix = request->name_prefix()};
  for (int s : request->states()) {
    if (s <= herd::v1::JOB_STATE_UNSPECIFIED || s > herd::v1::JOB_STATE_CANCELLED) {
      return ToGrpc(absl::InvalidArgumentError(StrCat("states: ", s, " is not a job state")));
    }
    list.states.push_back(static_cast<store::JobState>(s));
  }
  auto page = jobs_->List(*tenant, list);
  if (!page.ok()) return ToGrpc(page.status());
  for (const store::JobRecord& j : page->jobs) ToProto(j, response->add_jobs());
  response->set_next_page_token(page->next_page_token);
  return grpc::Status::OK;
}

grpc::Status JobService::CancelJob(grpc::ServerContext* context,
                                   const herd::v1::CancelJobRequest* request,
                                   herd::v1::Job* response) {
  auto tenant = AuthenticateUser(*context, *tokens_);
  if (!tenant.ok()) return ToGrpc(tenant.status());
  if (absl::Status bad_id = CheckId("id", request->id()); !bad_id.ok()) return ToGrpc(bad_id);
  if (request->reason().size() > kMaxCancelReasonBytes) {
    return ToGrpc(absl::InvalidArgumentError(
        StrCat("reason: ", request->reason().size(), " bytes; at most ", kMaxCancelReasonBytes)));
  }
  auto job = control_ != nullptr ? control_->Cancel(*tenant, request->id(), request->reason())
                                 : jobs_->Cancel(*tenant, request->id(), request->reason());
  if (!job.ok()) return ToGrpc(job.status());
  ToProto(*job, response);
  return grpc::Status::OK;
}

grpc::Status JobService::ListJobEvents(grpc::ServerContext* context,
                                       const herd::v1::ListJobEventsRequest* request,
                                       herd::v1::ListJobEventsResponse* response) {
  auto tenant = AuthenticateUser(*context, *tokens_);
  if (!tenant.ok()) return ToGrpc(tenant.status());
  if (absl::Status bad_id = CheckId("job_id", request->job_id()); !bad_id.ok()) return ToGrpc(bad_id);
  if (request->after_sequence() < 0) {
    return ToGrpc(absl::InvalidArgumentError("after_sequence: must not be negative"));
  }
  if (request->page_size() < 0) {
    return ToGrpc(absl::InvalidArgumentError("page_size: must not be negative"));
  }
  auto page = jobs_->ListEvents(*tenant, request->job_id(), request->after_sequence(),
                                request->page_size(), request->page_token());
  if (!page.ok()) return ToGrpc(page.status());
  for (const store::JobEvent& e : page->events) ToProto(e, response->add_events());
  response->set_next_page_token(page->next_page_token);
  return grpc::Status::OK;
}

}  // namespace herd::coordinator::services
