// coordinator.yaml parsing.
#include "coordinator/coordinator_config.h"

#include "common/file_util.h"
#include "common/status.h"
#include "common/strings.h"
#include "common/yaml_util.h"

namespace herd::coordinator {

absl::Status CoordinatorConfig::Validate() const {
  auto bad = [](std::string_view field, std::string_view why) {
    return absl::InvalidArgumentError(herd::StrCat(field, ": ", why));
  };
  if (listen.empty()) return bad("listen", "required");
  if (metrics_listen.empty()) return bad("metrics_listen", "required");
  if (data_dir.empty()) return bad("data_dir", "required");
  if (tls.cert_file.empty() != tls.key_file.empty()) return bad("tls", "cert_file and key_file go together");
  if (!tls.client_ca_file.empty() && tls.cert_file.empty()) return bad("tls.client_ca_file", "needs cert_file");
  if (trainer_grace_seconds < 0) return bad("trainer_grace_seconds", "must be >= 0");
  if (heartbeat_seconds < 1) return bad("heartbeat_seconds", "must be >= 1");
  if (trainer_lease_seconds < 2 * heartbeat_seconds) {
    return bad("trainer_lease_seconds", "must be at least twice heartbeat_seconds");
  }
  if (max_upload_bytes < 1) return bad("max_upload_bytes", "must be >= 1");
  if (collective_timeout_seconds < 1) return bad("collective_timeout_seconds", "must be >= 1");
  if (max_recoveries < 0) return bad("max_recoveries", "must be >= 0");
  return absl::OkStatus();
}

std::string CoordinatorConfig::EffectiveFileSdPath() const {
  return file_sd_path.empty() ? herd::StrCat(data_dir, "/prometheus/trainers.json") : file_sd_path;
}

absl::StatusOr<CoordinatorConfig> ParseCoordinatorConfig(const std::string& yaml, const std::string& source) {
  HERD_ASSIGN_OR_RETURN(YAML::Node root, ParseYaml(yaml, source));
  CoordinatorConfig c;
  YamlFields f(root, source);
  HERD_RETURN_IF_ERROR(f.Read("listen", &c.listen));
  HERD_RETURN_IF_ERROR(f.Read("metrics_listen", &c.metrics_listen));
  HERD_RETURN_IF_ERROR(f.Read("data_dir", &c.data_dir));
  HERD_RETURN_IF_ERROR(f.Read("ready_file", &c.ready_file));
  HERD_RETURN_IF_ERROR(f.Read("metrics_ready_file", &c.metrics_ready_file));
  HERD_RETURN_IF_ERROR(f.Read("file_sd_path", &c.file_sd_path));
  HERD_RETURN_IF_ERROR(f.Read("allow_insecure_remote", &c.allow_insecure_remote));
  HERD_RETURN_IF_ERROR(f.Read("trainer_grace_seconds", &c.trainer_grace_seconds));
  HERD_RETURN_IF_ERROR(f.Read("heartbeat_seconds", &c.heartbeat_seconds));
  HERD_RETURN_IF_ERROR(f.Read("trainer_lease_seconds", &c.trainer_lease_seconds));
  HERD_RETURN_IF_ERROR(f.Read("max_upload_bytes", &c.max_upload_bytes));
  HERD_RETURN_IF_ERROR(f.Read("prepare_program", &c.prepare_program));
  HERD_RETURN_IF_ERROR(f.Read("collective_timeout_seconds", &c.collective_timeout_seconds));
  HERD_RETURN_IF_ERROR(f.Read("max_recoveries", &c.max_recoveries));
  HERD_ASSIGN_OR_RETURN(YamlFields tls, f.Child("tls"));
  HERD_RETURN_IF_ERROR(tls.Read("cert_file", &c.tls.cert_file));
  HERD_RETURN_IF_ERROR(tls.Read("key_file", &c.tls.key_file));
  HERD_RETURN_IF_ERROR(tls.Read("client_ca_file", &c.tls.client_ca_file));
  HERD_RETURN_IF_ERROR(tls.Finish());
  HERD_RETURN_IF_ERROR(f.Finish());
  return c;
}

absl::StatusOr<CoordinatorConfig> LoadCoordinatorConfig(const std::string& path) {
  HERD_ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  return ParseCoordinatorConfig(text, path);
}

}  // namespace herd::coordinator
