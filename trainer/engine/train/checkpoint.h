// Checkpoints (proto/herd/v1/engine_protocol.md §8): a folder with the PEFT adapter, the AdamW
// state and trainer_state.json, written to <root>/step-NNNNNNNN.tmp and renamed into place once
// every file is durable. Everything a resumed run needs is in it: all randomness in Herd's
// training is a function of (seed, step, sequence), so step and seed are the RNG state and the
// step is the data cursor.
#ifndef HERD_TRAINER_ENGINE_TRAIN_CHECKPOINT_H_
#define HERD_TRAINER_ENGINE_TRAIN_CHECKPOINT_H_

#include <string>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "trainer/engine/model/llama.h"
#include "trainer/engine/train/optimizer.h"
#include "trainer/engine/train/trainer.h"

namespace herd::engine {

// What must match between the run that wrote a checkpoint and the run resuming from it.
nlohmann::json ResumeFingerprint(const TrainConfig& config, const LlamaModel& model);

struct TrainerState {
  int64_t step = 0;          // completed optimiser steps
  int64_t total_steps = 0;
  double epoch = 0;
  int64_t generation = 0;    // that wrote it
  int64_t world_size = 0;    // that wrote it (a resume may use another)
  nlohmann::json fingerprint;
};

// Writes the checkpoint of `state.step` under `root`; returns its folder and file digests.
absl::StatusOr<CheckpointReport> WriteCheckpoint(const LlamaModel& model, const AdamW& optimizer,
                                                 const TrainerState& state, const std::string& model_name,
                                                 const std::string& root, bool final);

// Reads <dir>/trainer_state.json. FAILED_PRECONDITION naming the first differing field when the
// checkpoint was made under another configuration than `expected_fingerprint`.
absl::StatusOr<TrainerState> ReadTrainerState(const std::string& dir, const nlohmann::json& expected_fingerprint);
// Restores <dir>/optimizer.safetensors into `optimizer`.
absl::Status LoadOptimizerState(const std::string& dir, AdamW& optimizer);

}  // namespace herd::engine

#endif  // HERD_TRAINER_ENGINE_TRAIN_CHECKPOINT_H_
