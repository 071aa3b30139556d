// BlobCache against the fake coordinator: a fetch lands at its content address, a held blob is
// not fetched again, a broken stream resumes from the bytes held, and bytes that do not match
// their digest are never put in place.
#include "trainer/agent/blob_cache.h"

#include <chrono>
#include <filesystem>

#include "common/file_util.h"
#include "common/sha256.h"
#include "gtest/gtest.h"
#include "trainer/agent/fake_coordinator.h"

namespace herd::agent {
namespace {

class BlobCacheTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = ::testing::TempDir() + "/blob-cache-" + ::testing::UnitTest::GetInstance()->current_test_info()->name();
    std::filesystem::remove_all(root_);
    ref_.set_job_id("job_1");
    ref_.set_generation(1);
  }
  BlobCache Cache(int attempts = 4) {
    return BlobCache({.root = root_, .max_attempts = attempts, .initial_backoff = absl::Milliseconds(1)});
  }
  absl::StatusOr<std::string> Fetch(BlobCache& cache, const std::string& sha, int64_t size) {
    return cache.Fetch(fake_, "tr_1", ref_, sha, size, [] { return false; });
  }

  std::string root_;
  herd::v1::AssignmentRef ref_;
  FakeCoordinator fake_;
};

TEST_F(BlobCacheTest, FetchesOnceAndResumesABrokenStream) {
  const std::string blob(300 << 10, 'x');
  const std::string sha = Sha256Hex(blob);
  fake_.AddBlob(blob);
  fake_.BreakFirstFetchAfter(100 << 10);
  BlobCache cache = Cache();
  auto path = Fetch(cache, sha, static_cast<int64_t>(blob.size()));
  ASSERT_TRUE(path.ok()) << path.status();
  EXPECT_EQ(*path, root_ + "/sha256/" + sha.substr(0, 2) + "/" + sha);
  EXPECT_EQ(ReadFile(*path).value_or(""), blob);
  EXPECT_FALSE(std::filesystem::exists(*path + ".partial"));
  const std::vector<int64_t> offsets = fake_.FetchOffsets(sha);
  ASSERT_EQ(offsets.size(), 2u);
  EXPECT_EQ(offsets[1], 128 << 10) << "resumed after the chunks received";
  ASSERT_TRUE(Fetch(cache, sha, static_cast<int64_t>(blob.size())).ok());
  EXPECT_EQ(fake_.FetchOffsets(sha).size(), 2u) << "a held blob is not fetched again";
}

TEST_F(BlobCacheTest, WrongBytesAreNeverPutInPlace) {
  const std::string sha = Sha256Hex("the real content");
  fake_.AddBlobAs(sha, "something else!!");
  BlobCache cache = Cache(/*attempts=*/3);
  auto path = Fetch(cache, sha, 16);
  EXPECT_EQ(path.status().code(), absl::StatusCode::kDataLoss) << path.status();
  EXPECT_EQ(fake_.FetchOffsets(sha).size(), 3u) << "each attempt starts over";
  EXPECT_FALSE(std::filesystem::exists(cache.PathFor(sha)));
}

TEST_F(BlobCacheTest, CoordinatorRefusalsAreNotRetried) {
  BlobCache cache = Cache();
  const std::string sha(64, 'c');
  EXPECT_EQ(Fetch(cache, sha, 10).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(fake_.FetchOffsets(sha).size(), 1u);
  EXPECT_EQ(Fetch(cache, "not-hex", 10).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(BlobCacheTest, TrimDropsTheLeastRecentlyUsedBlobsDownToTheBound) {
  const std::string a(100 << 10, 'a'), b(100 << 10, 'b'), c(100 << 10, 'c');
  for (const std::string* blob : {&a, &b, &c}) fake_.AddBlob(*blob);
  BlobCache cache({.root = root_, .initial_backoff = absl::Milliseconds(1), .max_bytes = 250 << 10});
  for (const std::string* blob : {&a, &b, &c}) ASSERT_TRUE(Fetch(cache, Sha256Hex(*blob), 100 << 10).ok());
  // Ages set explicitly (file times are the LRU clock): a is the oldest, then b, then c; reusing
  // a makes it the newest.
  const auto now = std::filesystem::file_time_type::clock::now();
  std::filesystem::last_write_time(cache.PathFor(Sha256Hex(a)), now - std::chrono::hours(3));
  std::filesystem::last_write_time(cache.PathFor(Sha256Hex(b)), now - std::chrono::hours(2));
  std::filesystem::last_write_time(cache.PathFor(Sha256Hex(c)), now - std::chrono::hours(1));
  ASSERT_TRUE(Fetch(cache, Sha256Hex(a), 100 << 10).ok());
  // A partial file of a fetch in flight is never counted or deleted.
  const std::string partial = cache.PathFor(std::string(64, 'd')) + ".partial";
  std::filesystem::create_directories(std::filesystem::path(partial).parent_path());
  ASSERT_TRUE(WriteFileAtomic(partial, std::string(500 << 10, 'd')).ok());

  EXPECT_EQ(cache.Trim(), 100 << 10);
  EXPECT_TRUE(std::filesystem::exists(cache.PathFor(Sha256Hex(a))));
  EXPECT_FALSE(std::filesystem::exists(cache.PathFor(Sha256Hex(b))));
  EXPECT_TRUE(std::filesystem::exists(cache.PathFor(Sha256Hex(c))));
  EXPECT_TRUE(std::filesystem::exists(partial));
  EXPECT_EQ(cache.Trim(), 0);

  BlobCache unbounded({.root = root_});
  EXPECT_EQ(unbounded.Trim(), 0);
}

}  // namespace
}  // namespace herd::agent
