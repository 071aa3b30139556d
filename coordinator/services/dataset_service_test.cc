// DatasetService over a real Store, served in-process on 127.0.0.1 port 0: auth, resumable
// uploads (broken streams, wrong offsets, answers recovered), chunk limits, rejection and
// tenancy. The CLI path end to end is tests/python/datasets_e2e.py.
#include "coordinator/services/dataset_service.h"

#include <memory>
#include <string>

#include "common/rpc/rpc.h"
#include "common/sha256.h"
#include "coordinator/services/auth.h"
#include "coordinator/services/service_test_util.h"
#include "coordinator/store/test_util.h"
#include "gtest/gtest.h"

namespace herd::coordinator::services {
namespace {

using store::testing::kTenantA;
using store::testing::kTenantB;

TEST(ParseBearerTest, Forms) {
  struct Case {
    std::string header;
    bool ok;
    std::string token;
  } cases[] = {
      {"Bearer abc", true, "abc"},      {"bearer abc", true, "abc"},
      {"BEARER  abc ", true, "abc"},    {"Bearer ", false, ""},
      {"Basic abc", false, ""},         {"abc", false, ""},
      {"", false, ""},
  };
  for (const Case& c : cases) {
    auto token = ParseBearer(c.header);
    EXPECT_EQ(token.ok(), c.ok) << c.header;
    if (c.ok && token.ok()) {
      EXPECT_EQ(*token, c.token) << c.header;
    }
    if (!c.ok) {
      EXPECT_EQ(token.status().code(), absl::StatusCode::kUnauthenticated) << c.header;
    }
  }
}

class DatasetServiceTest : public testing::ServiceTest {
 protected:
  void SetUp() override {
    ServiceTest::SetUp();
    uploads_ = std::make_unique<DatasetUploads>(store_.get());
    service_ = std::make_unique<DatasetService>(uploads_.get(), &store_->tokens());
    auto channel = Serve({service_.get()});
    ASSERT_TRUE(channel);
    stub_ = herd::v1::DatasetService::NewStub(channel);
  }
  grpc::Status Start(const std::string& token, const std::string& content, bool skip_invalid,
                     herd::v1::Upload* upload) {
    grpc::ClientContext context;
    Prepare(&context, token);
    herd::v1::StartUploadRequest request;
    request.set_name("data.jsonl");
    request.set_skip_invalid(skip_invalid);
    request.set_total_size_bytes(static_cast<int64_t>(content.size()));
    request.set_sha256(Sha256Hex(content));
    return stub_->StartUpload(&context, request, upload);
  }

  // One stream: the header, then `chunks` as (offset, bytes), then half-close.
  grpc::Status Stream(const std::string& token, const std::string& upload_id,
                      const std::vector<std::pair<int64_t, std::string>>& chunks,
                      herd::v1::Dataset* answer) {
    grpc::ClientContext context;
    Prepare(&context, token);
    auto writer = stub_->UploadDataset(&context, answer);
    herd::v1::UploadDatasetRequest message;
    message.mutable_header()->set_upload_id(upload_id);
    writer->Write(message);
    for (const auto& [offset, data] : chunks) {
      message.mutable_chunk()->set_offset(offset);
      message.mutable_chunk()->set_data(data);
      if (!writer->Write(message)) break;
    }
    writer->WritesDone();
    return writer->Finish();
  }

  grpc::Status Query(const std::string& token, const std::string& id, herd::v1::Upload* upload) {
    grpc::ClientContext context;
    Prepare(&context, token);
    herd::v1::QueryUploadRequest request;
    request.set_upload_id(id);
    return stub_->QueryUpload(&context, request, upload);
  }

  grpc::Status List(const std::string& token, herd::v1::ListDatasetsResponse* page) {
    grpc::ClientContext context;
    Prepare(&context, token);
    return stub_->ListDatasets(&context, herd::v1::ListDatasetsRequest(), page);
  }

  static constexpr char kGood[] =
      "{\"prompt\": \"a\", \"completion\": \"b\"}\n{\"prompt\": \"c\", \"completion\": \"d\"}\n";
  static constexpr char kBad[] =
      "{\"prompt\": \"a\", \"completion\": \"b\"}\nnot json\n{\"prompt\": \"c\"}\n";

  std::unique_ptr<DatasetUploads> uploads_;
  std::unique_ptr<DatasetService> service_;
  std::unique_ptr<herd::v1::DatasetService::Stub> stub_;
};

TEST_F(DatasetServiceTest, TokensAreChecked) {
  herd::v1::Upload upload;
  EXPECT_EQ(Start("", kGood, false, &upload).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(Start("herd_u_nope", kGood, false, &upload).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(Start(cluster_token_, kGood, false, &upload).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
  herd::v1::Dataset answer;
  EXPECT_EQ(Stream("", "up_x", {}, &answer).error_code(), grpc::StatusCode::UNAUTHENTICATED);
}

TEST_F(DatasetServiceTest, BrokenUploadResumesFromCommittedOffset) {
  const std::string content = kGood;
  const int64_t half = static_cast<int64_t>(content.size()) / 2;
  herd::v1::Upload upload;
  ASSERT_TRUE(Start(token_a_, content, false, &upload).ok());
  EXPECT_EQ(upload.committed_offset(), 0);

  // The client stops half way: the bytes that came are kept; the session stays open.
  herd::v1::Dataset answer;
  grpc::Status s = Stream(token_a_, upload.upload_id(), {{0, content.substr(0, half)}}, &answer);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << s.error_message();
  herd::v1::Upload now;
  ASSERT_TRUE(Query(token_a_, upload.upload_id(), &now).ok());
  EXPECT_EQ(now.committed_offset(), half);
  EXPECT_FALSE(now.has_result());
  // A client that forgot everything gets the same session back.
  herd::v1::Upload again;
  ASSERT_TRUE(Start(token_a_, content, false, &again).ok());
  EXPECT_EQ(again.upload_id(), upload.upload_id());
  EXPECT_EQ(again.committed_offset(), half);

  // Restarting at 0 is ABORTED; resuming at the committed offset finishes.
  s = Stream(token_a_, upload.upload_id(), {{0, content}}, &answer);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::ABORTED) << s.error_message();
  s = Stream(token_a_, upload.upload_id(), {{half, content.substr(half)}}, &answer);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(answer.state(), herd::v1::DATASET_STATE_READY);
  EXPECT_EQ(answer.record_count(), 2);
  EXPECT_EQ(answer.format(), herd::v1::RECORD_FORMAT_PROMPT_COMPLETION);
  EXPECT_EQ(answer.sha256(), Sha256Hex(content));

  // The answer can be recovered: a header alone, or QueryUpload.
  herd::v1::Dataset recovered;
  ASSERT_TRUE(Stream(token_a_, upload.upload_id(), {}, &recovered).ok());
  EXPECT_EQ(recovered.id(), answer.id());
  ASSERT_TRUE(Query(token_a_, upload.upload_id(), &now).ok());
  EXPECT_EQ(now.result().id(), answer.id());
  // A finished upload takes no more bytes; another tenant cannot see it.
  s = Stream(token_a_, upload.upload_id(), {{half, content.substr(half)}}, &recovered);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << s.error_message();
  EXPECT_EQ(Query(token_b_, upload.upload_id(), &now).error_code(), grpc::StatusCode::NOT_FOUND);

  herd::v1::ListDatasetsResponse page;
  ASSERT_TRUE(List(token_a_, &page).ok());
  ASSERT_EQ(page.datasets_size(), 1);
  ASSERT_TRUE(List(token_b_, &page).ok());
  EXPECT_EQ(page.datasets_size(), 0);
}

TEST_F(DatasetServiceTest, ChunksAreBounded) {
  const std::string big(DatasetUploads::kMaxChunkBytes + 1, 'x');
  herd::v1::Upload upload;
  ASSERT_TRUE(Start(token_a_, big, false, &upload).ok());
  herd::v1::Dataset answer;
  EXPECT_EQ(Stream(token_a_, upload.upload_id(), {{0, big}}, &answer).error_code(),
            grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_EQ(Stream(token_a_, upload.upload_id(), {{0, ""}}, &answer).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(DatasetServiceTest, InvalidFileIsRejectedWholeUnlessSkipInvalid) {
  herd::v1::Upload upload;
  ASSERT_TRUE(Start(token_a_, kBad, false, &upload).ok());
  herd::v1::Dataset answer;
  ASSERT_TRUE(Stream(token_a_, upload.upload_id(), {{0, kBad}}, &answer).ok());
  EXPECT_EQ(answer.state(), herd::v1::DATASET_STATE_REJECTED);
  EXPECT_TRUE(answer.id().empty());
  ASSERT_EQ(answer.validation().problems_size(), 2);
  EXPECT_EQ(answer.validation().problems(0).line(), 2);
  EXPECT_EQ(answer.validation().problems(1).line(), 3);
  EXPECT_EQ(answer.validation().problems(1).field(), "completion");
  herd::v1::ListDatasetsResponse page;
  ASSERT_TRUE(List(token_a_, &page).ok());
  EXPECT_EQ(page.datasets_size(), 0);

  ASSERT_TRUE(Start(token_a_, kBad, true, &upload).ok());
  ASSERT_TRUE(Stream(token_a_, upload.upload_id(), {{0, kBad}}, &answer).ok());
  EXPECT_EQ(answer.state(), herd::v1::DATASET_STATE_READY);
  EXPECT_EQ(answer.record_count(), 1);
  EXPECT_EQ(answer.validation().records_invalid(), 2);
  EXPECT_EQ(answer.validation().records_total(), 3);
  EXPECT_TRUE(answer.skip_invalid());
}

}  // namespace
}  // namespace herd::coordinator::services
