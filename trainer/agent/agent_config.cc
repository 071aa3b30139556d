// trainer.yaml parsing.
#include "trainer/agent/agent_config.h"

#include "absl/strings/numbers.h"
#include "common/file_util.h"
#include "common/status.h"
#include "common/strings.h"
#include "common/yaml_util.h"

namespace herd::agent {

absl::Status AgentConfig::Validate() const {
  auto bad = [](std::string_view field, std::string_view why) {
    return absl::InvalidArgumentError(herd::StrCat(field, ": ", why));
  };
  if (coordinator.empty()) return bad("coordinator", "required");
  if (models_dir.empty()) return bad("models_dir", "required");
  if (blob_cache_bytes < 0) return bad("blob_cache_bytes", "must be >= 0");
  if (device != "cpu") {
    int index = -1;
    if (device.rfind("cuda:", 0) != 0 || !absl::SimpleAtoi(device.substr(5), &index) || index < 0) {
      return bad("device", herd::StrCat("'", device, "' is not cpu or cuda:N"));
    }
  }
  if (scratch_dir.empty()) return bad("scratch_dir", "required");
  if (bind_address.empty()) return bad("bind_address", "required");
  if (advertise_address.empty()) return bad("advertise_address", "required");
  return absl::OkStatus();
}

absl::StatusOr<AgentConfig> ParseAgentConfig(const std::string& yaml, const std::string& source) {
  HERD_ASSIGN_OR_RETURN(YAML::Node root, ParseYaml(yaml, source));
  AgentConfig c;
  YamlFields f(root, source);
  HERD_RETURN_IF_ERROR(f.Read("name", &c.name));
  HERD_RETURN_IF_ERROR(f.Read("coordinator", &c.coordinator));
  HERD_RETURN_IF_ERROR(f.Read("models_dir", &c.models_dir));
  HERD_RETURN_IF_ERROR(f.Read("device", &c.device));
  HERD_RETURN_IF_ERROR(f.Read("metrics_listen", &c.metrics_listen));
  HERD_RETURN_IF_ERROR(f.Read("metrics_ready_file", &c.metrics_ready_file));
  HERD_RETURN_IF_ERROR(f.Read("scratch_dir", &c.scratch_dir));
  HERD_RETURN_IF_ERROR(f.Read("engine", &c.engine));
  HERD_RETURN_IF_ERROR(f.Read("token_file", &c.token_file));
  HERD_RETURN_IF_ERROR(f.Read("ca_file", &c.ca_file));
  HERD_RETURN_IF_ERROR(f.Read("bind_address", &c.bind_address));
  HERD_RETURN_IF_ERROR(f.Read("advertise_address", &c.advertise_address));
  HERD_RETURN_IF_ERROR(f.Read("keep_scratch", &c.keep_scratch));
  HERD_RETURN_IF_ERROR(f.Read("blob_cache_bytes", &c.blob_cache_bytes));
  HERD_RETURN_IF_ERROR(f.Finish());
  return c;
}

absl::StatusOr<AgentConfig> LoadAgentConfig(const std::string& path) {
  HERD_ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  return ParseAgentConfig(text, path);
}

}  // namespace herd::agent
