// The training loop (DESIGN.md §4–6), a plain function over its components: model, data,
// communicator, optimiser, schedule, checkpoints. One step, top to bottom: shard, count tokens,
// forward + loss + backward per micro-batch, all-reduce the flat gradient buffer, clip, AdamW,
// schedule, report; evaluation and checkpoints every N steps.
#ifndef HERD_TRAINER_ENGINE_TRAIN_TRAINER_H_
#define HERD_TRAINER_ENGINE_TRAIN_TRAINER_H_

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "common/job_spec.h"
#include "trainer/engine/dist/communicator.h"
#include "trainer/engine/model/llama.h"
#include "trainer/engine/train/data.h"

namespace herd::engine {

struct TrainConfig {
  std::string model_name;                // base_model_name_or_path in the adapter
  LoraSpec lora;
  TrainingSpec training;
  int64_t total_steps = 0;               // 0 = from the data, epochs and max_steps
  int64_t eval_every_steps = 0;          // 0 = only after the last step
  int64_t checkpoint_every_steps = 100;
  std::string checkpoint_root;           // rank 0 writes <root>/step-NNNNNNNN/
  std::string resume_dir;                // "" = start fresh; else a checkpoint folder
  std::string init_adapter_dir;          // start from this adapter with a fresh optimizer; "" = none
  int64_t generation = 1;
  absl::Duration collective_timeout = absl::Minutes(10);
  int64_t loss_chunk_tokens = kDefaultLossChunkTokens;  // trained tokens per output-head chunk
};

struct StepReport {
  int64_t step = 0;                      // completed optimiser steps (from 1)
  int64_t total_steps = 0;
  double epoch = 0;
  double loss = 0;                       // Σ token losses / Σ trained tokens, global batch
  double lr = 0;
  double grad_norm = 0;
  int64_t tokens = 0;                    // non-padding input tokens this rank processed
  int64_t trained_tokens = 0;            // in the whole global batch
  double step_seconds = 0, allreduce_seconds = 0, data_wait_seconds = 0;
};

struct EvalReport {
  int64_t step = 0;
  double eval_loss = 0;
  double token_accuracy = 0;
  int64_t tokens = 0;
  double eval_seconds = 0;
};

struct CheckpointFile {
  std::string name;
  int64_t size_bytes = 0;
  std::string sha256;
};
struct CheckpointReport {
  int64_t step = 0;
  bool final = false;
  std::string dir;
  std::vector<CheckpointFile> files;
};

struct TrainCallbacks {
  std::function<void(const StepReport&)> on_step;
  std::function<void(const EvalReport&)> on_eval;              // rank 0 only
  std::function<void(const CheckpointReport&)> on_checkpoint;  // rank 0 only
  std::function<void(const std::string& phase)> on_phase;
  std::function<bool()> cancelled;                             // checked between steps
};

// Evaluates the model on every row of `data`: mean loss over trained tokens and token accuracy.
// Every rank takes the rows r with r % world == rank and the sums are all-reduced, so all ranks
// return the same report and none waits idle for another's evaluation.
absl::StatusOr<EvalReport> Evaluate(const LlamaModel& model, const PreparedData& data, int64_t micro_batch,
                                    Communicator& comm, absl::Duration collective_timeout);

// Trains `model` (LoRA already enabled, or restored from config.resume_dir) to the last step.
// CANCELLED when callbacks.cancelled() turned true; OUT_OF_RANGE on a non-finite loss or
// gradient; FAILED_PRECONDITION when the resume checkpoint or the initial adapter was made under
// another LoRA configuration.
absl::Status Train(LlamaModel& model, const PreparedData& train, const PreparedData* validation,
                   Communicator& comm, const TrainConfig& config, const TrainCallbacks& callbacks);

}  // namespace herd::engine

#endif  // HERD_TRAINER_ENGINE_TRAIN_TRAINER_H_
