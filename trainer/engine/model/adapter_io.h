// A LlamaModel's LoRA adapters in and out of files: the PEFT adapter directory (DESIGN.md §5,
// format in adapter_format.h) for checkpoints, resume and publishing, and a merged Hugging Face
// model directory (base + scale·B·A folded into each target weight) for stacks without LoRA.
#ifndef HERD_TRAINER_ENGINE_MODEL_ADAPTER_IO_H_
#define HERD_TRAINER_ENGINE_MODEL_ADAPTER_IO_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "trainer/engine/model/llama.h"

namespace herd::engine {

struct AdapterMetadata {
  // Written to adapter_config.json; PEFT's AutoPeftModel loads the base model from it. Empty:
  // the model's directory.
  std::string base_model_name_or_path;
};

// Writes <dir>/adapter_model.safetensors (float32 lora_A [r, in], lora_B [out, r] under the PEFT
// keys) and then <dir>/adapter_config.json, each atomically; creates `dir` if needed.
// FAILED_PRECONDITION when the model has no adapters or one holds NaN/infinite values.
absl::Status SaveAdapter(const LlamaModel& model, const std::string& dir, const AdapterMetadata& metadata);

// Replaces the model's adapters with those of `dir` (Herd's or PEFT's own output): r, alpha,
// dropout, rsLoRA and targets come from adapter_config.json, the values from the safetensors file,
// after ValidateAdapterDir's checks. model.lora_options() then says what was loaded.
absl::Status LoadAdapter(LlamaModel& model, const std::string& dir);

struct MergeOptions {
  // Weights above this size go into model-0000i-of-0000n.safetensors shards plus an index, as
  // save_pretrained does; this also bounds the memory the writer needs.
  int64_t max_shard_bytes = 2'000'000'000;
};

// Writes a Hugging Face model directory with every base tensor under its checkpoint name, in its
// checkpoint dtype, the adapters merged (W + scale·B·A, computed in float32), plus config.json
// and the tokenizer/generation files of the base directory. `out_dir` must be absent or empty;
// it appears complete or not at all (written beside it, then renamed).
absl::Status SaveMerged(const LlamaModel& model, const std::string& out_dir, const MergeOptions& options = {});

}  // namespace herd::engine

#endif  // HERD_TRAINER_ENGINE_MODEL_ADAPTER_IO_H_
