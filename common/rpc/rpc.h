// herd_rpc: the gRPC plumbing shared by the coordinator, the agent and the CLI (never the
// engine): Status conversion, listen-address rules, servers on port 0 with a ready file, and
// channels. Domain code never includes this header.
#ifndef HERD_COMMON_RPC_RPC_H_
#define HERD_COMMON_RPC_RPC_H_

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace herd::rpc {

grpc::Status ToGrpc(const absl::Status& status);
absl::Status FromGrpc(const grpc::Status& status);

// "host:port" split; IPv6 hosts in brackets ("[::1]:7070").
struct HostPort {
  std::string host;
  int port = 0;
};
absl::StatusOr<HostPort> ParseHostPort(const std::string& address);
// 127.0.0.0/8, ::1 and "localhost".
bool IsLoopbackHost(const std::string& host);

struct TlsFiles {
  std::string cert_file;       // PEM server (or client) certificate; "" = plaintext
  std::string key_file;        // PEM private key
  std::string client_ca_file;  // server: require client certificates signed by this CA (mTLS)
  bool enabled() const { return !cert_file.empty(); }
};

// Told about every RPC a server answers (metrics): the method as "JobService/GetJob" (the
// "/herd.v1." package prefix stripped; other packages keep theirs, "grpc.health.v1.Health/Check"),
// the final status code, and the seconds from the call's arrival to its status (a stream: until
// it ends). Called on gRPC's threads, once per call: must be thread-safe and quick.
class RpcObserver {
 public:
  virtual ~RpcObserver() = default;
  virtual void OnRpcDone(std::string_view method, grpc::StatusCode code, double seconds) = 0;
};

// "/herd.v1.JobService/GetJob" -> "JobService/GetJob"; "/pkg.Svc/M" -> "pkg.Svc/M".
std::string RpcMethodLabel(std::string_view full_method);

struct ServerOptions {
  std::string listen = "127.0.0.1:0";  // port 0 picks a free port
  std::string ready_file;               // when set, the bound port is written here once serving
  TlsFiles tls;
  // Plaintext on a non-loopback address exposes tokens; refused unless explicitly allowed.
  bool allow_insecure_remote = false;
  int max_message_bytes = 8 << 20;
  // When set (not owned; outlives the server), told about every RPC through a server
  // interceptor. Default: none.
  RpcObserver* observer = nullptr;

  absl::Status Validate() const;
};

// Builds and starts a server with `services`, health checking and reflection on. Writes the
// bound port to options.ready_file (atomically) after the server is accepting connections.
struct StartedServer {
  std::unique_ptr<grpc::Server> server;
  int port = 0;
};
absl::StatusOr<StartedServer> StartServer(const ServerOptions& options,
                                          const std::vector<grpc::Service*>& services);

struct ChannelOptions {
  std::string target;  // "host:port"
  std::string ca_file; // PEM CA that signed the server certificate; "" = plaintext
  std::string cert_file, key_file;  // client certificate for mTLS
  int max_message_bytes = 8 << 20;
};
absl::StatusOr<std::shared_ptr<grpc::Channel>> MakeChannel(const ChannelOptions& options);

// Asks the server's grpc.health.v1 service whether it is serving. OK when SERVING;
// UNAVAILABLE when it cannot be reached or is not serving, naming the target.
absl::Status CheckHealth(grpc::Channel& channel, const std::string& target, absl::Duration timeout);

}  // namespace herd::rpc

#endif  // HERD_COMMON_RPC_RPC_H_
