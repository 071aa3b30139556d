// The shared fixture of the service skins' tests: a Store in a temp dir (StoreTest) with a user
// token of each tenant and a cluster token, and the services under test on an in-process gRPC
// server on 127.0.0.1 port 0.
#ifndef HERD_COORDINATOR_SERVICES_SERVICE_TEST_UTIL_H_
#define HERD_COORDINATOR_SERVICES_SERVICE_TEST_UTIL_H_

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "common/rpc/rpc.h"
#include "common/strings.h"
#include "coordinator/store/test_util.h"
#include "gtest/gtest.h"

namespace herd::coordinator::services::testing {

class ServiceTest : public store::testing::StoreTest {
 protected:
  void SetUp() override {
    StoreTest::SetUp();
    auto a = store_->tokens().CreateUserToken(store::testing::kTenantA, "test");
    auto b = store_->tokens().CreateUserToken(store::testing::kTenantB, "test");
    auto c = store_->tokens().CreateClusterToken("test");
    ASSERT_TRUE(a.ok() && b.ok() && c.ok());
    token_a_ = a->token;
    token_b_ = b->token;
    cluster_token_ = c->token;
  }
  void TearDown() override {
    if (server_) server_->Shutdown();
  }

  // Starts `services` (owned by the test, outliving the server) and returns a channel to them;
  // null (with a test failure) when the server does not start.
  std::shared_ptr<grpc::Channel> Serve(const std::vector<grpc::Service*>& services) {
    auto server = rpc::StartServer({.listen = "127.0.0.1:0"}, services);
    EXPECT_TRUE(server.ok()) << server.status();
    if (!server.ok()) return nullptr;
    server_ = std::move(server->server);
    auto channel = rpc::MakeChannel({.target = StrCat("127.0.0.1:", server->port)});
    EXPECT_TRUE(channel.ok()) << channel.status();
    return channel.ok() ? *channel : nullptr;
  }

  // A generous deadline and, unless empty, the bearer token on a call.
  static void Prepare(grpc::ClientContext* context, const std::string& token) {
    context->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
    if (!token.empty()) context->AddMetadata("authorization", "Bearer " + token);
  }

  std::string token_a_, token_b_, cluster_token_;
  std::unique_ptr<grpc::Server> server_;
};

}  // namespace herd::coordinator::services::testing

#endif  // HERD_COORDINATOR_SERVICES_SERVICE_TEST_UTIL_H_
