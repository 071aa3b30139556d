// herd-coordinator: one per cluster (DESIGN.md §1). Parses its configuration, opens the data
// directory, and serves gRPC (health checking and reflection on) until SIGINT/SIGTERM.
// `herd-coordinator token create --tenant NAME` makes a user token (while the coordinator is
// stopped: the data dir is locked by the process that has it open).
#include <signal.h>

#include <filesystem>
#include <iostream>
#include <thread>

#include "CLI/CLI.hpp"
#include "common/log.h"
#include "common/metrics/http_endpoint.h"
#include "common/metrics/metrics.h"
#include "common/rpc/rpc.h"
#include "common/rpc/rpc_metrics.h"
#include "common/status.h"
#include "coordinator/coordinator_config.h"
#include "coordinator/coordinator_metrics.h"
#include "coordinator/dataset_uploads.h"
#include "coordinator/housekeeper.h"
#include "absl/synchronization/notification.h"
#include "coordinator/registry.h"
#include "coordinator/rendezvous.h"
#include "coordinator/scheduler.h"
#include "coordinator/job_control.h"
#include "coordinator/progress_board.h"
#include "coordinator/services/adapter_service.h"
#include "coordinator/services/cluster_service.h"
#include "coordinator/services/dataset_service.h"
#include "coordinator/services/job_convert.h"
#include "coordinator/services/job_service.h"
#include "coordinator/services/trainer_service.h"
#include "coordinator/store/store.h"
#include "coordinator/trainer_discovery.h"

namespace {

// A program installed beside this one (herd-prepare).
std::string BesideUs(const std::string& name) {
  std::error_code ec;
  const std::filesystem::path self = std::filesystem::read_symlink("/proc/self/exe", ec);
  return (self.parent_path() / name).string();
}

// Prints a new token once, on stdout: a user token of `tenant` (made if needed), or with
// `cluster` the token trainers present.
int CreateToken(const std::string& data_dir, const std::string& tenant, const std::string& label, bool cluster) {
  auto store = herd::coordinator::store::Store::Open({.data_dir = data_dir});
  if (!store.ok()) {
    std::cerr << "herd-coordinator: " << store.status().message()
              << (store.status().code() == absl::StatusCode::kFailedPrecondition
                      ? " (stop the coordinator to create tokens)"
                      : "")
              << "\n";
    return 1;
  }
  if (cluster) {
    auto token = (*store)->tokens().CreateClusterToken(label);
    if (!token.ok()) {
      std::cerr << "herd-coordinator: " << token.status().message() << "\n";
      return 1;
    }
    std::cout << token->token << "\n";
    std::cerr << "cluster token " << token->info.id << " for trainers (shown once; store it now)\n";
    return 0;
  }
  if (tenant.empty()) {
    std::cerr << "herd-coordinator: token create needs --tenant NAME (or --cluster)\n";
    return 1;
  }
  if (absl::Status s = (*store)->tokens().EnsureTenant(tenant); !s.ok()) {
    std::cerr << "herd-coordinator: " << s.message() << "\n";
    return 2;
  }
  auto token = (*store)->tokens().CreateUserToken(tenant, label);
  if (!token.ok()) {
    std::cerr << "herd-coordinator: " << token.status().message() << "\n";
    return 1;
  }
  std::cout << token->token << "\n";
  std::cerr << "token " << token->info.id << " for tenant " << tenant
            << " (shown once; store it now)\n";
  return 0;
}

}  // namespace

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
  auto* metrics_listen = app.add_option("--metrics-listen", flags.metrics_listen,
                                        "Prometheus /metrics address, host:port (port 0 = any free port)");
  auto* metrics_ready = app.add_option("--metrics-ready-file", flags.metrics_ready_file,
                                       "Write the bound /metrics port here once serving");
  app.add_flag("--print-config", print_config, "Print the effective configuration and exit");
  CLI::App* token = app.add_subcommand("token", "Manage bearer tokens (while the coordinator is stopped)");
  CLI::App* token_create = token->add_subcommand("create", "Print a new user token of a tenant, made if needed");
  token->require_subcommand(1);
  std::string token_tenant, token_label, token_data_dir = herd::coordinator::CoordinatorConfig{}.data_dir;
  bool token_cluster = false;
  token_create->add_option("--tenant", token_tenant, "Tenant the token belongs to");
  token_create->add_flag("--cluster", token_cluster, "A cluster token for herd-trainer agents instead of a user token");
  token_create->add_option("--data-dir", token_data_dir, "The coordinator's data folder");
  token_create->add_option("--label", token_label, "Note kept with the token (who it is for)");
  CLI11_PARSE(app, argc, argv);
  if (*token_create) return CreateToken(token_data_dir, token_tenant, token_label, token_cluster);

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
  if (*metrics_listen) config.metrics_listen = flags.metrics_listen;
  if (*metrics_ready) config.metrics_ready_file = flags.metrics_ready_file;
  if (absl::Status s = config.Validate(); !s.ok()) {
    std::cerr << "herd-coordinator: " << s.message() << "\n";
    return 2;
  }
  if (print_config) {
    std::cout << "listen: " << config.listen << "\nmetrics_listen: " << config.metrics_listen
              << "\nmetrics_ready_file: " << config.metrics_ready_file
              << "\nfile_sd_path: " << config.EffectiveFileSdPath()
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
  auto store = herd::coordinator::store::Store::Open(
      {.data_dir = config.data_dir, .max_upload_bytes = config.max_upload_bytes});
  if (!store.ok()) {
    std::cerr << "herd-coordinator: " << store.status().message() << "\n";
    return 1;
  }
  herd::coordinator::Housekeeper housekeeper(store->get(), herd::coordinator::Clock::Real());
  housekeeper.Start();
  herd::coordinator::DatasetUploads dataset_uploads(store->get());
  herd::coordinator::services::DatasetService dataset_service(
      &dataset_uploads, &(*store)->tokens(),
      {.store = store->get(),
       .herd_prepare = config.prepare_program.empty() ? BesideUs("herd-prepare") : config.prepare_program,
       .work_dir = (std::filesystem::path(config.data_dir) / "inspect").string()});
  auto registry = herd::coordinator::TrainerRegistry::Create(
      {.heartbeat_interval = absl::Seconds(config.heartbeat_seconds),
       .lease = absl::Seconds(config.trainer_lease_seconds)},
      herd::coordinator::Clock::Real());
  auto rendezvous = herd::coordinator::RendezvousStore::Create();
  if (!registry.ok() || !rendezvous.ok()) {
    std::cerr << "herd-coordinator: " << (registry.ok() ? rendezvous.status() : registry.status()).message() << "\n";
    return 1;
  }
  herd::coordinator::SchedulerOptions scheduler_options;
  scheduler_options.max_recoveries = config.max_recoveries;
  auto scheduler = herd::coordinator::Scheduler::Create(scheduler_options, registry->get(), rendezvous->get(),
                                                        herd::coordinator::Clock::Real());
  if (!scheduler.ok()) {
    std::cerr << "herd-coordinator: " << scheduler.status().message() << "\n";
    return 1;
  }
  herd::coordinator::ProgressBoard progress;
  // Prometheus metrics (docs/metrics.md): gauges refreshed at each scrape, events counted
  // through the hooks below, RPCs through the server's interceptor.
  herd::metrics::Registry metrics_registry;
  auto coordinator_metrics = herd::coordinator::CoordinatorMetrics::Create(
      &metrics_registry, {.jobs = &(*store)->jobs(),
                          .tokens = &(*store)->tokens(),
                          .scheduler = scheduler->get(),
                          .trainers = registry->get(),
                          .progress = &progress,
                          .database_path = (std::filesystem::path(config.data_dir) / "herd.db").string(),
                          .blob_dir = (*store)->blobs().root(),
                          .data_dir = config.data_dir});
  auto rpc_metrics = herd::rpc::RpcMetrics::Create(&metrics_registry);
  if (!coordinator_metrics.ok() || !rpc_metrics.ok()) {
    std::cerr << "herd-coordinator: metrics: "
              << (coordinator_metrics.ok() ? rpc_metrics.status() : coordinator_metrics.status()).message() << "\n";
    return 1;
  }
  if (absl::Status s = (*rpc_metrics)->PreinitializeServices(
          {"herd.v1.DatasetService", "herd.v1.JobService", "herd.v1.TrainerService", "herd.v1.ClusterService",
           "herd.v1.AdapterService"});
      !s.ok()) {
    HERD_LOG(Warning) << "metrics: " << s;
  }
  herd::coordinator::CoordinatorMetrics* const job_metrics = coordinator_metrics->get();
  herd::coordinator::TrainerDiscoveryFile discovery(config.EffectiveFileSdPath(), registry->get());
  herd::coordinator::JobControlOptions control_options;
  control_options.preparer.herd_prepare =
      config.prepare_program.empty() ? BesideUs("herd-prepare") : config.prepare_program;
  control_options.preparer.work_dir = (std::filesystem::path(config.data_dir) / "prepare").string();
  herd::coordinator::store::Store* const stored = store->get();
  control_options.on_final = [&progress, job_metrics, stored](const std::string& job_id) {
    job_metrics->OnJobFinal(job_id);  // reads the board's last tokens: before Forget
    // The live progress and loss history outlive the job in its row (`herd jobs get --metrics`).
    if (auto view = progress.Get(job_id); view) {
      if (absl::Status s = stored->jobs().SaveProgress(job_id, herd::coordinator::services::ProgressSnapshotJson(*view));
          !s.ok()) {
        HERD_LOG(Warning) << "could not keep the progress of " << job_id << ": " << s;
      }
    }
    progress.Forget(job_id);
  };
  control_options.on_published = [&progress](const std::string& job_id, int64_t step) {
    progress.CompleteThrough(job_id, step);
  };
  control_options.on_events = [job_metrics](const herd::coordinator::SchedulerEvents& events) {
    job_metrics->OnSchedulerEvents(events);
  };
  control_options.on_prepared = [job_metrics](double seconds, int64_t tokens) {
    job_metrics->OnPrepared(seconds, tokens);
  };
  control_options.restart_grace = absl::Seconds(config.trainer_grace_seconds);
  herd::coordinator::JobControl control(store->get(), scheduler->get(), control_options);
  if (absl::Status s = control.Restore(); !s.ok()) {
    std::cerr << "herd-coordinator: restoring jobs: " << s.message() << "\n";
    return 1;
  }
  control.Start();
  herd::coordinator::services::JobService job_service(&(*store)->jobs(), &(*store)->tokens(), &progress, &control);
  herd::coordinator::services::TrainerService trainer_service(
      store->get(), scheduler->get(), rendezvous->get(), &control, &progress,
      {.collective_timeout = absl::Seconds(config.collective_timeout_seconds),
       .on_checkpoint_stored = [job_metrics](const std::string& job_id, double seconds) {
         job_metrics->OnCheckpointStored(job_id, seconds);
       }});
  herd::coordinator::services::ClusterService cluster_service(store->get(), scheduler->get(), registry->get());
  herd::coordinator::services::AdapterService adapter_service(&(*store)->checkpoints(), &(*store)->blobs(),
                                                              &(*store)->tokens());
  // The discovery file is checked after every scheduler pass; a failure is logged when it changes.
  std::string discovery_error;
  auto refresh_discovery = [&discovery, &discovery_error] {
    absl::Status s = discovery.Refresh();
    std::string now = s.ok() ? "" : s.ToString();
    if (now != discovery_error && !s.ok()) {
      HERD_LOG(Error) << "writing " << discovery.path() << ": " << s;
    }
    discovery_error = std::move(now);
  };
  refresh_discovery();
  // /metrics is not essential to training: an address that cannot be bound is logged, not fatal.
  std::unique_ptr<herd::metrics::MetricsServer> metrics_server;
  if (auto started = herd::metrics::MetricsServer::Start(
          {.listen = config.metrics_listen, .ready_file = config.metrics_ready_file}, &metrics_registry);
      started.ok()) {
    metrics_server = *std::move(started);
    HERD_LOG(Info) << "metrics on " << metrics_server->address() << ", trainers listed in " << discovery.path();
  } else {
    HERD_LOG(Error) << "no /metrics: " << started.status();
  }
  server_options.observer = rpc_metrics->get();
  absl::Notification stop_ticks;
  std::thread ticker([&] {
    herd::coordinator::RunSchedulerTicks(
        **scheduler, **store, stop_ticks, absl::Seconds(1),
        [&control](const herd::coordinator::SchedulerEvents& events) { return control.Persist(events); },
        refresh_discovery);
  });
  server_options.max_message_bytes = (16 << 20) + (1 << 20);  // RegisterTrainer carries up to 16 MiB of files
  auto server = herd::rpc::StartServer(server_options, {&dataset_service, &job_service, &trainer_service, &cluster_service, &adapter_service});
  if (!server.ok()) {
    std::cerr << "herd-coordinator: " << server.status().message() << "\n";
    stop_ticks.Notify();
    ticker.join();
    control.Stop();
    return 1;
  }
  HERD_LOG(Info) << "serving on port " << server->port << ", data in " << config.data_dir;
  int sig = 0;
  sigwait(&stop, &sig);
  HERD_LOG(Info) << "signal " << sig << ": shutting down";
  (*rendezvous)->Shutdown();  // wakes waiting rendezvous gets so the server can drain
  server->server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(10));
  stop_ticks.Notify();
  ticker.join();
  control.Stop();
  housekeeper.Stop();
  if (metrics_server) metrics_server->Stop();
  return 0;
}
