// Tests of resumable uploads: sessions, chunks and offsets, sealing, answers, expiry, recovery.
#include "coordinator/store/upload_store.h"

#include <sys/stat.h>

#include <filesystem>
#include <fstream>

#include "common/sha256.h"
#include "common/status.h"
#include "coordinator/store/test_util.h"
#include "gtest/gtest.h"

namespace herd::coordinator::store {
namespace {

using testing::kTenantA;
using testing::kTenantB;
using testing::MessageHas;

constexpr char kData[] = "{\"text\": \"one\"}\n{\"text\": \"two\"}\n";

class UploadStoreTest : public testing::StoreTest {
 protected:
  UploadStore& uploads() { return store_->uploads(); }
  static UploadParams Params(std::string data = kData) {
    return UploadParams{"data.jsonl", "text", false, static_cast<int64_t>(data.size()),
                        Sha256Hex(data)};
  }
  std::string PartPath(const std::string& id) {
    return herd::StrCat(store_->data_dir(), "/uploads/", id, ".part");
  }
  int64_t FileSize(const std::string& path) {
    struct stat st;
    return ::stat(path.c_str(), &st) == 0 ? st.st_size : -1;
  }
};

TEST_F(UploadStoreTest, StartIsIdempotentPerParams) {
  auto a = uploads().Start(kTenantA, Params());
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->id.substr(0, 3), "up_");
  EXPECT_EQ(a->committed_offset, 0);
  EXPECT_EQ(a->state, UploadState::kOpen);
  EXPECT_EQ(a->expire_time, clock_.Now() + absl::Hours(24));
  EXPECT_EQ(uploads().Start(kTenantA, Params())->id, a->id) << "resumes the open session";
  UploadParams other = Params();
  other.skip_invalid = true;
  EXPECT_NE(uploads().Start(kTenantA, other)->id, a->id);
  EXPECT_NE(uploads().Start(kTenantB, Params())->id, a->id) << "per tenant";
}

TEST_F(UploadStoreTest, StartErrors) {
  struct Case {
    std::string what;
    std::function<void(UploadParams&)> mutate;
    absl::StatusCode code;
  };
  for (const Case& c : std::vector<Case>{
           {"bad name", [](UploadParams& p) { p.name = "a/b"; }, absl::StatusCode::kInvalidArgument},
           {"bad format", [](UploadParams& p) { p.format = "xml"; }, absl::StatusCode::kInvalidArgument},
           {"empty file", [](UploadParams& p) { p.total_size_bytes = 0; }, absl::StatusCode::kInvalidArgument},
           {"bad sha", [](UploadParams& p) { p.sha256 = "ABC"; }, absl::StatusCode::kInvalidArgument},
           {"too big", [](UploadParams& p) { p.total_size_bytes = (int64_t{16} << 30) + 1; },
            absl::StatusCode::kResourceExhausted},
       }) {
    UploadParams p = Params();
    c.mutate(p);
    EXPECT_EQ(uploads().Start(kTenantA, p).status().code(), c.code) << c.what;
  }
  UploadParams detect = Params();
  detect.format = "";
  EXPECT_TRUE(uploads().Start(kTenantA, detect).ok()) << "empty format = detect";
}

TEST_F(UploadStoreTest, OpenUploadLimit) {
  StoreOptions options;
  options.max_open_uploads_per_tenant = 2;
  Reopen(options);
  ASSERT_TRUE(uploads().Start(kTenantA, Params("a")).ok());
  ASSERT_TRUE(uploads().Start(kTenantA, Params("b")).ok());
  HERD_EXPECT_CODE(uploads().Start(kTenantA, Params("c")).status(), kResourceExhausted);
  EXPECT_TRUE(uploads().Start(kTenantA, Params("a")).ok()) << "resuming is not a new session";
  EXPECT_TRUE(uploads().Start(kTenantB, Params("c")).ok());
}

TEST_F(UploadStoreTest, ChunksMustBeContiguous) {
  auto up = uploads().Start(kTenantA, Params());
  auto writer = uploads().OpenWriter(kTenantA, up->id);
  ASSERT_TRUE(writer.ok()) << writer.status();
  UploadWriter& w = **writer;
  HERD_ASSERT_OK(w.Append(0, "{\"text\": "));
  auto gap = w.Append(20, "x");
  HERD_EXPECT_CODE(gap, kAborted);
  EXPECT_TRUE(MessageHas(gap, "committed_offset 0")) << gap;
  HERD_EXPECT_CODE(w.Append(0, "again"), kAborted);
  HERD_EXPECT_CODE(w.Append(9, ""), kInvalidArgument);
  HERD_EXPECT_CODE(w.Append(9, std::string(100, 'x')), kOutOfRange);
  HERD_ASSERT_OK(w.Commit());
  EXPECT_EQ(w.committed_offset(), 9);
  EXPECT_EQ(uploads().Get(kTenantA, up->id)->committed_offset, 9);
  auto late = w.Append(3, "x");
  EXPECT_TRUE(MessageHas(late, "committed_offset 9")) << late;
}

TEST_F(UploadStoreTest, OneWriterAtATime) {
  auto up = uploads().Start(kTenantA, Params());
  auto first = uploads().OpenWriter(kTenantA, up->id);
  ASSERT_TRUE(first.ok());
  HERD_EXPECT_CODE(uploads().OpenWriter(kTenantA, up->id).status(), kAborted);
  first->reset();
  EXPECT_TRUE(uploads().OpenWriter(kTenantA, up->id).ok()) << "released on destruction";
  HERD_EXPECT_CODE(uploads().OpenWriter(kTenantB, up->id).status(), kNotFound);
  HERD_EXPECT_CODE(uploads().OpenWriter(kTenantA, "up_missing").status(), kNotFound);
}

TEST_F(UploadStoreTest, ResumeAfterABrokenStream) {
  const std::string data = kData;
  auto up = uploads().Start(kTenantA, Params());
  {
    auto w = uploads().OpenWriter(kTenantA, up->id);
    HERD_ASSERT_OK((*w)->Append(0, data.substr(0, 10)));
    HERD_ASSERT_OK((*w)->Commit());
    HERD_ASSERT_OK((*w)->Append(10, data.substr(10, 5)));  // never committed: dropped
  }
  auto again = uploads().Start(kTenantA, Params());
  EXPECT_EQ(again->id, up->id);
  EXPECT_EQ(again->committed_offset, 10);
  auto w = uploads().OpenWriter(kTenantA, up->id);
  EXPECT_EQ((*w)->written_offset(), 10);
  EXPECT_EQ(FileSize(PartPath(up->id)), 10) << "uncommitted bytes are cut off";
  HERD_ASSERT_OK((*w)->Append(10, data.substr(10)));
  auto blob = (*w)->Seal();
  ASSERT_TRUE(blob.ok()) << blob.status();
  EXPECT_EQ(blob->sha256, Sha256Hex(data));
  EXPECT_EQ(*store_->blobs().Read(blob->sha256), data);
  EXPECT_EQ(FileSize(PartPath(up->id)), -1) << "moved, not copied";
  auto sealed = uploads().Get(kTenantA, up->id);
  EXPECT_EQ(sealed->state, UploadState::kSealed);
  EXPECT_EQ(sealed->committed_offset, static_cast<int64_t>(data.size()));
  HERD_EXPECT_CODE((*w)->Append(0, "x"), kFailedPrecondition);
  w->reset();
  HERD_EXPECT_CODE(uploads().OpenWriter(kTenantA, up->id).status(), kFailedPrecondition)
      << "a sealed upload takes no more bytes";
  EXPECT_EQ(uploads().Start(kTenantA, Params())->id, up->id) << "sealed still counts as open";
}

TEST_F(UploadStoreTest, SealChecksSizeAndDigest) {
  const std::string data = kData;
  auto up = uploads().Start(kTenantA, Params());
  auto w = uploads().OpenWriter(kTenantA, up->id);
  HERD_ASSERT_OK((*w)->Append(0, data.substr(0, 5)));
  auto early = (*w)->Seal();
  HERD_EXPECT_CODE(early.status(), kFailedPrecondition);
  EXPECT_TRUE(MessageHas(early.status(), "5 of")) << early.status();
  EXPECT_EQ(uploads().Get(kTenantA, up->id)->committed_offset, 5) << "still open, bytes kept";

  // Same size, other bytes: DATA_LOSS, and the session is gone.
  std::string wrong = data;
  wrong[7] = 'X';
  HERD_ASSERT_OK((*w)->Append(5, wrong.substr(5)));
  auto bad = (*w)->Seal();
  HERD_EXPECT_CODE(bad.status(), kDataLoss);
  HERD_EXPECT_CODE(uploads().Get(kTenantA, up->id).status(), kNotFound);
  EXPECT_EQ(FileSize(PartPath(up->id)), -1);
  EXPECT_FALSE(store_->blobs().Has(Sha256Hex(wrong)));
}

TEST_F(UploadStoreTest, FinishWithADatasetInOneTransaction) {
  const std::string data = kData;
  auto up = uploads().Start(kTenantA, Params());
  DatasetRecord result;
  HERD_EXPECT_CODE(uploads().Finish(kTenantA, up->id, result).status(), kFailedPrecondition)
      << "not sealed";
  auto w = uploads().OpenWriter(kTenantA, up->id);
  HERD_ASSERT_OK((*w)->Append(0, data));
  auto blob = (*w)->Seal();
  ASSERT_TRUE(blob.ok());
  w->reset();

  UploadRecord finished;
  HERD_ASSERT_OK(store_->db().Write([&](Tx&) -> absl::Status {
    NewDataset d{"data.jsonl", *blob, 2, "text", false, "{}"};
    HERD_ASSIGN_OR_RETURN(DatasetRecord ds, store_->datasets().Create(kTenantA, d));
    HERD_ASSIGN_OR_RETURN(finished, uploads().Finish(kTenantA, up->id, ds));
    return absl::OkStatus();
  }));
  EXPECT_EQ(finished.state, UploadState::kFinished);
  ASSERT_TRUE(finished.result.has_value());
  EXPECT_EQ(finished.result->state, DatasetState::kReady);
  EXPECT_TRUE(store_->datasets().Get(kTenantA, finished.result->id).ok());
  auto queried = uploads().Get(kTenantA, up->id);
  EXPECT_EQ(queried->result->id, finished.result->id) << "QueryUpload returns the answer";
  DatasetRecord other;
  other.state = DatasetState::kRejected;
  EXPECT_EQ(uploads().Finish(kTenantA, up->id, other)->result->id, finished.result->id)
      << "the first answer stays";
  EXPECT_NE(uploads().Start(kTenantA, Params())->id, up->id) << "a finished upload is not resumed";
}

TEST_F(UploadStoreTest, AFailedFinishLeavesNoDataset) {
  const std::string data = kData;
  auto up = uploads().Start(kTenantA, Params());
  auto w = uploads().OpenWriter(kTenantA, up->id);
  HERD_ASSERT_OK((*w)->Append(0, data));
  auto blob = (*w)->Seal();
  std::string dataset_id;
  absl::Status status = store_->db().Write([&](Tx&) -> absl::Status {
    NewDataset d{"data.jsonl", *blob, 2, "text", false, "{}"};
    HERD_ASSIGN_OR_RETURN(DatasetRecord ds, store_->datasets().Create(kTenantA, d));
    dataset_id = ds.id;
    return uploads().Finish(kTenantA, "up_wrong", ds).status();
  });
  HERD_EXPECT_CODE(status, kNotFound);
  HERD_EXPECT_CODE(store_->datasets().Get(kTenantA, dataset_id).status(), kNotFound)
      << "rolled back with the failed Finish";
}

TEST_F(UploadStoreTest, SessionsExpire) {
  auto idle = uploads().Start(kTenantA, Params("idle"));
  auto busy = uploads().Start(kTenantA, Params("busy"));
  auto w = uploads().OpenWriter(kTenantA, idle->id);
  HERD_ASSERT_OK((*w)->Append(0, "i"));
  HERD_ASSERT_OK((*w)->Commit());
  w->reset();
  auto held = uploads().OpenWriter(kTenantA, busy->id);
  clock_.Advance(absl::Hours(25));
  HERD_EXPECT_CODE(uploads().Get(kTenantA, idle->id).status(), kNotFound);
  EXPECT_EQ(*uploads().DeleteExpired(), 1) << "the one with a live writer is spared";
  EXPECT_EQ(FileSize(PartPath(idle->id)), -1);
  held->reset();
  EXPECT_EQ(*uploads().DeleteExpired(), 1);
  EXPECT_EQ(*uploads().DeleteExpired(), 0);
}

TEST_F(UploadStoreTest, ReopenReconcilesPartFiles) {
  const std::string data = kData;
  auto up = uploads().Start(kTenantA, Params());
  {
    auto w = uploads().OpenWriter(kTenantA, up->id);
    HERD_ASSERT_OK((*w)->Append(0, data.substr(0, 8)));
    HERD_ASSERT_OK((*w)->Commit());
  }
  // A crash after bytes reached the file but before the commit: the file is longer.
  std::ofstream(PartPath(up->id), std::ios::app) << "garbage beyond the committed offset";
  std::ofstream(herd::StrCat(store_->data_dir(), "/uploads/up_orphan.part")) << "no row";
  Reopen();
  EXPECT_EQ(FileSize(PartPath(up->id)), 8);
  EXPECT_EQ(FileSize(herd::StrCat(store_->data_dir(), "/uploads/up_orphan.part")), -1);
  auto w = uploads().OpenWriter(kTenantA, up->id);
  HERD_ASSERT_OK((*w)->Append(8, data.substr(8)));
  ASSERT_TRUE((*w)->Seal().ok());
}

TEST_F(UploadStoreTest, ReopenAfterACrashInsideSeal) {
  // The part file was moved into the blob store but the row still says OPEN.
  const std::string data = kData;
  auto up = uploads().Start(kTenantA, Params());
  {
    auto w = uploads().OpenWriter(kTenantA, up->id);
    HERD_ASSERT_OK((*w)->Append(0, data));
    HERD_ASSERT_OK((*w)->Commit());
  }
  ASSERT_TRUE(store_->blobs().Adopt(PartPath(up->id), Sha256Hex(data), data.size()).ok());
  Reopen();
  auto u = uploads().Get(kTenantA, up->id);
  EXPECT_EQ(u->state, UploadState::kSealed);
  EXPECT_EQ(u->committed_offset, static_cast<int64_t>(data.size()));
}

TEST_F(UploadStoreTest, ReopenAfterLosingCommittedBytes) {
  auto up = uploads().Start(kTenantA, Params());
  {
    auto w = uploads().OpenWriter(kTenantA, up->id);
    HERD_ASSERT_OK((*w)->Append(0, "0123456789"));
    HERD_ASSERT_OK((*w)->Commit());
  }
  std::filesystem::resize_file(PartPath(up->id), 4);  // the disk lost some
  Reopen();
  EXPECT_EQ(uploads().Get(kTenantA, up->id)->committed_offset, 4) << "resume from what is there";
}

TEST(UploadStoreOptionsTest, Validate) {
  UploadStoreOptions o;
  HERD_EXPECT_CODE(o.Validate(), kInvalidArgument) << "dir";
  o.dir = "/tmp/x";
  HERD_EXPECT_OK(o.Validate());
  for (auto mutate : std::vector<std::function<void(UploadStoreOptions&)>>{
           [](UploadStoreOptions& o) { o.max_upload_bytes = 0; },
           [](UploadStoreOptions& o) { o.max_open_uploads_per_tenant = 0; },
           [](UploadStoreOptions& o) { o.ttl = absl::ZeroDuration(); },
           [](UploadStoreOptions& o) { o.clock = nullptr; }}) {
    UploadStoreOptions bad = o;
    mutate(bad);
    HERD_EXPECT_CODE(bad.Validate(), kInvalidArgument);
  }
}

}  // namespace
}  // namespace herd::coordinator::store
