// The CLI's adapter commands against an in-process AdapterService (through a proxy that can
// break or corrupt a stream): whole downloads, steps, resuming an interrupted download, a
// corrupted partial file caught by sha256, an adapter that changed between runs, a server that
// sends bad bytes (nothing at the destination), and failures mapped to the exit codes of
// DESIGN.md §11.
#include "cli/adapters_commands.h"

#include <atomic>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "cli/exit_codes.h"
#include "common/file_util.h"
#include "common/rpc/rpc.h"
#include "common/sha256.h"
#include "coordinator/services/adapter_service.h"
#include "coordinator/store/test_util.h"
#include "gtest/gtest.h"

namespace herd::cli {
namespace {

namespace fs = std::filesystem;
using coordinator::store::testing::kTenantA;
using coordinator::store::testing::kTenantB;

std::string Weights(int64_t step) {
  std::string out;
  uint32_t x = static_cast<uint32_t>(step) * 2654435761u + 7;
  while (out.size() < static_cast<size_t>((5 << 19) + step)) {
    x = x * 1664525u + 1013904223u;
    out.push_back(static_cast<char>(x >> 24));
  }
  return out;
}
std::string Config(int64_t step) { return StrCat("{\"r\": 16, \"step\": ", step, "}"); }

// Forwards DownloadAdapter to the real server, recording each request; can end a stream with
// UNAVAILABLE after `break_after` chunks (once per `breaks` left) or flip a byte of every chunk.
class ProxyAdapterService final : public herd::v1::AdapterService::Service {
 public:
  explicit ProxyAdapterService(std::shared_ptr<grpc::Channel> real)
      : real_(herd::v1::AdapterService::NewStub(real)) {}

  grpc::Status ListCheckpoints(grpc::ServerContext* c, const herd::v1::ListCheckpointsRequest* r,
                               herd::v1::ListCheckpointsResponse* a) override {
    grpc::ClientContext out;
    Forward(*c, &out);
    return real_->ListCheckpoints(&out, *r, a);
  }
  grpc::Status DownloadAdapter(grpc::ServerContext* c, const herd::v1::DownloadAdapterRequest* r,
                               grpc::ServerWriter<herd::v1::DownloadAdapterResponse>* w) override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      requests_.push_back(*r);
    }
    const bool breaking = breaks_.fetch_sub(1) > 0;
    grpc::ClientContext out;
    Forward(*c, &out);
    auto reader = real_->DownloadAdapter(&out, *r);
    herd::v1::DownloadAdapterResponse m;
    int chunks = 0;
    while (reader->Read(&m)) {
      if (m.has_chunk()) {
        if (breaking && chunks++ == break_after_) {
          out.TryCancel();
          (void)reader->Finish();
          return {grpc::StatusCode::UNAVAILABLE, "connection reset (test)"};
        }
        if (corrupt_) (*m.mutable_chunk()->mutable_data())[0] ^= 0x5a;
      }
      w->Write(m);
    }
    return reader->Finish();
  }

  std::vector<herd::v1::DownloadAdapterRequest> requests() {
    std::lock_guard<std::mutex> lock(mu_);
    return requests_;
  }

  std::atomic<int> breaks_ = 0;
  int break_after_ = 1;
  std::atomic<bool> corrupt_ = false;

 private:
  static void Forward(const grpc::ServerContext& in, grpc::ClientContext* out) {
    out->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
    auto it = in.client_metadata().find("authorization");
    if (it != in.client_metadata().end()) {
      out->AddMetadata("authorization", std::string(it->second.data(), it->second.size()));
    }
  }

  std::unique_ptr<herd::v1::AdapterService::Stub> real_;
  std::mutex mu_;
  std::vector<herd::v1::DownloadAdapterRequest> requests_;
};

class AdaptersCommandsTest : public coordinator::store::testing::StoreTest {
 protected:
  void SetUp() override {
    StoreTest::SetUp();
    auto a = store_->tokens().CreateUserToken(kTenantA, "test");
    auto b = store_->tokens().CreateUserToken(kTenantB, "test");
    ASSERT_TRUE(a.ok() && b.ok());
    token_b_ = b->token;
    service_ = std::make_unique<coordinator::services::AdapterService>(
        &store_->checkpoints(), &store_->blobs(), &store_->tokens());
    auto server = rpc::StartServer({.listen = "127.0.0.1:0"}, {service_.get()});
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(server->server);
    auto channel = rpc::MakeChannel({.target = StrCat("127.0.0.1:", server->port)});
    ASSERT_TRUE(channel.ok());
    proxy_ = std::make_unique<ProxyAdapterService>(*channel);
    auto proxy = rpc::StartServer({.listen = "127.0.0.1:0"}, {proxy_.get()});
    ASSERT_TRUE(proxy.ok()) << proxy.status();
    proxy_server_ = std::move(proxy->server);
    config_.endpoint = StrCat("127.0.0.1:", proxy->port);
    config_.token = a->token;
    config_.source = "test";

    running_ = StartedJob();
    AddCheckpoint(running_, 10, false);
    AddCheckpoint(running_, 20, false);
    done_ = StartedJob();
    AddCheckpoint(done_, 10, false);
    AddCheckpoint(done_, 15, true);
    AddCheckpoint(done_, 20, false);
    ASSERT_TRUE(store_->jobs().Transition(done_, coordinator::store::JobState::kPublishing).ok());
    ASSERT_TRUE(store_->jobs().Transition(done_, coordinator::store::JobState::kSucceeded).ok());
    empty_ = StartedJob();
  }
  void TearDown() override {
    if (proxy_server_) proxy_server_->Shutdown();
    if (server_) server_->Shutdown();
  }

  std::string StartedJob() {
    std::string id = MakeJob(kTenantA).id;
    EXPECT_TRUE(store_->jobs().Transition(id, coordinator::store::JobState::kQueued).ok());
    EXPECT_TRUE(store_->jobs().FormWorld(id, {.generation = 1, .trainer_ids = {"tr_a"}}).ok());
    return id;
  }
  void AddCheckpoint(const std::string& job, int64_t step, bool final) {
    coordinator::store::NewCheckpoint c;
    c.step = step;
    c.final = final;
    c.generation = 1;
    c.files = {{"adapter_model.safetensors", *store_->blobs().Put(Weights(step))},
               {"adapter_config.json", *store_->blobs().Put(Config(step))},
               {"optimizer.pt", *store_->blobs().Put(StrCat("adam@", step))}};
    auto added = store_->checkpoints().Add(job, c);
    ASSERT_TRUE(added.ok()) << added.status();
  }
  std::string Digest(const std::string& job, int64_t step) {
    return store_->checkpoints().Get(job, step)->adapter_sha256;
  }

  DownloadOptions Options(const std::string& job, const std::string& out = "out") {
    DownloadOptions o;
    o.job_id = job;
    o.out_dir = dir_.path() + "/" + out;
    o.progress = false;
    return o;
  }

  // The destination holds exactly the adapter of `step`, and no partial folder is left.
  void ExpectAdapter(const DownloadOptions& o, int64_t step) {
    auto config = ReadFile(o.out_dir + "/adapter_config.json");
    auto weights = ReadFile(o.out_dir + "/adapter_model.safetensors");
    ASSERT_TRUE(config.ok() && weights.ok()) << config.status() << weights.status();
    EXPECT_EQ(*config, Config(step));
    EXPECT_TRUE(*weights == Weights(step)) << weights->size() << " bytes";
    int entries = 0;
    for (const auto& e : fs::directory_iterator(o.out_dir)) entries += !e.path().empty();
    EXPECT_EQ(entries, 2) << "only the two adapter files";
    EXPECT_FALSE(fs::exists(PartialDirFor(o.out_dir))) << "partial folder left";
  }

  std::string running_, done_, empty_, token_b_;
  ClientConfig config_;
  std::unique_ptr<coordinator::services::AdapterService> service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<ProxyAdapterService> proxy_;
  std::unique_ptr<grpc::Server> proxy_server_;
};

TEST_F(AdaptersCommandsTest, DownloadsTheDocumentedCheckpoint) {
  struct Case {
    std::string what;
    std::string job;
    std::optional<int64_t> step;
    int64_t expected;
  };
  for (const Case& c : std::vector<Case>{
           {"succeeded job: the final adapter", done_, std::nullopt, 15},
           {"running job: the newest", running_, std::nullopt, 20},
           {"--step", running_, 10, 10},
       }) {
    DownloadOptions o = Options(c.job, StrCat("out-", c.expected, "-", c.job));
    o.step = c.step;
    ::testing::internal::CaptureStdout();
    const int rc = DownloadAdapter(config_, o, /*json=*/false);
    const std::string printed = ::testing::internal::GetCapturedStdout();
    ASSERT_EQ(rc, kOk) << c.what;
    EXPECT_EQ(printed, fs::path(o.out_dir).lexically_normal().string() + "\n") << c.what;
    ExpectAdapter(o, c.expected);
  }
}

TEST_F(AdaptersCommandsTest, InstallsIntoAnExistingFolderAndPrintsJson) {
  DownloadOptions o = Options(done_, "existing/");
  fs::create_directories(o.out_dir);
  ::testing::internal::CaptureStdout();
  ASSERT_EQ(DownloadAdapter(config_, o, /*json=*/true), kOk);
  const std::string printed = ::testing::internal::GetCapturedStdout();
  EXPECT_NE(printed.find(Digest(done_, 15)), std::string::npos) << printed;
  EXPECT_NE(printed.find("\"final\":true"), std::string::npos) << printed;
  ExpectAdapter(o, 15);
  // Again: the same files, replaced whole.
  ::testing::internal::CaptureStdout();
  ASSERT_EQ(DownloadAdapter(config_, o, /*json=*/true), kOk);
  ::testing::internal::GetCapturedStdout();
  ExpectAdapter(o, 15);
}

TEST_F(AdaptersCommandsTest, RetriesABrokenStreamFromWhereItStopped) {
  proxy_->breaks_ = 1;
  DownloadOptions o = Options(running_);
  ::testing::internal::CaptureStdout();
  ASSERT_EQ(DownloadAdapter(config_, o, false), kOk);
  ::testing::internal::GetCapturedStdout();
  ExpectAdapter(o, 20);
  auto requests = proxy_->requests();
  ASSERT_EQ(requests.size(), 2u);
  EXPECT_EQ(requests[0].offset(), 0);
  EXPECT_EQ(requests[0].if_sha256(), "");
  EXPECT_EQ(requests[1].offset(), static_cast<int64_t>(coordinator::services::AdapterService::kChunkBytes));
  EXPECT_EQ(requests[1].if_sha256(), Digest(running_, 20));
}

TEST_F(AdaptersCommandsTest, ResumesAnInterruptedDownloadOnRerun) {
  proxy_->breaks_ = 1;
  proxy_->break_after_ = 2;
  DownloadOptions o = Options(running_);
  o.max_attempts = 1;
  EXPECT_EQ(DownloadAdapter(config_, o, false), kUnavailable);
  EXPECT_FALSE(fs::exists(o.out_dir)) << "nothing at the destination";
  const std::string partial = PartialDirFor(o.out_dir);
  ASSERT_TRUE(fs::exists(partial + "/adapter_model.safetensors"));

  o.max_attempts = 6;
  ::testing::internal::CaptureStdout();
  ASSERT_EQ(DownloadAdapter(config_, o, false), kOk);
  ::testing::internal::GetCapturedStdout();
  ExpectAdapter(o, 20);
  auto requests = proxy_->requests();
  ASSERT_EQ(requests.size(), 2u);
  EXPECT_EQ(requests[1].offset(), 2 * static_cast<int64_t>(coordinator::services::AdapterService::kChunkBytes));
  EXPECT_EQ(requests[1].if_sha256(), Digest(running_, 20));
}

TEST_F(AdaptersCommandsTest, ACorruptedPartialFileIsCaughtBySha256AndFetchedAgain) {
  proxy_->breaks_ = 1;
  proxy_->break_after_ = 2;
  DownloadOptions o = Options(running_);
  o.max_attempts = 1;
  ASSERT_EQ(DownloadAdapter(config_, o, false), kUnavailable);
  // Flip a byte in the middle of what already arrived.
  const std::string part = PartialDirFor(o.out_dir) + "/adapter_model.safetensors";
  {
    std::fstream f(part, std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(1000);
    char c = 0;
    f.read(&c, 1);
    c ^= 0x01;
    f.seekp(1000);
    f.write(&c, 1);
  }
  o.max_attempts = 6;
  ::testing::internal::CaptureStdout();
  ASSERT_EQ(DownloadAdapter(config_, o, false), kOk);
  ::testing::internal::GetCapturedStdout();
  ExpectAdapter(o, 20);
  auto requests = proxy_->requests();
  ASSERT_EQ(requests.size(), 3u) << "broken, resumed, then the corrupted file again";
  EXPECT_GT(requests[1].offset(), 0);
  EXPECT_EQ(requests[2].offset(), static_cast<int64_t>(Config(20).size()))
      << "only the file that failed its check";
}

TEST_F(AdaptersCommandsTest, AnAdapterThatChangedMeanwhileRestartsTheDownload) {
  proxy_->breaks_ = 1;
  DownloadOptions o = Options(running_);
  o.max_attempts = 1;
  ASSERT_EQ(DownloadAdapter(config_, o, false), kUnavailable);
  AddCheckpoint(running_, 30, false);  // now the newest
  o.max_attempts = 6;
  ::testing::internal::CaptureStdout();
  ASSERT_EQ(DownloadAdapter(config_, o, false), kOk);
  ::testing::internal::GetCapturedStdout();
  ExpectAdapter(o, 30);
  auto requests = proxy_->requests();
  ASSERT_EQ(requests.size(), 3u);
  EXPECT_EQ(requests[1].if_sha256(), Digest(running_, 20)) << "answered ABORTED";
  EXPECT_EQ(requests[2].offset(), 0);
  EXPECT_EQ(requests[2].if_sha256(), "");
}

TEST_F(AdaptersCommandsTest, BadBytesNeverReachTheDestination) {
  proxy_->corrupt_ = true;
  DownloadOptions o = Options(running_);
  o.max_attempts = 3;
  EXPECT_EQ(DownloadAdapter(config_, o, false), kInvalid);
  EXPECT_FALSE(fs::exists(o.out_dir));
}

TEST_F(AdaptersCommandsTest, FailuresMapToExitCodes) {
  struct Case {
    std::string what;
    std::string job;
    std::string token;
    std::optional<int64_t> step;
    int rc;
  };
  for (const Case& c : std::vector<Case>{
           {"missing job", "job_missing", config_.token, std::nullopt, kNotFound},
           {"another tenant's job", running_, token_b_, std::nullopt, kNotFound},
           {"no checkpoint yet", empty_, config_.token, std::nullopt, kNotFound},
           {"no such step", running_, config_.token, 15, kNotFound},
           {"wrong token", running_, "herd_nope", std::nullopt, kUnauthenticated},
           {"no token", running_, "", std::nullopt, kUnauthenticated},
           {"step 0", running_, config_.token, 0, kUsage},
       }) {
    ClientConfig config = config_;
    config.token = c.token;
    DownloadOptions o = Options(c.job);
    o.step = c.step;
    EXPECT_EQ(DownloadAdapter(config, o, false), c.rc) << c.what;
    EXPECT_FALSE(fs::exists(o.out_dir)) << c.what;
    EXPECT_FALSE(fs::exists(PartialDirFor(o.out_dir))) << c.what << ": nothing arrived, nothing left";
  }
  ClientConfig down = config_;
  down.endpoint = "127.0.0.1:1";
  DownloadOptions o = Options(running_);
  o.max_attempts = 2;
  EXPECT_EQ(DownloadAdapter(down, o, false), kUnavailable);
}

TEST_F(AdaptersCommandsTest, ListsCheckpoints) {
  ::testing::internal::CaptureStdout();
  ASSERT_EQ(ListAdapters(config_, done_, /*json=*/true), kOk);
  std::string printed = ::testing::internal::GetCapturedStdout();
  EXPECT_EQ(printed.front(), '[');
  EXPECT_NE(printed.find(Digest(done_, 15)), std::string::npos) << printed;
  EXPECT_NE(printed.find(Digest(done_, 20)), std::string::npos) << printed;
  ::testing::internal::CaptureStdout();
  ASSERT_EQ(ListAdapters(config_, done_, /*json=*/false), kOk);
  printed = ::testing::internal::GetCapturedStdout();
  EXPECT_NE(printed.find("STEP"), std::string::npos) << printed;
  EXPECT_NE(printed.find("yes"), std::string::npos) << "the final one is marked: " << printed;
  ClientConfig other = config_;
  other.token = token_b_;
  EXPECT_EQ(ListAdapters(other, done_, false), kNotFound);
}

}  // namespace
}  // namespace herd::cli
