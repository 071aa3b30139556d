// Tests of Store::Open: options, the data dir lock, and what survives a clean reopen.
#include "coordinator/store/store.h"

#include <filesystem>
#include <fstream>

#include "coordinator/store/test_util.h"
#include "gtest/gtest.h"

namespace herd::coordinator::store {
namespace {

using testing::kTenantA;
using testing::MessageHas;
using testing::TempDir;

TEST(StoreOptionsTest, Validate) {
  HERD_EXPECT_OK(StoreOptions{}.Validate());
  for (auto mutate : std::vector<std::function<void(StoreOptions&)>>{
           [](StoreOptions& o) { o.data_dir = ""; },
           [](StoreOptions& o) { o.busy_timeout = absl::Seconds(-1); },
           [](StoreOptions& o) { o.max_unfinished_jobs_per_tenant = -1; },
           [](StoreOptions& o) { o.max_upload_bytes = 0; },
           [](StoreOptions& o) { o.max_open_uploads_per_tenant = 0; },
           [](StoreOptions& o) { o.upload_ttl = absl::ZeroDuration(); },
           [](StoreOptions& o) { o.clock = nullptr; }}) {
    StoreOptions o;
    mutate(o);
    HERD_EXPECT_CODE(o.Validate(), kInvalidArgument);
    HERD_EXPECT_CODE(Store::Open(o).status(), kInvalidArgument);
  }
}

TEST(StoreTest, OpenMakesTheLayout) {
  TempDir dir;
  StoreOptions options;
  options.data_dir = dir.path() + "/nested/data";
  auto store = Store::Open(options);
  ASSERT_TRUE(store.ok()) << store.status();
  for (const char* p : {"herd.db", "LOCK", "blobs/sha256", "blobs/tmp", "uploads"}) {
    EXPECT_TRUE(std::filesystem::exists(options.data_dir + "/" + p)) << p;
  }
  EXPECT_EQ((*store)->data_dir(), options.data_dir);
}

TEST(StoreTest, OneStorePerDataDir) {
  TempDir dir;
  StoreOptions options;
  options.data_dir = dir.path();
  auto first = Store::Open(options);
  ASSERT_TRUE(first.ok());
  auto second = Store::Open(options);
  HERD_EXPECT_CODE(second.status(), kFailedPrecondition);
  EXPECT_TRUE(MessageHas(second.status(), "in use")) << second.status();
  first->reset();
  EXPECT_TRUE(Store::Open(options).ok()) << "the lock goes with the store";
}

TEST(StoreTest, UnusableDataDir) {
  TempDir dir;
  std::string file = dir.path() + "/a-file";
  std::ofstream(file) << "x";
  StoreOptions options;
  options.data_dir = file;
  auto store = Store::Open(options);
  HERD_EXPECT_CODE(store.status(), kFailedPrecondition);
}

class ReopenTest : public testing::StoreTest {};

TEST_F(ReopenTest, EverythingSurvivesAReopen) {
  DatasetRecord ds = MakeDataset(kTenantA);
  JobRecord job = MakeJob(kTenantA, "durable", "key");
  ASSERT_TRUE(store_->jobs().Transition(job.id, JobState::kQueued).ok());
  auto token = store_->tokens().CreateUserToken(kTenantA, "");
  auto trainer = store_->trainers().Register({.name = "n1", .device = {"CPU", "cpu", 0, 1}});
  ASSERT_TRUE(trainer.ok()) << trainer.status();
  Reopen();
  EXPECT_EQ(store_->datasets().Get(kTenantA, ds.id)->sha256, ds.sha256);
  auto again = store_->jobs().Get(kTenantA, job.id);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->state, JobState::kQueued);
  EXPECT_EQ(again->spec.name, "durable");
  EXPECT_EQ(store_->jobs().Events(job.id, 0)->size(), 2u);
  EXPECT_EQ(store_->jobs().Create(kTenantA, again->spec, "key")->id, job.id) << "keys survive";
  EXPECT_EQ(store_->tokens().Authenticate(token->token)->tenant, kTenantA);
  EXPECT_EQ(store_->trainers().GetByName("n1")->id, trainer->id);
  HERD_EXPECT_OK(store_->blobs().Verify(ds.sha256));
}

}  // namespace
}  // namespace herd::coordinator::store
