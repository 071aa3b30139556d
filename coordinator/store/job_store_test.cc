// Tests of JobStore: creation and idempotency, tenancy, listing, the state machine and events.
#include "coordinator/store/job_store.h"

#include <set>
#include <thread>

#include "coordinator/store/job_spec_json.h"
#include "coordinator/store/test_util.h"
#include "gtest/gtest.h"

namespace herd::coordinator::store {
namespace {

using testing::kTenantA;
using testing::kTenantB;
using testing::MessageHas;

class JobStoreTest : public testing::StoreTest {
 protected:
  JobStore& jobs() { return store_->jobs(); }

  // Walks a job to `target` along legal moves.
  JobRecord Drive(const std::string& id, JobState target) {
    const std::vector<JobState> path = {JobState::kQueued, JobState::kRunning,
                                        JobState::kPublishing, JobState::kSucceeded};
    auto job = jobs().GetById(id);
    EXPECT_TRUE(job.ok());
    if (target == JobState::kValidating) return *job;
    if (target == JobState::kFailed || target == JobState::kCancelled) {
      return *jobs().Transition(id, target);
    }
    if (target == JobState::kRecovering) {
      Drive(id, JobState::kRunning);
      return *jobs().Transition(id, JobState::kRecovering);
    }
    for (JobState s : path) {
      auto next = jobs().Transition(id, s);
      EXPECT_TRUE(next.ok()) << next.status();
      job = next;
      if (s == target) break;
    }
    return *job;
  }
};

TEST_F(JobStoreTest, CreateStartsValidatingWithOneEvent) {
  std::string ds = MakeDataset(kTenantA).id;
  bool created = false;
  auto job = jobs().Create(kTenantA, Spec(ds, "support-bot"), "key-1", &created);
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_TRUE(created);
  EXPECT_EQ(job->id.substr(0, 4), "job_");
  EXPECT_EQ(job->tenant, kTenantA);
  EXPECT_EQ(job->state, JobState::kValidating);
  EXPECT_EQ(job->spec.name, "support-bot");
  EXPECT_EQ(job->spec.dataset, ds);
  EXPECT_EQ(job->idempotency_key, "key-1");
  EXPECT_EQ(job->generation, 0);
  EXPECT_EQ(job->create_time, clock_.Now());
  EXPECT_FALSE(job->start_time || job->end_time || job->failure);
  auto events = jobs().Events(job->id, 0);
  ASSERT_TRUE(events.ok());
  ASSERT_EQ(events->size(), 1u);
  EXPECT_EQ((*events)[0].sequence, 1);
  EXPECT_EQ((*events)[0].type, JobEventType::kStateChanged);
  EXPECT_EQ((*events)[0].state, JobState::kValidating);
  EXPECT_EQ((*events)[0].previous_state, JobState::kUnspecified);
}

TEST_F(JobStoreTest, SpecRoundTripsThroughJson) {
  JobSpec spec = Spec(MakeDataset(kTenantA).id);
  spec.lora.r = 8;
  spec.lora.alpha = 0.1 + 0.2;  // not exactly representable
  spec.lora.target_modules = {"q_proj", "v_proj"};
  spec.training.max_steps = 77;
  spec.training.learning_rate = 3e-5;
  spec.chat_template = "llama3";
  spec.validation_split = 0;
  auto back = JobSpecFromJson(JobSpecToJson(spec));
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(JobSpecToJson(*back), JobSpecToJson(spec));
  EXPECT_EQ(back->lora.alpha, spec.lora.alpha);
  EXPECT_EQ(back->training.max_steps, 77);
  auto job = jobs().Create(kTenantA, spec, "");
  ASSERT_TRUE(job.ok());
  EXPECT_EQ(JobSpecToJson(job->spec), JobSpecToJson(spec));
  // Older rows without newer fields load with defaults; garbage is DATA_LOSS.
  EXPECT_EQ(JobSpecFromJson("{\"name\": \"x\"}")->training.seed, 42);
  EXPECT_FALSE(JobSpecFromJson("{\"training\": {\"seed\": 1}}")->training.activation_checkpointing);
  HERD_EXPECT_CODE(JobSpecFromJson("{\"training\": {\"activation_checkpointing\": \"yes\"}}").status(),
                   kDataLoss);
  HERD_EXPECT_CODE(JobSpecFromJson("[1]").status(), kDataLoss);
  HERD_EXPECT_CODE(JobSpecFromJson("{\"lora\": {\"r\": \"sixteen\"}}").status(), kDataLoss);
}

TEST_F(JobStoreTest, ActivationCheckpointingThroughJson) {
  JobSpec spec = Spec(MakeDataset(kTenantA).id);
  // Off, it is left out of the stored text: equal to what a row written before the field
  // existed holds, so an idempotency key used then still matches.
  const std::string off = JobSpecToJson(spec);
  EXPECT_EQ(off.find("activation_checkpointing"), std::string::npos) << off;
  auto old_row = JobSpecFromJson(off);
  ASSERT_TRUE(old_row.ok()) << old_row.status();
  EXPECT_FALSE(old_row->training.activation_checkpointing);
  EXPECT_EQ(JobSpecToJson(*old_row), off);
  auto first = jobs().Create(kTenantA, spec, "ckpt-key");
  ASSERT_TRUE(first.ok()) << first.status();

  spec.training.activation_checkpointing = true;
  const std::string on = JobSpecToJson(spec);
  EXPECT_NE(on.find("\"activation_checkpointing\":true"), std::string::npos) << on;
  auto back = JobSpecFromJson(on);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_TRUE(back->training.activation_checkpointing);
  EXPECT_EQ(JobSpecToJson(*back), on);
  // A retry with the same key but checkpointing switched on is another spec.
  HERD_EXPECT_CODE(jobs().Create(kTenantA, spec, "ckpt-key").status(), kAlreadyExists);
  auto job = jobs().Create(kTenantA, spec, "");
  ASSERT_TRUE(job.ok()) << job.status();
  auto loaded = jobs().Get(kTenantA, job->id);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_TRUE(loaded->spec.training.activation_checkpointing);
}

TEST_F(JobStoreTest, CreateErrors) {
  std::string ds = MakeDataset(kTenantA).id;
  std::string other_tenant_ds = MakeDataset(kTenantB).id;
  JobSpec bad_spec = Spec(ds);
  bad_spec.lora.r = 0;
  JobSpec bad_name = Spec(ds, "a/b");
  JobSpec missing_ds = Spec("ds_missing");
  JobSpec foreign_ds = Spec(other_tenant_ds);
  JobSpec bad_model = Spec(ds);
  bad_model.base_model = "\xff\xfe";
  JobSpec long_id = Spec(std::string(65, 'd'));
  JobSpec missing_validation = Spec(ds);
  missing_validation.validation_dataset = "ds_nope";
  struct Case {
    std::string what;
    JobSpec spec;
    std::string key;
    absl::StatusCode code;
    std::string message_part;
  };
  for (const Case& c : std::vector<Case>{
           {"invalid spec", bad_spec, "", absl::StatusCode::kInvalidArgument, "lora.r"},
           {"bad name", bad_name, "", absl::StatusCode::kInvalidArgument, "spec.name"},
           {"key too long", Spec(ds), std::string(129, 'k'), absl::StatusCode::kInvalidArgument,
            "idempotency_key"},
           {"bad base_model", bad_model, "", absl::StatusCode::kInvalidArgument, "spec.base_model"},
           {"dataset id too long", long_id, "", absl::StatusCode::kInvalidArgument, "spec.dataset"},
           {"missing dataset", missing_ds, "", absl::StatusCode::kNotFound, "spec.dataset"},
           {"another tenant's dataset", foreign_ds, "", absl::StatusCode::kNotFound, "spec.dataset"},
           {"missing validation dataset", missing_validation, "", absl::StatusCode::kNotFound,
            "spec.validation_dataset"},
       }) {
    auto job = jobs().Create(kTenantA, c.spec, c.key);
    EXPECT_EQ(job.status().code(), c.code) << c.what << ": " << job.status();
    EXPECT_TRUE(MessageHas(job.status(), c.message_part)) << c.what << ": " << job.status();
  }
  EXPECT_TRUE(jobs().Create(kTenantA, Spec(ds), std::string(128, 'k')).ok());
  // An unknown tenant is refused by the foreign key (never a crash).
  EXPECT_FALSE(jobs().Create("nobody", Spec(ds), "").ok());
}

TEST_F(JobStoreTest, IdempotentRetryReturnsTheSameJob) {
  std::string ds = MakeDataset(kTenantA).id;
  auto first = jobs().Create(kTenantA, Spec(ds), "retry-key");
  ASSERT_TRUE(first.ok());
  Drive(first->id, JobState::kRunning);
  bool created = true;
  auto again = jobs().Create(kTenantA, Spec(ds), "retry-key", &created);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_FALSE(created);
  EXPECT_EQ(again->id, first->id);
  EXPECT_EQ(again->state, JobState::kRunning) << "whatever its state";

  JobSpec different = Spec(ds);
  different.training.seed = 7;
  auto conflict = jobs().Create(kTenantA, different, "retry-key");
  HERD_EXPECT_CODE(conflict.status(), kAlreadyExists);
  EXPECT_TRUE(MessageHas(conflict.status(), first->id)) << conflict.status();

  // Keys are per tenant: the other tenant's same key makes its own job.
  auto b = jobs().Create(kTenantB, Spec(MakeDataset(kTenantB).id), "retry-key");
  ASSERT_TRUE(b.ok());
  EXPECT_NE(b->id, first->id);
  // Without a key every call makes a job.
  EXPECT_NE(jobs().Create(kTenantA, Spec(ds), "")->id, jobs().Create(kTenantA, Spec(ds), "")->id);
}

TEST_F(JobStoreTest, ConcurrentCreatesWithOneKeyMakeOneJob) {
  std::string ds = MakeDataset(kTenantA).id;
  constexpr int kThreads = 8;
  std::vector<std::string> ids(kThreads);
  std::vector<int> created(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      bool c = false;
      auto job = jobs().Create(kTenantA, Spec(ds), "same-key", &c);
      ASSERT_TRUE(job.ok()) << job.status();
      ids[t] = job->id;
      created[t] = c;
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(std::set<std::string>(ids.begin(), ids.end()).size(), 1u);
  EXPECT_EQ(std::count(created.begin(), created.end(), 1), 1);
  EXPECT_EQ(jobs().List(kTenantA, {})->jobs.size(), 1u);
}

TEST_F(JobStoreTest, UnfinishedJobLimit) {
  StoreOptions options;
  options.max_unfinished_jobs_per_tenant = 2;
  Reopen(options);
  std::string ds = MakeDataset(kTenantA).id;
  auto a = jobs().Create(kTenantA, Spec(ds), "a");
  ASSERT_TRUE(jobs().Create(kTenantA, Spec(ds), "b").ok());
  HERD_EXPECT_CODE(jobs().Create(kTenantA, Spec(ds), "c").status(), kResourceExhausted);
  EXPECT_TRUE(jobs().Create(kTenantA, Spec(ds), "a").ok()) << "a retry is not a new job";
  EXPECT_TRUE(jobs().Create(kTenantB, Spec(MakeDataset(kTenantB).id), "c").ok()) << "per tenant";
  ASSERT_TRUE(jobs().Cancel(kTenantA, a->id, "").ok());
  EXPECT_TRUE(jobs().Create(kTenantA, Spec(ds), "c").ok());
}

TEST_F(JobStoreTest, AnotherTenantsJobLooksMissing) {
  JobRecord job = MakeJob(kTenantA);
  auto foreign = jobs().Get(kTenantB, job.id);
  auto missing = jobs().Get(kTenantB, "job_doesnotexist");
  HERD_EXPECT_CODE(foreign.status(), kNotFound);
  HERD_EXPECT_CODE(missing.status(), kNotFound);
  EXPECT_EQ(std::string(foreign.status().message()),
            std::string(missing.status().message()).replace(
                std::string(missing.status().message()).find("job_doesnotexist"), 16, job.id));
  HERD_EXPECT_CODE(jobs().Cancel(kTenantB, job.id, "").status(), kNotFound);
  HERD_EXPECT_CODE(jobs().ListEvents(kTenantB, job.id, 0, 0, "").status(), kNotFound);
  EXPECT_TRUE(jobs().List(kTenantB, {})->jobs.empty());
  EXPECT_EQ(jobs().Get(kTenantA, job.id)->id, job.id);
  EXPECT_EQ(jobs().GetById(job.id)->tenant, kTenantA);
}

TEST_F(JobStoreTest, ListPagesNewestFirstAndStably) {
  std::string ds = MakeDataset(kTenantA).id;
  std::vector<std::string> created;
  for (int i = 0; i < 25; ++i) {
    created.push_back(jobs().Create(kTenantA, Spec(ds, herd::StrCat("job-", i)), "")->id);
  }
  MakeJob(kTenantB);  // never listed for A
  std::vector<std::string> seen;
  ListJobsRequest request;
  request.page_size = 10;
  int pages = 0;
  while (true) {
    auto page = jobs().List(kTenantA, request);
    ASSERT_TRUE(page.ok()) << page.status();
    ++pages;
    for (const JobRecord& j : page->jobs) seen.push_back(j.id);
    if (pages == 1) {
      // A job created while paging never shifts later pages.
      jobs().Create(kTenantA, Spec(ds, "late"), "").IgnoreError();
    }
    if (page->next_page_token.empty()) break;
    request.page_token = page->next_page_token;
  }
  EXPECT_EQ(pages, 3);
  std::vector<std::string> want(created.rbegin(), created.rend());
  EXPECT_EQ(seen, want);
}

TEST_F(JobStoreTest, ListPageSizes) {
  std::string ds = MakeDataset(kTenantA).id;
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(jobs().Create(kTenantA, Spec(ds), "").ok());
  struct Case {
    int page_size;
    size_t want;
    bool more;
  };
  for (const Case& c : std::vector<Case>{{0, 5, false}, {5, 5, false}, {4, 4, true}, {1, 1, true},
                                         {5000, 5, false}}) {
    ListJobsRequest r;
    r.page_size = c.page_size;
    auto page = jobs().List(kTenantA, r);
    ASSERT_TRUE(page.ok());
    EXPECT_EQ(page->jobs.size(), c.want) << c.page_size;
    EXPECT_EQ(!page->next_page_token.empty(), c.more) << c.page_size;
  }
  ListJobsRequest negative;
  negative.page_size = -1;
  HERD_EXPECT_CODE(jobs().List(kTenantA, negative).status(), kInvalidArgument);
}

TEST_F(JobStoreTest, ListFiltersByStateAndNamePrefix) {
  std::string ds = MakeDataset(kTenantA).id;
  auto a = jobs().Create(kTenantA, Spec(ds, "support-bot"), "");
  auto b = jobs().Create(kTenantA, Spec(ds, "support-v2"), "");
  auto c = jobs().Create(kTenantA, Spec(ds, "sales"), "");
  auto d = jobs().Create(kTenantA, Spec(ds, "Support"), "");
  Drive(b->id, JobState::kQueued);
  Drive(c->id, JobState::kCancelled);
  auto ids = [&](ListJobsRequest r) {
    std::vector<std::string> out;
    auto page = jobs().List(kTenantA, r);
    for (const auto& j : page->jobs) out.push_back(j.id);
    return out;
  };
  ListJobsRequest r;
  r.name_prefix = "support";
  EXPECT_EQ(ids(r), (std::vector<std::string>{b->id, a->id})) << "byte-wise, case-sensitive";
  r.states = {JobState::kValidating};
  EXPECT_EQ(ids(r), (std::vector<std::string>{a->id}));
  r.name_prefix = "";
  r.states = {JobState::kQueued, JobState::kCancelled};
  EXPECT_EQ(ids(r), (std::vector<std::string>{c->id, b->id}));
  r.states = {JobState::kSucceeded};
  EXPECT_TRUE(ids(r).empty());
  r.states = {JobState::kUnspecified};
  HERD_EXPECT_CODE(jobs().List(kTenantA, r).status(), kInvalidArgument);
  (void)d;
}

TEST_F(JobStoreTest, PageTokensBelongToTheirFilters) {
  std::string ds = MakeDataset(kTenantA).id;
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(jobs().Create(kTenantA, Spec(ds), "").ok());
  ListJobsRequest r;
  r.page_size = 1;
  std::string token = jobs().List(kTenantA, r)->next_page_token;
  ASSERT_FALSE(token.empty());
  ListJobsRequest other = r;
  other.page_token = token;
  other.name_prefix = "x";
  HERD_EXPECT_CODE(jobs().List(kTenantA, other).status(), kInvalidArgument);
  other = r;
  other.page_token = token;
  HERD_EXPECT_CODE(jobs().List(kTenantB, other).status(), kInvalidArgument);
  other.page_token = "garbage";
  HERD_EXPECT_CODE(jobs().List(kTenantA, other).status(), kInvalidArgument);
  other.page_token = token;
  EXPECT_TRUE(jobs().List(kTenantA, other).ok());
}

TEST_F(JobStoreTest, TransitionsFollowTheStateMachineForEveryPair) {
  for (JobState from : kAllJobStates) {
    for (JobState to : kAllJobStates) {
      JobRecord job = MakeJob(kTenantA);
      Drive(job.id, from);
      ASSERT_EQ(jobs().GetById(job.id)->state, from);
      int64_t events_before = jobs().GetById(job.id)->last_event_sequence;
      auto moved = jobs().Transition(job.id, to, {.message = "test move"});
      if (CanTransition(from, to)) {
        ASSERT_TRUE(moved.ok()) << moved.status();
        EXPECT_EQ(moved->state, to);
        auto events = jobs().Events(job.id, events_before);
        ASSERT_EQ(events->size(), 1u);
        EXPECT_EQ(events->at(0).type, JobEventType::kStateChanged);
        EXPECT_EQ(events->at(0).previous_state, from);
        EXPECT_EQ(events->at(0).state, to);
        EXPECT_EQ(events->at(0).message,
                  herd::StrCat(JobStateName(from), " -> ", JobStateName(to), ": test move"));
      } else {
        HERD_EXPECT_CODE(moved.status(), kFailedPrecondition);
        EXPECT_TRUE(MessageHas(moved.status(), JobStateName(from))) << moved.status();
        EXPECT_TRUE(MessageHas(moved.status(), JobStateName(to))) << moved.status();
        EXPECT_EQ(jobs().GetById(job.id)->state, from) << "unchanged";
        EXPECT_EQ(jobs().GetById(job.id)->last_event_sequence, events_before) << "no event";
      }
    }
  }
}

TEST_F(JobStoreTest, TransitionBookkeeping) {
  JobRecord job = MakeJob(kTenantA);
  HERD_EXPECT_CODE(jobs().Transition("job_missing", JobState::kQueued).status(), kNotFound);
  clock_.Advance(absl::Seconds(10));
  ASSERT_TRUE(jobs().Transition(job.id, JobState::kQueued).ok());
  clock_.Advance(absl::Seconds(10));
  auto running = jobs().FormWorld(job.id, {.generation = 1, .trainer_ids = {"tr_a"}});
  ASSERT_TRUE(running.ok()) << running.status();
  const absl::Time started = clock_.Now();
  EXPECT_EQ(running->start_time, started);
  EXPECT_EQ(running->update_time, started);
  clock_.Advance(absl::Seconds(10));
  auto recovering = jobs().Transition(job.id, JobState::kRecovering);
  EXPECT_EQ(recovering->recoveries, 1);
  EXPECT_EQ(recovering->world_size, 0) << "no world is running";
  EXPECT_TRUE(recovering->trainer_ids.empty());
  EXPECT_EQ(recovering->generation, 1) << "generation is kept";
  ASSERT_TRUE(jobs().FormWorld(job.id, {.generation = 2, .trainer_ids = {"tr_b"}}).ok());
  auto again = jobs().GetById(job.id);
  EXPECT_EQ(again->start_time, started) << "start_time is the first RUNNING";
  EXPECT_EQ(again->end_time, std::nullopt);

  // Compare-and-set.
  TransitionInfo cas;
  cas.expected_from = JobState::kQueued;
  auto refused = jobs().Transition(job.id, JobState::kFailed, cas);
  HERD_EXPECT_CODE(refused.status(), kFailedPrecondition);
  cas.expected_from = JobState::kRunning;
  cas.failure = Failure{"RESOURCE_EXHAUSTED", std::string(5000, 'm')};
  clock_.Advance(absl::Seconds(10));
  auto failed = jobs().Transition(job.id, JobState::kFailed, cas);
  ASSERT_TRUE(failed.ok()) << failed.status();
  EXPECT_EQ(failed->failure->code, "RESOURCE_EXHAUSTED");
  EXPECT_EQ(failed->failure->message.size(), 4096u) << "failure messages are capped at 4 KiB";
  EXPECT_EQ(failed->end_time, clock_.Now());
  EXPECT_EQ(failed->world_size, 0);
  auto last = jobs().Events(job.id, failed->last_event_sequence - 1);
  EXPECT_EQ(last->at(0).failure->code, "RESOURCE_EXHAUSTED");

  // Defaults for FAILED without a failure.
  JobRecord other = MakeJob(kTenantA);
  EXPECT_EQ(jobs().Transition(other.id, JobState::kFailed)->failure->code, "INTERNAL");
}

TEST_F(JobStoreTest, Cancel) {
  JobRecord job = MakeJob(kTenantA);
  Drive(job.id, JobState::kRunning);
  auto cancelled = jobs().Cancel(kTenantA, job.id, "no longer needed");
  ASSERT_TRUE(cancelled.ok());
  EXPECT_EQ(cancelled->state, JobState::kCancelled);
  EXPECT_EQ(cancelled->failure, (Failure{"CANCELLED", "no longer needed"}));
  auto again = jobs().Cancel(kTenantA, job.id, "twice");
  ASSERT_TRUE(again.ok()) << "cancelling a CANCELLED job returns it unchanged";
  EXPECT_EQ(again->failure->message, "no longer needed");
  EXPECT_EQ(again->last_event_sequence, cancelled->last_event_sequence);

  JobRecord done = MakeJob(kTenantA);
  Drive(done.id, JobState::kSucceeded);
  auto refused = jobs().Cancel(kTenantA, done.id, "");
  HERD_EXPECT_CODE(refused.status(), kFailedPrecondition);
  EXPECT_TRUE(MessageHas(refused.status(), "SUCCEEDED"));
  JobRecord failed = MakeJob(kTenantA);
  Drive(failed.id, JobState::kFailed);
  HERD_EXPECT_CODE(jobs().Cancel(kTenantA, failed.id, "").status(), kFailedPrecondition);
  HERD_EXPECT_CODE(jobs().Cancel(kTenantA, MakeJob(kTenantA).id, std::string(1025, 'r')).status(),
                   kInvalidArgument);
  EXPECT_EQ(jobs().Cancel(kTenantA, MakeJob(kTenantA).id, "")->failure->message, "cancelled by user");
}

TEST_F(JobStoreTest, PreparedStoresThePlanAndQueues) {
  JobRecord job = MakeJob(kTenantA);
  auto train = store_->blobs().Put("prepared rows");
  auto val = store_->blobs().Put("validation rows");
  PreparedInfo info{.plan_json = "{\"sequences\": 12}", .train_data = *train,
                    .validation_data = *val, .message = "12 sequences"};
  BlobRef missing{std::string(64, 'b'), 3};
  HERD_EXPECT_CODE(jobs().Prepared(job.id, {.plan_json = "{}", .train_data = missing}).status(),
                   kFailedPrecondition);
  HERD_EXPECT_CODE(
      jobs().Prepared(job.id, {.plan_json = "{}", .train_data = {train->sha256, 999}}).status(),
      kFailedPrecondition);
  HERD_EXPECT_CODE(jobs().Prepared(job.id, {.train_data = {"zz", 1}}).status(), kInvalidArgument);
  auto queued = jobs().Prepared(job.id, info);
  ASSERT_TRUE(queued.ok()) << queued.status();
  EXPECT_EQ(queued->state, JobState::kQueued);
  EXPECT_EQ(queued->plan_json, info.plan_json);
  EXPECT_EQ(queued->train_data, *train);
  EXPECT_EQ(queued->validation_data, *val);
  auto events = jobs().Events(job.id, 1);
  ASSERT_EQ(events->size(), 2u);
  EXPECT_EQ(events->at(0).type, JobEventType::kPrepared);
  EXPECT_EQ(events->at(0).message, "12 sequences");
  EXPECT_EQ(events->at(1).state, JobState::kQueued);
  HERD_EXPECT_CODE(jobs().Prepared(job.id, info).status(), kFailedPrecondition) << "not VALIDATING";
}

TEST_F(JobStoreTest, FormWorld) {
  std::string ds = MakeDataset(kTenantA).id;
  JobSpec spec = Spec(ds);
  spec.resources.trainers = 2;
  auto job = jobs().Create(kTenantA, spec, "");
  HERD_EXPECT_CODE(jobs().FormWorld(job->id, {.generation = 1, .trainer_ids = {"tr_a"}}).status(),
                   kFailedPrecondition)
      << "VALIDATING";
  Drive(job->id, JobState::kQueued);
  HERD_EXPECT_CODE(jobs().FormWorld(job->id, {.generation = 2, .trainer_ids = {"tr_a"}}).status(),
                   kFailedPrecondition)
      << "not the next generation";
  HERD_EXPECT_CODE(jobs().FormWorld(job->id, {.generation = 1}).status(), kInvalidArgument);
  HERD_EXPECT_CODE(
      jobs().FormWorld(job->id, {.generation = 1, .trainer_ids = {"a", "b", "c"}}).status(),
      kInvalidArgument)
      << "more ranks than asked for";
  auto running = jobs().FormWorld(job->id, {.generation = 1, .trainer_ids = {"tr_a", "tr_b"}});
  ASSERT_TRUE(running.ok()) << running.status();
  EXPECT_EQ(running->state, JobState::kRunning);
  EXPECT_EQ(running->generation, 1);
  EXPECT_EQ(running->world_size, 2);
  EXPECT_EQ(running->trainer_ids, (std::vector<std::string>{"tr_a", "tr_b"}));
  HERD_EXPECT_CODE(jobs().FormWorld(job->id, {.generation = 2, .trainer_ids = {"tr_a"}}).status(),
                   kFailedPrecondition)
      << "already RUNNING";
  ASSERT_TRUE(jobs().Transition(job->id, JobState::kRecovering).ok());
  auto resumed = jobs().FormWorld(job->id, {.generation = 2, .trainer_ids = {"tr_c"}, .resume_step = 40});
  ASSERT_TRUE(resumed.ok());
  EXPECT_EQ(resumed->world_size, 1) << "fewer ranks after recovery";
  auto events = jobs().Events(job->id, resumed->last_event_sequence - 2);
  ASSERT_EQ(events->size(), 2u);
  EXPECT_EQ(events->at(0).type, JobEventType::kWorldFormed);
  EXPECT_EQ(events->at(0).generation, 2);
  EXPECT_EQ(events->at(0).world_size, 1);
  EXPECT_EQ(events->at(0).step, 40);
  EXPECT_EQ(events->at(1).state, JobState::kRunning);
  EXPECT_EQ(events->at(1).previous_state, JobState::kRecovering);
}

TEST_F(JobStoreTest, AppendEventAndProgress) {
  JobRecord job = MakeJob(kTenantA);
  JobEvent rank_failed;
  rank_failed.type = JobEventType::kRankFailed;
  rank_failed.generation = 1;
  rank_failed.rank = 3;
  rank_failed.trainer_id = "tr_x";
  rank_failed.failure = Failure{"UNAVAILABLE", "heartbeat lease expired"};
  rank_failed.message = "rank 3 lost";
  auto stored = jobs().AppendEvent(job.id, rank_failed);
  ASSERT_TRUE(stored.ok()) << stored.status();
  EXPECT_EQ(stored->sequence, 2);
  JobEvent evaluated;
  evaluated.type = JobEventType::kEvaluated;
  evaluated.step = 100;
  evaluated.eval_loss = 1.25;
  ASSERT_TRUE(jobs().AppendEvent(job.id, evaluated).ok());
  auto events = jobs().Events(job.id, 1);
  ASSERT_EQ(events->size(), 2u);
  EXPECT_EQ(events->at(0).rank, 3);
  EXPECT_EQ(events->at(0).trainer_id, "tr_x");
  EXPECT_EQ(events->at(0).failure->message, "heartbeat lease expired");
  EXPECT_EQ(events->at(1).eval_loss, 1.25);
  EXPECT_EQ(events->at(1).message, "EVALUATED") << "every event has a message";

  for (JobEventType t : {JobEventType::kStateChanged, JobEventType::kPrepared,
                         JobEventType::kWorldFormed, JobEventType::kCheckpointSaved,
                         JobEventType::kUnspecified}) {
    JobEvent e;
    e.type = t;
    HERD_EXPECT_CODE(jobs().AppendEvent(job.id, e).status(), kInvalidArgument);
  }
  HERD_EXPECT_CODE(jobs().AppendEvent("job_missing", evaluated).status(), kNotFound);

  HERD_EXPECT_OK(jobs().SaveProgress(job.id, "{\"step\": 5}"));
  EXPECT_EQ(jobs().GetById(job.id)->progress_json, "{\"step\": 5}");
  HERD_EXPECT_CODE(jobs().SaveProgress("job_missing", "{}"), kNotFound);

  ASSERT_TRUE(jobs().Cancel(kTenantA, job.id, "").ok());
  HERD_EXPECT_CODE(jobs().AppendEvent(job.id, evaluated).status(), kFailedPrecondition)
      << "a final job's history is closed";
}

TEST_F(JobStoreTest, EventsAndListEventsPaging) {
  JobRecord job = MakeJob(kTenantA);
  JobEvent notice;
  notice.type = JobEventType::kNotice;
  for (int i = 0; i < 9; ++i) ASSERT_TRUE(jobs().AppendEvent(job.id, notice).ok());  // 10 events
  EXPECT_EQ(jobs().Events(job.id, 0)->size(), 10u);
  EXPECT_EQ(jobs().Events(job.id, 7)->size(), 3u);
  EXPECT_EQ(jobs().Events(job.id, 0, 4)->size(), 4u);
  EXPECT_EQ(jobs().Events(job.id, 10)->size(), 0u);
  HERD_EXPECT_CODE(jobs().Events("job_missing", 0).status(), kNotFound);

  std::vector<int64_t> seqs;
  std::string token;
  int pages = 0;
  do {
    auto page = jobs().ListEvents(kTenantA, job.id, 2, 3, token);
    ASSERT_TRUE(page.ok()) << page.status();
    for (const auto& e : page->events) seqs.push_back(e.sequence);
    token = page->next_page_token;
    ++pages;
  } while (!token.empty());
  EXPECT_EQ(seqs, (std::vector<int64_t>{3, 4, 5, 6, 7, 8, 9, 10}));
  EXPECT_EQ(pages, 3);
  auto first = jobs().ListEvents(kTenantA, job.id, 0, 3, "");
  HERD_EXPECT_CODE(jobs().ListEvents(kTenantA, job.id, 1, 3, first->next_page_token).status(),
                   kInvalidArgument)
      << "token made for another after_sequence";
  HERD_EXPECT_CODE(jobs().ListEvents(kTenantA, job.id, -1, 0, "").status(), kInvalidArgument);
  HERD_EXPECT_CODE(jobs().ListEvents(kTenantA, job.id, 0, -1, "").status(), kInvalidArgument);
  HERD_EXPECT_CODE(jobs().ListEvents(kTenantA, "job_missing", 0, 0, "").status(), kNotFound);
}

TEST_F(JobStoreTest, WaitForEventsWakesOnCommit) {
  JobRecord job = MakeJob(kTenantA);
  // Existing events come back at once.
  EXPECT_EQ(jobs().WaitForEvents(job.id, 0, absl::InfinitePast())->size(), 1u);
  // Nothing new: the deadline passes.
  auto none = jobs().WaitForEvents(job.id, 1, absl::Now() + absl::Milliseconds(20));
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->empty());
  // A writer on another thread wakes the waiter.
  std::thread writer([&] {
    absl::SleepFor(absl::Milliseconds(50));
    ASSERT_TRUE(jobs().Transition(job.id, JobState::kQueued).ok());
  });
  auto woken = jobs().WaitForEvents(job.id, 1, absl::Now() + absl::Seconds(30));
  writer.join();
  ASSERT_TRUE(woken.ok());
  ASSERT_EQ(woken->size(), 1u);
  EXPECT_EQ(woken->at(0).state, JobState::kQueued);
  // A rolled-back event wakes nobody and is never seen.
  const int64_t before = store_->db().SignalCount(internal::kJobEventsSignal);
  absl::Status rolled_back = store_->db().Write([&](Tx&) -> absl::Status {
    HERD_RETURN_IF_ERROR(jobs().Transition(job.id, JobState::kRunning).status());
    return absl::AbortedError("roll it back");
  });
  HERD_EXPECT_CODE(rolled_back, kAborted);
  EXPECT_EQ(store_->db().SignalCount(internal::kJobEventsSignal), before);
  EXPECT_TRUE(jobs().WaitForEvents(job.id, 2, absl::Now() + absl::Milliseconds(10))->empty());
  // A final job's history is complete: no waiting.
  ASSERT_TRUE(jobs().Cancel(kTenantA, job.id, "").ok());
  auto last = jobs().WaitForEvents(job.id, 2, absl::InfiniteFuture());
  ASSERT_TRUE(last.ok());
  EXPECT_EQ(last->size(), 1u);
  EXPECT_TRUE(jobs().WaitForEvents(job.id, 3, absl::InfiniteFuture())->empty());
  HERD_EXPECT_CODE(jobs().WaitForEvents("job_missing", 0, absl::InfinitePast()).status(), kNotFound);
}

TEST_F(JobStoreTest, CountAndListByState) {
  JobRecord a = MakeJob(kTenantA);
  JobRecord b = MakeJob(kTenantA);
  JobRecord c = MakeJob(kTenantB);
  Drive(b.id, JobState::kQueued);
  Drive(c.id, JobState::kQueued);
  auto count = [&](std::string_view tenant, JobState s) {
    auto counts = jobs().CountByState(tenant);
    for (auto [state, n] : *counts) {
      if (state == s) return n;
    }
    return int64_t{-1};
  };
  EXPECT_EQ(jobs().CountByState(kTenantA)->size(), 8u) << "every state, zeros included";
  EXPECT_EQ(count(kTenantA, JobState::kQueued), 1);
  EXPECT_EQ(count(kTenantA, JobState::kValidating), 1);
  EXPECT_EQ(count(kTenantA, JobState::kSucceeded), 0);
  EXPECT_EQ(count("", JobState::kQueued), 2) << "all tenants";
  auto queued = jobs().ListByState({JobState::kQueued});
  ASSERT_EQ(queued->size(), 2u);
  EXPECT_EQ(queued->at(0).id, b.id) << "oldest first";
  EXPECT_EQ(queued->at(1).id, c.id);
  EXPECT_TRUE(jobs().ListByState({})->empty());
  (void)a;
}

TEST(JobStoreOptionsTest, Validate) {
  JobStoreOptions o;
  HERD_EXPECT_OK(o.Validate());
  o.max_unfinished_jobs_per_tenant = -1;
  HERD_EXPECT_CODE(o.Validate(), kInvalidArgument);
  o = {};
  o.max_idempotency_key_bytes = 0;
  HERD_EXPECT_CODE(o.Validate(), kInvalidArgument);
  o = {};
  o.clock = nullptr;
  HERD_EXPECT_CODE(o.Validate(), kInvalidArgument);
}

}  // namespace
}  // namespace herd::coordinator::store
