// The /metrics endpoint over Debian's cpp-httplib (a compiled library: httplib.h must be
// included with the same CPPHTTPLIB_* definitions it was built with, which pkg-config supplies).
#include "common/metrics/http_endpoint.h"

#include <httplib.h>
#include <sys/socket.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <string_view>
#include <utility>

#include "absl/strings/numbers.h"
#include "common/file_util.h"
#include "common/metrics/text_format.h"
#include "common/status.h"
#include "common/strings.h"

namespace herd::metrics {
namespace {

constexpr char kPlainText[] = "text/plain; charset=utf-8";

struct HostPort {
  std::string host;
  int port = 0;
};

// "host:port" or "[v6]:port". (herd_rpc has the same parser, but this library must not link gRPC.)
absl::StatusOr<HostPort> ParseListen(const std::string& listen) {
  HostPort hp;
  std::string_view port;
  const std::string_view text(listen);
  if (!text.empty() && text[0] == '[') {
    const size_t close = text.find(']');
    if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':') {
      return absl::InvalidArgumentError(
          herd::StrCat("metrics listen address '", listen, "': want [v6-address]:port"));
    }
    hp.host = std::string(text.substr(1, close - 1));
    port = text.substr(close + 2);
  } else {
    const size_t colon = text.rfind(':');
    if (colon == std::string_view::npos ||
        text.substr(0, colon).find(':') != std::string_view::npos) {
      return absl::InvalidArgumentError(herd::StrCat("metrics listen address '", listen,
                                                     "': want host:port (IPv6 as [address]:port)"));
    }
    hp.host = std::string(text.substr(0, colon));
    port = text.substr(colon + 1);
  }
  if (hp.host.empty()) {
    return absl::InvalidArgumentError(herd::StrCat(
        "metrics listen address '", listen, "' has no host (write 127.0.0.1, or 0.0.0.0 for all)"));
  }
  if (!absl::SimpleAtoi(absl::string_view(port.data(), port.size()), &hp.port) || hp.port < 0 ||
      hp.port > 65535) {
    return absl::InvalidArgumentError(
        herd::StrCat("metrics listen address '", listen, "': port must be 0..65535"));
  }
  return hp;
}

// httplib's default sets SO_REUSEPORT, which lets a second server bind the same port and
// silently share its connections; SO_REUSEADDR alone still allows a quick restart.
void ExclusiveSocketOptions(int sock) {
  int yes = 1;
  setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
}

}  // namespace

absl::Status MetricsServerOptions::Validate() const {
  HERD_RETURN_IF_ERROR(ParseListen(listen).status());
  if (threads < 1 || threads > 64) {
    return absl::InvalidArgumentError(herd::StrCat("metrics threads must be 1..64, got ", threads));
  }
  if (io_timeout_seconds < 1) {
    return absl::InvalidArgumentError(
        herd::StrCat("metrics io_timeout_seconds must be >= 1, got ", io_timeout_seconds));
  }
  return absl::OkStatus();
}

MetricsServer::MetricsServer(std::string host, int port, std::unique_ptr<httplib::Server> server)
    : host_(std::move(host)), port_(port), server_(std::move(server)) {}

MetricsServer::~MetricsServer() { Stop(); }

absl::StatusOr<std::unique_ptr<MetricsServer>> MetricsServer::Start(
    const MetricsServerOptions& options, const Registry* registry, HealthCheck health) {
  HERD_RETURN_IF_ERROR(options.Validate());
  if (registry == nullptr) return absl::InvalidArgumentError("metrics server needs a registry");
  HERD_ASSIGN_OR_RETURN(HostPort hp, ParseListen(options.listen));

  auto server = std::make_unique<httplib::Server>();
  const int threads = options.threads;
  server->new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  server->set_socket_options(ExclusiveSocketOptions);
  server->set_read_timeout(options.io_timeout_seconds);
  server->set_write_timeout(options.io_timeout_seconds);
  server->set_payload_max_length(64 << 10);  // GET only; nothing legitimate sends a body
  // An idle connection holds a worker, and Stop() waits for it, until this runs out; scrapes
  // come seconds apart, so keeping connections longer saves nothing.
  server->set_keep_alive_timeout(1);
  server->Get("/metrics", [registry](const httplib::Request&, httplib::Response& res) {
    res.set_content(registry->Render(), kTextContentType);
  });
  server->Get("/healthz", [health](const httplib::Request&, httplib::Response& res) {
    const absl::Status status = health ? health() : absl::OkStatus();
    if (status.ok()) {
      res.set_content("ok\n", kPlainText);
    } else {
      res.status = 503;
      res.set_content(herd::StrCat(status.ToString(), "\n"), kPlainText);
    }
  });

  errno = 0;
  int port = hp.port;
  if (port == 0) {
    port = server->bind_to_any_port(hp.host);
  } else if (!server->bind_to_port(hp.host, port)) {
    port = -1;
  }
  if (port <= 0) {
    const int err = errno;
    return absl::UnavailableError(herd::StrCat("cannot listen for metrics on ", options.listen,
                                               err != 0 ? ": " : "",
                                               err != 0 ? std::strerror(err) : ""));
  }

  std::unique_ptr<MetricsServer> self(new MetricsServer(hp.host, port, std::move(server)));
  {
    absl::MutexLock lock(&self->stop_mu_);
    self->thread_ = std::thread([s = self.get()] {
      s->server_->listen_after_bind();
      s->loop_exited_.store(true);
    });
  }
  // The socket queues connections already; wait for the loop anyway, so that "started" means
  // "answering" and a failed start is reported here.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (!self->server_->is_running() && !self->loop_exited_.load()) {
    if (std::chrono::steady_clock::now() > deadline) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  if (!self->server_->is_running()) {
    return absl::UnavailableError(
        herd::StrCat("metrics server on ", self->address(), " did not start"));
  }
  if (!options.ready_file.empty()) {
    HERD_RETURN_IF_ERROR(WriteFileAtomic(options.ready_file, herd::StrCat(port, "\n")));
  }
  return self;
}

void MetricsServer::Stop() {
  absl::MutexLock lock(&stop_mu_);
  if (!thread_.joinable()) return;
  // httplib's stop() is a no-op before the loop runs and must not be called twice.
  while (!loop_exited_.load()) {
    if (server_->is_running()) {
      server_->stop();
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  thread_.join();
}

std::string MetricsServer::address() const {
  if (host_.find(':') != std::string::npos) return herd::StrCat("[", host_, "]:", port_);
  return herd::StrCat(host_, ":", port_);
}

}  // namespace herd::metrics
