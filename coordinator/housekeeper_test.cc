// Housekeeper: a rejected upload's bytes go once the grace period has passed; a dataset's stay.
#include "coordinator/housekeeper.h"

#include "absl/time/clock.h"
#include "common/sha256.h"
#include "coordinator/dataset_uploads.h"
#include "coordinator/store/test_util.h"
#include "gtest/gtest.h"

namespace herd::coordinator {
namespace {

using store::testing::kTenantA;

class HousekeeperTest : public store::testing::StoreTest {
 protected:
  // Uploads `content` through DatasetUploads and returns the answer.
  store::DatasetRecord Upload(const std::string& content) {
    DatasetUploads uploads(store_.get());
    auto upload = uploads.Start(kTenantA, {.name = "d.jsonl",
                                           .total_size_bytes = static_cast<int64_t>(content.size()),
                                           .sha256 = Sha256Hex(content)});
    EXPECT_TRUE(upload.ok()) << upload.status();
    auto writer = uploads.OpenWriter(kTenantA, upload->id);
    EXPECT_TRUE(writer.ok()) << writer.status();
    EXPECT_TRUE((*writer)->Append(0, content).ok());
    auto answer = uploads.Complete(kTenantA, **writer);
    EXPECT_TRUE(answer.ok()) << answer.status();
    return answer.ok() ? *answer : store::DatasetRecord{};
  }
};

TEST_F(HousekeeperTest, RejectedBytesAreCollectedAfterTheGracePeriod) {
  const std::string bad = "{\"text\": \"a\"}\nnot json\n";
  const std::string good = "{\"text\": \"b\"}\n";
  store::DatasetRecord rejected = Upload(bad);
  store::DatasetRecord ready = Upload(good);
  ASSERT_EQ(rejected.state, store::DatasetState::kRejected);
  ASSERT_EQ(ready.state, store::DatasetState::kReady);
  ASSERT_TRUE(store_->blobs().Has(Sha256Hex(bad)));

  Housekeeper housekeeper(store_.get(), &clock_);
  clock_.Set(absl::Now());
  HERD_ASSERT_OK(housekeeper.RunOnce());
  EXPECT_TRUE(store_->blobs().Has(Sha256Hex(bad))) << "young blobs are spared";

  clock_.Set(absl::Now() + absl::Hours(2));
  HERD_ASSERT_OK(housekeeper.RunOnce());
  EXPECT_FALSE(store_->blobs().Has(Sha256Hex(bad)));
  EXPECT_TRUE(store_->blobs().Has(Sha256Hex(good)));
  EXPECT_TRUE(store_->datasets().Get(kTenantA, ready.id).ok());
}

TEST_F(HousekeeperTest, ThreadStopsPromptly) {
  Housekeeper housekeeper(store_.get(), &clock_, absl::Hours(1));
  housekeeper.Start();
  const absl::Time start = absl::Now();
  housekeeper.Stop();
  housekeeper.Stop();
  EXPECT_LT(absl::Now() - start, absl::Seconds(30));
}

}  // namespace
}  // namespace herd::coordinator
