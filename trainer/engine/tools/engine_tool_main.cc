// herd-engine-tool: the engine library driven from files, for parity tests against Hugging Face
// and for debugging. Inputs and outputs are safetensors files.
//   herd-engine-tool logits --model DIR --input in.safetensors --out out.safetensors
// input: input_ids [B, T] int64, optional position_ids [B, T], doc_ids [B, T], targets [B, T].
// output: logits [B, T, V] float32, and with targets: loss_sum, tokens, correct.
#include <iostream>

#include <c10/core/InferenceMode.h>

#include "CLI/CLI.hpp"
#include "common/status.h"
#include "trainer/engine/model/llama.h"
#include "trainer/engine/tensor_io.h"

namespace herd::engine {
namespace {

absl::Status RunLogits(const std::string& model_dir, const std::string& input, const std::string& out,
                       const std::string& dtype) {
  LoadOptions load;
  load.dtype = dtype == "float64" ? at::kDouble : at::kFloat;
  HERD_ASSIGN_OR_RETURN(auto model, LlamaModel::Load(model_dir, load));
  HERD_ASSIGN_OR_RETURN(auto tensors, ReadAllTensors(input));
  try {
    Batch batch;
    if (!tensors.count("input_ids")) return absl::InvalidArgumentError(input + ": no input_ids tensor");
    batch.input_ids = tensors["input_ids"].to(at::kLong);
    const int64_t B = batch.input_ids.size(0), T = batch.input_ids.size(1);
    batch.position_ids = tensors.count("position_ids") ? tensors["position_ids"].to(at::kLong)
                                                       : at::arange(T, at::kLong).expand({B, T}).contiguous();
    if (tensors.count("doc_ids")) batch.doc_ids = tensors["doc_ids"].to(at::kLong);
    c10::InferenceMode no_grad;
    at::Tensor hidden = model->Hidden(batch, nullptr);
    SafetensorsWriter writer;
    HERD_RETURN_IF_ERROR(AddTensor(writer, "logits", model->Logits(hidden)));
    if (tensors.count("targets")) {
      auto sums = model->Loss(hidden, tensors["targets"].to(at::kLong), 7);  // odd chunks on purpose
      HERD_RETURN_IF_ERROR(AddTensor(writer, "loss_sum", sums.loss_sum));
      HERD_RETURN_IF_ERROR(AddTensor(writer, "tokens", at::scalar_tensor(sums.tokens, at::kLong)));
      HERD_RETURN_IF_ERROR(AddTensor(writer, "correct", at::scalar_tensor(sums.correct, at::kLong)));
    }
    return writer.Write(out);
  } catch (const std::exception& e) {
    return absl::InternalError(e.what());
  }
}

}  // namespace
}  // namespace herd::engine

int main(int argc, char** argv) {
  CLI::App app{"herd-engine-tool: run pieces of the engine on files (tests, debugging)"};
  app.require_subcommand(1);
  std::string model, input, out, dtype = "float32";
  CLI::App* logits = app.add_subcommand("logits", "Forward pass: logits (and loss with targets)");
  logits->add_option("--model", model, "Hugging Face model directory")->required();
  logits->add_option("--input", input, "safetensors with input_ids [B, T] (position_ids, doc_ids, targets optional)")->required();
  logits->add_option("--out", out, "Output safetensors")->required();
  logits->add_option("--dtype", dtype, "float32 or float64")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  absl::Status s;
  if (*logits) s = herd::engine::RunLogits(model, input, out, dtype);
  if (!s.ok()) {
    std::cerr << "herd-engine-tool: " << s.message() << "\n";
    return 2;
  }
  return 0;
}
