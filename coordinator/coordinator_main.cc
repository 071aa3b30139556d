// herd-coordinator: one per cluster (DESIGN.md §1). Parses its configuration, opens the data
// directory, and serves gRPC (health checking and reflection on) until SIGINT/SIGTERM.
#include <signal.h>

#include <filesystem>
#include <iostream>
#include <thread>

#include "CLI/CLI.hpp"
#include "common/log.h"
#include "common/rpc/rpc.h"
#include "common/status.h"
#include "coordinator/coordinator_config.h"

int main(int argc, char** argv) {
  CLI::App app{"herd-coordinator: the Herd cluster's API, job queue, scheduler and stores."};
  app.set_version_flag("--version", std::string("herd-coordinator ") + HERD_VERSION);
  std::string config_path;
  herd::coordinator::CoordinatorConfig flags;
  bool print_config = false;
  app.add_option("--config", config_path, "coordinator.yaml (docs/configuration.md); flags override it")
      ->check(CLI::ExistingFile);
  auto* listen = app.add_option("--listen", flags.listen, "gRPC address, host:port (port 0 = any free port)");
  auto* data_dir = app.add_option("--data-dir", flags.data_dir, "Folder for the database and blobs");
  auto* ready = app.add_option("--ready-file", flags.ready_file, "Write the bound gRPC port here once serving");
  app.add_flag("--print-config", print_config, "Print the effective configuration and exit");
  CLI11_PARSE(app, argc, argv);

  herd::coordinator::CoordinatorConfig config;
  if (!config_path.empty()) {
    auto loaded = herd::coordinator::LoadCoordinatorConfig(config_path);
    if (!loaded.ok()) {
      std::cerr << "herd-coordinator: " << loaded.status().message() << "\n";
      return 2;
    }
    config = *loaded;
  }
  if (*listen) config.listen = flags.listen;
  if (*data_dir) config.data_dir = flags.data_dir;
  if (*ready) config.ready_file = flags.ready_file;
  if (absl::Status s = config.Validate(); !s.ok()) {
    std::cerr << "herd-coordinator: " << s.message() << "\n";
    return 2;
  }
  if (print_config) {
    std::cout << "listen: " << config.listen << "\nmetrics_listen: " << config.metrics_listen
              << "\ndata_dir: " << config.data_dir << "\ntrainer_grace_seconds: " << config.trainer_grace_seconds
              << "\nheartbeat_seconds: " << config.heartbeat_seconds
              << "\ntrainer_lease_seconds: " << config.trainer_lease_seconds << "\n";
    return 0;
  }

  // Block the stop signals in every thread; one thread waits for them below.
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGINT);
  sigaddset(&stop, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop, nullptr);

  std::error_code ec;
  std::filesystem::create_directories(config.data_dir, ec);
  if (ec) {
    std::cerr << "herd-coordinator: cannot create data dir " << config.data_dir << ": " << ec.message() << "\n";
    return 1;
  }
  herd::rpc::ServerOptions server_options;
  server_options.listen = config.listen;
  server_options.ready_file = config.ready_file;
  server_options.allow_insecure_remote = config.allow_insecure_remote;
  server_options.tls = {config.tls.cert_file, config.tls.key_file, config.tls.client_ca_file};
  auto server = herd::rpc::StartServer(server_options, {});
  if (!server.ok()) {
    std::cerr << "herd-coordinator: " << server.status().message() << "\n";
    return 1;
  }
  HERD_LOG(Info) << "serving on port " << server->port << ", data in " << config.data_dir;
  int sig = 0;
  sigwait(&stop, &sig);
  HERD_LOG(Info) << "signal " << sig << ": shutting down";
  server->server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(10));
  return 0;
}
