// gRPC helpers: status mapping, address rules, and a real server on port 0 with a ready file.
#include "common/rpc/rpc.h"

#include <unistd.h>

#include <cstdlib>
#include <utility>

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

// A self-signed certificate for 127.0.0.1 (it is its own CA), made with the openssl tool.
std::pair<std::string, std::string> SelfSigned(const std::string& dir, const std::string& name) {
  const std::string cert = dir + "/" + name + ".pem", key = dir + "/" + name + ".key";
  const std::string cmd = "openssl req -x509 -newkey rsa:2048 -nodes -keyout " + key + " -out " + cert +
                          " -days 1 -subj /CN=" + name +
                          " -addext subjectAltName=IP:127.0.0.1,DNS:localhost >/dev/null 2>&1";
  EXPECT_EQ(std::system(cmd.c_str()), 0) << cmd;
  return {cert, key};
}

TEST(RpcTest, TlsFromConfigAndMutualTls) {
  const std::string dir = ::testing::TempDir() + "/rpc_tls_" + std::to_string(::getpid());
  ASSERT_EQ(std::system(("mkdir -p " + dir).c_str()), 0);
  const auto [server_cert, server_key] = SelfSigned(dir, "server");
  const auto [client_cert, client_key] = SelfSigned(dir, "client");

  // TLS: a client trusting the server's CA gets in; a plaintext client does not.
  ServerOptions o;
  o.tls = {server_cert, server_key, ""};
  auto started = StartServer(o, {});
  ASSERT_TRUE(started.ok()) << started.status();
  const std::string target = "127.0.0.1:" + std::to_string(started->port);
  auto tls = MakeChannel({.target = target, .ca_file = server_cert});
  ASSERT_TRUE(tls.ok()) << tls.status();
  EXPECT_TRUE(CheckHealth(**tls, target, absl::Seconds(30)).ok());
  auto plain = MakeChannel({.target = target});
  ASSERT_TRUE(plain.ok());
  EXPECT_EQ(CheckHealth(**plain, target, absl::Seconds(5)).code(), absl::StatusCode::kUnavailable);
  // A client that trusts another CA refuses the server.
  auto wrong_ca = MakeChannel({.target = target, .ca_file = client_cert});
  ASSERT_TRUE(wrong_ca.ok());
  EXPECT_EQ(CheckHealth(**wrong_ca, target, absl::Seconds(5)).code(), absl::StatusCode::kUnavailable);
  started->server->Shutdown();

  // mTLS (agents): the server requires a client certificate signed by its client CA.
  o.tls.client_ca_file = client_cert;
  auto mtls = StartServer(o, {});
  ASSERT_TRUE(mtls.ok()) << mtls.status();
  const std::string mtarget = "127.0.0.1:" + std::to_string(mtls->port);
  auto with_cert = MakeChannel({.target = mtarget, .ca_file = server_cert, .cert_file = client_cert,
                                .key_file = client_key});
  ASSERT_TRUE(with_cert.ok()) << with_cert.status();
  EXPECT_TRUE(CheckHealth(**with_cert, mtarget, absl::Seconds(30)).ok());
  auto without_cert = MakeChannel({.target = mtarget, .ca_file = server_cert});
  ASSERT_TRUE(without_cert.ok());
  EXPECT_EQ(CheckHealth(**without_cert, mtarget, absl::Seconds(5)).code(), absl::StatusCode::kUnavailable);
  mtls->server->Shutdown();
  ASSERT_EQ(std::system(("rm -rf " + dir).c_str()), 0);
}

}  // namespace
}  // namespace herd::rpc
