// gRPC helpers.
#include "common/rpc/rpc.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/support/server_interceptor.h>

#include <chrono>

#include "absl/strings/numbers.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "common/file_util.h"
#include "common/status.h"
#include "common/strings.h"

namespace herd::rpc {

grpc::Status ToGrpc(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  // absl and gRPC share the canonical code numbers.
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(status.message()));
}

absl::Status FromGrpc(const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()), status.error_message());
}

absl::StatusOr<HostPort> ParseHostPort(const std::string& address) {
  HostPort hp;
  std::string port;
  if (!address.empty() && address[0] == '[') {
    size_t close = address.find(']');
    if (close == std::string::npos || close + 1 >= address.size() || address[close + 1] != ':') {
      return absl::InvalidArgumentError(herd::StrCat("bad address '", address, "' (want [v6]:port)"));
    }
    hp.host = address.substr(1, close - 1);
    port = address.substr(close + 2);
  } else {
    size_t colon = address.rfind(':');
    if (colon == std::string::npos || colon == 0) {
      return absl::InvalidArgumentError(herd::StrCat("bad address '", address, "' (want host:port)"));
    }
    hp.host = address.substr(0, colon);
    port = address.substr(colon + 1);
  }
  if (!absl::SimpleAtoi(port, &hp.port) || hp.port < 0 || hp.port > 65535) {
    return absl::InvalidArgumentError(herd::StrCat("bad port in '", address, "'"));
  }
  return hp;
}

bool IsLoopbackHost(const std::string& host) {
  return host == "localhost" || host == "::1" || host.rfind("127.", 0) == 0;
}

std::string RpcMethodLabel(std::string_view full_method) {
  if (!full_method.empty() && full_method.front() == '/') full_method.remove_prefix(1);
  constexpr std::string_view kHerd = "herd.v1.";
  if (full_method.substr(0, kHerd.size()) == kHerd) full_method.remove_prefix(kHerd.size());
  return std::string(full_method);
}

namespace {

// Times one call from its creation to PRE_SEND_STATUS and tells the observer. A call that ends
// without sending a status (the client went away) is reported CANCELLED when it is destroyed.
class ObservingInterceptor final : public grpc::experimental::Interceptor {
 public:
  ObservingInterceptor(RpcObserver* observer, std::string method)
      : observer_(observer), method_(std::move(method)), start_(std::chrono::steady_clock::now()) {}
  ~ObservingInterceptor() override {
    if (!reported_) Report(grpc::StatusCode::CANCELLED);
  }

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (!reported_ &&
        methods->QueryInterceptionHookPoint(grpc::experimental::InterceptionHookPoints::PRE_SEND_STATUS)) {
      Report(methods->GetSendStatus().error_code());
    }
    methods->Proceed();
  }

 private:
  void Report(grpc::StatusCode code) {
    reported_ = true;
    const std::chrono::duration<double> took = std::chrono::steady_clock::now() - start_;
    observer_->OnRpcDone(method_, code, took.count());
  }

  RpcObserver* const observer_;
  const std::string method_;
  const std::chrono::steady_clock::time_point start_;
  bool reported_ = false;
};

class ObservingInterceptorFactory final : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  explicit ObservingInterceptorFactory(RpcObserver* observer) : observer_(observer) {}
  grpc::experimental::Interceptor* CreateServerInterceptor(grpc::experimental::ServerRpcInfo* info) override {
    return new ObservingInterceptor(observer_, RpcMethodLabel(info->method() ? info->method() : ""));
  }

 private:
  RpcObserver* const observer_;
};

}  // namespace

absl::Status ServerOptions::Validate() const {
  HERD_ASSIGN_OR_RETURN(HostPort hp, ParseHostPort(listen));
  if (!tls.enabled() && !IsLoopbackHost(hp.host) && !allow_insecure_remote) {
    return absl::InvalidArgumentError(herd::StrCat(
        "refusing to serve plaintext on ", listen,
        ": configure TLS, listen on loopback, or set allow_insecure_remote: true"));
  }
  if (tls.enabled() && tls.key_file.empty()) return absl::InvalidArgumentError("tls: key_file is required");
  return absl::OkStatus();
}

absl::StatusOr<StartedServer> StartServer(const ServerOptions& options,
                                          const std::vector<grpc::Service*>& services) {
  HERD_RETURN_IF_ERROR(options.Validate());
  std::shared_ptr<grpc::ServerCredentials> creds = grpc::InsecureServerCredentials();
  if (options.tls.enabled()) {
    grpc::SslServerCredentialsOptions ssl;
    HERD_ASSIGN_OR_RETURN(std::string cert, ReadFile(options.tls.cert_file));
    HERD_ASSIGN_OR_RETURN(std::string key, ReadFile(options.tls.key_file));
    ssl.pem_key_cert_pairs.push_back({key, cert});
    if (!options.tls.client_ca_file.empty()) {
      HERD_ASSIGN_OR_RETURN(ssl.pem_root_certs, ReadFile(options.tls.client_ca_file));
      ssl.client_certificate_request = GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY;
    }
    creds = grpc::SslServerCredentials(ssl);
  }
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  StartedServer started;
  builder.AddListeningPort(options.listen, creds, &started.port);
  builder.SetMaxReceiveMessageSize(options.max_message_bytes);
  builder.SetMaxSendMessageSize(options.max_message_bytes);
  for (grpc::Service* s : services) builder.RegisterService(s);
  if (options.observer != nullptr) {
    std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> factories;
    factories.push_back(std::make_unique<ObservingInterceptorFactory>(options.observer));
    builder.experimental().SetInterceptorCreators(std::move(factories));
  }
  started.server = builder.BuildAndStart();
  if (!started.server || started.port == 0) {
    return absl::UnavailableError(herd::StrCat("cannot listen on ", options.listen));
  }
  if (!options.ready_file.empty()) {
    HERD_RETURN_IF_ERROR(WriteFileAtomic(options.ready_file, herd::StrCat(started.port, "\n")));
  }
  return started;
}

absl::StatusOr<std::shared_ptr<grpc::Channel>> MakeChannel(const ChannelOptions& options) {
  HERD_RETURN_IF_ERROR(ParseHostPort(options.target).status());
  std::shared_ptr<grpc::ChannelCredentials> creds = grpc::InsecureChannelCredentials();
  if (!options.ca_file.empty()) {
    grpc::SslCredentialsOptions ssl;
    HERD_ASSIGN_OR_RETURN(ssl.pem_root_certs, ReadFile(options.ca_file));
    if (!options.cert_file.empty()) {
      HERD_ASSIGN_OR_RETURN(ssl.pem_cert_chain, ReadFile(options.cert_file));
      HERD_ASSIGN_OR_RETURN(ssl.pem_private_key, ReadFile(options.key_file));
    }
    creds = grpc::SslCredentials(ssl);
  }
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(options.max_message_bytes);
  args.SetMaxSendMessageSize(options.max_message_bytes);
  return grpc::CreateCustomChannel(options.target, creds, args);
}

absl::Status CheckHealth(grpc::Channel& channel, const std::string& target, absl::Duration timeout) {
  auto stub = grpc::health::v1::Health::NewStub(std::shared_ptr<grpc::Channel>(&channel, [](grpc::Channel*) {}));
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + absl::ToChronoMilliseconds(timeout));
  grpc::health::v1::HealthCheckRequest request;
  grpc::health::v1::HealthCheckResponse response;
  grpc::Status s = stub->Check(&ctx, request, &response);
  if (!s.ok()) {
    return absl::UnavailableError(herd::StrCat("coordinator at ", target, " is not answering: ", s.error_message()));
  }
  if (response.status() != grpc::health::v1::HealthCheckResponse::SERVING) {
    return absl::UnavailableError(herd::StrCat("coordinator at ", target, " is up but not serving"));
  }
  return absl::OkStatus();
}

}  // namespace herd::rpc
