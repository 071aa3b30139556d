// gRPC helpers: status mapping, address rules, and a real server on port 0 with a ready file.
#include "common/rpc/rpc.h"

#include <unistd.h>

#include "absl/strings/numbers.h"
#include "common/file_util.h"
#include "gtest/gtest.h"

namespace herd::rpc {
namespace {

TEST(RpcTest, StatusRoundTripKeepsCodeAndMessage) {
  const absl::Status kCases[] = {
      absl::OkStatus(), absl::NotFoundError("job j1"), absl::InvalidArgumentError("line 3: bad"),
      absl::UnauthenticatedError("no token"), absl::FailedPreconditionError("old generation"),
      absl::UnavailableError("later"), absl::DeadlineExceededError("slow")};
  for (const absl::Status& s : kCases) {
    EXPECT_EQ(FromGrpc(ToGrpc(s)), s);
  }
  EXPECT_EQ(ToGrpc(absl::NotFoundError("x")).error_code(), grpc::StatusCode::NOT_FOUND);
}

TEST(RpcTest, ParsesAddresses) {
  auto hp = ParseHostPort("127.0.0.1:7070");
  ASSERT_TRUE(hp.ok());
  EXPECT_EQ(hp->host, "127.0.0.1");
  EXPECT_EQ(hp->port, 7070);
  hp = ParseHostPort("[::1]:0");
  ASSERT_TRUE(hp.ok());
  EXPECT_EQ(hp->host, "::1");
  for (const char* bad : {"", "7070", ":7070", "host:", "host:99999", "[::1]7070", "h:x"}) {
    EXPECT_FALSE(ParseHostPort(bad).ok()) << bad;
  }
  EXPECT_TRUE(IsLoopbackHost("127.0.0.1"));
  EXPECT_TRUE(IsLoopbackHost("localhost"));
  EXPECT_FALSE(IsLoopbackHost("0.0.0.0"));
  EXPECT_FALSE(IsLoopbackHost("10.0.0.1"));
}

TEST(RpcTest, PlaintextOffLoopbackNeedsConsent) {
  ServerOptions o;
  o.listen = "0.0.0.0:7070";
  absl::Status s = o.Validate();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(s.message()).find("allow_insecure_remote"), std::string::npos);
  o.allow_insecure_remote = true;
  EXPECT_TRUE(o.Validate().ok());
}

TEST(RpcTest, ServerOnPortZeroWritesReadyFileAndAcceptsConnections) {
  ServerOptions o;
  o.ready_file = ::testing::TempDir() + "/rpc_test_ready_" + std::to_string(::getpid());
  auto started = StartServer(o, {});
  ASSERT_TRUE(started.ok()) << started.status();
  auto text = ReadFile(o.ready_file);
  ASSERT_TRUE(text.ok());
  int port = 0;
  ASSERT_TRUE(absl::SimpleAtoi(*text, &port));
  EXPECT_EQ(port, started->port);
  EXPECT_GT(port, 0);
  auto channel = MakeChannel({.target = "127.0.0.1:" + std::to_string(port)});
  ASSERT_TRUE(channel.ok());
  EXPECT_TRUE((*channel)->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(30)));
  EXPECT_TRUE(CheckHealth(**channel, "test", absl::Seconds(30)).ok());
  started->server->Shutdown();
  absl::Status after = CheckHealth(**channel, "test", absl::Seconds(5));
  EXPECT_EQ(after.code(), absl::StatusCode::kUnavailable) << after;
}

}  // namespace
}  // namespace herd::rpc
