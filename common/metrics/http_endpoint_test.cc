// The /metrics endpoint over real sockets on 127.0.0.1 (DESIGN.md §12): port 0 and a ready file,
// the exposition body and Content-Type, /healthz, 404, exact binding, and clean stops.
#include "common/metrics/http_endpoint.h"

#include <httplib.h>
#include <unistd.h>

#include <chrono>
#include <string>

#include "common/file_util.h"
#include "common/metrics/text_format.h"
#include "gtest/gtest.h"

namespace herd::metrics {
namespace {

std::string TempPath(const std::string& name) {
  return ::testing::TempDir() + "/" + name + "_" + std::to_string(::getpid());
}

TEST(MetricsServerOptionsTest, Validate) {
  struct Case {
    std::string listen;
    int threads;
    bool ok;
  };
  const Case kCases[] = {
      {"127.0.0.1:0", 2, true},  {"127.0.0.1:9400", 1, true},   {"localhost:0", 2, true},
      {"[::1]:0", 2, true},      {"0.0.0.0:9400", 2, true},     {":9400", 2, false},
      {"127.0.0.1", 2, false},   {"127.0.0.1:65536", 2, false}, {"127.0.0.1:-1", 2, false},
      {"127.0.0.1:x", 2, false}, {"::1:0", 2, false},           {"[::1]0", 2, false},
      {"127.0.0.1:0", 0, false},
  };
  for (const Case& c : kCases) {
    MetricsServerOptions o;
    o.listen = c.listen;
    o.threads = c.threads;
    EXPECT_EQ(o.Validate().ok(), c.ok) << c.listen << " threads " << c.threads;
  }
  EXPECT_EQ(MetricsServerOptions().listen, "127.0.0.1:0");  // loopback unless configured
}

class MetricsServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto f = registry_.AddCounter(
        {.name = "herd_test_requests_total", .help = "Requests.", .label_names = {"code"}});
    ASSERT_TRUE(f.ok()) << f.status();
    ok_ = (*f)->WithLabels("OK");
    ok_.Increment(3);
    (*f)->WithLabels("say \"hi\"");
  }

  Registry registry_;
  Counter ok_;
};

TEST_F(MetricsServerTest, ServesMetricsOnPortZeroWithReadyFile) {
  MetricsServerOptions o;
  o.ready_file = TempPath("metrics_ready");
  auto server = MetricsServer::Start(o, &registry_);
  ASSERT_TRUE(server.ok()) << server.status();
  const int port = (*server)->port();
  ASSERT_GT(port, 0);
  EXPECT_EQ((*server)->address(), "127.0.0.1:" + std::to_string(port));
  auto ready = ReadFile(o.ready_file);
  ASSERT_TRUE(ready.ok()) << ready.status();
  EXPECT_EQ(*ready, std::to_string(port) + "\n");

  httplib::Client client("127.0.0.1", port);
  client.set_connection_timeout(10);
  client.set_read_timeout(10);
  auto res = client.Get("/metrics");
  ASSERT_TRUE(res) << httplib::to_string(res.error());
  EXPECT_EQ(res->status, 200);
  EXPECT_EQ(res->get_header_value("Content-Type"), kTextContentType);
  EXPECT_EQ(res->body, registry_.Render());
  EXPECT_NE(res->body.find("herd_test_requests_total{code=\"OK\"} 3\n"), std::string::npos);

  ok_.Increment();  // each scrape renders afresh
  res = client.Get("/metrics");
  ASSERT_TRUE(res);
  EXPECT_NE(res->body.find("herd_test_requests_total{code=\"OK\"} 4\n"), std::string::npos);

  // Prometheus asks for gzip; the body must decode to the same text.
  res = client.Get("/metrics", {{"Accept-Encoding", "gzip"}});
  ASSERT_TRUE(res);
  EXPECT_EQ(res->get_header_value("Content-Encoding"), "gzip");
  EXPECT_EQ(res->body, registry_.Render());

  res = client.Get("/healthz");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  EXPECT_EQ(res->body, "ok\n");

  for (const std::string path : {"/", "/metricsx", "/metrics/x", "/favicon.ico"}) {
    res = client.Get(path);
    ASSERT_TRUE(res) << path;
    EXPECT_EQ(res->status, 404) << path;
  }
  res = client.Post("/metrics", "x", "text/plain");
  ASSERT_TRUE(res);
  EXPECT_NE(res->status, 200);

  (*server)->Stop();
  (*server)->Stop();  // idempotent
  httplib::Client after("127.0.0.1", port);
  after.set_connection_timeout(2);
  EXPECT_FALSE(after.Get("/metrics"));
}

TEST_F(MetricsServerTest, HealthCheckFailureIs503) {
  auto server = MetricsServer::Start({}, &registry_,
                                     [] { return absl::UnavailableError("store is read-only"); });
  ASSERT_TRUE(server.ok()) << server.status();
  httplib::Client client("127.0.0.1", (*server)->port());
  auto res = client.Get("/healthz");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 503);
  EXPECT_NE(res->body.find("store is read-only"), std::string::npos) << res->body;
}

TEST_F(MetricsServerTest, BindsExactlyTheHostAndOwnsItsPort) {
  auto server = MetricsServer::Start({}, &registry_);
  ASSERT_TRUE(server.ok()) << server.status();
  const int port = (*server)->port();

  // Bound to 127.0.0.1 only: another loopback address on the same port answers nothing.
  httplib::Client other("127.0.0.2", port);
  other.set_connection_timeout(2);
  EXPECT_FALSE(other.Get("/metrics"));

  // A second server cannot share the port (httplib's default SO_REUSEPORT is switched off).
  MetricsServerOptions same;
  same.listen = "127.0.0.1:" + std::to_string(port);
  auto second = MetricsServer::Start(same, &registry_);
  EXPECT_EQ(second.status().code(), absl::StatusCode::kUnavailable) << second.status();
}

TEST_F(MetricsServerTest, StopsPromptlyWithAKeepAliveClientConnected) {
  auto server = MetricsServer::Start({}, &registry_);
  ASSERT_TRUE(server.ok()) << server.status();
  httplib::Client client("127.0.0.1", (*server)->port());
  client.set_keep_alive(true);
  ASSERT_TRUE(client.Get("/metrics"));
  const auto start = std::chrono::steady_clock::now();
  server->reset();
  // Generous: it catches a hang on the idle connection, it does not measure speed.
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(30));
}

TEST_F(MetricsServerTest, StartAndStopRepeatedly) {
  for (int i = 0; i < 20; ++i) {
    auto server = MetricsServer::Start({}, &registry_);
    ASSERT_TRUE(server.ok()) << server.status();
  }
}

TEST(MetricsServerStartTest, RejectsBadInput) {
  Registry registry;
  MetricsServerOptions bad;
  bad.listen = "nohost";
  EXPECT_EQ(MetricsServer::Start(bad, &registry).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(MetricsServer::Start({}, nullptr).status().code(), absl::StatusCode::kInvalidArgument);
  MetricsServerOptions unbindable;
  unbindable.listen = "192.0.2.1:0";  // TEST-NET-1: not an address of this machine
  EXPECT_EQ(MetricsServer::Start(unbindable, &registry).status().code(),
            absl::StatusCode::kUnavailable);
}

}  // namespace
}  // namespace herd::metrics
