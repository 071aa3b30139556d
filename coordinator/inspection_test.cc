// Dataset inspection: ParseExampleDump on herd-prepare's lines, and DatasetService.InspectDataset
// served in-process over a real Store, with the real herd-prepare and the tiny model fixture
// published as a trainer would (tokens, pieces, masks, formats, options, errors, tenancy).
#include "coordinator/inspection.h"

#include <algorithm>
#include <memory>
#include <numeric>
#include <string>

#include "common/file_util.h"
#include "common/rpc/rpc.h"
#include "coordinator/services/dataset_service.h"
#include "coordinator/store/test_util.h"
#include "coordinator/tiny_model_testing.h"
#include "gtest/gtest.h"

namespace herd::coordinator {
namespace {

using store::testing::kTenantA;
using store::testing::kTenantB;

const std::string kSamples = StrCat(HERD_SOURCE_ROOT, "/datasets/samples");

class InspectDatasetTest : public store::testing::StoreTest {
 protected:
  void SetUp() override {
    StoreTest::SetUp();
    auto a = store_->tokens().CreateUserToken(kTenantA, "test");
    auto b = store_->tokens().CreateUserToken(kTenantB, "test");
    ASSERT_TRUE(a.ok() && b.ok());
    token_a_ = a->token;
    token_b_ = b->token;
    ASSERT_TRUE(test_models::PublishTinyModel(*store_, "tiny-llama").ok());
    uploads_ = std::make_unique<DatasetUploads>(store_.get());
    service_ = std::make_unique<services::DatasetService>(
        uploads_.get(), &store_->tokens(),
        InspectorOptions{.store = store_.get(), .herd_prepare = HERD_PREPARE, .work_dir = dir_.path() + "/inspect"});
    bare_service_ = std::make_unique<services::DatasetService>(uploads_.get(), &store_->tokens());
    auto server = rpc::StartServer({.listen = "127.0.0.1:0"}, {service_.get()});
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(server->server);
    stub_ = herd::v1::DatasetService::NewStub(*rpc::MakeChannel({.target = StrCat("127.0.0.1:", server->port)}));
    auto bare = rpc::StartServer({.listen = "127.0.0.1:0"}, {bare_service_.get()});
    ASSERT_TRUE(bare.ok()) << bare.status();
    bare_server_ = std::move(bare->server);
    bare_stub_ = herd::v1::DatasetService::NewStub(*rpc::MakeChannel({.target = StrCat("127.0.0.1:", bare->port)}));
  }
  void TearDown() override {
    if (server_) server_->Shutdown();
    if (bare_server_) bare_server_->Shutdown();
  }


  // A READY dataset of `tenant` holding the sample `file` (or `content`).
  std::string Dataset(std::string_view tenant, const std::string& file, const std::string& format,
                      bool skip_invalid = false, const std::string& content = "") {
    auto data = content.empty() ? ReadFile(kSamples + "/" + file) : absl::StatusOr<std::string>(content);
    EXPECT_TRUE(data.ok()) << data.status();
    auto blob = store_->blobs().Put(*data);
    EXPECT_TRUE(blob.ok()) << blob.status();
    auto ds = store_->datasets().Create(tenant, {.name = file, .blob = *blob, .record_count = 1, .format = format,
                                                 .skip_invalid = skip_invalid, .validation_json = "{}"});
    EXPECT_TRUE(ds.ok()) << ds.status();
    return ds.ok() ? ds->id : "";
  }

  grpc::Status Inspect(const herd::v1::InspectDatasetRequest& request, herd::v1::InspectDatasetResponse* response,
                       const std::string& token = "", bool bare = false) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(120));
    context.AddMetadata("authorization", "Bearer " + (token.empty() ? token_a_ : token));
    return (bare ? bare_stub_ : stub_)->InspectDataset(&context, request, response);
  }

  static herd::v1::InspectDatasetRequest Request(const std::string& id, int limit = 2,
                                                 const std::string& model = "tiny-llama") {
    herd::v1::InspectDatasetRequest r;
    r.set_dataset_id(id);
    r.set_model(model);
    r.set_limit(limit);
    return r;
  }

  static int Trained(const herd::v1::InspectedExample& ex) {
    return static_cast<int>(std::count(ex.trained().begin(), ex.trained().end(), true));
  }

  std::string token_a_, token_b_;
  std::unique_ptr<DatasetUploads> uploads_;
  std::unique_ptr<services::DatasetService> service_, bare_service_;
  std::unique_ptr<grpc::Server> server_, bare_server_;
  std::unique_ptr<herd::v1::DatasetService::Stub> stub_, bare_stub_;
};

TEST_F(InspectDatasetTest, ChatRecordsAsTheModelSeesThem) {
  herd::v1::InspectDatasetResponse r;
  grpc::Status s = Inspect(Request(Dataset(kTenantA, "support_chat.jsonl", "chat")), &r);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(r.format(), herd::v1::RECORD_FORMAT_CHAT);
  EXPECT_EQ(r.chat_template(), herd::v1::CHAT_TEMPLATE_LLAMA2);
  ASSERT_EQ(r.examples_size(), 2);
  EXPECT_EQ(r.examples(0).line(), 1);
  for (const herd::v1::InspectedExample& ex : r.examples()) {
    EXPECT_TRUE(ex.error().empty()) << ex.error();
    ASSERT_GT(ex.token_ids_size(), 10);
    EXPECT_EQ(ex.pieces_size(), ex.token_ids_size());
    EXPECT_EQ(ex.trained_size(), ex.token_ids_size());
    EXPECT_EQ(ex.length(), ex.token_ids_size());
    EXPECT_EQ(ex.pieces(0), "<s>");
    EXPECT_FALSE(ex.trained(0));
    // The assistant's answer and its </s> are trained; the [INST] part is not.
    EXPECT_GT(Trained(ex), 0);
    EXPECT_LT(Trained(ex), ex.token_ids_size());
    EXPECT_EQ(ex.pieces(ex.pieces_size() - 1), "</s>");
    EXPECT_TRUE(ex.trained(ex.trained_size() - 1));
    const std::string text = std::accumulate(ex.pieces().begin(), ex.pieces().end(), std::string());
    EXPECT_NE(text.find("[INST]"), std::string::npos) << text;
    EXPECT_NE(text.find("[/INST]"), std::string::npos) << text;
  }
}

TEST_F(InspectDatasetTest, PromptCompletionTextAndOptions) {
  const std::string qa = Dataset(kTenantA, "support_qa.jsonl", "prompt_completion");
  herd::v1::InspectDatasetResponse r;
  ASSERT_TRUE(Inspect(Request(qa, 0), &r).ok());
  EXPECT_EQ(r.format(), herd::v1::RECORD_FORMAT_PROMPT_COMPLETION);
  EXPECT_EQ(r.chat_template(), herd::v1::CHAT_TEMPLATE_UNSPECIFIED);
  ASSERT_EQ(r.examples_size(), 3);  // limit 0 means 3
  const herd::v1::InspectedExample& ex = r.examples(0);
  EXPECT_FALSE(ex.trained(1));  // the prompt
  EXPECT_TRUE(ex.trained(ex.trained_size() - 1));
  const int completion_only = Trained(ex);
  const int whole = ex.token_ids_size();

  herd::v1::InspectDatasetRequest all = Request(qa, 1);
  all.set_train_on_inputs(true);
  ASSERT_TRUE(Inspect(all, &r).ok());
  EXPECT_EQ(Trained(r.examples(0)), r.examples(0).token_ids_size() - 1);  // all but the first
  EXPECT_GT(Trained(r.examples(0)), completion_only);

  herd::v1::InspectDatasetRequest cut = Request(qa, 1);
  cut.set_max_seq_len(5);
  ASSERT_TRUE(Inspect(cut, &r).ok());
  EXPECT_EQ(r.examples(0).token_ids_size(), 5);
  EXPECT_EQ(r.examples(0).pieces_size(), 5);
  EXPECT_EQ(r.examples(0).length(), whole);

  // Read as another format, the records are invalid: herd-prepare refuses them naming the line.
  herd::v1::InspectDatasetRequest as_text = Request(qa, 1);
  as_text.set_format(herd::v1::RECORD_FORMAT_TEXT);
  grpc::Status s = Inspect(as_text, &r);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << s.error_message();
  EXPECT_NE(s.error_message().find("line 1"), std::string::npos) << s.error_message();
}

TEST_F(InspectDatasetTest, SkipInvalidDatasetsSkipTheirInvalidLines) {
  const std::string id =
      Dataset(kTenantA, "mixed.jsonl", "text", /*skip_invalid=*/true,
              "{\"text\": \"Brightwell Ledger sends invoices.\"}\n{\"text\": 3}\n{\"text\": \"Second.\"}\n");
  herd::v1::InspectDatasetResponse r;
  grpc::Status s = Inspect(Request(id, 5), &r);
  ASSERT_TRUE(s.ok()) << s.error_message();
  ASSERT_EQ(r.examples_size(), 2);
  EXPECT_EQ(r.examples(0).line(), 1);
  EXPECT_EQ(r.examples(1).line(), 3);
  // Text trains everything after the first token, EOS included.
  EXPECT_EQ(Trained(r.examples(0)), r.examples(0).token_ids_size() - 1);
}

TEST_F(InspectDatasetTest, Errors) {
  const std::string chat = Dataset(kTenantA, "support_chat.jsonl", "chat");
  herd::v1::InspectDatasetResponse r;
  struct Case {
    herd::v1::InspectDatasetRequest request;
    grpc::StatusCode code;
    std::string token;
  };
  herd::v1::InspectDatasetRequest negative = Request(chat);
  negative.set_limit(-1);
  herd::v1::InspectDatasetRequest bad_template = Request(chat);
  bad_template.set_chat_template(static_cast<herd::v1::ChatTemplate>(9));
  const Case cases[] = {
      {Request(""), grpc::StatusCode::INVALID_ARGUMENT, ""},
      {Request(chat, 2, ""), grpc::StatusCode::INVALID_ARGUMENT, ""},
      {negative, grpc::StatusCode::INVALID_ARGUMENT, ""},
      {bad_template, grpc::StatusCode::INVALID_ARGUMENT, ""},
      {Request("ds_" + std::string(26, 'z')), grpc::StatusCode::NOT_FOUND, ""},
      {Request(chat, 2, "no-such-model"), grpc::StatusCode::NOT_FOUND, ""},
      {Request(chat), grpc::StatusCode::NOT_FOUND, token_b_},  // another tenant's dataset
  };
  for (const Case& c : cases) {
    grpc::Status s = Inspect(c.request, &r, c.token);
    EXPECT_EQ(s.error_code(), c.code) << c.request.ShortDebugString() << ": " << s.error_message();
  }

  // A model whose template Herd does not render: chat records need chat_template set.
  ASSERT_TRUE(
      test_models::PublishTinyModel(*store_, "odd-model", "{% for m in messages %}{{ m.content }}{% endfor %}").ok());
  grpc::Status s = Inspect(Request(chat, 1, "odd-model"), &r);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << s.error_message();
  EXPECT_NE(s.error_message().find("chat_template"), std::string::npos) << s.error_message();
  herd::v1::InspectDatasetRequest explicit_template = Request(chat, 1, "odd-model");
  explicit_template.set_chat_template(herd::v1::CHAT_TEMPLATE_LLAMA2);
  s = Inspect(explicit_template, &r);
  EXPECT_TRUE(s.ok()) << s.error_message();
  s = Inspect(Request(Dataset(kTenantA, "support_qa.jsonl", "prompt_completion"), 1, "odd-model"), &r);
  EXPECT_TRUE(s.ok()) << s.error_message();

  // A service built without inspection options says so.
  s = Inspect(Request(chat), &r, "", /*bare=*/true);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << s.error_message();
}

}  // namespace
}  // namespace herd::coordinator
