// CLI configuration resolution.
#include "cli/client_config.h"

#include <filesystem>

#include "common/file_util.h"
#include "common/status.h"
#include "common/yaml_util.h"

namespace herd::cli {

absl::StatusOr<ClientConfig> ResolveClientConfig(const ClientConfigInputs& in) {
  ClientConfig c;
  c.source = "default";
  auto env = [&in](const char* key) {
    auto it = in.env.find(key);
    return it == in.env.end() ? std::string() : it->second;
  };
  std::string path = in.flag_config;
  if (path.empty()) {
    std::string base = env("XDG_CONFIG_HOME");
    if (base.empty() && !env("HOME").empty()) base = env("HOME") + "/.config";
    if (!base.empty() && std::filesystem::exists(base + "/herd/config.yaml")) path = base + "/herd/config.yaml";
  }
  if (!path.empty()) {
    HERD_ASSIGN_OR_RETURN(YAML::Node root, LoadYamlFile(path));
    YamlFields f(root, path);
    std::string endpoint;
    HERD_RETURN_IF_ERROR(f.Read("endpoint", &endpoint));
    HERD_RETURN_IF_ERROR(f.Read("token", &c.token));
    HERD_RETURN_IF_ERROR(f.Read("ca_file", &c.ca_file));
    HERD_RETURN_IF_ERROR(f.Finish());
    if (!endpoint.empty()) {
      c.endpoint = endpoint;
      c.source = path;
    }
  }
  if (!env("HERD_ENDPOINT").empty()) {
    c.endpoint = env("HERD_ENDPOINT");
    c.source = "HERD_ENDPOINT";
  }
  if (!env("HERD_TOKEN").empty()) c.token = env("HERD_TOKEN");
  if (!in.flag_endpoint.empty()) {
    c.endpoint = in.flag_endpoint;
    c.source = "--endpoint";
  }
  if (!in.flag_token.empty()) c.token = in.flag_token;
  return c;
}

}  // namespace herd::cli
