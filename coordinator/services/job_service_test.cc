// JobService over a real Store, served in-process on 127.0.0.1 port 0: spec conversion and
// defaults, validation naming the field, idempotency, tenancy, listing filters and paging,
// cancel and events. The CLI path end to end is tests/python/jobs_e2e.py.
#include "coordinator/services/job_service.h"

#include <functional>
#include <memory>
#include <string>

#include "common/rpc/job_spec_proto.h"
#include "common/rpc/rpc.h"
#include "coordinator/store/job_spec_json.h"
#include "coordinator/services/service_test_util.h"
#include "coordinator/store/test_util.h"
#include "gtest/gtest.h"

namespace herd::coordinator::services {
namespace {

using store::testing::kTenantA;
using store::testing::kTenantB;

bool Has(const grpc::Status& s, const std::string& part) {
  return s.error_message().find(part) != std::string::npos;
}

TEST(JobSpecFromProtoTest, FillsDefaultsAndExpandsTargets) {
  herd::v1::JobSpec in;
  in.set_base_model("tiny-llama");
  in.set_dataset_id("ds_x");
  auto spec = rpc::JobSpecFromProto(in);
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->format, "auto");
  EXPECT_EQ(spec->training.lr_scheduler, "cosine");
  EXPECT_EQ(spec->training.global_batch_size, 8);
  EXPECT_EQ(spec->lora.target_modules.size(), 7u);
  EXPECT_EQ(spec->lora.target_modules[0], "q_proj");

  herd::v1::JobSpec back;
  rpc::JobSpecToProto(*spec, &back);
  EXPECT_EQ(back.lora().target_modules_size(), 7);
  EXPECT_EQ(back.lora().r(), 16);
  EXPECT_EQ(back.training().lr_scheduler(), herd::v1::LR_SCHEDULER_COSINE);
  EXPECT_EQ(back.format(), herd::v1::RECORD_FORMAT_UNSPECIFIED);
  EXPECT_FALSE(back.training().has_max_steps());
  EXPECT_FALSE(spec->training.activation_checkpointing);
  EXPECT_TRUE(back.training().has_activation_checkpointing());
  EXPECT_FALSE(back.training().activation_checkpointing());
  auto again = rpc::JobSpecFromProto(back);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(store::JobSpecToJson(*again), store::JobSpecToJson(*spec));
}

TEST(JobSpecFromProtoTest, ActivationCheckpointingRoundTrips) {
  for (bool on : {true, false}) {
    herd::v1::JobSpec in;
    in.set_base_model("tiny-llama");
    in.set_dataset_id("ds_x");
    in.mutable_training()->set_activation_checkpointing(on);
    auto spec = rpc::JobSpecFromProto(in);
    ASSERT_TRUE(spec.ok()) << spec.status();
    EXPECT_EQ(spec->training.activation_checkpointing, on);
    herd::v1::JobSpec back;
    rpc::JobSpecToProto(*spec, &back);
    EXPECT_EQ(back.training().activation_checkpointing(), on);
    auto again = rpc::JobSpecFromProto(back);
    ASSERT_TRUE(again.ok()) << again.status();
    EXPECT_EQ(again->training.activation_checkpointing, on);
  }
}

TEST(JobSpecFromProtoTest, ErrorsNameTheField) {
  struct Case {
    std::function<void(herd::v1::JobSpec*)> edit;
    absl::StatusCode code;
    std::string field;
  } cases[] = {
      {[](herd::v1::JobSpec* s) { s->clear_base_model(); }, absl::StatusCode::kInvalidArgument, "base_model"},
      {[](herd::v1::JobSpec* s) { s->mutable_lora()->set_r(0); }, absl::StatusCode::kInvalidArgument, "lora.r"},
      {[](herd::v1::JobSpec* s) { s->mutable_lora()->add_target_modules("w_proj"); },
       absl::StatusCode::kInvalidArgument, "lora.target_modules"},
      {[](herd::v1::JobSpec* s) {
         s->mutable_lora()->add_target_modules("q_proj");
         s->mutable_lora()->add_target_modules("q_proj");
       },
       absl::StatusCode::kInvalidArgument, "lora.target_modules"},
      {[](herd::v1::JobSpec* s) { s->mutable_training()->set_global_batch_size(3); s->mutable_resources()->set_trainers(2); },
       absl::StatusCode::kInvalidArgument, "training.global_batch_size"},
      {[](herd::v1::JobSpec* s) { s->set_format(static_cast<herd::v1::RecordFormat>(42)); },
       absl::StatusCode::kInvalidArgument, "spec.format"},
      {[](herd::v1::JobSpec* s) { s->set_overlong_records(herd::v1::OVERLONG_POLICY_DROP); },
       absl::StatusCode::kUnimplemented, "overlong_records"},
  };
  for (const Case& c : cases) {
    herd::v1::JobSpec in;
    in.set_base_model("tiny-llama");
    in.set_dataset_id("ds_x");
    c.edit(&in);
    auto spec = rpc::JobSpecFromProto(in);
    EXPECT_EQ(spec.status().code(), c.code) << c.field << ": " << spec.status();
    EXPECT_TRUE(store::testing::MessageHas(spec.status(), c.field)) << spec.status();
  }
}

class JobServiceTest : public testing::ServiceTest {
 protected:
  void SetUp() override {
    ServiceTest::SetUp();
    service_ = std::make_unique<JobService>(&store_->jobs(), &store_->tokens());
    auto channel = Serve({service_.get()});
    ASSERT_TRUE(channel);
    stub_ = herd::v1::JobService::NewStub(channel);
    dataset_a_ = MakeDataset(kTenantA).id;
  }
  herd::v1::CreateJobRequest Request(const std::string& name, const std::string& key = "") {
    herd::v1::CreateJobRequest r;
    r.mutable_spec()->set_name(name);
    r.mutable_spec()->set_base_model("tiny-llama");
    r.mutable_spec()->set_dataset_id(dataset_a_);
    r.set_idempotency_key(key);
    return r;
  }

  grpc::Status Create(const std::string& token, const herd::v1::CreateJobRequest& r, herd::v1::Job* job) {
    grpc::ClientContext context;
    Prepare(&context, token);
    return stub_->CreateJob(&context, r, job);
  }
  grpc::Status Get(const std::string& token, const std::string& id, herd::v1::Job* job) {
    grpc::ClientContext context;
    Prepare(&context, token);
    herd::v1::GetJobRequest r;
    r.set_id(id);
    return stub_->GetJob(&context, r, job);
  }
  grpc::Status List(const std::string& token, const herd::v1::ListJobsRequest& r,
                    herd::v1::ListJobsResponse* page) {
    grpc::ClientContext context;
    Prepare(&context, token);
    return stub_->ListJobs(&context, r, page);
  }
  grpc::Status Cancel(const std::string& token, const std::string& id, herd::v1::Job* job) {
    grpc::ClientContext context;
    Prepare(&context, token);
    herd::v1::CancelJobRequest r;
    r.set_id(id);
    r.set_reason("changed my mind");
    return stub_->CancelJob(&context, r, job);
  }
  grpc::Status Events(const std::string& token, const std::string& id,
                      herd::v1::ListJobEventsResponse* page) {
    grpc::ClientContext context;
    Prepare(&context, token);
    herd::v1::ListJobEventsRequest r;
    r.set_job_id(id);
    return stub_->ListJobEvents(&context, r, page);
  }

  std::string dataset_a_;
  std::unique_ptr<JobService> service_;
  std::unique_ptr<herd::v1::JobService::Stub> stub_;
};

TEST_F(JobServiceTest, CreateFillsDefaultsAndStaysValidating) {
  herd::v1::Job job;
  grpc::Status s = Create(token_a_, Request("first", "k1"), &job);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(job.id().rfind("job_", 0), 0u);
  EXPECT_EQ(job.state(), herd::v1::JOB_STATE_VALIDATING);
  EXPECT_EQ(job.idempotency_key(), "k1");
  EXPECT_EQ(job.spec().lora().target_modules_size(), 7);
  EXPECT_EQ(job.spec().training().global_batch_size(), 8);
  EXPECT_TRUE(job.spec().has_validation_split());
  EXPECT_TRUE(job.has_create_time());
  EXPECT_FALSE(job.has_end_time());

  herd::v1::Job got;
  ASSERT_TRUE(Get(token_a_, job.id(), &got).ok());
  EXPECT_EQ(got.SerializeAsString(), job.SerializeAsString());
  EXPECT_FALSE(got.spec().training().activation_checkpointing());
}

TEST_F(JobServiceTest, ActivationCheckpointingIsStored) {
  auto r = Request("ckpt");
  r.mutable_spec()->mutable_training()->set_activation_checkpointing(true);
  herd::v1::Job job, got;
  grpc::Status s = Create(token_a_, r, &job);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_TRUE(job.spec().training().activation_checkpointing());
  ASSERT_TRUE(Get(token_a_, job.id(), &got).ok());
  EXPECT_TRUE(got.spec().training().activation_checkpointing());
}

TEST_F(JobServiceTest, Idempotency) {
  herd::v1::Job first, again, other;
  ASSERT_TRUE(Create(token_a_, Request("a", "key"), &first).ok());
  ASSERT_TRUE(Create(token_a_, Request("a", "key"), &again).ok());
  EXPECT_EQ(again.id(), first.id());
  grpc::Status s = Create(token_a_, Request("b", "key"), &other);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::ALREADY_EXISTS) << s.error_message();
  // No key: two jobs.
  herd::v1::Job x, y;
  ASSERT_TRUE(Create(token_a_, Request("a"), &x).ok());
  ASSERT_TRUE(Create(token_a_, Request("a"), &y).ok());
  EXPECT_NE(x.id(), y.id());
  // A key over 128 bytes.
  s = Create(token_a_, Request("a", std::string(129, 'k')), &x);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(JobServiceTest, CreateErrors) {
  herd::v1::Job job;
  auto r = Request("bad");
  r.mutable_spec()->mutable_training()->set_learning_rate(5);
  grpc::Status s = Create(token_a_, r, &job);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_TRUE(Has(s, "training.learning_rate")) << s.error_message();

  // Another tenant's dataset answers like a missing one.
  s = Create(token_b_, Request("x"), &job);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND) << s.error_message();
  auto missing = Request("x");
  missing.mutable_spec()->set_dataset_id("ds_nope");
  grpc::Status m = Create(token_a_, missing, &job);
  EXPECT_EQ(m.error_code(), grpc::StatusCode::NOT_FOUND);

  auto dry = Request("dry");
  dry.set_dry_run(true);
  EXPECT_EQ(Create(token_a_, dry, &job).error_code(), grpc::StatusCode::UNAVAILABLE);  // no JobControl here

  EXPECT_EQ(Create("", Request("x"), &job).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(Create(cluster_token_, Request("x"), &job).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
}

TEST_F(JobServiceTest, TenancyAnswersLikeMissing) {
  herd::v1::Job job, other;
  ASSERT_TRUE(Create(token_a_, Request("mine"), &job).ok());
  const std::string missing = "job_" + std::string(26, 'z');
  grpc::Status a = Get(token_b_, job.id(), &other);
  grpc::Status b = Get(token_b_, missing, &other);
  EXPECT_EQ(a.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(b.error_code(), grpc::StatusCode::NOT_FOUND);
  std::string msg = a.error_message();
  if (size_t at = msg.find(job.id()); at != std::string::npos) msg.replace(at, job.id().size(), missing);
  EXPECT_EQ(msg, b.error_message());
  EXPECT_EQ(Cancel(token_b_, job.id(), &other).error_code(), grpc::StatusCode::NOT_FOUND);
  herd::v1::ListJobEventsResponse events;
  EXPECT_EQ(Events(token_b_, job.id(), &events).error_code(), grpc::StatusCode::NOT_FOUND);
  herd::v1::ListJobsResponse page;
  ASSERT_TRUE(List(token_b_, {}, &page).ok());
  EXPECT_EQ(page.jobs_size(), 0);
  EXPECT_EQ(Get(token_a_, "", &other).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(JobServiceTest, ListFiltersAndPages) {
  herd::v1::Job j;
  std::vector<std::string> ids;
  for (const char* name : {"alpha-1", "alpha-2", "beta-1"}) {
    ASSERT_TRUE(Create(token_a_, Request(name), &j).ok());
    ids.push_back(j.id());
  }
  herd::v1::Job cancelled;
  ASSERT_TRUE(Cancel(token_a_, ids[0], &cancelled).ok());

  herd::v1::ListJobsRequest r;
  herd::v1::ListJobsResponse page;
  ASSERT_TRUE(List(token_a_, r, &page).ok());
  ASSERT_EQ(page.jobs_size(), 3);
  EXPECT_EQ(page.jobs(0).id(), ids[2]);  // newest first

  r.set_name_prefix("alpha");
  page.Clear();
  ASSERT_TRUE(List(token_a_, r, &page).ok());
  EXPECT_EQ(page.jobs_size(), 2);

  r.add_states(herd::v1::JOB_STATE_VALIDATING);
  page.Clear();
  ASSERT_TRUE(List(token_a_, r, &page).ok());
  ASSERT_EQ(page.jobs_size(), 1);
  EXPECT_EQ(page.jobs(0).id(), ids[1]);

  herd::v1::ListJobsRequest paged;
  paged.set_page_size(2);
  page.Clear();
  ASSERT_TRUE(List(token_a_, paged, &page).ok());
  ASSERT_EQ(page.jobs_size(), 2);
  ASSERT_FALSE(page.next_page_token().empty());
  paged.set_page_token(page.next_page_token());
  page.Clear();
  ASSERT_TRUE(List(token_a_, paged, &page).ok());
  ASSERT_EQ(page.jobs_size(), 1);
  EXPECT_EQ(page.jobs(0).id(), ids[0]);
  EXPECT_TRUE(page.next_page_token().empty());

  herd::v1::ListJobsRequest bad;
  bad.add_states(herd::v1::JOB_STATE_UNSPECIFIED);
  EXPECT_EQ(List(token_a_, bad, &page).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  bad.Clear();
  bad.set_page_size(-1);
  EXPECT_EQ(List(token_a_, bad, &page).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(JobServiceTest, CancelAndEvents) {
  herd::v1::Job job, cancelled, again;
  ASSERT_TRUE(Create(token_a_, Request("c"), &job).ok());
  ASSERT_TRUE(Cancel(token_a_, job.id(), &cancelled).ok());
  EXPECT_EQ(cancelled.state(), herd::v1::JOB_STATE_CANCELLED);
  EXPECT_EQ(cancelled.failure().code(), "CANCELLED");
  EXPECT_TRUE(cancelled.has_end_time());
  ASSERT_TRUE(Cancel(token_a_, job.id(), &again).ok());  // unchanged
  EXPECT_EQ(again.state(), herd::v1::JOB_STATE_CANCELLED);

  herd::v1::ListJobEventsResponse events;
  ASSERT_TRUE(Events(token_a_, job.id(), &events).ok());
  ASSERT_EQ(events.events_size(), 2);
  EXPECT_EQ(events.events(0).sequence(), 1);
  EXPECT_EQ(events.events(0).state(), herd::v1::JOB_STATE_VALIDATING);
  EXPECT_EQ(events.events(1).type(), herd::v1::JOB_EVENT_TYPE_STATE_CHANGED);
  EXPECT_EQ(events.events(1).state(), herd::v1::JOB_STATE_CANCELLED);
  EXPECT_EQ(events.events(1).previous_state(), herd::v1::JOB_STATE_VALIDATING);
  EXPECT_FALSE(events.events(1).message().empty());

  grpc::ClientContext context;
  Prepare(&context, token_a_);
  herd::v1::CancelJobRequest r;
  r.set_id(job.id());
  r.set_reason(std::string(1025, 'x'));
  EXPECT_EQ(stub_->CancelJob(&context, r, &again).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
}

}  // namespace
}  // namespace herd::coordinator::services
