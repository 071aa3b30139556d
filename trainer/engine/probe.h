// What this engine can run on: libtorch and NCCL versions, devices, and a numerical self-check
// of a matmul on the chosen device. `herd-engine --probe` prints it; the device smoke script and
// the agent's registration use it.
#ifndef HERD_TRAINER_ENGINE_PROBE_H_
#define HERD_TRAINER_ENGINE_PROBE_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "nlohmann/json.hpp"

namespace herd::engine {

// Versions and devices, as a JSON object.
nlohmann::json ProbeDevices();

// Multiplies two seeded random matrices on `device` ("cpu" or "cuda:N") in `dtype`
// ("float32" or "bfloat16") and compares with a float64 CPU reference. Returns
// {"device","dtype","n","max_rel_error","ok"}; INVALID_ARGUMENT for an unknown device or dtype,
// UNAVAILABLE when the device is absent.
absl::StatusOr<nlohmann::json> CheckMatmul(const std::string& device, const std::string& dtype, int n);

// A one-rank all-reduce through the communicator the device would use (NCCL on cuda, TCP on
// cpu); checks the buffer comes back unchanged. Returns {"backend","elements","ok",...}.
absl::StatusOr<nlohmann::json> CheckAllReduceOneRank(const std::string& device, const std::string& scratch_dir);

// The collectives watchdog against a collective that never completes: on cuda, a one-rank NCCL
// communicator whose stream is held by a test hook (NcclCommunicator::StallStreamForTest); on
// cpu, a two-rank TCP group whose second rank (a thread) joins and then never takes part. The
// all-reduce must return DEADLINE_EXCEEDED after about `timeout`, and the next call
// FAILED_PRECONDITION (the communicator is aborted). Returns {"check":"watchdog","backend",
// "fired","seconds","timeout_s","aborted","ok",...}; `ok` needs fired and aborted and a return
// within timeout + 10 s.
absl::StatusOr<nlohmann::json> CheckWatchdog(const std::string& device, const std::string& scratch_dir,
                                             absl::Duration timeout);

}  // namespace herd::engine

#endif  // HERD_TRAINER_ENGINE_PROBE_H_
