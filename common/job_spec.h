// The job file of DESIGN.md §11 as a plain struct: parsed from YAML by the CLI, herd-train and
// the engine, with the documented defaults and one Validate() that says what is wrong.
#ifndef HERD_COMMON_JOB_SPEC_H_
#define HERD_COMMON_JOB_SPEC_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace herd {

// The seven projections LoRA may target, in the order Herd uses everywhere.
inline constexpr std::string_view kLoraTargets[] = {"q_proj", "k_proj", "v_proj", "o_proj",
                                                    "gate_proj", "up_proj", "down_proj"};

struct LoraSpec {
  int r = 16;                     // rank of A [r, in] and B [out, r]
  double alpha = 32;              // scale = alpha / r (alpha / sqrt(r) with rslora)
  double dropout = 0.0;           // on the LoRA input only
  std::vector<std::string> target_modules = {"all-linear"};  // or any subset of kLoraTargets
  bool rslora = false;

  // target_modules with "all-linear" expanded, in kLoraTargets order.
  std::vector<std::string> ExpandedTargets() const;
};

struct TrainingSpec {
  int64_t epochs = 1;
  std::optional<int64_t> max_steps;  // caps the optimiser steps; null = epochs decide
  int64_t micro_batch_size = 1;      // sequences per rank per forward
  int64_t global_batch_size = 8;     // sequences per optimiser step, whatever the world size
  double learning_rate = 2.0e-4;
  std::string lr_scheduler = "cosine";  // cosine | linear | constant
  double warmup_ratio = 0.03;
  double weight_decay = 0.0;
  double max_grad_norm = 1.0;  // 0 disables clipping
  int64_t max_seq_len = 2048;
  bool packing = true;
  int64_t seed = 42;
  // Keep only each decoder layer's input for backward and recompute the layer there: far less
  // activation memory for about a third more compute; the same loss and gradients.
  bool activation_checkpointing = false;
};

struct CheckpointSpec {
  int64_t every_steps = 100;
  int64_t keep = 3;
};

struct ResourceSpec {
  int64_t trainers = 1;
  int64_t priority = 0;
};

struct JobSpec {
  std::string name;                       // optional label
  std::string base_model;                 // a model some trainer holds
  std::string dataset;                    // dataset id, or a local path the CLI uploads first
  std::string validation_dataset;         // "" = hold out validation_split of dataset
  double validation_split = 0.05;
  std::string format = "auto";            // text|prompt_completion|chat|alpaca|tokenized|auto
  std::string chat_template = "auto";     // llama2|llama3|auto
  bool train_on_inputs = false;
  LoraSpec lora;
  TrainingSpec training;
  CheckpointSpec checkpoints;
  ResourceSpec resources;

  // INVALID_ARGUMENT naming the first field that is out of range.
  absl::Status Validate() const;
};

// Parses a job file's text. Absent fields keep their defaults; unknown fields are errors.
// `source` names the text in errors ("job.yaml").
absl::StatusOr<JobSpec> ParseJobSpec(std::string_view yaml_text, std::string_view source);
absl::StatusOr<JobSpec> LoadJobSpec(const std::string& path);
// The spec back as YAML (every field, defaults included).
std::string JobSpecToYaml(const JobSpec& spec);

}  // namespace herd

#endif  // HERD_COMMON_JOB_SPEC_H_
