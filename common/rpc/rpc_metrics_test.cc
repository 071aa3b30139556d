// The server interceptor and RpcMetrics over a real in-process server on 127.0.0.1: a herd.v1
// method answering NOT_FOUND and the built-in health check are counted and timed, with the
// method label stripped of "herd.v1.", and the pre-initialised series are there at 0.
#include "common/rpc/rpc_metrics.h"

#include <string>

#include "gtest/gtest.h"
#include "herd/v1/jobs.grpc.pb.h"

namespace herd::rpc {
namespace {

TEST(RpcMethodLabelTest, StripsTheHerdPackageOnly) {
  EXPECT_EQ(RpcMethodLabel("/herd.v1.JobService/GetJob"), "JobService/GetJob");
  EXPECT_EQ(RpcMethodLabel("/grpc.health.v1.Health/Check"), "grpc.health.v1.Health/Check");
  EXPECT_EQ(RpcMethodLabel(""), "");
  EXPECT_EQ(StatusCodeName(grpc::StatusCode::NOT_FOUND), "NOT_FOUND");
  EXPECT_EQ(StatusCodeName(grpc::StatusCode::OK), "OK");
}

// GetJob answers NOT_FOUND; every other JobService method is unimplemented.
class NoJobs final : public herd::v1::JobService::Service {
  grpc::Status GetJob(grpc::ServerContext*, const herd::v1::GetJobRequest* request, herd::v1::Job*) override {
    return grpc::Status(grpc::StatusCode::NOT_FOUND, "no job " + request->id());
  }
};

bool Contains(const std::string& text, const std::string& line) {
  return text.find(line) != std::string::npos;
}

TEST(RpcMetricsTest, CountsAndTimesEveryCall) {
  metrics::Registry registry;
  auto rpc_metrics = RpcMetrics::Create(&registry);
  ASSERT_TRUE(rpc_metrics.ok()) << rpc_metrics.status();
  ASSERT_TRUE((*rpc_metrics)->PreinitializeServices({"herd.v1.JobService"}).ok());
  EXPECT_EQ((*rpc_metrics)->PreinitializeServices({"herd.v1.NoSuchService"}).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(RpcMetrics::Create(&registry).status().code(), absl::StatusCode::kAlreadyExists);

  const std::string before = registry.Render();
  EXPECT_TRUE(Contains(before, "herd_rpc_requests_total{method=\"JobService/GetJob\",code=\"OK\"} 0\n")) << before;
  EXPECT_TRUE(Contains(before, "herd_rpc_requests_total{method=\"JobService/ListJobs\",code=\"OK\"} 0\n"));
  EXPECT_TRUE(Contains(before, "herd_rpc_duration_seconds_count{method=\"JobService/GetJob\"} 0\n"));

  NoJobs service;
  ServerOptions options;
  options.observer = rpc_metrics->get();
  auto server = StartServer(options, {&service});
  ASSERT_TRUE(server.ok()) << server.status();
  const std::string target = "127.0.0.1:" + std::to_string(server->port);
  auto channel = MakeChannel({.target = target});
  ASSERT_TRUE(channel.ok());
  auto stub = herd::v1::JobService::NewStub(*channel);
  for (int i = 0; i < 3; ++i) {
    grpc::ClientContext context;
    herd::v1::GetJobRequest request;
    request.set_id("job_x");
    herd::v1::Job job;
    EXPECT_EQ(stub->GetJob(&context, request, &job).error_code(), grpc::StatusCode::NOT_FOUND);
  }
  {
    grpc::ClientContext context;
    herd::v1::ListJobsRequest request;
    herd::v1::ListJobsResponse response;
    EXPECT_EQ(stub->ListJobs(&context, request, &response).error_code(), grpc::StatusCode::UNIMPLEMENTED);
  }
  ASSERT_TRUE(CheckHealth(**channel, target, absl::Seconds(30)).ok());
  // The interceptor reports before the status goes out, so every call above is counted.
  server->server->Shutdown();

  const std::string text = registry.Render();
  EXPECT_TRUE(Contains(text, "herd_rpc_requests_total{method=\"JobService/GetJob\",code=\"NOT_FOUND\"} 3\n")) << text;
  EXPECT_TRUE(Contains(text, "herd_rpc_requests_total{method=\"JobService/GetJob\",code=\"OK\"} 0\n"));
  EXPECT_TRUE(Contains(text, "herd_rpc_requests_total{method=\"JobService/ListJobs\",code=\"UNIMPLEMENTED\"} 1\n"));
  EXPECT_TRUE(Contains(text, "herd_rpc_requests_total{method=\"grpc.health.v1.Health/Check\",code=\"OK\"} 1\n"));
  EXPECT_TRUE(Contains(text, "herd_rpc_duration_seconds_count{method=\"JobService/GetJob\"} 3\n"));
  EXPECT_TRUE(Contains(text, "herd_rpc_duration_seconds_bucket{method=\"JobService/GetJob\",le=\"+Inf\"} 3\n"));
  EXPECT_TRUE(Contains(text, "# TYPE herd_rpc_duration_seconds histogram\n"));
}

}  // namespace
}  // namespace herd::rpc
