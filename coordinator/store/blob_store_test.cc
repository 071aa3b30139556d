// Tests of the content-addressed blob store.
#include "coordinator/store/blob_store.h"

#include <fcntl.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "common/file_util.h"
#include "common/sha256.h"
#include "coordinator/store/test_util.h"
#include "gtest/gtest.h"

namespace herd::coordinator::store {
namespace {

using testing::TempDir;

class BlobStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    BlobStoreOptions options;
    options.root = dir_.path() + "/blobs";
    auto blobs = BlobStore::Open(options);
    ASSERT_TRUE(blobs.ok()) << blobs.status();
    blobs_ = *std::move(blobs);
  }
  size_t TmpFiles() const {
    size_t n = 0;
    for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator(blobs_->tmp_dir())) ++n;
    return n;
  }

  TempDir dir_;
  std::unique_ptr<BlobStore> blobs_;
};

TEST_F(BlobStoreTest, PutStoresUnderItsDigest) {
  const std::string data = "hello blobs";
  auto ref = blobs_->Put(data);
  ASSERT_TRUE(ref.ok()) << ref.status();
  EXPECT_EQ(ref->sha256, Sha256Hex(data));
  EXPECT_EQ(ref->size_bytes, static_cast<int64_t>(data.size()));
  // The layout of DESIGN.md §1: blobs/sha256/ab/abcdef...
  std::string expected = herd::StrCat(dir_.path(), "/blobs/sha256/", ref->sha256.substr(0, 2), "/", ref->sha256);
  EXPECT_EQ(blobs_->PathOf(ref->sha256), expected);
  EXPECT_EQ(*ReadFile(expected), data);
  EXPECT_TRUE(blobs_->Has(ref->sha256));
  EXPECT_EQ(*blobs_->Size(ref->sha256), static_cast<int64_t>(data.size()));
  HERD_EXPECT_OK(blobs_->Verify(ref->sha256));
  EXPECT_EQ(TmpFiles(), 0u);
  struct stat st;
  ASSERT_EQ(::stat(expected.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0222, 0u) << "blobs are read-only";
}

TEST_F(BlobStoreTest, PutIsIdempotent) {
  auto a = blobs_->Put("same bytes");
  auto b = blobs_->Put("same bytes");
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(*a, *b);
  EXPECT_EQ(blobs_->List()->size(), 1u);
  EXPECT_EQ(TmpFiles(), 0u);
}

TEST_F(BlobStoreTest, EmptyBlob) {
  auto ref = blobs_->Put("");
  ASSERT_TRUE(ref.ok());
  EXPECT_EQ(ref->sha256, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(*blobs_->Read(ref->sha256), "");
}

TEST_F(BlobStoreTest, ReadRanges) {
  const std::string data = "0123456789";
  auto ref = blobs_->Put(data);
  struct Case {
    int64_t offset, length;
    std::string want;
    absl::StatusCode code;
  };
  for (const Case& c : std::vector<Case>{
           {0, -1, data, absl::StatusCode::kOk},
           {3, 4, "3456", absl::StatusCode::kOk},
           {8, 100, "89", absl::StatusCode::kOk},
           {10, 5, "", absl::StatusCode::kOk},
           {11, 1, "", absl::StatusCode::kOutOfRange},
           {-1, 1, "", absl::StatusCode::kOutOfRange},
       }) {
    auto got = blobs_->Read(ref->sha256, c.offset, c.length);
    EXPECT_EQ(got.status().code(), c.code) << c.offset;
    if (got.ok()) {
      EXPECT_EQ(*got, c.want) << c.offset;
    }
  }
  auto reader = blobs_->NewReader(ref->sha256);
  ASSERT_TRUE(reader.ok());
  EXPECT_EQ((*reader)->size(), 10);
  std::string chunk;
  HERD_EXPECT_OK((*reader)->ReadAt(7, 2, &chunk));
  EXPECT_EQ(chunk, "78");
  HERD_EXPECT_CODE((*reader)->ReadAt(12, 2, &chunk), kOutOfRange);
}

TEST_F(BlobStoreTest, BadDigestsAreInvalidAndNeverPaths) {
  for (std::string bad : {std::string("../../etc/passwd"), std::string(64, 'G'), std::string(63, 'a'),
                          std::string(64, 'A'), std::string("")}) {
    HERD_EXPECT_CODE(blobs_->Size(bad).status(), kInvalidArgument);
    HERD_EXPECT_CODE(blobs_->Read(bad).status(), kInvalidArgument);
    HERD_EXPECT_CODE(blobs_->NewReader(bad).status(), kInvalidArgument);
    HERD_EXPECT_CODE(blobs_->Verify(bad), kInvalidArgument);
    HERD_EXPECT_CODE(blobs_->Delete(bad), kInvalidArgument);
    HERD_EXPECT_CODE(blobs_->Touch(bad).status(), kInvalidArgument);
    EXPECT_FALSE(blobs_->Has(bad));
  }
}

TEST_F(BlobStoreTest, MissingBlobIsNotFound) {
  const std::string missing(64, 'a');
  EXPECT_FALSE(blobs_->Has(missing));
  HERD_EXPECT_CODE(blobs_->Size(missing).status(), kNotFound);
  HERD_EXPECT_CODE(blobs_->Read(missing).status(), kNotFound);
  HERD_EXPECT_CODE(blobs_->Verify(missing), kNotFound);
  HERD_EXPECT_CODE(blobs_->Delete(missing), kNotFound);
  HERD_EXPECT_CODE(blobs_->Touch(missing).status(), kNotFound);
}

TEST_F(BlobStoreTest, WriterCommitsOnlyWhatWasAsked) {
  auto writer = blobs_->NewWriter();
  ASSERT_TRUE(writer.ok());
  HERD_ASSERT_OK((*writer)->Append("part one, "));
  HERD_ASSERT_OK((*writer)->Append("part two"));
  EXPECT_EQ((*writer)->size(), 18);
  EXPECT_EQ(TmpFiles(), 1u);
  auto ref = (*writer)->Commit(Sha256Hex("part one, part two"));
  ASSERT_TRUE(ref.ok()) << ref.status();
  EXPECT_EQ(TmpFiles(), 0u);
  HERD_EXPECT_CODE((*writer)->Append("more"), kFailedPrecondition);
  HERD_EXPECT_CODE((*writer)->Commit().status(), kFailedPrecondition);
}

TEST_F(BlobStoreTest, WriterWithWrongDigestKeepsNothing) {
  auto writer = blobs_->NewWriter();
  HERD_ASSERT_OK((*writer)->Append("actual bytes"));
  auto ref = (*writer)->Commit(Sha256Hex("expected bytes"));
  HERD_EXPECT_CODE(ref.status(), kDataLoss);
  EXPECT_FALSE(blobs_->Has(Sha256Hex("actual bytes")));
  EXPECT_EQ(TmpFiles(), 0u);
  auto writer2 = blobs_->NewWriter();
  HERD_EXPECT_CODE((*writer2)->Commit("not-hex").status(), kInvalidArgument);
}

TEST_F(BlobStoreTest, AbandonedWriterLeavesNothing) {
  {
    auto writer = blobs_->NewWriter();
    HERD_ASSERT_OK((*writer)->Append("never committed"));
  }
  EXPECT_EQ(TmpFiles(), 0u);
  EXPECT_TRUE(blobs_->List()->empty());
}

TEST_F(BlobStoreTest, OpenDeletesTempLeftovers) {
  std::ofstream(blobs_->tmp_dir() + "/123.4.tmp") << "crash leftover";
  std::filesystem::create_directory(blobs_->tmp_dir() + "/subdir");
  EXPECT_EQ(TmpFiles(), 2u);
  BlobStoreOptions options;
  options.root = dir_.path() + "/blobs";
  auto reopened = BlobStore::Open(options);
  ASSERT_TRUE(reopened.ok());
  EXPECT_EQ(TmpFiles(), 0u);
  EXPECT_TRUE((*reopened)->List()->empty());
}

TEST_F(BlobStoreTest, PutStreamAndPutFile) {
  std::string big(300000, 'x');
  for (size_t i = 0; i < big.size(); i += 7) big[i] = static_cast<char>('a' + i % 26);
  std::istringstream in(big);
  auto a = blobs_->PutStream(in);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->sha256, Sha256Hex(big));
  std::string path = dir_.path() + "/input.bin";
  std::ofstream(path) << big;
  auto b = blobs_->PutFile(path);
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(*a, *b);
  EXPECT_TRUE(std::filesystem::exists(path)) << "PutFile copies";
  HERD_EXPECT_CODE(blobs_->PutFile(dir_.path() + "/missing").status(), kNotFound);
}

TEST_F(BlobStoreTest, AdoptMovesAVerifiedFile) {
  std::string path = dir_.path() + "/upload.part";
  std::ofstream(path) << "uploaded";
  HERD_EXPECT_CODE(blobs_->Adopt(path, Sha256Hex("other"), 8).status(), kDataLoss);
  HERD_EXPECT_CODE(blobs_->Adopt(path, Sha256Hex("uploaded"), 9).status(), kDataLoss);
  EXPECT_TRUE(std::filesystem::exists(path)) << "a refused file stays";
  auto ref = blobs_->Adopt(path, Sha256Hex("uploaded"), 8);
  ASSERT_TRUE(ref.ok()) << ref.status();
  EXPECT_FALSE(std::filesystem::exists(path));
  EXPECT_EQ(*blobs_->Read(ref->sha256), "uploaded");
  // Adopting bytes already stored drops the source and keeps the blob.
  std::ofstream(path) << "uploaded";
  ASSERT_TRUE(blobs_->Adopt(path, Sha256Hex("uploaded"), 8).ok());
  EXPECT_FALSE(std::filesystem::exists(path));
}

TEST_F(BlobStoreTest, VerifyFindsCorruption) {
  auto ref = blobs_->Put("pristine");
  std::string path = blobs_->PathOf(ref->sha256);
  ::chmod(path.c_str(), 0644);
  std::ofstream(path) << "tampered";
  HERD_EXPECT_CODE(blobs_->Verify(ref->sha256), kDataLoss);
}

TEST_F(BlobStoreTest, DeleteAndList) {
  auto a = blobs_->Put("a");
  auto b = blobs_->Put("bb");
  auto list = blobs_->List();
  ASSERT_TRUE(list.ok());
  EXPECT_EQ(list->size(), 2u);
  HERD_EXPECT_OK(blobs_->Delete(a->sha256));
  EXPECT_FALSE(blobs_->Has(a->sha256));
  EXPECT_TRUE(blobs_->Has(b->sha256));
  ASSERT_EQ(blobs_->List()->size(), 1u);
  EXPECT_EQ(blobs_->List()->at(0).ref, *b);
  HERD_EXPECT_CODE(blobs_->Delete(a->sha256), kNotFound);
}

TEST_F(BlobStoreTest, ReadConcatenatedStreamsFilesBackToBack) {
  BlobRef a = *blobs_->Put("config");   // 6 bytes
  BlobRef b = *blobs_->Put("");         // 0 bytes
  BlobRef c = *blobs_->Put("weights!"); // 8 bytes
  const std::vector<BlobRef> parts = {a, b, c};
  const std::string all = "configweights!";
  for (int64_t offset = 0; offset <= 14; ++offset) {
    for (size_t max : {size_t{1}, size_t{3}, size_t{100}}) {
      auto got = blobs_->ReadConcatenated(parts, offset, max);
      ASSERT_TRUE(got.ok()) << got.status();
      EXPECT_EQ(*got, all.substr(offset, max)) << offset << " " << max;
    }
  }
  HERD_EXPECT_CODE(blobs_->ReadConcatenated(parts, 15, 1).status(), kOutOfRange);
  HERD_EXPECT_CODE(blobs_->ReadConcatenated(parts, -1, 1).status(), kOutOfRange);
  HERD_EXPECT_CODE(blobs_->ReadConcatenated({{a.sha256, 7}}, 0, 10).status(), kDataLoss);
  HERD_EXPECT_CODE(blobs_->ReadConcatenated({{std::string(64, '0'), 1}}, 0, 1).status(), kNotFound);
}

TEST_F(BlobStoreTest, TouchRenewsMtime) {
  auto ref = blobs_->Put("old");
  std::string path = blobs_->PathOf(ref->sha256);
  struct timespec old_times[2] = {{1000, 0}, {1000, 0}};
  ASSERT_EQ(::utimensat(AT_FDCWD, path.c_str(), old_times, 0), 0);
  EXPECT_LT(blobs_->List()->at(0).mtime, absl::FromUnixSeconds(2000));
  EXPECT_EQ(*blobs_->Touch(ref->sha256), 3);
  EXPECT_GT(blobs_->List()->at(0).mtime, absl::Now() - absl::Minutes(1));
  // Storing the same bytes again renews it too.
  ASSERT_EQ(::utimensat(AT_FDCWD, path.c_str(), old_times, 0), 0);
  ASSERT_TRUE(blobs_->Put("old").ok());
  EXPECT_GT(blobs_->List()->at(0).mtime, absl::Now() - absl::Minutes(1));
}

TEST(BlobStoreOptionsTest, Validate) {
  HERD_EXPECT_CODE(BlobStoreOptions{}.Validate(), kInvalidArgument);
  HERD_EXPECT_CODE(BlobStore::Open(BlobStoreOptions{}).status(), kInvalidArgument);
}

}  // namespace
}  // namespace herd::coordinator::store
