// The agent ↔ engine line protocol (proto/herd/v1/engine_protocol.md), the part both sides
// share: the assignment as a struct with its JSON form, and line framing. The engine and every
// program that supervises engines (herd-trainer, herd-train) use this one definition.
#ifndef HERD_COMMON_ENGINE_PROTOCOL_H_
#define HERD_COMMON_ENGINE_PROTOCOL_H_

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "common/job_spec.h"
#include "nlohmann/json.hpp"

namespace herd {

inline constexpr int kEngineProtocolVersion = 1;
inline constexpr size_t kMaxProtocolLineBytes = 1 << 20;

struct EngineAssignment {
  std::string job_id;
  int64_t generation = 1;
  int rank = 0;
  int world_size = 1;
  std::string device = "cpu";               // "cpu" or "cuda:0"
  std::string weights_dtype;                // frozen weights: "bf16" or "fp32"; "" = bf16 on CUDA, fp32
                                            // on CPU (bf16 on a CPU: the GPU's arithmetic, for checks)
  std::string model_name;
  std::string model_dir;
  std::string train_data;                   // prepared data file
  std::string validation_data;              // "" = none
  LoraSpec lora;
  TrainingSpec training;
  int64_t total_steps = 0;
  int64_t steps_per_epoch = 0;
  int64_t grad_accum_steps = 1;
  int64_t eval_every_steps = 0;
  int64_t checkpoint_every_steps = 100;
  std::optional<int64_t> resume_step;       // set together with resume_dir
  std::string resume_dir;
  std::string init_adapter_dir;             // start from this PEFT adapter (fresh optimizer); "" = new
  std::string scratch_dir;
  std::string collective_backend = "tcp";   // "tcp" or "nccl"
  std::string bind_address = "127.0.0.1";
  std::string advertise_address = "127.0.0.1";
  double collective_timeout_seconds = 600;
  double silence_timeout_seconds = 900;
  double cancel_grace_seconds = 30;
  // training.activation_checkpointing travels as the top-level `activation_checkpointing`,
  // optional in the JSON (absent = false).
};

// {"v":1,"type":"assignment",...}
nlohmann::json AssignmentToJson(const EngineAssignment& a);
// INVALID_ARGUMENT naming the missing or ill-typed field.
absl::StatusOr<EngineAssignment> AssignmentFromJson(const nlohmann::json& j);

// A message with the envelope filled in: {"v":1,"type":type,...fields}.
nlohmann::json ProtocolMessage(const std::string& type, nlohmann::json fields = nlohmann::json::object());

// Writes one JSON line to `fd` with a single write loop (callers serialise concurrent writers).
absl::Status WriteProtocolLine(int fd, const nlohmann::json& message);

// The status code an `error` line names ("DEADLINE_EXCEEDED"); UNKNOWN for anything else.
absl::StatusCode StatusCodeFromName(std::string_view name);

// Parses one protocol line: a JSON object with integer `v` and string `type`.
absl::StatusOr<nlohmann::json> ParseProtocolLine(const std::string& line);

}  // namespace herd

#endif  // HERD_COMMON_ENGINE_PROTOCOL_H_
