// The CLI's dataset commands against an in-process DatasetService: an upload left half done
// (a CLI that crashed) is resumed from the committed offset, and failures map to the exit codes
// of DESIGN.md §11.
#include "cli/datasets_commands.h"

#include <atomic>
#include <fstream>
#include <memory>
#include <string>

#include "cli/exit_codes.h"
#include "common/rpc/rpc.h"
#include "common/sha256.h"
#include "coordinator/services/dataset_service.h"
#include "coordinator/store/test_util.h"
#include "gtest/gtest.h"

namespace herd::cli {
namespace {

using coordinator::store::testing::kTenantA;

// DatasetService whose first UploadDataset stream breaks after one chunk (committed), the way
// a dropped connection leaves it; everything else goes to the real service.
class BreakingDatasetService final : public herd::v1::DatasetService::Service {
 public:
  BreakingDatasetService(coordinator::services::DatasetService* real,
                         coordinator::DatasetUploads* uploads)
      : real_(real), uploads_(uploads) {}

  grpc::Status StartUpload(grpc::ServerContext* c, const herd::v1::StartUploadRequest* r,
                           herd::v1::Upload* a) override {
    return real_->StartUpload(c, r, a);
  }
  grpc::Status QueryUpload(grpc::ServerContext* c, const herd::v1::QueryUploadRequest* r,
                           herd::v1::Upload* a) override {
    return real_->QueryUpload(c, r, a);
  }
  grpc::Status UploadDataset(grpc::ServerContext* c,
                             grpc::ServerReader<herd::v1::UploadDatasetRequest>* reader,
                             herd::v1::Dataset* a) override {
    if (broken_++ > 0) return real_->UploadDataset(c, reader, a);
    herd::v1::UploadDatasetRequest header, chunk;
    if (!reader->Read(&header) || !reader->Read(&chunk)) return {grpc::StatusCode::INTERNAL, "short"};
    auto writer = uploads_->OpenWriter(kTenantA, header.header().upload_id());
    if (!writer.ok()) return {grpc::StatusCode::INTERNAL, std::string(writer.status().message())};
    if (!(*writer)->Append(chunk.chunk().offset(), chunk.chunk().data()).ok() ||
        !(*writer)->Commit().ok()) {
      return {grpc::StatusCode::INTERNAL, "append"};
    }
    return {grpc::StatusCode::UNAVAILABLE, "connection reset (test)"};
  }

  std::atomic<int> broken_ = 0;

 private:
  coordinator::services::DatasetService* const real_;
  coordinator::DatasetUploads* const uploads_;
};

class DatasetsCommandsTest : public coordinator::store::testing::StoreTest {
 protected:
  void SetUp() override {
    StoreTest::SetUp();
    auto token = store_->tokens().CreateUserToken(kTenantA, "test");
    ASSERT_TRUE(token.ok());
    uploads_ = std::make_unique<coordinator::DatasetUploads>(store_.get());
    service_ = std::make_unique<coordinator::services::DatasetService>(uploads_.get(),
                                                                       &store_->tokens());
    auto server = rpc::StartServer({.listen = "127.0.0.1:0"}, {service_.get()});
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(server->server);
    config_.endpoint = StrCat("127.0.0.1:", server->port);
    breaking_ = std::make_unique<BreakingDatasetService>(service_.get(), uploads_.get());
    auto breaking = rpc::StartServer({.listen = "127.0.0.1:0"}, {breaking_.get()});
    ASSERT_TRUE(breaking.ok()) << breaking.status();
    breaking_server_ = std::move(breaking->server);
    breaking_port_ = breaking->port;
    config_.token = token->token;
    config_.source = "test";
    breaking_config_ = config_;
    breaking_config_.endpoint = StrCat("127.0.0.1:", breaking_port_);
  }
  void TearDown() override {
    if (server_) server_->Shutdown();
    if (breaking_server_) breaking_server_->Shutdown();
  }

  std::string WriteFile(const std::string& name, const std::string& content) {
    std::string path = dir_.path() + "/" + name;
    std::ofstream(path, std::ios::binary) << content;
    return path;
  }

  ClientConfig config_, breaking_config_;
  std::unique_ptr<BreakingDatasetService> breaking_;
  std::unique_ptr<grpc::Server> breaking_server_;
  int breaking_port_ = 0;
  std::unique_ptr<coordinator::DatasetUploads> uploads_;
  std::unique_ptr<coordinator::services::DatasetService> service_;
  std::unique_ptr<grpc::Server> server_;
};

TEST_F(DatasetsCommandsTest, ResumesAnUploadLeftHalfDone) {
  std::string content;
  for (int i = 0; i < 3000; ++i) content += StrCat("{\"text\": \"record ", i, "\"}\n");
  const std::string path = WriteFile("big.jsonl", content);
  const int64_t half = static_cast<int64_t>(content.size()) / 2;
  // What a CLI that died half way leaves behind: an open session with `half` bytes committed.
  auto upload = uploads_->Start(kTenantA, {.name = "big.jsonl",
                                           .total_size_bytes = static_cast<int64_t>(content.size()),
                                           .sha256 = Sha256Hex(content)});
  ASSERT_TRUE(upload.ok()) << upload.status();
  {
    auto writer = uploads_->OpenWriter(kTenantA, upload->id);
    ASSERT_TRUE(writer.ok());
    ASSERT_TRUE((*writer)->Append(0, std::string_view(content).substr(0, half)).ok());
    ASSERT_TRUE((*writer)->Commit().ok());
  }

  ::testing::internal::CaptureStdout();
  ::testing::internal::CaptureStderr();
  int rc = UploadDataset(config_, {.path = path}, /*json=*/false);
  std::string out = ::testing::internal::GetCapturedStdout();
  std::string err = ::testing::internal::GetCapturedStderr();
  ASSERT_EQ(rc, kOk) << err;
  EXPECT_NE(err.find(StrCat("resuming ", path, " at byte ", half)), std::string::npos) << err;
  ASSERT_EQ(out.substr(0, 3), "ds_") << out;
  auto dataset = uploads_->Get(kTenantA, out.substr(0, out.size() - 1));
  ASSERT_TRUE(dataset.ok()) << dataset.status();
  EXPECT_EQ(dataset->record_count, 3000);
  EXPECT_EQ(dataset->sha256, Sha256Hex(content));
}

TEST_F(DatasetsCommandsTest, ResumesAfterTheConnectionBreaks) {
  std::string content;
  for (int i = 0; content.size() < (size_t{5} << 19); ++i) {
    content += StrCat("{\"text\": \"record number ", i, "\"}\n");
  }
  const std::string path = WriteFile("big.jsonl", content);
  ::testing::internal::CaptureStdout();
  ::testing::internal::CaptureStderr();
  int rc = UploadDataset(breaking_config_, {.path = path}, /*json=*/false);
  std::string out = ::testing::internal::GetCapturedStdout();
  std::string err = ::testing::internal::GetCapturedStderr();
  ASSERT_EQ(rc, kOk) << err;
  EXPECT_EQ(breaking_->broken_, 2);
  // The first stream committed exactly one 1 MiB chunk before it broke.
  EXPECT_NE(err.find(StrCat("resuming ", path, " at byte ", 1 << 20)), std::string::npos) << err;
  auto dataset = uploads_->Get(kTenantA, out.substr(0, out.size() - 1));
  ASSERT_TRUE(dataset.ok()) << out << err;
  EXPECT_EQ(dataset->sha256, Sha256Hex(content));
  EXPECT_EQ(dataset->size_bytes, static_cast<int64_t>(content.size()));
}

TEST_F(DatasetsCommandsTest, ExitCodes) {
  const std::string bad = WriteFile("bad.jsonl", "{\"text\": \"a\"}\n{\"prompt\": \"b\"}\n");
  ::testing::internal::CaptureStderr();
  EXPECT_EQ(UploadDataset(config_, {.path = bad}, false), kInvalid);
  std::string err = ::testing::internal::GetCapturedStderr();
  EXPECT_NE(err.find("line 2"), std::string::npos) << err;

  ClientConfig wrong = config_;
  wrong.token = "herd_u_wrong";
  ::testing::internal::CaptureStderr();
  EXPECT_EQ(UploadDataset(wrong, {.path = bad}, false), kUnauthenticated);
  EXPECT_EQ(ListDatasets(wrong, false), kUnauthenticated);
  EXPECT_EQ(GetDataset(config_, "ds_missing", false), kNotFound);
  EXPECT_EQ(UploadDataset(config_, {.path = dir_.path() + "/absent.jsonl"}, false), kNotFound);
  ClientConfig down = config_;
  down.endpoint = "127.0.0.1:1";
  EXPECT_EQ(UploadDataset(down, {.path = bad, .max_attempts = 1}, false), kUnavailable);
  EXPECT_EQ(ListDatasets(down, false), kUnavailable);
  ::testing::internal::GetCapturedStderr();
}

}  // namespace
}  // namespace herd::cli
