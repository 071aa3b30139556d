// herd-kernel-check: every CUDA kernel of kernels/ (RMSNorm, RoPE, SwiGLU forward and backward,
// the LoRA dropout mask) against its ATen reference on the same device, on LLaMA shapes (3.2-1B and
// 3-8B) at N tokens in bfloat16 and float32. Prints one JSON line per check: the error
// (max|kernel − ref| / max|ref|), whether it is within tolerance, the median kernel and ATen times
// over timed runs (CUDA events, L2 flushed before each) and the kernel's achieved bandwidth.
// Exits 1 when any check fails. On --device cpu it runs the reference against itself (a smoke test
// of the tool); --small picks shapes a CPU runs in seconds.
//   herd-kernel-check --device cuda:0 [--out FILE] [--tokens 4096] [--small]
#include <algorithm>
#include <cstdio>
#include <fstream>
#include <functional>
#include <iostream>
#include <optional>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <torch/cuda.h>
#ifdef HERD_WITH_CUDA
#include "trainer/engine/kernels/fused_ops_cuda.h"
#endif

#include "CLI/CLI.hpp"
#include "nlohmann/json.hpp"
#include "trainer/engine/kernels/cross_entropy_check.h"
#include "trainer/engine/kernels/cast_into.h"
#include "trainer/engine/kernels/fused_ops.h"
#include "trainer/engine/kernels/fused_ops_reference.h"
#include "trainer/engine/kernels/kernel_timer.h"
#include "trainer/engine/model/lora_dropout.h"

namespace herd::engine {
namespace {

struct Shape {
  const char* name;
  int64_t hidden, heads, kv_heads, head_dim, intermediate;
};
constexpr Shape kLlamaShapes[] = {
    {"llama3.2-1b", 2048, 32, 8, 64, 8192},
    {"llama3-8b", 4096, 32, 8, 128, 14336},
};
constexpr Shape kSmallShapes[] = {
    {"tiny", 64, 4, 2, 16, 176},
    {"odd", 37, 3, 1, 6, 43},  // widths no vector divides: the scalar paths
};

struct Options {
  std::string device = "cpu";
  std::string out;
  int64_t tokens = 4096;
  bool small = false;
  int warmup = 3;
  int iters = 20;
};

// The outputs of one run of a kernel or of its reference.
using Outputs = std::vector<at::Tensor>;
using Run = std::function<Outputs()>;

// max|a − b| / max|b|, on the tensors' device in float32 (float64 for float64): exact enough for
// errors down to 1e-7, and no copy of a 0.5 GB tensor to the host per check.
double RelErr(const at::Tensor& a, const at::Tensor& b) {
  const at::ScalarType m = b.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  at::Tensor af = a.to(m), bf = b.to(m);
  const double scale = std::max(bf.abs().max().item<double>(), 1e-30);
  return (af - bf).abs().max().item<double>() / scale;
}

class Checker {
 public:
  explicit Checker(const Options& opt) : opt_(opt), device_(opt.device), timer_(opt.device) {
    if (!opt.out.empty()) out_.open(opt.out, std::ios::app);
  }

  bool all_ok() const { return all_ok_; }

  // Runs both, compares every output, times both; `bytes` is the kernel's compulsory traffic.
  void Check(const std::string& check, const std::string& model, const std::string& dtype, double tol, double bytes,
             const Run& kernel, const Run& reference, bool exact = false) {
    nlohmann::json j = {{"check", check}, {"model", model}, {"dtype", dtype}, {"device", device_.str()}};
    try {
      const Outputs got = kernel(), want = reference();
      double err = 0;
      bool equal = got.size() == want.size();
      for (size_t i = 0; equal && i < got.size(); ++i) {
        if (exact) {
          equal = got[i].sizes() == want[i].sizes() && got[i].equal(want[i]);
        } else {
          err = std::max(err, RelErr(got[i], want[i]));
        }
      }
      const bool ok = exact ? equal : (equal && err <= tol);
      const double kernel_ms = Time(kernel), aten_ms = Time(reference);
      j["max_rel_err"] = exact ? (equal ? 0.0 : 1.0) : err;
      j["tol"] = exact ? 0.0 : tol;
      j["ok"] = ok;
      j["kernel_ms"] = kernel_ms;
      j["aten_ms"] = aten_ms;
      j["gbps"] = kernel_ms > 0 ? bytes / (kernel_ms * 1e-3) / 1e9 : 0.0;
      j["bytes"] = bytes;
      all_ok_ = all_ok_ && ok;
    } catch (const std::exception& e) {
      j["ok"] = false;
      j["error"] = e.what();
      all_ok_ = false;
    }
    Emit(j);
  }

  // A check made elsewhere (its "ok" counts like the others').
  void Record(const nlohmann::json& j) {
    all_ok_ = all_ok_ && j.value("ok", false);
    Emit(j);
  }

  void Emit(const nlohmann::json& j) {
    std::cout << j.dump() << std::endl;
    if (out_.is_open()) out_ << j.dump() << "\n";
  }

 private:
  // Median over opt_.iters runs after opt_.warmup, in milliseconds.
  double Time(const Run& run) {
    return timer_.MedianMs([&] { run(); }, opt_.warmup, opt_.iters);
  }

  Options opt_;
  at::Device device_;
  KernelTimer timer_;
  std::ofstream out_;
  bool all_ok_ = true;
};

// The kernel under test: on CUDA the launcher itself (a fallback to ATen would be a failure, not a
// pass), elsewhere the public function.
template <typename R>
R Required(std::optional<R> r, const char* what) {
  TORCH_CHECK(r.has_value(), what, ": the CUDA kernel declined these inputs and would fall back to ATen");
  return *std::move(r);
}

void CheckShape(Checker& c, const Shape& s, at::ScalarType dt, int64_t n, at::Device dev) {
  [[maybe_unused]] const bool cuda = dev.is_cuda();
  const std::string dtype = dt == at::kBFloat16 ? "bf16" : "fp32";
  const double es = static_cast<double>(at::elementSize(dt));
  const double tol = dt == at::kFloat ? 1e-5 : 1e-2;
  const auto opts = at::TensorOptions().dtype(dt).device(dev);
  const int64_t h = s.hidden, inter = s.intermediate, d = s.head_dim;
  const double nd = static_cast<double>(n);
  at::manual_seed(0);

  // RMSNorm: x, dy [N, H], w [H].
  at::Tensor x = at::randn({n, h}, opts), w = at::randn({h}, opts) * 0.1 + 1, dy = at::randn({n, h}, opts);
  const double eps = 1e-5;
  const RmsNormResult fwd = reference::RmsNormForward(x, w, eps);
  c.Check(
      "rmsnorm_fwd", s.name, dtype, tol, nd * h * es * 2 + nd * 4,
      [&]() -> Outputs {
#ifdef HERD_WITH_CUDA
        if (cuda) {
          const RmsNormResult r = Required(cuda_kernels::RmsNormForward(x, w, eps), "rmsnorm_fwd");
          return {r.y, r.rstd};
        }
#endif
        const RmsNormResult r = RmsNormForward(x, w, eps);
        return {r.y, r.rstd};
      },
      [&]() -> Outputs { const RmsNormResult r = reference::RmsNormForward(x, w, eps); return {r.y, r.rstd}; });
  c.Check(
      "rmsnorm_bwd", s.name, dtype, tol, nd * h * es * 3 + nd * 4,
      [&]() -> Outputs {
#ifdef HERD_WITH_CUDA
        if (cuda) return {Required(cuda_kernels::RmsNormBackward(dy, x, w, fwd.rstd), "rmsnorm_bwd")};
#endif
        return {RmsNormBackward(dy, x, w, fwd.rstd)};
      },
      [&]() -> Outputs { return {reference::RmsNormBackward(dy, x, w, fwd.rstd)}; });

  // The backward with a residual's gradient added in the same pass (the MLP block's).
  at::Tensor res = at::randn({n, h}, opts);
  c.Check(
      "rmsnorm_bwd_add", s.name, dtype, tol, nd * h * es * 4 + nd * 4,
      [&]() -> Outputs {
#ifdef HERD_WITH_CUDA
        if (cuda) return {Required(cuda_kernels::RmsNormBackward(dy, x, w, fwd.rstd, res), "rmsnorm_bwd_add")};
#endif
        return {RmsNormBackward(dy, x, w, fwd.rstd, res)};
      },
      [&]() -> Outputs { return {reference::RmsNormBackward(dy, x, w, fwd.rstd).add_(res)}; });

  // The same into and out of rows spaced wider than H, as the folded LoRA groups lay them out
  // ([x' | s·x'Aᵀ] for q/k/v at r 16: H + 48): must equal the dense kernel's bits.
  at::Tensor wide = at::empty({n, h + 48}, opts);
  at::Tensor dy_wide = at::empty({n, h + 48}, opts);
  dy_wide.narrow(1, 0, h).copy_(dy);
  c.Check(
      "rmsnorm_fwd_strided_out", s.name, dtype, 0, nd * h * es * 2 + nd * 4,
      [&]() -> Outputs {
#ifdef HERD_WITH_CUDA
        if (cuda) {
          const RmsNormResult r =
              Required(cuda_kernels::RmsNormForward(x, w, eps, wide.narrow(1, 0, h)), "rmsnorm_fwd_strided_out");
          return {r.y, r.rstd};  // (strided: compared as it is, so the timing is the kernel alone)
        }
#endif
        const RmsNormResult r = RmsNormForward(x, w, eps, wide.narrow(1, 0, h));
        return {r.y, r.rstd};
      },
      [&]() -> Outputs { const RmsNormResult r = RmsNormForward(x, w, eps); return {r.y, r.rstd}; }, /*exact=*/true);
  c.Check(
      "rmsnorm_bwd_strided_dy", s.name, dtype, 0, nd * h * es * 3 + nd * 4,
      [&]() -> Outputs {
#ifdef HERD_WITH_CUDA
        if (cuda) {
          return {Required(cuda_kernels::RmsNormBackward(dy_wide.narrow(1, 0, h), x, w, fwd.rstd),
                           "rmsnorm_bwd_strided_dy")};
        }
#endif
        return {RmsNormBackward(dy_wide.narrow(1, 0, h), x, w, fwd.rstd)};
      },
      [&]() -> Outputs { return {RmsNormBackward(dy, x, w, fwd.rstd)}; }, /*exact=*/true);

  // RoPE on q and k: [B, T, heads, D] with B = 2, T = N / 2.
  const int64_t b = 2, t = n / 2;
  at::Tensor pos = at::arange(t, at::TensorOptions().dtype(at::kFloat).device(dev)).unsqueeze(1);  // [T, 1]
  at::Tensor inv = at::pow(500000.0, -at::arange(0, d, 2, pos.options()) / static_cast<double>(d));
  at::Tensor emb = at::cat({pos * inv, pos * inv}, -1).unsqueeze(0).expand({b, t, d}).contiguous();  // [B, T, D]
  at::Tensor cos = emb.cos().to(dt), sin = emb.sin().to(dt);
  const std::pair<const char*, int64_t> projections[] = {{"q", s.heads}, {"k", s.kv_heads}};
  for (const auto& [which, heads] : projections) {
    at::Tensor q = at::randn({b, t, heads, d}, opts);
    const double bytes = static_cast<double>(b * t) * (heads * d * es * 2 + d * es * 2);
    c.Check(
        std::string("rope_fwd_") + which, s.name, dtype, tol, bytes,
        [&]() -> Outputs {
#ifdef HERD_WITH_CUDA
          if (cuda) return {Required(cuda_kernels::RopeForward(q, cos, sin), "rope_fwd")};
#endif
          return {RopeForward(q, cos, sin)};
        },
        [&]() -> Outputs { return {reference::RopeForward(q, cos, sin)}; });
    c.Check(
        std::string("rope_bwd_") + which, s.name, dtype, tol, bytes,
        [&]() -> Outputs {
#ifdef HERD_WITH_CUDA
          if (cuda) return {Required(cuda_kernels::RopeBackward(q, cos, sin), "rope_bwd")};
#endif
          return {RopeBackward(q, cos, sin)};
        },
        [&]() -> Outputs { return {reference::RopeBackward(q, cos, sin)}; });
  }
  // The backward into q's columns of the side-by-side q/k/v gradient ([N, (Nq + 2·Nkv)·D]), as the
  // folded group's backward writes it: the same bits as into its own tensor.
  {
    at::Tensor q = at::randn({b, t, s.heads, d}, opts);
    at::Tensor stack = at::zeros({b * t, (s.heads + 2 * s.kv_heads) * d}, opts);
    at::Tensor slot = stack.narrow(1, 0, s.heads * d).view({b, t, s.heads, d});
    c.Check(
        "rope_bwd_strided_out", s.name, dtype, 0, static_cast<double>(b * t) * (s.heads * d * es * 2 + d * es * 2),
        [&]() -> Outputs {
#ifdef HERD_WITH_CUDA
          if (cuda) return {Required(cuda_kernels::RopeBackward(q, cos, sin, slot), "rope_bwd_strided_out")};
#endif
          return {RopeBackward(q, cos, sin, slot)};
        },
        [&]() -> Outputs { return {RopeBackward(q, cos, sin)}; }, /*exact=*/true);
  }

  // SwiGLU: g, u, da [N, I].
  at::Tensor g = at::randn({n, inter}, opts) * 3, u = at::randn({n, inter}, opts), da = at::randn({n, inter}, opts);
  c.Check(
      "swiglu_fwd", s.name, dtype, tol, nd * inter * es * 3,
      [&]() -> Outputs {
#ifdef HERD_WITH_CUDA
        if (cuda) return {Required(cuda_kernels::SwiGluForward(g, u), "swiglu_fwd")};
#endif
        return {SwiGluForward(g, u)};
      },
      [&]() -> Outputs { return {reference::SwiGluForward(g, u)}; });
  c.Check(
      "swiglu_bwd", s.name, dtype, tol, nd * inter * es * 5,
      [&]() -> Outputs {
#ifdef HERD_WITH_CUDA
        if (cuda) {
          auto [dg, du] = Required(cuda_kernels::SwiGluBackward(da, g, u), "swiglu_bwd");
          return {dg, du};
        }
#endif
        auto [dg, du] = SwiGluBackward(da, g, u);
        return {dg, du};
      },
      [&]() -> Outputs {
        auto [dg, du] = reference::SwiGluBackward(da, g, u);
        return {dg, du};
      });
  // Into the gate and up halves of one side-by-side gradient [N, 2I], as the folded gate/up group's
  // backward takes it: the same bits as into tensors of their own.
  at::Tensor dgu = at::zeros({n, 2 * inter}, opts);
  c.Check(
      "swiglu_bwd_strided_out", s.name, dtype, 0, nd * inter * es * 5,
      [&]() -> Outputs {
        const at::Tensor dg_out = dgu.narrow(1, 0, inter), du_out = dgu.narrow(1, inter, inter);
#ifdef HERD_WITH_CUDA
        if (cuda) {
          auto [dg, du] = Required(cuda_kernels::SwiGluBackward(da, g, u, dg_out, du_out), "swiglu_bwd_strided_out");
          return {dg, du};
        }
#endif
        auto [dg, du] = SwiGluBackward(da, g, u, dg_out, du_out);
        return {dg, du};
      },
      [&]() -> Outputs {
        auto [dg, du] = SwiGluBackward(da, g, u);
        return {dg, du};
      },
      /*exact=*/true);
}

// LoRA's compute copies of one layer in one launch (CastInto): r-16 A's and B's of the shape, some
// into blocks of wider matrices as the padded weights hold them; bit for bit what copy_ makes.
void CheckCastInto(Checker& c, const Shape& s, at::Device dev) {
  const int64_t r = 16, h = s.hidden, inter = s.intermediate;
  const auto f32 = at::TensorOptions().dtype(at::kFloat).device(dev);
  const auto bf16 = f32.dtype(at::kBFloat16);
  at::manual_seed(3);
  std::vector<at::Tensor> srcs = {at::randn({r, h}, f32), at::randn({h, r}, f32), at::randn({inter, r}, f32),
                                  at::randn({r, inter}, f32)};
  at::Tensor wide = at::zeros({inter, h + 3 * r}, bf16), rows = at::zeros({h + r, inter}, bf16);
  std::vector<at::Tensor> dsts = {at::empty({r, h}, bf16), at::empty({h, r}, bf16), wide.narrow(1, h + r, r),
                                  rows.narrow(0, h, r)};
  std::vector<CastPair> pairs;
  for (size_t i = 0; i < srcs.size(); ++i) pairs.push_back({srcs[i], dsts[i]});
  double bytes = 0;
  for (const at::Tensor& t : srcs) bytes += static_cast<double>(t.numel()) * 6;
  c.Check(
      "cast_into", s.name, "fp32->bf16", 0, bytes,
      [&]() -> Outputs {
#ifdef HERD_WITH_CUDA
        if (dev.is_cuda()) TORCH_CHECK(cuda_kernels::CastInto(pairs), "cast_into: the CUDA kernel declined");
#endif
        if (!dev.is_cuda()) CastInto(pairs);
        return {dsts[0].clone(), dsts[1].clone(), dsts[2].clone(), dsts[3].clone()};
      },
      [&]() -> Outputs {
        Outputs want;
        for (size_t i = 0; i < srcs.size(); ++i) want.push_back(srcs[i].to(at::kBFloat16));
        return want;
      },
      /*exact=*/true);
}

// The dropout mask of the LoRA input of q/k/v/gate/up ([B, T, H]) and of down ([B, T, I]).
void CheckDropout(Checker& c, const Shape& s, int64_t n, at::Device dev) {
  const int64_t b = 2, t = n / 2;
  at::Tensor keys = DropoutKeyTable({.seed = 42, .step = 7}, {11, 1 << 20}, b, 1, 7, dev)[0][0];  // [B, 2]
  const std::pair<const char*, int64_t> inputs[] = {{"hidden", s.hidden}, {"intermediate", s.intermediate}};
  for (const auto& [which, features] : inputs) {
    c.Check(
        std::string("dropout_mask_") + which, s.name, "bool", 0, static_cast<double>(b * t * features),
        [&]() -> Outputs { return {DropoutKeepMask(keys, t, features, 0.9)}; },
        [&]() -> Outputs { return {reference::DropoutKeepMask(keys, t, features, 0.9)}; }, /*exact=*/true);
  }
}

int Main(int argc, char** argv) {
  Options opt;
  CLI::App app{"herd-kernel-check: the engine's CUDA kernels against their ATen reference"};
  app.add_option("--device", opt.device, "cpu or cuda[:N]");
  app.add_option("--out", opt.out, "also append the JSON lines to this file");
  app.add_option("--tokens", opt.tokens, "tokens per batch (N)")->check(CLI::Range(int64_t{2}, int64_t{1} << 24));
  app.add_flag("--small", opt.small, "small shapes and few tokens (a quick CPU run)");
  app.add_option("--iters", opt.iters, "timed runs per check (the median is reported)")->check(CLI::PositiveNumber);
  CLI11_PARSE(app, argc, argv);

  at::Device dev("cpu");
  try {
    dev = at::Device(opt.device);
  } catch (const std::exception& e) {
    std::cerr << "herd-kernel-check: bad --device " << opt.device << ": " << e.what() << "\n";
    return 1;
  }
  if (dev.is_cuda()) {
#ifndef HERD_WITH_CUDA
    std::cerr << "herd-kernel-check: built without HERD_WITH_CUDA, so there are no kernels to check\n";
    return 1;
#endif
    if (!torch::cuda::is_available()) {
      std::cerr << "herd-kernel-check: no CUDA device visible\n";
      return 1;
    }
  }
  if (opt.small) {
    opt.tokens = std::min<int64_t>(opt.tokens, 64);
    opt.iters = std::min(opt.iters, 3);
    opt.warmup = 1;
  }
  opt.tokens -= opt.tokens % 2;
  Checker checker(opt);
  const auto& shapes = opt.small ? std::vector<Shape>(std::begin(kSmallShapes), std::end(kSmallShapes))
                                 : std::vector<Shape>(std::begin(kLlamaShapes), std::end(kLlamaShapes));
  for (const Shape& s : shapes) {
    for (at::ScalarType dt : {at::kBFloat16, at::kFloat}) CheckShape(checker, s, dt, opt.tokens, dev);
    CheckDropout(checker, s, opt.tokens, dev);
    CheckCastInto(checker, s, dev);
  }
  // The output head's fused cross-entropy (kernels/cross_entropy.h), on its own shape.
  checker.Record(CheckCrossEntropyKernel(dev.str()));
  checker.Emit({{"summary", true}, {"ok", checker.all_ok()}, {"device", dev.str()}, {"tokens", opt.tokens}});
  return checker.all_ok() ? 0 : 1;
}

}  // namespace
}  // namespace herd::engine

int main(int argc, char** argv) { return herd::engine::Main(argc, argv); }
