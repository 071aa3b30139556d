// herd-trainer: the agent process, one per GPU (DESIGN.md §1). Parses its configuration,
// checks the models it publishes, registers with the coordinator and heartbeats (registration.h),
// running one herd-engine per assignment (supervisor.h), until SIGINT or SIGTERM, which cancel
// the running engine and report it before exiting 0.
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <map>
#include <thread>

#include "CLI/CLI.hpp"
#include "common/metrics/http_endpoint.h"
#include "common/metrics/metrics.h"
#include "common/rpc/rpc.h"
#include "common/status.h"
#include "nlohmann/json.hpp"
#include "trainer/agent/agent_config.h"
#include "trainer/agent/agent_metrics.h"
#include "trainer/agent/coordinator_client.h"
#include "trainer/agent/device_probe.h"
#include "trainer/agent/model_scan.h"
#include "trainer/agent/registration.h"
#include "trainer/agent/supervisor.h"

namespace {

// "hostname-device" with the device's ':' dropped ("node3-cuda0").
std::string DefaultName(const std::string& device) {
  char host[256] = {};
  if (gethostname(host, sizeof(host) - 1) != 0 || host[0] == '\0') std::snprintf(host, sizeof(host), "trainer");
  std::string dev;
  for (char c : device) {
    if (c != ':') dev.push_back(c);
  }
  return std::string(host) + "-" + dev;
}

std::string BesideUs(const std::string& name) {
  std::error_code ec;
  const std::filesystem::path self = std::filesystem::read_symlink("/proc/self/exe", ec);
  return (self.parent_path() / name).string();
}

// OMP_NUM_THREADS of the engine: ours when set, else 1.
int EngineThreads() {
  const char* env = std::getenv("OMP_NUM_THREADS");
  const int n = env ? std::atoi(env) : 0;
  return n > 0 ? n : 1;
}

// The /metrics address to register: as bound, or on the advertised host when bound to a
// wildcard (Prometheus cannot scrape 0.0.0.0).
std::string MetricsAddress(const herd::metrics::MetricsServer& server, const std::string& advertise_host) {
  const std::string& host = server.host();
  if (host != "0.0.0.0" && host != "::" && !host.empty()) return server.address();
  const bool v6 = advertise_host.find(':') != std::string::npos;
  return (v6 ? "[" + advertise_host + "]" : advertise_host) + ":" + std::to_string(server.port());
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "herd-trainer: a Herd trainer agent. Registers with the coordinator, heartbeats, and runs\n"
      "one herd-engine per assignment on its device."};
  app.set_version_flag("--version", std::string("herd-trainer ") + HERD_VERSION);
  std::string config_path;
  herd::agent::AgentConfig flags;
  bool list_models = false;
  auto* name = app.add_option("--name", flags.name, "Trainer name, unique in the cluster (default: hostname-device)");
  auto* token_file = app.add_option("--token-file", flags.token_file, "File holding the cluster token")
                         ->check(CLI::ExistingFile);
  app.add_option("--config", config_path, "trainer.yaml (docs/configuration.md); flags override it")
      ->check(CLI::ExistingFile);
  auto* coordinator = app.add_option("--coordinator", flags.coordinator, "Coordinator gRPC address host:port");
  auto* models = app.add_option("--models", flags.models_dir, "Folder holding one Hugging Face model directory per model");
  auto* device = app.add_option("--device", flags.device, "cpu or cuda:N");
  auto* metrics_listen = app.add_option("--metrics-listen", flags.metrics_listen,
                                        "Prometheus /metrics address, host:port (port 0 = any free port)");
  auto* metrics_ready = app.add_option("--metrics-ready-file", flags.metrics_ready_file,
                                       "Write the bound /metrics port here once serving");
  bool check = false;
  app.add_flag("--list-models", list_models, "Check and list the models this trainer would publish, as JSON");
  app.add_flag("--check", check, "Check the models and that the coordinator answers, then exit");
  CLI11_PARSE(app, argc, argv);

  herd::agent::AgentConfig config;
  if (!config_path.empty()) {
    auto loaded = herd::agent::LoadAgentConfig(config_path);
    if (!loaded.ok()) {
      std::cerr << "herd-trainer: " << loaded.status().message() << "\n";
      return 2;
    }
    config = *loaded;
  }
  if (*coordinator) config.coordinator = flags.coordinator;
  if (*models) config.models_dir = flags.models_dir;
  if (*device) config.device = flags.device;
  if (*name) config.name = flags.name;
  if (*token_file) config.token_file = flags.token_file;
  if (*metrics_listen) config.metrics_listen = flags.metrics_listen;
  if (*metrics_ready) config.metrics_ready_file = flags.metrics_ready_file;
  if (config.name.empty()) config.name = DefaultName(config.device);
  if (absl::Status s = config.Validate(); !s.ok()) {
    std::cerr << "herd-trainer: " << s.message() << "\n";
    return 2;
  }
  auto found = herd::agent::ScanModels(config.models_dir);
  if (!found.ok()) {
    std::cerr << "herd-trainer: " << found.status().message() << "\n";
    return found.status().code() == absl::StatusCode::kNotFound ? 3 : 2;
  }
  if (list_models) {
    nlohmann::json out = nlohmann::json::array();
    for (const auto& m : *found) {
      out.push_back({{"name", m.name}, {"path", m.path}, {"layers", m.num_layers}, {"hidden_size", m.hidden_size},
                     {"heads", m.num_heads}, {"kv_heads", m.num_kv_heads}, {"vocab_size", m.vocab_size},
                     {"tokenizer", m.tokenizer}, {"weight_files", m.weight_files}});
    }
    std::cout << out.dump(2) << "\n";
    return 0;
  }
  // Block SIGINT/SIGTERM before gRPC starts its threads; one thread waits for them.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  // RegisterTrainer requests carry up to 16 MiB of model files (trainers.proto).
  auto channel = herd::rpc::MakeChannel(
      {.target = config.coordinator, .ca_file = config.ca_file, .max_message_bytes = herd::agent::kMaxRequestBytes});
  if (!channel.ok()) {
    std::cerr << "herd-trainer: coordinator: " << channel.status().message() << "\n";
    return 2;
  }
  if (absl::Status s = herd::rpc::CheckHealth(**channel, config.coordinator, absl::Seconds(10)); !s.ok()) {
    std::cerr << "herd-trainer: " << s.message() << "\n";
    return 5;
  }
  std::cout << "herd-trainer: " << found->size() << " model(s) under " << config.models_dir << ", coordinator at "
            << config.coordinator << " is serving\n";
  if (check) return 0;

  if (config.token_file.empty()) {
    std::cerr << "herd-trainer: no cluster token: set token_file in the config or pass --token-file\n";
    return 2;
  }
  auto token = herd::agent::ReadTokenFile(config.token_file);
  if (!token.ok()) {
    std::cerr << "herd-trainer: " << token.status().message() << "\n";
    return 2;
  }
  herd::v1::RegisterTrainerRequest request;
  request.set_name(config.name);
  const std::string engine_path = config.engine.empty() ? BesideUs("herd-engine") : config.engine;
  herd::agent::DeviceDescription described = herd::agent::DescribeTrainerDevice(config.device, engine_path);
  if (!described.warning.empty()) std::cerr << "herd-trainer: " << described.warning << "\n";
  *request.mutable_device() = described.info;
  request.set_agent_version(HERD_VERSION);
  request.set_engine_version(HERD_VERSION);
  // /metrics (docs/metrics.md): its address is what the coordinator lists for Prometheus. Not
  // essential to training: an address that cannot be bound is reported and the agent goes on.
  herd::metrics::Registry metrics_registry;
  auto agent_metrics = herd::agent::AgentMetrics::Create(&metrics_registry, config.device != "cpu");
  if (!agent_metrics.ok()) {
    std::cerr << "herd-trainer: metrics: " << agent_metrics.status().message() << "\n";
    return 1;
  }
  std::unique_ptr<herd::metrics::MetricsServer> metrics_server;
  if (auto started = herd::metrics::MetricsServer::Start(
          {.listen = config.metrics_listen, .ready_file = config.metrics_ready_file}, &metrics_registry);
      started.ok()) {
    metrics_server = *std::move(started);
    request.set_metrics_address(MetricsAddress(*metrics_server, config.advertise_address));
    std::cout << "herd-trainer: metrics on " << request.metrics_address() << "\n";
  } else {
    std::cerr << "herd-trainer: no /metrics: " << started.status().message() << "\n";
  }
  std::map<std::string, std::string> model_dirs;
  herd::agent::SupervisorOptions work{.engine_path = engine_path,
                                      .scratch_dir = config.scratch_dir, .device = config.device,
                                      .bind_address = config.bind_address,
                                      .advertise_address = config.advertise_address,
                                      .omp_threads = EngineThreads(), .keep_scratch = config.keep_scratch,
                                      .blob_cache_bytes = config.blob_cache_bytes,
                                      .observer = agent_metrics->get()};
  for (const auto& m : *found) {
    std::cout << "herd-trainer: hashing " << m.name << " ..." << std::endl;
    auto described = herd::agent::DescribeModel(m);
    if (!described.ok()) {
      std::cerr << "herd-trainer: " << described.status().message() << "\n";
      return 2;
    }
    work.models[m.name] = {.dir = m.path, .weights_sha256 = described->weights_sha256()};
    *request.add_models() = *std::move(described);
    model_dirs[m.name] = m.path;
  }
  if (absl::Status s = work.Validate(); !s.ok()) {
    std::cerr << "herd-trainer: " << s.message() << "\n";
    return 2;
  }

  absl::Notification stop;
  std::thread waiter([&signals, &stop] {
    int signal = 0;
    sigwait(&signals, &signal);
    if (!stop.HasBeenNotified()) stop.Notify();
  });
  herd::agent::TrainerClient client(*channel, *token, std::move(request), std::move(model_dirs));
  herd::agent::GrpcCoordinator coordinator_api(*channel, *token);
  herd::agent::Supervisor supervisor(std::move(work), &coordinator_api);
  absl::Status result = herd::agent::RunAgentLoop(client, supervisor, stop, std::cerr);
  supervisor.Shutdown();  // cancels and reports a running engine
  if (!stop.HasBeenNotified()) {
    // The loop ended by itself: wake the signal thread so it can be joined.
    stop.Notify();
    pthread_kill(waiter.native_handle(), SIGTERM);
  }
  waiter.join();
  if (metrics_server) metrics_server->Stop();
  if (!result.ok()) {
    std::cerr << "herd-trainer: the coordinator refused this trainer: " << result << "\n";
    return 4;
  }
  return 0;
}
