// herd-rpc-load: a small load generator for the coordinator's read path. N client threads (each
// with its own channel) call JobService.GetJob on one job as fast as the coordinator answers for
// a fixed time, then print calls per second and latency percentiles as one JSON line. A benchmark
// program (DESIGN.md §12: speed is measured by programs that print figures, never by tests).
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <thread>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "CLI/CLI.hpp"
#include "common/rpc/rpc.h"
#include "herd/v1/jobs.grpc.pb.h"

int main(int argc, char** argv) {
  CLI::App app{"herd-rpc-load: GetJob calls per second against a running coordinator"};
  std::string endpoint = "127.0.0.1:7070", job_id;
  int threads = 4;
  double seconds = 10;
  app.add_option("--endpoint", endpoint, "Coordinator host:port")->capture_default_str();
  app.add_option("--job", job_id, "Job id to read")->required();
  app.add_option("--threads", threads, "Client threads, one channel each")->capture_default_str();
  app.add_option("--seconds", seconds, "How long to run")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  const char* token = std::getenv("HERD_TOKEN");
  if (token == nullptr || *token == '\0') {
    std::cerr << "herd-rpc-load: set HERD_TOKEN to a user token\n";
    return 1;
  }

  std::atomic<bool> stop{false};
  std::atomic<int64_t> errors{0};
  std::vector<std::vector<double>> latencies(threads);
  std::vector<std::thread> workers;
  const auto start = std::chrono::steady_clock::now();
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&, t] {
      auto channel = herd::rpc::MakeChannel({.target = endpoint});
      if (!channel.ok()) {
        ++errors;
        return;
      }
      auto stub = herd::v1::JobService::NewStub(*channel);
      herd::v1::GetJobRequest request;
      request.set_id(job_id);
      while (!stop.load(std::memory_order_relaxed)) {
        grpc::ClientContext context;
        context.AddMetadata("authorization", std::string("Bearer ") + token);
        context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
        herd::v1::Job job;
        const auto t0 = std::chrono::steady_clock::now();
        grpc::Status s = stub->GetJob(&context, request, &job);
        const auto t1 = std::chrono::steady_clock::now();
        if (!s.ok()) {
          if (errors.fetch_add(1) == 0) std::cerr << "herd-rpc-load: " << s.error_message() << "\n";
          continue;
        }
        latencies[t].push_back(std::chrono::duration<double>(t1 - t0).count());
      }
    });
  }
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));  // the measured interval
  stop = true;
  for (auto& w : workers) w.join();
  const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::vector<double> all;
  for (auto& l : latencies) all.insert(all.end(), l.begin(), l.end());
  std::sort(all.begin(), all.end());
  auto pct = [&](double p) { return all.empty() ? 0.0 : all[std::min(all.size() - 1, static_cast<size_t>(p * all.size()))]; };
  std::printf("{\"rpc\":\"GetJob\",\"threads\":%d,\"seconds\":%.2f,\"calls\":%zu,\"calls_per_second\":%.0f,"
              "\"p50_ms\":%.3f,\"p99_ms\":%.3f,\"errors\":%lld}\n",
              threads, elapsed, all.size(), all.size() / elapsed, pct(0.5) * 1e3, pct(0.99) * 1e3,
              static_cast<long long>(errors.load()));
  return errors.load() > 0 && all.empty() ? 1 : 0;
}
