// Tests of CheckpointStore: adding, retries, the final adapter, pruning, listing, downloads.
#include "coordinator/store/checkpoint_store.h"

#include "common/sha256.h"
#include "coordinator/store/test_util.h"
#include "gtest/gtest.h"

namespace herd::coordinator::store {
namespace {

using testing::kTenantA;
using testing::kTenantB;
using testing::MessageHas;

class CheckpointStoreTest : public testing::StoreTest {
 protected:
  void SetUp() override {
    StoreTest::SetUp();
    JobSpec spec = Spec(MakeDataset(kTenantA).id);
    spec.checkpoints.keep = 2;
    auto job = store_->jobs().Create(kTenantA, spec, "");
    ASSERT_TRUE(job.ok());
    job_ = job->id;
    ASSERT_TRUE(store_->jobs().Transition(job_, JobState::kQueued).ok());
    ASSERT_TRUE(store_->jobs().FormWorld(job_, {.generation = 1, .trainer_ids = {"tr_a"}}).ok());
  }
  CheckpointStore& checkpoints() { return store_->checkpoints(); }

  NamedBlob File(const std::string& name, const std::string& content) {
    return NamedBlob{name, *store_->blobs().Put(content)};
  }
  NewCheckpoint At(int64_t step, bool final = false, std::string salt = "") {
    NewCheckpoint c;
    c.step = step;
    c.final = final;
    c.generation = 1;
    c.files = {File("adapter_model.safetensors", herd::StrCat("weights@", step, salt)),
               File("adapter_config.json", "{\"r\": 16}"),
               File("optimizer.pt", herd::StrCat("adam@", step, salt))};
    c.loss = 2.0 / static_cast<double>(step);
    return c;
  }

  std::string job_;
};

TEST_F(CheckpointStoreTest, ManifestDigestMatchesSha256sum) {
  // printf 'a' > a; printf 'b' > b; sha256sum * | sort -k2 | sha256sum
  std::vector<NamedBlob> files = {{"b", {Sha256Hex("b"), 1}}, {"a", {Sha256Hex("a"), 1}}};
  std::string text = herd::StrCat(Sha256Hex("a"), "  a\n", Sha256Hex("b"), "  b\n");
  EXPECT_EQ(ManifestDigest(files), Sha256Hex(text));
}

TEST_F(CheckpointStoreTest, AddStoresFilesAndWritesAnEvent) {
  auto added = checkpoints().Add(job_, At(10));
  ASSERT_TRUE(added.ok()) << added.status();
  EXPECT_TRUE(added->created);
  const CheckpointRecord& c = added->checkpoint;
  EXPECT_EQ(c.step, 10);
  EXPECT_EQ(c.files.size(), 3u);
  ASSERT_EQ(c.adapter.size(), 2u);
  EXPECT_EQ(c.adapter[0].name, "adapter_config.json") << "the download order";
  EXPECT_EQ(c.adapter[1].name, "adapter_model.safetensors");
  EXPECT_EQ(c.adapter_sha256, ManifestDigest(c.adapter));
  EXPECT_EQ(c.files_sha256, ManifestDigest(c.files));
  EXPECT_EQ(c.adapter_size_bytes, c.adapter[0].blob.size_bytes + c.adapter[1].blob.size_bytes);
  auto got = checkpoints().Get(job_, 10);
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->files, c.files) << "order kept";
  EXPECT_EQ(got->loss, 0.2);
  EXPECT_EQ(got->eval_loss, std::nullopt);
  EXPECT_EQ(store_->jobs().GetById(job_)->last_checkpoint_step, 10);
  auto events = store_->jobs().Events(job_, 0);
  EXPECT_EQ(events->back().type, JobEventType::kCheckpointSaved);
  EXPECT_EQ(events->back().step, 10);
}

TEST_F(CheckpointStoreTest, RetryIsOkAndADifferentDigestIsNot) {
  ASSERT_TRUE(checkpoints().Add(job_, At(10)).ok());
  int64_t events = store_->jobs().GetById(job_)->last_event_sequence;
  auto retry = checkpoints().Add(job_, At(10));
  ASSERT_TRUE(retry.ok()) << retry.status();
  EXPECT_FALSE(retry->created);
  EXPECT_EQ(store_->jobs().GetById(job_)->last_event_sequence, events) << "no second event";
  auto conflict = checkpoints().Add(job_, At(10, false, "other bytes"));
  HERD_EXPECT_CODE(conflict.status(), kAlreadyExists);
}

TEST_F(CheckpointStoreTest, AddErrors) {
  struct Case {
    std::string what;
    std::function<void(NewCheckpoint&)> mutate;
    absl::StatusCode code;
    std::string part;
  };
  for (const Case& c : std::vector<Case>{
           {"step 0", [](NewCheckpoint& n) { n.step = 0; }, absl::StatusCode::kInvalidArgument, "step"},
           {"no adapter config", [](NewCheckpoint& n) { n.files.erase(n.files.begin() + 1); },
            absl::StatusCode::kInvalidArgument, "adapter_config.json"},
           {"no weights", [](NewCheckpoint& n) { n.files.erase(n.files.begin()); },
            absl::StatusCode::kInvalidArgument, "adapter_model.safetensors"},
           {"twice the same name", [](NewCheckpoint& n) { n.files[2].name = "adapter_config.json"; },
            absl::StatusCode::kInvalidArgument, "twice"},
           {"bad file name", [](NewCheckpoint& n) { n.files[2].name = "../x"; },
            absl::StatusCode::kInvalidArgument, "files[2].name"},
           {"bad digest", [](NewCheckpoint& n) { n.files[2].blob.sha256 = "nope"; },
            absl::StatusCode::kInvalidArgument, "sha256"},
           {"blob missing", [](NewCheckpoint& n) { n.files[2].blob.sha256 = std::string(64, 'e'); },
            absl::StatusCode::kFailedPrecondition, "not stored"},
           {"too many files",
            [](NewCheckpoint& n) {
              for (int i = 0; i < 20; ++i) n.files.push_back(n.files[2]);
            },
            absl::StatusCode::kResourceExhausted, "at most"},
           {"stale generation", [](NewCheckpoint& n) { n.generation = 0; },
            absl::StatusCode::kFailedPrecondition, "generation"},
       }) {
    NewCheckpoint n = At(5);
    c.mutate(n);
    auto added = checkpoints().Add(job_, n);
    EXPECT_EQ(added.status().code(), c.code) << c.what << ": " << added.status();
    EXPECT_TRUE(MessageHas(added.status(), c.part)) << c.what << ": " << added.status();
  }
  HERD_EXPECT_CODE(checkpoints().Add("job_missing", At(5)).status(), kNotFound);
  ASSERT_TRUE(store_->jobs().Cancel(kTenantA, job_, "").ok());
  HERD_EXPECT_CODE(checkpoints().Add(job_, At(5)).status(), kFailedPrecondition) << "final job";
}

TEST_F(CheckpointStoreTest, PrunesPeriodicCheckpointsPastKeep) {
  ASSERT_TRUE(checkpoints().Add(job_, At(10)).ok());
  ASSERT_TRUE(checkpoints().Add(job_, At(20)).ok());
  auto third = checkpoints().Add(job_, At(30));
  ASSERT_TRUE(third.ok());
  EXPECT_EQ(third->pruned_steps, (std::vector<int64_t>{10}));
  HERD_EXPECT_CODE(checkpoints().Get(job_, 10).status(), kNotFound);
  EXPECT_TRUE(checkpoints().Get(job_, 20).ok());
  EXPECT_EQ(checkpoints().Latest(job_)->value().step, 30);
}

TEST_F(CheckpointStoreTest, FinalAdapter) {
  ASSERT_TRUE(checkpoints().Add(job_, At(10)).ok());
  ASSERT_TRUE(checkpoints().Add(job_, At(20)).ok());
  // The final adapter at the step of a periodic checkpoint replaces it.
  auto final = checkpoints().Add(job_, At(20, true, "final"));
  ASSERT_TRUE(final.ok()) << final.status();
  EXPECT_TRUE(final->created);
  EXPECT_TRUE(checkpoints().Get(job_, 20)->final);
  EXPECT_TRUE(checkpoints().Add(job_, At(20, true, "final")).ok()) << "retry";
  HERD_EXPECT_CODE(checkpoints().Add(job_, At(20, false)).status(), kAlreadyExists)
      << "a periodic one never replaces the final one";
  HERD_EXPECT_CODE(checkpoints().Add(job_, At(25, true)).status(), kAlreadyExists)
      << "one final adapter per job";
  // Never pruned.
  ASSERT_TRUE(checkpoints().Add(job_, At(30)).ok());
  ASSERT_TRUE(checkpoints().Add(job_, At(40)).ok());
  EXPECT_TRUE(checkpoints().Get(job_, 20).ok());
  HERD_EXPECT_CODE(checkpoints().Get(job_, 10).status(), kNotFound);
}

TEST_F(CheckpointStoreTest, ListIsTenantCheckedAndPaged) {
  for (int step : {10, 20}) ASSERT_TRUE(checkpoints().Add(job_, At(step)).ok());
  auto page = checkpoints().List(kTenantA, job_, 1, "");
  ASSERT_TRUE(page.ok());
  ASSERT_EQ(page->checkpoints.size(), 1u);
  EXPECT_EQ(page->checkpoints[0].step, 10);
  auto next = checkpoints().List(kTenantA, job_, 1, page->next_page_token);
  ASSERT_EQ(next->checkpoints.size(), 1u);
  EXPECT_EQ(next->checkpoints[0].step, 20);
  EXPECT_TRUE(next->next_page_token.empty());
  HERD_EXPECT_CODE(checkpoints().List(kTenantB, job_, 0, "").status(), kNotFound);
  HERD_EXPECT_CODE(checkpoints().List(kTenantA, job_, 0, "junk").status(), kInvalidArgument);
  HERD_EXPECT_CODE(checkpoints().List(kTenantA, job_, -1, "").status(), kInvalidArgument);
  HERD_EXPECT_CODE(checkpoints().List(kTenantA, "job_missing", 0, "").status(), kNotFound);
}

TEST_F(CheckpointStoreTest, ForDownloadPicksTheDocumentedCheckpoint) {
  HERD_EXPECT_CODE(checkpoints().ForDownload(kTenantA, job_, std::nullopt).status(), kNotFound)
      << "none yet";
  EXPECT_EQ(*checkpoints().Latest(job_), std::nullopt);
  ASSERT_TRUE(checkpoints().Add(job_, At(10)).ok());
  ASSERT_TRUE(checkpoints().Add(job_, At(20)).ok());
  EXPECT_EQ(checkpoints().ForDownload(kTenantA, job_, std::nullopt)->step, 20) << "newest";
  EXPECT_EQ(checkpoints().ForDownload(kTenantA, job_, 10)->step, 10);
  HERD_EXPECT_CODE(checkpoints().ForDownload(kTenantA, job_, 15).status(), kNotFound);
  HERD_EXPECT_CODE(checkpoints().ForDownload(kTenantA, job_, -1).status(), kInvalidArgument);
  HERD_EXPECT_CODE(checkpoints().ForDownload(kTenantB, job_, 10).status(), kNotFound);
  ASSERT_TRUE(checkpoints().Add(job_, At(15, true)).ok());
  ASSERT_TRUE(store_->jobs().Transition(job_, JobState::kPublishing).ok());
  EXPECT_EQ(checkpoints().ForDownload(kTenantA, job_, std::nullopt)->step, 20)
      << "not SUCCEEDED yet: the newest";
  ASSERT_TRUE(store_->jobs().Transition(job_, JobState::kSucceeded).ok());
  auto published = checkpoints().ForDownload(kTenantA, job_, std::nullopt);
  EXPECT_EQ(published->step, 15);
  EXPECT_TRUE(published->final);
}

}  // namespace
}  // namespace herd::coordinator::store
