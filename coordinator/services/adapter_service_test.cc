// AdapterService over a real Store, served in-process on 127.0.0.1 port 0: listing and paging,
// downloads (whole, from an offset, by step, the documented default choice) with chunks of at
// most 1 MiB at contiguous offsets, if_sha256, and the error codes of adapters.proto.
#include "coordinator/services/adapter_service.h"

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/rpc/rpc.h"
#include "common/sha256.h"
#include "coordinator/services/service_test_util.h"
#include "coordinator/store/test_util.h"
#include "gtest/gtest.h"

namespace herd::coordinator::services {
namespace {

using store::testing::kTenantA;
using store::testing::kTenantB;

// Adapter weights larger than two chunks, so a download has a short last chunk.
std::string Weights(int64_t step) {
  std::string out;
  out.reserve((5 << 19) + 7);
  uint32_t x = static_cast<uint32_t>(step) * 2654435761u + 1;
  while (out.size() < static_cast<size_t>((5 << 19) + step)) {
    x = x * 1664525u + 1013904223u;
    out.push_back(static_cast<char>(x >> 24));
  }
  return out;
}
std::string Config(int64_t step) { return StrCat("{\"r\": 16, \"step\": ", step, "}"); }
// What a download of `step` sends: the files back to back in manifest order.
std::string Stream(int64_t step) { return Config(step) + Weights(step); }

struct Download {
  grpc::Status status;
  std::optional<herd::v1::Checkpoint> checkpoint;
  std::string data;
  int64_t first_offset = -1;
  std::string problem;  // a broken stream rule, "" when none
};

class AdapterServiceTest : public testing::ServiceTest {
 protected:
  void SetUp() override {
    ServiceTest::SetUp();
    service_ = std::make_unique<AdapterService>(&store_->checkpoints(), &store_->blobs(),
                                                &store_->tokens());
    auto channel = Serve({service_.get()});
    ASSERT_TRUE(channel);
    stub_ = herd::v1::AdapterService::NewStub(channel);

    // running_: periodic checkpoints at 10, 20, 30. done_: 10, final 15, 20, then SUCCEEDED.
    // empty_: running, nothing stored yet.
    running_ = StartedJob();
    for (int step : {10, 20, 30}) AddCheckpoint(running_, step, false);
    done_ = StartedJob();
    AddCheckpoint(done_, 10, false);
    AddCheckpoint(done_, 15, true);
    AddCheckpoint(done_, 20, false);
    ASSERT_TRUE(store_->jobs().Transition(done_, store::JobState::kPublishing).ok());
    ASSERT_TRUE(store_->jobs().Transition(done_, store::JobState::kSucceeded).ok());
    empty_ = StartedJob();
  }
  std::string StartedJob() {
    std::string id = MakeJob(kTenantA).id;
    EXPECT_TRUE(store_->jobs().Transition(id, store::JobState::kQueued).ok());
    EXPECT_TRUE(store_->jobs().FormWorld(id, {.generation = 1, .trainer_ids = {"tr_a"}}).ok());
    return id;
  }
  void AddCheckpoint(const std::string& job, int64_t step, bool final) {
    store::NewCheckpoint c;
    c.step = step;
    c.final = final;
    c.generation = 1;
    c.files = {{"adapter_model.safetensors", *store_->blobs().Put(Weights(step))},
               {"optimizer.pt", *store_->blobs().Put(StrCat("adam@", step))},
               {"adapter_config.json", *store_->blobs().Put(Config(step))}};
    c.loss = 1.0 / static_cast<double>(step);
    auto added = store_->checkpoints().Add(job, c);
    ASSERT_TRUE(added.ok()) << added.status();
  }
  std::string Digest(const std::string& job, int64_t step) {
    return store_->checkpoints().Get(job, step)->adapter_sha256;
  }

  grpc::Status List(const std::string& token, const herd::v1::ListCheckpointsRequest& r,
                    herd::v1::ListCheckpointsResponse* page) {
    grpc::ClientContext context;
    Prepare(&context, token);
    return stub_->ListCheckpoints(&context, r, page);
  }
  Download Get(const std::string& token, const herd::v1::DownloadAdapterRequest& r) {
    grpc::ClientContext context;
    Prepare(&context, token);
    auto reader = stub_->DownloadAdapter(&context, r);
    Download out;
    herd::v1::DownloadAdapterResponse message;
    int64_t next = r.offset();
    while (reader->Read(&message)) {
      if (message.has_checkpoint()) {
        if (out.checkpoint || !out.data.empty()) out.problem = "checkpoint not first, or twice";
        out.checkpoint = message.checkpoint();
        continue;
      }
      if (!out.checkpoint) out.problem = "a chunk before the checkpoint";
      const herd::v1::DataChunk& chunk = message.chunk();
      if (chunk.data().empty()) out.problem = "an empty chunk";
      if (chunk.data().size() > AdapterService::kChunkBytes) out.problem = "a chunk over 1 MiB";
      if (chunk.offset() != next) out.problem = StrCat("chunk at ", chunk.offset(), ", not ", next);
      if (out.first_offset < 0) out.first_offset = chunk.offset();
      next = chunk.offset() + static_cast<int64_t>(chunk.data().size());
      out.data += chunk.data();
    }
    out.status = reader->Finish();
    return out;
  }

  std::string running_, done_, empty_;
  std::unique_ptr<AdapterService> service_;
  std::unique_ptr<herd::v1::AdapterService::Stub> stub_;
};

TEST_F(AdapterServiceTest, ListsCheckpointsByStepWithTheirManifest) {
  herd::v1::ListCheckpointsRequest r;
  r.set_job_id(done_);
  herd::v1::ListCheckpointsResponse page;
  ASSERT_TRUE(List(token_a_, r, &page).ok());
  ASSERT_EQ(page.checkpoints_size(), 3);
  EXPECT_TRUE(page.next_page_token().empty());
  const int64_t steps[] = {10, 15, 20};
  for (int i = 0; i < 3; ++i) {
    const herd::v1::Checkpoint& c = page.checkpoints(i);
    EXPECT_EQ(c.job_id(), done_);
    EXPECT_EQ(c.step(), steps[i]);
    EXPECT_EQ(c.final(), steps[i] == 15);
    EXPECT_EQ(c.generation(), 1);
    EXPECT_DOUBLE_EQ(c.loss(), 1.0 / static_cast<double>(steps[i]));
    EXPECT_FALSE(c.has_eval_loss());
    EXPECT_GT(c.create_time().seconds(), 0);
    const herd::v1::Manifest& m = c.adapter();
    ASSERT_EQ(m.files_size(), 2) << "only the downloadable files";
    EXPECT_EQ(m.files(0).name(), "adapter_config.json");
    EXPECT_EQ(m.files(0).sha256(), Sha256Hex(Config(steps[i])));
    EXPECT_EQ(m.files(1).name(), "adapter_model.safetensors");
    EXPECT_EQ(m.files(1).size_bytes(), static_cast<int64_t>(Weights(steps[i]).size()));
    EXPECT_EQ(m.total_size_bytes(), static_cast<int64_t>(Stream(steps[i]).size()));
    // sha256sum * | sort -k2 | sha256sum
    EXPECT_EQ(m.sha256(), Sha256Hex(StrCat(Sha256Hex(Config(steps[i])), "  adapter_config.json\n",
                                           Sha256Hex(Weights(steps[i])),
                                           "  adapter_model.safetensors\n")));
  }
  r.set_job_id(empty_);
  page.Clear();
  ASSERT_TRUE(List(token_a_, r, &page).ok());
  EXPECT_EQ(page.checkpoints_size(), 0);
}

TEST_F(AdapterServiceTest, PagesThroughCheckpoints) {
  herd::v1::ListCheckpointsRequest r;
  r.set_job_id(running_);
  r.set_page_size(2);
  std::vector<int64_t> steps;
  int pages = 0;
  do {
    herd::v1::ListCheckpointsResponse page;
    grpc::Status s = List(token_a_, r, &page);
    ASSERT_TRUE(s.ok()) << s.error_message();
    for (const auto& c : page.checkpoints()) steps.push_back(c.step());
    r.set_page_token(page.next_page_token());
    ASSERT_LT(++pages, 10);
  } while (!r.page_token().empty());
  EXPECT_EQ(steps, (std::vector<int64_t>{10, 20, 30}));
  EXPECT_EQ(pages, 2);
}

TEST_F(AdapterServiceTest, ListErrors) {
  struct Case {
    std::string what;
    std::string token;
    std::function<void(herd::v1::ListCheckpointsRequest*)> edit;
    grpc::StatusCode code;
  };
  const std::vector<Case> cases = {
      {"no token", "", [](auto*) {}, grpc::StatusCode::UNAUTHENTICATED},
      {"unknown token", "herd_nope", [](auto*) {}, grpc::StatusCode::UNAUTHENTICATED},
      {"cluster token", cluster_token_, [](auto*) {}, grpc::StatusCode::PERMISSION_DENIED},
      {"other tenant", token_b_, [](auto*) {}, grpc::StatusCode::NOT_FOUND},
      {"missing job", token_a_, [](auto* r) { r->set_job_id("job_missing"); },
       grpc::StatusCode::NOT_FOUND},
      {"empty job id", token_a_, [](auto* r) { r->clear_job_id(); },
       grpc::StatusCode::INVALID_ARGUMENT},
      {"negative page size", token_a_, [](auto* r) { r->set_page_size(-1); },
       grpc::StatusCode::INVALID_ARGUMENT},
      {"bad page token", token_a_, [](auto* r) { r->set_page_token("junk"); },
       grpc::StatusCode::INVALID_ARGUMENT},
  };
  for (const Case& c : cases) {
    herd::v1::ListCheckpointsRequest r;
    r.set_job_id(running_);
    c.edit(&r);
    herd::v1::ListCheckpointsResponse page;
    grpc::Status s = List(c.token, r, &page);
    EXPECT_EQ(s.error_code(), c.code) << c.what << ": " << s.error_message();
  }
}

TEST_F(AdapterServiceTest, Downloads) {
  struct Case {
    std::string what;
    std::string job;
    std::optional<int64_t> step;  // requested
    int64_t offset;
    int64_t expected_step;
    bool final;
  };
  const int64_t mid = static_cast<int64_t>(Stream(20).size()) / 2 + 3;
  const std::vector<Case> cases = {
      {"running job: the newest", running_, std::nullopt, 0, 30, false},
      {"running job: a step", running_, 10, 0, 10, false},
      {"from an offset", running_, 20, mid, 20, false},
      {"from inside the config file", running_, 20, 5, 20, false},
      {"at the end: only the checkpoint", running_, 20,
       static_cast<int64_t>(Stream(20).size()), 20, false},
      {"succeeded job: the final adapter, not the newest", done_, std::nullopt, 0, 15, true},
      {"succeeded job: a periodic step", done_, 20, 0, 20, false},
  };
  for (const Case& c : cases) {
    herd::v1::DownloadAdapterRequest r;
    r.set_job_id(c.job);
    if (c.step) r.set_step(*c.step);
    r.set_offset(c.offset);
    Download d = Get(token_a_, r);
    ASSERT_TRUE(d.status.ok()) << c.what << ": " << d.status.error_message();
    EXPECT_EQ(d.problem, "") << c.what;
    ASSERT_TRUE(d.checkpoint) << c.what;
    EXPECT_EQ(d.checkpoint->step(), c.expected_step) << c.what;
    EXPECT_EQ(d.checkpoint->final(), c.final) << c.what;
    EXPECT_EQ(d.checkpoint->adapter().sha256(), Digest(c.job, c.expected_step)) << c.what;
    const std::string whole = Stream(c.expected_step);
    EXPECT_TRUE(d.data == whole.substr(c.offset)) << c.what << ": " << d.data.size() << " bytes";
    if (!d.data.empty()) {
      EXPECT_EQ(d.first_offset, c.offset) << c.what;
    }
  }
}

TEST_F(AdapterServiceTest, ResumesWithTheDigestItStartedWith) {
  herd::v1::DownloadAdapterRequest r;
  r.set_job_id(running_);
  r.set_offset(1000);
  r.set_if_sha256(Digest(running_, 30));
  Download d = Get(token_a_, r);
  ASSERT_TRUE(d.status.ok()) << d.status.error_message();
  EXPECT_TRUE(d.data == Stream(30).substr(1000));

  // A newer checkpoint was picked meanwhile: ABORTED, nothing sent.
  r.set_if_sha256(Digest(running_, 20));
  d = Get(token_a_, r);
  EXPECT_EQ(d.status.error_code(), grpc::StatusCode::ABORTED) << d.status.error_message();
  EXPECT_NE(d.status.error_message().find("offset 0"), std::string::npos) << d.status.error_message();
  EXPECT_TRUE(d.data.empty());
  // Asking for the step explicitly resumes it.
  r.set_step(20);
  d = Get(token_a_, r);
  ASSERT_TRUE(d.status.ok()) << d.status.error_message();
  EXPECT_TRUE(d.data == Stream(20).substr(1000));
}

TEST_F(AdapterServiceTest, DownloadErrors) {
  struct Case {
    std::string what;
    std::string token;
    std::function<void(herd::v1::DownloadAdapterRequest*)> edit;
    grpc::StatusCode code;
  };
  const int64_t total = static_cast<int64_t>(Stream(30).size());
  const std::vector<Case> cases = {
      {"no token", "", [](auto*) {}, grpc::StatusCode::UNAUTHENTICATED},
      {"wrong token", "herd_nope", [](auto*) {}, grpc::StatusCode::UNAUTHENTICATED},
      {"cluster token", cluster_token_, [](auto*) {}, grpc::StatusCode::PERMISSION_DENIED},
      {"other tenant", token_b_, [](auto*) {}, grpc::StatusCode::NOT_FOUND},
      {"other tenant, a step", token_b_, [](auto* r) { r->set_step(10); },
       grpc::StatusCode::NOT_FOUND},
      {"missing job", token_a_, [](auto* r) { r->set_job_id("job_missing"); },
       grpc::StatusCode::NOT_FOUND},
      {"no checkpoint yet", token_a_, [&](auto* r) { r->set_job_id(empty_); },
       grpc::StatusCode::NOT_FOUND},
      {"no such step", token_a_, [](auto* r) { r->set_step(15); }, grpc::StatusCode::NOT_FOUND},
      {"empty job id", token_a_, [](auto* r) { r->clear_job_id(); },
       grpc::StatusCode::INVALID_ARGUMENT},
      {"negative step", token_a_, [](auto* r) { r->set_step(-1); },
       grpc::StatusCode::INVALID_ARGUMENT},
      {"negative offset", token_a_, [](auto* r) { r->set_offset(-1); },
       grpc::StatusCode::INVALID_ARGUMENT},
      {"if_sha256 not hex", token_a_, [](auto* r) { r->set_if_sha256("xyz"); },
       grpc::StatusCode::INVALID_ARGUMENT},
      {"offset beyond the end", token_a_, [&](auto* r) { r->set_offset(total + 1); },
       grpc::StatusCode::OUT_OF_RANGE},
      {"if_sha256 of another checkpoint", token_a_,
       [](auto* r) { r->set_if_sha256(std::string(64, 'a')); }, grpc::StatusCode::ABORTED},
  };
  for (const Case& c : cases) {
    herd::v1::DownloadAdapterRequest r;
    r.set_job_id(running_);
    c.edit(&r);
    Download d = Get(c.token, r);
    EXPECT_EQ(d.status.error_code(), c.code) << c.what << ": " << d.status.error_message();
    EXPECT_FALSE(d.checkpoint) << c.what;
    EXPECT_TRUE(d.data.empty()) << c.what;
  }
}

TEST_F(AdapterServiceTest, AnotherTenantsJobAnswersLikeAMissingOne) {
  herd::v1::DownloadAdapterRequest r;
  r.set_job_id(running_);
  Download theirs = Get(token_b_, r);
  herd::v1::ListCheckpointsRequest l;
  l.set_job_id(running_);
  herd::v1::ListCheckpointsResponse page;
  grpc::Status listed = List(token_b_, l, &page);
  // The same job id, now really missing (B has no such job either way): the same answers.
  const std::string missing = "job_" + std::string(running_.size() - 4, 'z');
  r.set_job_id(missing);
  l.set_job_id(missing);
  Download absent = Get(token_a_, r);
  grpc::Status absent_list = List(token_a_, l, &page);
  auto same = [&](std::string message) {
    return message.replace(message.find(running_), running_.size(), missing);
  };
  EXPECT_EQ(theirs.status.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(same(theirs.status.error_message()), absent.status.error_message());
  EXPECT_EQ(listed.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(same(listed.error_message()), absent_list.error_message());
}

}  // namespace
}  // namespace herd::coordinator::services
