// Where the CLI finds its coordinator and token: flags, then HERD_ENDPOINT / HERD_TOKEN, then
// ~/.config/herd/config.yaml, then the defaults (loopback, no token).
#ifndef HERD_CLI_CLIENT_CONFIG_H_
#define HERD_CLI_CLIENT_CONFIG_H_

#include <map>
#include <string>

#include "absl/status/statusor.h"

namespace herd::cli {

struct ClientConfig {
  std::string endpoint = "127.0.0.1:7070";
  std::string token;
  std::string ca_file;       // CA of the coordinator's certificate; "" = plaintext
  std::string source;        // where endpoint came from, for error messages
};

struct ClientConfigInputs {
  std::string flag_endpoint, flag_token, flag_config;  // "" = not given
  std::map<std::string, std::string> env;               // HERD_ENDPOINT, HERD_TOKEN, HOME, XDG_CONFIG_HOME
};

// Resolves the configuration; a config file that exists but is broken is an error naming it.
absl::StatusOr<ClientConfig> ResolveClientConfig(const ClientConfigInputs& inputs);

}  // namespace herd::cli

#endif  // HERD_CLI_CLIENT_CONFIG_H_
