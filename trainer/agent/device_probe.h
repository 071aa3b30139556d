// The device a trainer drives, as RegisterTrainer describes it (DESIGN.md §3). The agent links no
// CUDA, so for a GPU it asks its engine (`herd-engine --probe`: the device's name and memory, as
// CUDA reports them); a probe that fails leaves the name "cuda:N" and the memory unknown (0), and
// says why.
#ifndef HERD_TRAINER_AGENT_DEVICE_PROBE_H_
#define HERD_TRAINER_AGENT_DEVICE_PROBE_H_

#include <string>

#include "absl/time/time.h"
#include "herd/v1/common.pb.h"

namespace herd::agent {

struct DeviceDescription {
  herd::v1::DeviceInfo info;
  std::string warning;  // why the engine's probe could not describe a GPU; "" when it did
};

// `device`: "cpu" or "cuda:N". `engine_path`: the herd-engine to run `--probe` with (GPUs only).
DeviceDescription DescribeTrainerDevice(const std::string& device, const std::string& engine_path,
                                        absl::Duration probe_timeout = absl::Seconds(120));

}  // namespace herd::agent

#endif  // HERD_TRAINER_AGENT_DEVICE_PROBE_H_
