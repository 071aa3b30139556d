// What every CLI command that calls the coordinator shares: the bearer token and deadline on a
// call, turning a failed call into a message and an exit code (DESIGN.md §11), and JSON output.
#ifndef HERD_CLI_CALL_H_
#define HERD_CLI_CALL_H_

#include <grpcpp/grpcpp.h>

#include <iostream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "cli/client_config.h"
#include "google/protobuf/message.h"

namespace herd::cli {

inline constexpr absl::Duration kCallDeadline = absl::Seconds(30);

// Sets the deadline and the `authorization: Bearer` metadata.
void PrepareCall(const ClientConfig& config, grpc::ClientContext* context, absl::Duration deadline = kCallDeadline);
// Prints "herd: <message>" with a hint where one helps; returns the exit code for the status.
int FailCall(const ClientConfig* config, const absl::Status& status);
// A message as JSON with the proto field names (`--output json`).
std::string MessageToJson(const google::protobuf::Message& message);

// Messages as one JSON array on stdout (`--output json` of the list commands).
template <typename Message>
void PrintJsonArray(const std::vector<Message>& messages) {
  std::cout << "[";
  for (size_t i = 0; i < messages.size(); ++i) std::cout << (i ? "," : "") << MessageToJson(messages[i]);
  std::cout << "]\n";
}

}  // namespace herd::cli

#endif  // HERD_CLI_CALL_H_
