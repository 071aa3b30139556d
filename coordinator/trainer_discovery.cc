// The trainers' service-discovery file.
#include "coordinator/trainer_discovery.h"

#include <filesystem>

#include "common/file_util.h"
#include "common/status.h"
#include "common/strings.h"
#include "nlohmann/json.hpp"

namespace herd::coordinator {

std::string RenderTrainerDiscovery(const std::vector<TrainerInfo>& trainers) {
  nlohmann::json groups = nlohmann::json::array();
  for (const TrainerInfo& t : trainers) {  // ListTrainers gives them by name
    if (t.state == TrainerState::kLost || t.registration.metrics_address.empty()) continue;
    groups.push_back({{"targets", {t.registration.metrics_address}},
                      {"labels",
                       {{"trainer", t.registration.name},
                        {"device", std::string(DeviceKindName(t.registration.device_kind))}}}});
  }
  return groups.dump() + "\n";
}

absl::Status TrainerDiscoveryFile::Refresh() {
  const std::string text = RenderTrainerDiscovery(registry_->ListTrainers());
  absl::MutexLock lock(&mu_);
  if (written_ && text == last_) return absl::OkStatus();
  const std::filesystem::path parent = std::filesystem::path(path_).parent_path();
  if (!parent.empty()) {
    std::error_code ec;
    std::filesystem::create_directories(parent, ec);
    if (ec) return absl::UnavailableError(StrCat("cannot create ", parent.string(), ": ", ec.message()));
  }
  HERD_RETURN_IF_ERROR(WriteFileAtomic(path_, text));
  written_ = true;
  last_ = text;
  return absl::OkStatus();
}

}  // namespace herd::coordinator
