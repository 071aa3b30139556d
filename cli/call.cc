// Shared plumbing of the CLI's RPCs.
#include "cli/call.h"

#include <google/protobuf/util/json_util.h>

#include <iostream>

#include "cli/exit_codes.h"

namespace herd::cli {

void PrepareCall(const ClientConfig& config, grpc::ClientContext* context, absl::Duration deadline) {
  context->set_deadline(std::chrono::system_clock::now() + absl::ToChronoSeconds(deadline));
  if (!config.token.empty()) context->AddMetadata("authorization", "Bearer " + config.token);
}

int FailCall(const ClientConfig* config, const absl::Status& status) {
  std::cerr << "herd: " << status.message();
  if (config && (status.code() == absl::StatusCode::kUnavailable ||
                 status.code() == absl::StatusCode::kDeadlineExceeded)) {
    std::cerr << " (coordinator " << config->endpoint << " from " << config->source << ")";
  }
  if (config && status.code() == absl::StatusCode::kUnauthenticated && config->token.empty()) {
    std::cerr << " (no token: pass --token or set HERD_TOKEN)";
  }
  std::cerr << "\n";
  return ExitCodeFor(status);
}

std::string MessageToJson(const google::protobuf::Message& message) {
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  std::string out;
  (void)google::protobuf::util::MessageToJsonString(message, &out, options);
  return out;
}

}  // namespace herd::cli
