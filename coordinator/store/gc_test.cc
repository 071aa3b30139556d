// Tests of the blob garbage collector.
#include "coordinator/store/gc.h"

#include <fcntl.h>
#include <sys/stat.h>

#include "coordinator/store/test_util.h"
#include "gtest/gtest.h"

namespace herd::coordinator::store {
namespace {

using testing::kTenantA;

class GcTest : public testing::StoreTest {
 protected:
  void Age(const BlobRef& ref) {
    struct timespec old[2] = {{1000, 0}, {1000, 0}};
    ASSERT_EQ(::utimensat(AT_FDCWD, store_->blobs().PathOf(ref.sha256).c_str(), old, 0), 0);
  }
};

TEST_F(GcTest, DeletesOnlyOldUnreferencedBlobs) {
  DatasetRecord ds = MakeDataset(kTenantA, "kept.jsonl", "{\"text\": \"kept\"}\n");
  BlobRef referenced{ds.sha256, ds.size_bytes};
  BlobRef orphan = *store_->blobs().Put("orphan");
  BlobRef young = *store_->blobs().Put("young orphan");
  Age(referenced);
  Age(orphan);
  auto refs = ReferencedBlobs(&store_->db());
  ASSERT_TRUE(refs.ok());
  EXPECT_EQ(refs->count(ds.sha256), 1u);
  auto stats = CollectGarbage(&store_->db(), &store_->blobs(), absl::Now());
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_EQ(stats->blobs_deleted, 1);
  EXPECT_EQ(stats->bytes_deleted, 6);
  EXPECT_EQ(stats->blobs_kept, 2);
  EXPECT_FALSE(store_->blobs().Has(orphan.sha256));
  EXPECT_TRUE(store_->blobs().Has(referenced.sha256));
  EXPECT_TRUE(store_->blobs().Has(young.sha256));
}

TEST_F(GcTest, ADeletedDatasetsBlobGoesUnlessShared) {
  DatasetRecord a = MakeDataset(kTenantA, "a", "shared bytes");
  DatasetRecord b = MakeDataset(kTenantA, "b", "shared bytes");
  ASSERT_EQ(a.sha256, b.sha256);
  ASSERT_TRUE(store_->datasets().Delete(kTenantA, a.id).ok());
  Age({a.sha256, a.size_bytes});
  ASSERT_TRUE(CollectGarbage(&store_->db(), &store_->blobs(), absl::Now()).ok());
  EXPECT_TRUE(store_->blobs().Has(a.sha256)) << "still referenced by b";
  ASSERT_TRUE(store_->datasets().Delete(kTenantA, b.id).ok());
  ASSERT_TRUE(CollectGarbage(&store_->db(), &store_->blobs(), absl::Now()).ok());
  EXPECT_FALSE(store_->blobs().Has(a.sha256));
}

}  // namespace
}  // namespace herd::coordinator::store
