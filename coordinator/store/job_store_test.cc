// Tests of JobStore: creation and idempotency, tenancy, listing and its page tokens, options.
#include "coordinator/store/job_store.h"

#include <set>
#include <thread>

#include "coordinator/store/job_spec_json.h"
#include "coordinator/store/job_store_testing.h"
#include "gtest/gtest.h"

namespace herd::coordinator::store {
namespace {

using testing::JobStoreTest;
using testing::kTenantA;
using testing::kTenantB;
using testing::MessageHas;

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
