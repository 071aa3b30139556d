// herd-bench: training throughput of Herd's engine on LLaMA shapes with random weights (issue
// "The GPU path"). LoRA r16 alpha32 on all seven projections, random tokens, timed optimiser steps
// after warm-up; prints one JSON line in the units of ../shared/bench/hf_peft_baseline.py so the two
// can be compared in one run. On CPU the memory figure is the process's resident set (peak, and
// the part above what the weights and batches hold before the first step).
//   herd-bench --model llama3-8b --batch 2 --seq 2048 --device cuda:0 [--grad-ckpt]
#include <chrono>
#include <cstdio>
#include <iostream>
#include <map>
#include <string>

#include <algorithm>
#include <fstream>
#include <functional>
#include <set>

#include <ATen/ATen.h>
#include <torch/csrc/autograd/profiler_kineto.h>
#include <torch/cuda.h>

#include "CLI/CLI.hpp"
#include "common/host_info.h"
#include "common/status.h"
#include "nlohmann/json.hpp"
#include "trainer/engine/device_info.h"
#include "trainer/engine/kernels/fused_ops.h"
#include "trainer/engine/model/flops.h"
#include "trainer/engine/model/llama.h"
#include "trainer/engine/train/optimizer.h"

namespace herd::engine {
namespace {

struct Shape {
  int64_t hidden, layers, heads, kv_heads, intermediate, vocab;
  bool tied;
};
// The shapes of hf_peft_baseline.py, plus the test fixture's and a small one for CPU runs.
const std::map<std::string, Shape> kShapes = {
    {"llama3.2-1b", {2048, 16, 32, 8, 8192, 128256, true}},
    {"llama3-8b", {4096, 32, 32, 8, 14336, 128256, false}},
    {"llama2-7b", {4096, 32, 32, 32, 11008, 32000, false}},
    {"tiny", {64, 2, 4, 2, 176, 1024, false}},
    {"small", {256, 8, 8, 2, 704, 32000, false}},  // CPU-sized, with a real vocabulary
};

void Synchronize(const at::Device& d) {
  if (d.is_cuda()) torch::cuda::synchronize();
}

// The peak allocated on a GPU since the last ResetPeakMemory; -1 on a CPU (its resident set
// cannot be reset: peak_rss_gib and step_rss_gib stand in).
int64_t PeakBytes(const at::Device& d) { return d.is_cuda() ? AllocatedBytes(d.str(), /*peak=*/true) : -1; }

// Bytes in use now: the CUDA allocator's live bytes, or on CPU the resident set (-1 where unknown).
// For the CPU figure to follow frees, run with MALLOC_MMAP_THRESHOLD_=65536 (glibc then returns
// every large block to the system when it is freed).
int64_t CurrentBytes(const at::Device& d) { return AllocatedBytes(d.str(), /*peak=*/false); }

double Gib(int64_t bytes) { return static_cast<double>(bytes) / double(1 << 30); }

struct BenchOptions {
  int64_t batch = 2, seq = 256;
  int steps = 8, warmup = 3;
  bool grad_ckpt = false;
  int64_t loss_chunk = kDefaultLossChunkTokens;
  bool full_logits = false;  // the unchunked reference: [tokens, vocab] logits kept for backward
  std::string dtype;         // base weights: "bf16" or "fp32"; empty = bf16 on CUDA, fp32 on CPU
  bool no_fused_kernels = false;  // CUDA tensors take the ATen references (SetFusedKernelsEnabled)
  std::string attention = "auto";  // "auto" (flash where it applies) or "sdpa"
  bool reference = false;    // plain autograd layers instead of the lean nodes (LlamaModel::set_reference_layers)
  bool recompute_mlp = false;  // make SwiGLU(g, u) again in backward instead of keeping it
  bool no_fold = false;        // LoRA beside the frozen matmuls instead of folded into them
  std::string profile;       // where to write one more step's kernel profile (JSON lines); empty = none
  std::string trace;         // where to write that step's whole timeline (Chrome trace JSON); empty = none
};

// Runs `run` (one training step) under the Kineto profiler and writes where its device time went:
// a first line with the step's wall time and the kernels' summed time (their difference is time
// the GPU sat idle, launch gaps mostly), then the kernels by total time, most first.
absl::Status ProfileStep(const std::string& path, const std::string& trace, const nlohmann::json& shape,
                         const at::Device& dev, const std::function<absl::Status()>& run) {
  namespace prof = torch::profiler::impl;
  std::set<prof::ActivityType> activities = {prof::ActivityType::CPU};
  if (dev.is_cuda()) activities.insert(prof::ActivityType::CUDA);
  torch::autograd::profiler::prepareProfiler(prof::ProfilerConfig(prof::ProfilerState::KINETO), activities);
  torch::autograd::profiler::enableProfiler(prof::ProfilerConfig(prof::ProfilerState::KINETO), activities);
  const auto start = std::chrono::steady_clock::now();
  absl::Status s = run();
  Synchronize(dev);
  const double wall_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  std::unique_ptr<torch::autograd::profiler::ProfilerResult> result = torch::autograd::profiler::disableProfiler();
  HERD_RETURN_IF_ERROR(s);
  if (!trace.empty()) result->save(trace);  // every host op and kernel on one timeline: where the gaps are
  struct Sum {
    double ms = 0;
    int64_t count = 0;
  };
  std::map<std::string, Sum> by_name;
  double device_ms = 0;
  int64_t device_events = 0;
  for (const auto& e : result->events()) {
    const double ms = static_cast<double>(e.durationNs()) / 1e6;
    // On a GPU, the device's own events (kernels, copies); on a CPU the operators (which nest, so
    // their times overlap: there the list is only a rough guide).
    if ((e.deviceType() == c10::DeviceType::CPU) == dev.is_cuda()) continue;
    Sum& sum = by_name[e.name()];
    sum.ms += ms;
    ++sum.count;
    device_ms += ms;
    ++device_events;
  }
  std::vector<std::pair<std::string, Sum>> sorted(by_name.begin(), by_name.end());
  std::sort(sorted.begin(), sorted.end(), [](const auto& a, const auto& b) { return a.second.ms > b.second.ms; });
  std::ofstream out(path, std::ios::app);
  nlohmann::json head = shape;
  head["check"] = "profile";
  head["wall_ms"] = wall_ms;
  head["device_ms"] = device_ms;
  head["device_events"] = device_events;
  head["idle_ms"] = wall_ms - device_ms;
  out << head.dump() << "\n";
  int rank = 0;
  for (const auto& [name, sum] : sorted) {
    if (++rank > 40) break;
    nlohmann::json row = {{"check", "profile_kernel"}, {"model", shape.value("model", "")},
                          {"batch", shape.value("batch", 0)}, {"rank", rank},
                          {"kernel", name.substr(0, 160)}, {"ms", sum.ms}, {"count", sum.count},
                          {"share", device_ms > 0 ? sum.ms / device_ms : 0.0}};
    out << row.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
  }
  if (!out) return absl::InternalError("writing the profile to " + path);
  return absl::OkStatus();
}

absl::Status Bench(const std::string& name, const std::string& device, const BenchOptions& o) {
  const int64_t batch = o.batch, seq = o.seq;
  const int steps = o.steps, warmup = o.warmup;
  const bool grad_ckpt = o.grad_ckpt;
  if (o.loss_chunk < 1) return absl::InvalidArgumentError("--loss-chunk must be >= 1");
  auto it = kShapes.find(name);
  if (it == kShapes.end()) return absl::InvalidArgumentError("unknown --model " + name);
  const Shape& s = it->second;
  LlamaConfig c;
  c.vocab_size = s.vocab;
  c.hidden_size = s.hidden;
  c.intermediate_size = s.intermediate;
  c.num_layers = s.layers;
  c.num_heads = s.heads;
  c.num_kv_heads = s.kv_heads;
  c.head_dim = s.hidden / s.heads;
  c.max_position_embeddings = std::max<int64_t>(seq, 8192);
  c.rope_theta = 500000.0;
  c.tie_word_embeddings = s.tied;
  const at::Device dev(device);
  if (!o.dtype.empty() && o.dtype != "bf16" && o.dtype != "fp32") {
    return absl::InvalidArgumentError("--dtype must be bf16 or fp32, not " + o.dtype);
  }
  const bool bf16 = o.dtype.empty() ? dev.is_cuda() : o.dtype == "bf16";
  LoadOptions load{.device = dev, .dtype = bf16 ? at::kBFloat16 : at::kFloat};
  HERD_ASSIGN_OR_RETURN(auto model, LlamaModel::Random(c, load, 0));
  LoraOptions lora{.r = 16, .alpha = 32};
  for (const ProjInfo& p : kProjTable) lora.targets.push_back(p.proj);
  HERD_RETURN_IF_ERROR(model->EnableLora(lora, 1));
  model->set_reference_layers(o.reference);
  model->set_keep_mlp_activations(!o.recompute_mlp);
  if (o.no_fold) model->set_fold_adapters(false);
  if (o.attention != "auto" && o.attention != "sdpa" && o.attention != "varlen") {
    return absl::InvalidArgumentError("--attention must be auto, sdpa or varlen, not " + o.attention);
  }
  SetFusedKernelsEnabled(!o.no_fused_kernels);
  SetAttentionBackendOverride(o.attention == "sdpa"     ? AttentionBackend::kSdpa
                              : o.attention == "varlen" ? AttentionBackend::kFlash
                                                        : AttentionBackend::kAuto);
  const std::vector<at::Tensor> params = model->LoraParameters();
  HERD_ASSIGN_OR_RETURN(AdamW opt, AdamW::Create(params, {}));
  int64_t trainable = 0;
  for (const at::Tensor& p : params) trainable += p.numel();

  at::manual_seed(1);
  std::vector<Batch> batches;
  for (int i = 0; i < 4; ++i) {
    Batch b;
    b.input_ids = at::randint(0, s.vocab, {batch, seq}, at::TensorOptions().dtype(at::kLong).device(dev));
    b.position_ids = at::arange(seq, at::TensorOptions().dtype(at::kLong).device(dev)).expand({batch, seq}).contiguous();
    b.targets = at::cat({b.input_ids.narrow(1, 1, seq - 1), at::full({batch, 1}, -100, b.input_ids.options())}, 1);
    b.trained = TrainedPositions(b.targets.cpu(), dev);  // as the trainer's batches: made on the host
    batches.push_back(std::move(b));
  }
  const int64_t rss_before = ProcStatusBytes("VmRSS:");
  at::Tensor loss;  // the last step's, read once after the timed steps (no sync a step, as the baseline)
  int64_t kept = 0;  // most bytes the forward left for the backward (activations, head gradient)
  // measure: the warm-up steps also measure what the forward keeps (the synchronisations that
  // takes stay out of the timed steps).
  auto step = [&](int i, bool measure) -> absl::Status {
    for (const at::Tensor& p : params) p.mutable_grad() = at::Tensor();
    const Batch& b = batches[i % 4];
    if (measure) Synchronize(dev);
    const int64_t before = measure ? CurrentBytes(dev) : 0;
    at::Tensor hidden = model->Hidden(b, nullptr, grad_ckpt);
    at::Tensor l;
    if (o.full_logits) {
      at::Tensor t = b.targets.reshape({-1});
      l = at::cross_entropy_loss(model->Logits(hidden).view({-1, s.vocab}), t, {}, at::Reduction::Mean, -100);
    } else {
      LlamaModel::LossSums sums = model->Loss(hidden, b.targets, o.loss_chunk, b.trained);
      l = sums.loss_sum / static_cast<double>(sums.tokens);
    }
    if (measure) {
      Synchronize(dev);
      kept = std::max(kept, CurrentBytes(dev) - before);
    }
    l.backward();
    HERD_RETURN_IF_ERROR(opt.Step(1e-4));
    loss = l.detach();
    return absl::OkStatus();
  };
  try {
    for (int i = 0; i < warmup; ++i) HERD_RETURN_IF_ERROR(step(i, /*measure=*/true));
    Synchronize(dev);
    ResetPeakMemory(dev.str());
    const auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < steps; ++i) HERD_RETURN_IF_ERROR(step(i, /*measure=*/false));
    Synchronize(dev);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const double tokens_per_s = static_cast<double>(batch * seq * steps) / seconds;
    const double fpt = TrainingFlopsPerToken(c, seq, lora.r, lora.targets);
    const int64_t peak = PeakBytes(dev);
    const int64_t peak_rss = ProcStatusBytes("VmHWM:");
    nlohmann::json out = {{"system", "herd"}, {"model", name}, {"device", device}, {"batch", batch}, {"seq", seq},
                          {"grad_ckpt", grad_ckpt}, {"layers", o.reference ? "reference" : "lean"},
                          {"dtype", bf16 ? "bf16" : "fp32"}, {"fused_kernels", !o.no_fused_kernels},
                          {"attention", o.attention}, {"keep_mlp_activation", !o.recompute_mlp},
                          {"fold_adapters", !o.no_fold},
                          {"trainable_params", trainable},
                          {"loss_chunk", o.full_logits ? nlohmann::json("full") : nlohmann::json(o.loss_chunk)},
                          {"peak_rss_gib", Gib(peak_rss)}, {"step_rss_gib", Gib(peak_rss - rss_before)},
                          {"kept_gib", Gib(kept)}, {"step_s", seconds / steps}, {"tokens_per_s", tokens_per_s},
                          {"model_tflops", tokens_per_s * fpt / 1e12}, {"flops_per_token", fpt},
                          {"peak_mem_gib", peak < 0 ? nlohmann::json(nullptr) : nlohmann::json(peak / double(1 << 30))},
                          {"loss", loss.item<double>()}};
    std::cout << out.dump() << std::endl;
    if (!o.profile.empty()) {
      HERD_RETURN_IF_ERROR(ProfileStep(o.profile, o.trace,
                                       {{"model", name}, {"batch", batch}, {"seq", seq}, {"grad_ckpt", grad_ckpt}},
                                       dev, [&] { return step(steps, /*measure=*/false); }));
    }
  } catch (const std::exception& e) {
    return absl::InternalError(e.what());
  }
  return absl::OkStatus();
}

}  // namespace
}  // namespace herd::engine

int main(int argc, char** argv) {
  CLI::App app{"herd-bench: Herd's LoRA training throughput on LLaMA shapes (random weights, random tokens)"};
  std::string model = "tiny", device = "cpu";
  herd::engine::BenchOptions o;
  app.add_option("--model", model, "llama3.2-1b, llama3-8b, llama2-7b, small or tiny")->capture_default_str();
  app.add_option("--batch", o.batch, "Sequences per step")->capture_default_str();
  app.add_option("--seq", o.seq, "Tokens per sequence")->capture_default_str();
  app.add_option("--steps", o.steps, "Timed steps")->capture_default_str();
  app.add_option("--warmup", o.warmup, "Untimed steps first")->capture_default_str();
  app.add_option("--device", device, "cpu or cuda:N")->capture_default_str();
  app.add_option("--dtype", o.dtype, "Frozen weights: bf16 or fp32 (default bf16 on CUDA, fp32 on CPU)");
  app.add_flag("--grad-ckpt", o.grad_ckpt, "Activation checkpointing per decoder layer");
  app.add_option("--loss-chunk", o.loss_chunk, "Trained tokens per output-head + cross-entropy chunk")
      ->capture_default_str();
  app.add_flag("--full-logits", o.full_logits,
               "Unchunked head + cross-entropy (the whole [tokens, vocab] logits), for comparison");
  app.add_flag("--no-fused-kernels", o.no_fused_kernels,
               "ATen ops instead of Herd's CUDA kernels (norms, RoPE, SwiGLU, dropout masks, cross-entropy)");
  app.add_option("--attention", o.attention,
                 "auto (on a GPU: SDPA's fused kernel for plain rows, varlen flash for packed ones), sdpa (with "
                 "recompute, everywhere) or varlen (the varlen flash kernel for every batch)")
      ->capture_default_str();
  app.add_flag("--reference", o.reference,
               "Decoder layers as plain autograd over ATen ops (what transformers computes), for comparison");
  app.add_flag("--recompute-mlp", o.recompute_mlp,
               "Make each layer's SwiGLU output again in backward instead of keeping it (less memory)");
  app.add_flag("--no-fold", o.no_fold,
               "Run the LoRA matmuls beside the frozen ones instead of folding q/k/v's, gate/up's and down's "
               "into them");
  app.add_option("--trace", o.trace,
                 "With --profile: also write the profiled step's timeline there (Chrome trace JSON, for "
                 "chrome://tracing or Perfetto)");
  app.add_option("--profile", o.profile,
                 "After the timed steps, profile one more and append where its GPU time went to this file "
                 "(JSON lines: the step, then its 40 costliest kernels)");
  CLI11_PARSE(app, argc, argv);
  absl::Status s = herd::engine::Bench(model, device, o);
  if (!s.ok()) {
    std::cerr << "herd-bench: " << s.message() << "\n";
    return absl::IsInvalidArgument(s) || absl::IsUnimplemented(s) ? 2 : 1;
  }
  return 0;
}
