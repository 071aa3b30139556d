// Tests of DatasetStore: creation, tenancy, listing, deletion rules, the JSON codec.
#include "coordinator/store/dataset_store.h"

#include "coordinator/store/test_util.h"
#include "gtest/gtest.h"

namespace herd::coordinator::store {
namespace {

using testing::kTenantA;
using testing::kTenantB;
using testing::MessageHas;

class DatasetStoreTest : public testing::StoreTest {
 protected:
  DatasetStore& datasets() { return store_->datasets(); }
  NewDataset Valid() {
    NewDataset d;
    d.name = "chat.jsonl";
    d.blob = *store_->blobs().Put("{\"messages\": []}\n");
    d.record_count = 1;
    d.format = "chat";
    d.skip_invalid = true;
    d.validation_json = "{\"records_total\": 2}";
    return d;
  }
};

TEST_F(DatasetStoreTest, CreateAndGet) {
  clock_.Advance(absl::Hours(1));
  NewDataset in = Valid();
  auto ds = datasets().Create(kTenantA, in);
  ASSERT_TRUE(ds.ok()) << ds.status();
  EXPECT_EQ(ds->id.substr(0, 3), "ds_");
  EXPECT_EQ(ds->tenant, kTenantA);
  EXPECT_EQ(ds->name, in.name);
  EXPECT_EQ(ds->sha256, in.blob.sha256);
  EXPECT_EQ(ds->size_bytes, in.blob.size_bytes);
  EXPECT_EQ(ds->record_count, 1);
  EXPECT_EQ(ds->format, "chat");
  EXPECT_EQ(ds->state, DatasetState::kReady);
  EXPECT_TRUE(ds->skip_invalid);
  EXPECT_EQ(ds->validation_json, in.validation_json);
  EXPECT_EQ(ds->create_time, clock_.Now());
  auto got = datasets().Get(kTenantA, ds->id);
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(DatasetToJson(*got), DatasetToJson(*ds));
}

TEST_F(DatasetStoreTest, CreateErrors) {
  struct Case {
    std::string what;
    std::function<void(NewDataset&)> mutate;
    absl::StatusCode code;
    std::string part;
  };
  for (const Case& c : std::vector<Case>{
           {"bad name", [](NewDataset& d) { d.name = "../x"; }, absl::StatusCode::kInvalidArgument, "name"},
           {"empty name", [](NewDataset& d) { d.name = ""; }, absl::StatusCode::kInvalidArgument, "name"},
           {"bad format", [](NewDataset& d) { d.format = "csv"; }, absl::StatusCode::kInvalidArgument, "format"},
           {"auto is not a format", [](NewDataset& d) { d.format = "auto"; }, absl::StatusCode::kInvalidArgument, "format"},
           {"no records", [](NewDataset& d) { d.record_count = 0; }, absl::StatusCode::kInvalidArgument, "record_count"},
           {"bad digest", [](NewDataset& d) { d.blob.sha256 = "xyz"; }, absl::StatusCode::kInvalidArgument, "sha256"},
           {"blob not stored", [](NewDataset& d) { d.blob.sha256 = std::string(64, 'c'); }, absl::StatusCode::kFailedPrecondition, "not stored"},
           {"blob of another size", [](NewDataset& d) { d.blob.size_bytes += 1; }, absl::StatusCode::kFailedPrecondition, "holds"},
       }) {
    NewDataset d = Valid();
    c.mutate(d);
    auto ds = datasets().Create(kTenantA, d);
    EXPECT_EQ(ds.status().code(), c.code) << c.what << ": " << ds.status();
    EXPECT_TRUE(MessageHas(ds.status(), c.part)) << c.what << ": " << ds.status();
  }
}

TEST_F(DatasetStoreTest, TenantIsolation) {
  auto ds = datasets().Create(kTenantA, Valid());
  auto foreign = datasets().Get(kTenantB, ds->id);
  HERD_EXPECT_CODE(foreign.status(), kNotFound);
  EXPECT_EQ(std::string(foreign.status().message()), herd::StrCat("dataset ", ds->id, " not found"));
  HERD_EXPECT_CODE(datasets().Delete(kTenantB, ds->id).status(), kNotFound);
  EXPECT_TRUE(datasets().List(kTenantB, {})->datasets.empty());
  EXPECT_TRUE(datasets().Get(kTenantA, ds->id).ok()) << "untouched";
}

TEST_F(DatasetStoreTest, ListPagesNewestFirstWithPrefix) {
  std::vector<std::string> ids;
  for (int i = 0; i < 7; ++i) {
    NewDataset d = Valid();
    d.name = i % 2 == 0 ? herd::StrCat("train-", i) : herd::StrCat("eval-", i);
    ids.push_back(datasets().Create(kTenantA, d)->id);
  }
  std::vector<std::string> seen;
  ListDatasetsRequest r;
  r.page_size = 3;
  int pages = 0;
  do {
    auto page = datasets().List(kTenantA, r);
    ASSERT_TRUE(page.ok()) << page.status();
    for (const auto& d : page->datasets) seen.push_back(d.id);
    r.page_token = page->next_page_token;
    ++pages;
  } while (!r.page_token.empty());
  EXPECT_EQ(pages, 3);
  EXPECT_EQ(seen, std::vector<std::string>(ids.rbegin(), ids.rend()));

  ListDatasetsRequest prefix;
  prefix.name_prefix = "train-";
  auto page = datasets().List(kTenantA, prefix);
  ASSERT_EQ(page->datasets.size(), 4u);
  EXPECT_EQ(page->datasets[0].name, "train-6");
  prefix.page_size = 1;
  std::string token = datasets().List(kTenantA, prefix)->next_page_token;
  ListDatasetsRequest other;
  other.page_token = token;
  HERD_EXPECT_CODE(datasets().List(kTenantA, other).status(), kInvalidArgument) << "other filters";
  other.page_size = -5;
  HERD_EXPECT_CODE(datasets().List(kTenantA, other).status(), kInvalidArgument);
}

TEST_F(DatasetStoreTest, DeleteRefusesWhileAnUnfinishedJobUsesIt) {
  auto ds = datasets().Create(kTenantA, Valid());
  auto val = datasets().Create(kTenantA, Valid());
  JobSpec spec = Spec(ds->id);
  spec.validation_dataset = val->id;
  auto job = store_->jobs().Create(kTenantA, spec, "");
  ASSERT_TRUE(job.ok()) << job.status();
  for (const std::string& id : {ds->id, val->id}) {
    auto refused = datasets().Delete(kTenantA, id);
    HERD_EXPECT_CODE(refused.status(), kFailedPrecondition);
    EXPECT_TRUE(MessageHas(refused.status(), job->id)) << refused.status();
  }
  ASSERT_TRUE(store_->jobs().Cancel(kTenantA, job->id, "").ok());
  auto deleted = datasets().Delete(kTenantA, ds->id);
  ASSERT_TRUE(deleted.ok()) << deleted.status();
  EXPECT_EQ(deleted->id, ds->id);
  HERD_EXPECT_CODE(datasets().Get(kTenantA, ds->id).status(), kNotFound);
  HERD_EXPECT_CODE(datasets().Delete(kTenantA, ds->id).status(), kNotFound) << "a retry";
  EXPECT_TRUE(store_->blobs().Has(ds->sha256)) << "blobs go only through the garbage collector";
  EXPECT_TRUE(store_->jobs().Get(kTenantA, job->id).ok()) << "jobs keep working after";
}

TEST_F(DatasetStoreTest, JsonCodec) {
  DatasetRecord rejected;
  rejected.name = "bad.jsonl";
  rejected.sha256 = std::string(64, 'd');
  rejected.size_bytes = 10;
  rejected.format = "text";
  rejected.state = DatasetState::kRejected;
  rejected.validation_json = "{\"problems\": [{\"line\": 3}]}";
  rejected.create_time = absl::FromUnixMicros(1234567);
  auto back = DatasetFromJson(DatasetToJson(rejected));
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->state, DatasetState::kRejected);
  EXPECT_EQ(back->validation_json, rejected.validation_json);
  EXPECT_EQ(back->create_time, rejected.create_time);
  EXPECT_EQ(DatasetToJson(*back), DatasetToJson(rejected));
  HERD_EXPECT_CODE(DatasetFromJson("nope").status(), kDataLoss);
  HERD_EXPECT_CODE(DatasetFromJson("{\"size_bytes\": \"big\"}").status(), kDataLoss);
}

}  // namespace
}  // namespace herd::coordinator::store
