// JobControl over a real Store, Scheduler and the real herd-prepare (through a wrapper that
// counts its runs) on the tiny model fixture: preparation moves a job to QUEUED or FAILED with
// the tool's own reason, the prepared-data cache serves a second job with the same content key
// (and recomputes its schedule), CreateJob's cluster checks, dry runs, cancellation, and the
// publication check refusing a broken adapter.
#include "coordinator/job_control.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>

#include "common/file_util.h"
#include "common/strings.h"
#include "coordinator/clock.h"
#include "coordinator/registry.h"
#include "coordinator/store/test_util.h"
#include "coordinator/tiny_model_testing.h"

namespace herd::coordinator {
namespace {

using store::JobState;

class JobControlTest : public store::testing::StoreTest {
 protected:
  void SetUp() override {
    StoreTest::SetUp();
    root_ = dir_.path();
    // The model as a trainer publishes it: its metadata files as blobs.
    ASSERT_TRUE(test_models::PublishTinyModel(*store_, "tiny-llama").ok());
    // herd-prepare behind a wrapper that counts its runs.
    count_file_ = root_ + "/prepare-runs";
    const std::string wrapper = root_ + "/herd-prepare-counting";
    std::ofstream(wrapper) << "#!/bin/sh\necho run >> " << count_file_ << "\nexec " << HERD_PREPARE << " \"$@\"\n";
    ::chmod(wrapper.c_str(), 0755);

    registry_ = *TrainerRegistry::Create({}, &clock_);
    scheduler_ = *Scheduler::Create({}, registry_.get(), nullptr, &clock_);
    JobControlOptions options;
    options.preparer = {.herd_prepare = wrapper, .work_dir = root_ + "/prepare"};
    options.on_final = [this](const std::string& id) { finals_.push_back(id); };
    options.on_published = [this](const std::string& id, int64_t step) { published_.emplace_back(id, step); };
    control_ = std::make_unique<JobControl>(store_.get(), scheduler_.get(), options);
    control_->Start();
  }
  void TearDown() override { control_.reset(); }

  int PrepareRuns() const {
    std::ifstream in(count_file_);
    int n = 0;
    for (std::string line; std::getline(in, line);) ++n;
    return n;
  }

  std::string Dataset(const std::string& sample) {
    auto bytes = ReadFile(StrCat(HERD_SOURCE_ROOT, "/datasets/samples/", sample));
    EXPECT_TRUE(bytes.ok());
    return MakeDataset(store::testing::kTenantA, sample, *bytes).id;
  }

  JobSpec Spec(const std::string& dataset, int64_t trainers = 1, int64_t global_batch = 4) {
    JobSpec spec;
    spec.base_model = "tiny-llama";
    spec.dataset = dataset;
    spec.training.max_seq_len = 128;
    spec.training.global_batch_size = global_batch;
    spec.resources.trainers = trainers;
    return spec;
  }

  store::JobRecord PrepareJob(const JobSpec& spec) {
    auto job = store_->jobs().Create(store::testing::kTenantA, spec, "");
    EXPECT_TRUE(job.ok()) << job.status();
    control_->Prepare(job->id);
    control_->WaitForIdle();
    auto after = store_->jobs().GetById(job->id);
    EXPECT_TRUE(after.ok());
    return *after;
  }

  std::string root_, count_file_;
  std::unique_ptr<TrainerRegistry> registry_;
  std::unique_ptr<Scheduler> scheduler_;
  std::unique_ptr<JobControl> control_;
  std::vector<std::string> finals_;
  std::vector<std::pair<std::string, int64_t>> published_;
};

TEST_F(JobControlTest, PreparationQueuesTheJobAndTheCacheServesTheSameContent) {
  const std::string ds = Dataset("support_qa.jsonl");
  store::JobRecord first = PrepareJob(Spec(ds));
  ASSERT_EQ(first.state, JobState::kQueued) << (first.failure ? first.failure->message : "");
  ASSERT_TRUE(first.train_data.has_value());
  auto plan = PreparationPlan::FromProtoJson(first.plan_json);
  ASSERT_TRUE(plan.ok());
  EXPECT_GT(plan->total_steps, 0);
  EXPECT_EQ(scheduler_->QueueDepth(), 1);
  EXPECT_EQ(PrepareRuns(), 1);

  // Same data, tokenizer and preparation settings, another schedule: no second run.
  store::JobRecord second = PrepareJob(Spec(ds, /*trainers=*/2, /*global_batch=*/8));
  ASSERT_EQ(second.state, JobState::kQueued);
  EXPECT_EQ(PrepareRuns(), 1);
  EXPECT_EQ(second.train_data->sha256, first.train_data->sha256);
  auto plan2 = PreparationPlan::FromProtoJson(second.plan_json);
  ASSERT_TRUE(plan2.ok());
  EXPECT_EQ(plan2->sequences, plan->sequences);
  EXPECT_EQ(plan2->steps_per_epoch, (plan->sequences + 7) / 8);
  EXPECT_EQ(plan2->world_size, 2);
  auto events = store_->jobs().Events(second.id, 0);
  ASSERT_TRUE(events.ok());
  EXPECT_TRUE(std::any_of(events->begin(), events->end(), [](const store::JobEvent& e) {
    return e.type == store::JobEventType::kPrepared && e.message.find("reused") != std::string::npos;
  }));

  // Another sequence length is other content: prepared again.
  JobSpec longer = Spec(ds);
  longer.training.max_seq_len = 256;
  EXPECT_EQ(PrepareJob(longer).state, JobState::kQueued);
  EXPECT_EQ(PrepareRuns(), 2);
}

TEST_F(JobControlTest, FailedPreparationFailsTheJobWithTheReason) {
  JobSpec spec = Spec(Dataset("support_qa.jsonl"));
  spec.format = "chat";  // the records are prompt/completion
  store::JobRecord job = PrepareJob(spec);
  ASSERT_EQ(job.state, JobState::kFailed);
  ASSERT_TRUE(job.failure.has_value());
  EXPECT_EQ(job.failure->code, "INVALID_ARGUMENT");
  EXPECT_NE(job.failure->message.find("line 1"), std::string::npos) << job.failure->message;
  EXPECT_EQ(finals_, std::vector<std::string>{job.id});
}

TEST_F(JobControlTest, CheckSpecNeedsAPublishedModelAndFittingSequences) {
  JobSpec spec = Spec("ds_x");
  EXPECT_TRUE(control_->CheckSpec(spec).ok());
  spec.base_model = "llama-nowhere";
  absl::Status unknown = control_->CheckSpec(spec);
  EXPECT_EQ(unknown.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(unknown.message().find("llama-nowhere"), std::string::npos);
  spec = Spec("ds_x");
  spec.training.max_seq_len = 1 << 20;
  absl::Status too_long = control_->CheckSpec(spec);
  EXPECT_EQ(too_long.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(too_long.message().find("max_position_embeddings"), std::string::npos) << too_long;
}

TEST_F(JobControlTest, DryRunPlansAndKeepsNothing) {
  const std::string ds = Dataset("support_chat.jsonl");
  auto plan = control_->DryRun(store::testing::kTenantA, Spec(ds, 2, 8));
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->format, "chat");
  EXPECT_GT(plan->sequences, 0);
  EXPECT_EQ(plan->grad_accum_steps, 4);
  auto listed = store_->jobs().List(store::testing::kTenantA, {});
  ASSERT_TRUE(listed.ok());
  EXPECT_TRUE(listed->jobs.empty());
  EXPECT_EQ(control_->DryRun(store::testing::kTenantB, Spec(ds)).status().code(), absl::StatusCode::kNotFound)
      << "another tenant's dataset";
}

TEST_F(JobControlTest, CancelTakesAQueuedJobOutOfTheQueue) {
  store::JobRecord job = PrepareJob(Spec(Dataset("support_qa.jsonl")));
  ASSERT_EQ(job.state, JobState::kQueued);
  auto cancelled = control_->Cancel(store::testing::kTenantA, job.id, "changed my mind");
  ASSERT_TRUE(cancelled.ok()) << cancelled.status();
  EXPECT_EQ(cancelled->state, JobState::kCancelled);
  EXPECT_EQ(scheduler_->QueueDepth(), 0);
  EXPECT_EQ(control_->Cancel(store::testing::kTenantB, job.id, "").status().code(), absl::StatusCode::kNotFound);
}

TEST_F(JobControlTest, ABrokenFinalAdapterFailsPublication) {
  store::JobRecord job = PrepareJob(Spec(Dataset("support_qa.jsonl")));
  ASSERT_EQ(job.state, JobState::kQueued);
  ASSERT_TRUE(store_->jobs().FormWorld(job.id, {.generation = 1, .trainer_ids = {"tr_x"}}).ok());
  auto config = store_->blobs().Put(R"({"peft_type": "LORA", "r": 16, "lora_alpha": 32, "target_modules": ["q_proj"]})");
  auto weights = store_->blobs().Put("not a safetensors file");
  ASSERT_TRUE(config.ok() && weights.ok());
  store::NewCheckpoint final_adapter{.step = 3, .final = true, .generation = 1,
                                     .files = {{.name = "adapter_config.json", .blob = *config},
                                               {.name = "adapter_model.safetensors", .blob = *weights}}};
  absl::Status s = control_->PublishFinal(job.id, final_adapter);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  auto after = store_->jobs().GetById(job.id);
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(after->state, JobState::kFailed);
  EXPECT_NE(after->failure->message.find("publication checks"), std::string::npos) << after->failure->message;
  EXPECT_TRUE(published_.empty()) << "a refused adapter completes no step";
}

}  // namespace
}  // namespace herd::coordinator
