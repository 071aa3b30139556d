// The Prometheus file-based service-discovery file of the trainers (DESIGN.md §7,
// docs/metrics.md "Discovery"): one target group per live trainer with a metrics address,
//   [{"targets":["127.0.0.1:9401"],"labels":{"trainer":"gpu-0","device":"cuda"}}, ...]
// by trainer name, rewritten atomically whenever that list changes. Prometheus re-reads the
// file when it changes (deploy/prometheus/prometheus.yml).
#ifndef HERD_COORDINATOR_TRAINER_DISCOVERY_H_
#define HERD_COORDINATOR_TRAINER_DISCOVERY_H_

#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "coordinator/registry.h"

namespace herd::coordinator {

// The file's JSON for `trainers`: LOST ones and those without a metrics address are left out.
std::string RenderTrainerDiscovery(const std::vector<TrainerInfo>& trainers);

class TrainerDiscoveryFile {
 public:
  // `registry` is not owned and outlives this object. `path`: where the file lives; its folder
  // is created when missing.
  TrainerDiscoveryFile(std::string path, const TrainerRegistry* registry)
      : path_(std::move(path)), registry_(registry) {}

  // Writes the file when its contents differ from what was last written (always the first
  // time, so a stale file of an earlier run is replaced). Thread-safe.
  absl::Status Refresh();

  const std::string& path() const { return path_; }

 private:
  // Constant after construction.
  const std::string path_;
  const TrainerRegistry* const registry_;

  absl::Mutex mu_;
  bool written_ ABSL_GUARDED_BY(mu_) = false;
  std::string last_ ABSL_GUARDED_BY(mu_);
};

}  // namespace herd::coordinator

#endif  // HERD_COORDINATOR_TRAINER_DISCOVERY_H_
