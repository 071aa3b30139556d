// herd-engine-tool: the engine library driven from files, for parity tests against Hugging Face
// and PEFT, and for debugging. Inputs and outputs are safetensors files and model directories.
//   herd-engine-tool logits --model DIR [--adapter DIR] --input in.safetensors --out out.safetensors
//     input: input_ids [B, T] int64, optional position_ids [B, T], doc_ids [B, T], targets [B, T].
//     output: logits [B, T, V] float32, and with targets: loss_sum, tokens, correct.
//     --loss-only: only loss_sum, tokens, correct (no [B, T, V] tensor, for many long rows).
//   herd-engine-tool init-adapter --model DIR --out DIR [--r N --alpha A --dropout P
//     --targets q_proj,v_proj|all-linear --rslora --seed S --random-b STD]
//     a fresh PEFT adapter directory; --random-b fills B with seeded N(0, STD²) so it is no no-op.
//   herd-engine-tool merge --model DIR --adapter DIR --out DIR [--max-shard-bytes N]
//     a Hugging Face model directory with the adapter folded into the base weights.
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/grad_mode.h>
#include <c10/core/InferenceMode.h>

#include <iostream>

#include "CLI/CLI.hpp"
#include "common/status.h"
#include "common/strings.h"
#include "trainer/engine/model/adapter_format.h"
#include "trainer/engine/model/adapter_io.h"
#include "trainer/engine/model/llama.h"
#include "trainer/engine/tensor_io.h"

namespace herd::engine {
namespace {

struct Flags {
  std::string model, adapter, input, out, dtype = "float32";
  int r = 16;
  double alpha = 32, dropout = 0, random_b = 0;
  std::string targets = "all-linear";
  bool rslora = false;
  bool loss_only = false;
  uint64_t seed = 0;
  int64_t max_shard_bytes = MergeOptions().max_shard_bytes;
};

absl::StatusOr<std::unique_ptr<LlamaModel>> LoadModel(const Flags& f) {
  LoadOptions load;
  if (f.dtype != "float32" && f.dtype != "float64") return absl::InvalidArgumentError("--dtype: float32 or float64");
  load.dtype = f.dtype == "float64" ? at::kDouble : at::kFloat;
  HERD_ASSIGN_OR_RETURN(auto model, LlamaModel::Load(f.model, load));
  if (!f.adapter.empty()) HERD_RETURN_IF_ERROR(LoadAdapter(*model, f.adapter));
  return model;
}

absl::Status RunLogits(const Flags& f) {
  HERD_ASSIGN_OR_RETURN(auto model, LoadModel(f));
  HERD_ASSIGN_OR_RETURN(auto tensors, ReadAllTensors(f.input));
  try {
    Batch batch;
    if (!tensors.count("input_ids")) return absl::InvalidArgumentError(f.input + ": no input_ids tensor");
    batch.input_ids = tensors["input_ids"].to(at::kLong);
    const int64_t B = batch.input_ids.size(0), T = batch.input_ids.size(1);
    batch.position_ids = tensors.count("position_ids") ? tensors["position_ids"].to(at::kLong)
                                                       : at::arange(T, at::kLong).expand({B, T}).contiguous();
    if (tensors.count("doc_ids")) batch.doc_ids = tensors["doc_ids"].to(at::kLong);
    c10::InferenceMode no_grad;
    at::Tensor hidden = model->Hidden(batch, nullptr);
    SafetensorsWriter writer;
    if (f.loss_only && !tensors.count("targets")) {
      return absl::InvalidArgumentError(f.input + ": --loss-only needs a targets tensor");
    }
    if (!f.loss_only) HERD_RETURN_IF_ERROR(AddTensor(writer, "logits", model->Logits(hidden)));
    if (tensors.count("targets")) {
      auto sums = model->Loss(hidden, tensors["targets"].to(at::kLong), 7);  // odd chunks on purpose
      HERD_RETURN_IF_ERROR(AddTensor(writer, "loss_sum", sums.loss_sum));
      HERD_RETURN_IF_ERROR(AddTensor(writer, "tokens", at::scalar_tensor(sums.tokens, at::kLong)));
      HERD_RETURN_IF_ERROR(AddTensor(writer, "correct", sums.correct.to(at::kCPU, at::kLong)));
    }
    return writer.Write(f.out);
  } catch (const std::exception& e) {
    return absl::InternalError(e.what());
  }
}

absl::Status RunInitAdapter(const Flags& f) {
  HERD_ASSIGN_OR_RETURN(auto model, LoadModel(f));
  std::vector<std::string> names;
  for (size_t start = 0; start <= f.targets.size();) {
    size_t comma = f.targets.find(',', start);
    if (comma == std::string::npos) comma = f.targets.size();
    names.push_back(f.targets.substr(start, comma - start));
    start = comma + 1;
  }
  LoraOptions lora;
  lora.r = f.r;
  lora.alpha = f.alpha;
  lora.dropout = f.dropout;
  lora.rslora = f.rslora;
  HERD_ASSIGN_OR_RETURN(lora.targets, ParseTargetModules(names));
  HERD_RETURN_IF_ERROR(model->EnableLora(lora, f.seed));
  if (f.random_b != 0) {
    try {
      at::NoGradGuard no_grad;
      auto gen = at::make_generator<at::CPUGeneratorImpl>(f.seed ^ 0x5eedb5eedbULL);
      for (const LlamaModel::Adapter& ad : model->adapters()) {
        at::Tensor b = ad.b;
        b.copy_(at::empty(ad.b.sizes(), at::kFloat).normal_(0.0, f.random_b, gen));
      }
    } catch (const std::exception& e) {
      return absl::InternalError(e.what());
    }
  }
  return SaveAdapter(*model, f.out, AdapterMetadata{});
}

absl::Status RunMerge(const Flags& f) {
  HERD_ASSIGN_OR_RETURN(auto model, LoadModel(f));
  MergeOptions options;
  options.max_shard_bytes = f.max_shard_bytes;
  return SaveMerged(*model, f.out, options);
}

}  // namespace
}  // namespace herd::engine

int main(int argc, char** argv) {
  CLI::App app{"herd-engine-tool: run pieces of the engine on files (tests, debugging)"};
  app.require_subcommand(1);
  herd::engine::Flags f;
  auto model_flags = [&](CLI::App* cmd) {
    cmd->add_option("--model", f.model, "Hugging Face model directory")->required();
    cmd->add_option("--dtype", f.dtype, "float32 or float64")->capture_default_str();
  };

  CLI::App* logits = app.add_subcommand("logits", "Forward pass: logits (and loss with targets)");
  model_flags(logits);
  logits->add_option("--adapter", f.adapter, "PEFT LoRA adapter directory to apply");
  logits->add_option("--input", f.input, "safetensors with input_ids [B, T] (position_ids, doc_ids, targets optional)")
      ->required();
  logits->add_option("--out", f.out, "Output safetensors")->required();
  logits->add_flag("--loss-only", f.loss_only, "Write the loss sums only, not the logits");

  CLI::App* init = app.add_subcommand("init-adapter", "Write a freshly initialised PEFT LoRA adapter");
  model_flags(init);
  init->add_option("--out", f.out, "Adapter directory to write")->required();
  init->add_option("--r", f.r, "LoRA rank")->capture_default_str();
  init->add_option("--alpha", f.alpha, "LoRA alpha")->capture_default_str();
  init->add_option("--dropout", f.dropout, "LoRA dropout (recorded in the config)")->capture_default_str();
  init->add_option("--targets", f.targets, "all-linear or a comma-separated list of projections")
      ->capture_default_str();
  init->add_flag("--rslora", f.rslora, "Scale by alpha / sqrt(r)");
  init->add_option("--seed", f.seed, "Seed of A's initialisation (and of B with --random-b)")->capture_default_str();
  init->add_option("--random-b", f.random_b, "Standard deviation of a random B (0: B = 0, PEFT's init)")
      ->capture_default_str();

  CLI::App* merge =
      app.add_subcommand("merge", "Fold an adapter into the base weights: a Hugging Face model directory");
  model_flags(merge);
  merge->add_option("--adapter", f.adapter, "PEFT LoRA adapter directory")->required();
  merge->add_option("--out", f.out, "Model directory to write (absent or empty)")->required();
  merge->add_option("--max-shard-bytes", f.max_shard_bytes, "Largest weights file before sharding")
      ->capture_default_str();

  CLI11_PARSE(app, argc, argv);
  absl::Status s;
  if (*logits) s = herd::engine::RunLogits(f);
  if (*init) s = herd::engine::RunInitAdapter(f);
  if (*merge) s = herd::engine::RunMerge(f);
  if (!s.ok()) {
    std::cerr << "herd-engine-tool: " << s.message() << "\n";
    return 2;
  }
  return 0;
}
