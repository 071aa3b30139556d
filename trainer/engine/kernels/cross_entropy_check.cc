// CheckCrossEntropyKernel (cross_entropy_check.h): the CUDA kernel against float64 math on the
// LLaMA 3 head's shape, timed beside the ATen reference; on a CPU the reference against float64 math.
#include "trainer/engine/kernels/cross_entropy_check.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <algorithm>
#include <exception>
#include <functional>
#include <vector>

#ifdef HERD_WITH_CUDA
#include "trainer/engine/kernels/cross_entropy_cuda.h"
#endif
#include "trainer/engine/kernels/cross_entropy.h"
#include "trainer/engine/kernels/kernel_timer.h"

namespace herd::engine {
namespace {

constexpr int kWarmup = 3;
constexpr int kIters = 20;

const char* DtypeName(at::ScalarType s) {
  switch (s) {
    case at::kBFloat16: return "bf16";
    case at::kHalf: return "fp16";
    case at::kFloat: return "fp32";
    default: return "fp64";
  }
}

// Tolerance on the gradient in units in the last place of the logits' dtype: one rounding of the
// same float32 value for 16-bit storage; for float32, exp(l − lse) carries lse's own rounding
// (a few ulps of |lse| ≈ 15) relative error, some 10-20 ulps of the result.
double GradTolUlps(at::ScalarType s) { return s == at::kFloat ? 64.0 : 1.0; }
double LossTol(at::ScalarType s) { return s == at::kFloat ? 1e-5 : 1e-4; }

// The spacing of `dtype`'s values at magnitude |v|, as float32.
at::Tensor Ulp(const at::Tensor& v, at::ScalarType dtype) {
  int64_t mant = 24, emin = -125;  // frexp exponent of the smallest normal float32 is −125
  if (dtype == at::kBFloat16) mant = 8;
  if (dtype == at::kHalf) {
    mant = 11;
    emin = -13;
  }
  at::Tensor e = std::get<1>(at::frexp(v.to(at::kFloat).abs()));
  return at::exp2((e.to(at::kLong).clamp_min(emin) - mant).to(at::kFloat));
}

// max |a − b| / ulp(max(|a|, |b|)), the ulp of `dtype`.
double MaxUlps(const at::Tensor& a, const at::Tensor& b, at::ScalarType dtype) {
  at::Tensor af = a.to(at::kFloat), bf = b.to(at::kFloat);
  return ((af - bf).abs() / Ulp(at::maximum(af.abs(), bf.abs()), dtype)).max().item<double>();
}

// max |a − b| / max(|b|, 1): the loss of one token.
double LossErr(const at::Tensor& a, const at::Tensor& b) {
  at::Tensor b64 = b.to(at::kDouble);
  return ((a.to(at::kDouble) - b64).abs() / b64.abs().clamp_min(1.0)).max().item<double>();
}

// The checks' timer: the median of kIters runs after kWarmup.
class Timer {
 public:
  explicit Timer(at::Device device) : timer_(device) {}
  double MedianMs(const std::function<void()>& run) { return timer_.MedianMs(run, kWarmup, kIters); }

 private:
  KernelTimer timer_;
};

// N(0, 3²) logits [m, V] in `dtype` and uniform targets [m].
struct Inputs {
  Inputs(int64_t m, int64_t v, at::ScalarType dtype, at::Device device) {
    at::manual_seed(0);
    const auto opts = at::TensorOptions().device(device);
    x = (at::randn({m, v}, opts.dtype(at::kFloat)) * 3.0).to(dtype);
    t = at::randint(0, v, {m}, opts.dtype(at::kLong));
  }
  at::Tensor x, t;
};

// The float64 truth for logits `x` (read exactly, whatever their dtype) and targets `t`.
struct Truth {
  at::Tensor loss, hit, grad;
};

Truth Float64Truth(const at::Tensor& x, const at::Tensor& t) {
  Truth w;
  at::Tensor logp;
  {
    at::Tensor x64 = x.to(at::kDouble);
    w.hit = x64.argmax(1) == t;
    logp = at::log_softmax(x64, 1);
  }
  w.loss = -logp.gather(1, t.unsqueeze(1)).squeeze(1);
  // In place: on the CUDA shape each [m, V] float64 tensor is 1 GiB.
  w.grad = logp.exp_().scatter_add_(1, t.unsqueeze(1), at::full({t.size(0), 1}, -1.0, logp.options()));
  return w;
}

#ifdef HERD_WITH_CUDA
double MaxAbs(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
}

double Gbps(double bytes, double ms) { return ms > 0 ? bytes / (ms * 1e-3) / 1e9 : 0.0; }

nlohmann::json CudaCase(at::ScalarType dtype, int64_t m, int64_t v, at::Device device, Timer& timer) {
  const Inputs in(m, v, dtype, device);
  const at::Tensor& t = in.t;
  at::Tensor x = in.x;
  const double es = static_cast<double>(at::elementSize(dtype));
  const double logits = static_cast<double>(m) * static_cast<double>(v);
  const double bytes_grad = logits * es * 3 + m * 13.0, bytes_nograd = logits * es + m * 13.0;
  const std::vector<int> thread_counts = {256, 512, 1024};

  nlohmann::json c = {{"dtype", DtypeName(dtype)}, {"loss_tol", LossTol(dtype)}, {"grad_tol_ulps", GradTolUlps(dtype)}};
  bool ok = true;
  nlohmann::json kernels = nlohmann::json::array();
  {
    // The kernel is judged against float64 truth, not against ATen's float32 chain: that carries
    // its own rounding, and the two together overran the float32 tolerance (66 ulps on an H100).
    // ATen's distance from the truth is reported beside it. Scoped so that the float64 tensors
    // are freed before the timings.
    const Truth want = Float64Truth(x, t);
    at::Tensor ref_grad = x.clone();
    const CrossEntropyChunkResult ref = reference::CrossEntropyChunk(ref_grad, t, /*grad=*/true);
    c["aten_loss_max_rel_err"] = LossErr(ref.loss, want.loss);
    c["aten_hits_equal"] = ref.hit.equal(want.hit);
    c["aten_grad_max_ulps"] = MaxUlps(ref_grad, want.grad, dtype);
    c["aten_grad_max_abs_err"] = MaxAbs(ref_grad, want.grad);
    ref_grad.reset();
    for (const int threads : thread_counts) {
      at::Tensor g = x.clone();
      auto r = cuda_kernels::CrossEntropyChunk(g, t, /*grad=*/true, threads);
      TORCH_CHECK(r.has_value(), "cross_entropy: the CUDA kernel declined these inputs");
      at::Tensor n = x.clone();
      auto rn = cuda_kernels::CrossEntropyChunk(n, t, /*grad=*/false, threads);
      TORCH_CHECK(rn.has_value(), "cross_entropy: the CUDA kernel declined these inputs");
      const double loss_err = LossErr(r->loss, want.loss);
      const bool hits_equal = r->hit.equal(want.hit);
      const double grad_ulps = MaxUlps(g, want.grad, dtype);
      const bool nograd_same = n.equal(x) && rn->loss.equal(r->loss) && rn->hit.equal(r->hit);
      const bool k_ok = loss_err <= LossTol(dtype) && hits_equal && grad_ulps <= GradTolUlps(dtype) && nograd_same;
      kernels.push_back({{"threads", threads},
                         {"loss_max_rel_err", loss_err},
                         {"hits_equal", hits_equal},
                         {"hits", r->hit.sum().item<int64_t>()},
                         {"grad_max_ulps", grad_ulps},
                         {"grad_max_abs_err", MaxAbs(g, want.grad)},
                         {"nograd_leaves_logits_and_matches", nograd_same},
                         {"ok", k_ok}});
      ok = ok && k_ok;
    }
  }
  double best_ms = 0;
  int best_threads = 0;
  for (size_t i = 0; i < thread_counts.size(); ++i) {
    const int threads = thread_counts[i];
    at::Tensor scratch = x.clone();
    const double ms = timer.MedianMs([&] { cuda_kernels::CrossEntropyChunk(scratch, t, true, threads); });
    const double ms_nograd = timer.MedianMs([&] { cuda_kernels::CrossEntropyChunk(x, t, false, threads); });
    nlohmann::json& k = kernels[i];
    k["ms"] = ms;
    k["gbps"] = Gbps(bytes_grad, ms);
    k["ms_nograd"] = ms_nograd;
    k["gbps_nograd"] = Gbps(bytes_nograd, ms_nograd);
    if (best_threads == 0 || ms < best_ms) {
      best_ms = ms;
      best_threads = threads;
    }
  }
  at::Tensor scratch = x.clone();
  const double aten_ms = timer.MedianMs([&] { reference::CrossEntropyChunk(scratch, t, true); });
  const double aten_ms_nograd = timer.MedianMs([&] { reference::CrossEntropyChunk(x, t, false); });
  c["kernels"] = kernels;
  c["best_threads"] = best_threads;
  c["best_ms"] = best_ms;
  c["aten_ms"] = aten_ms;
  c["aten_ms_nograd"] = aten_ms_nograd;
  c["speedup"] = best_ms > 0 ? aten_ms / best_ms : 0.0;
  c["bytes_per_logit"] = es * 3;
  c["ok"] = ok;
  return c;
}
#endif

// The reference against float64 math on the values it was given.
nlohmann::json CpuCase(at::ScalarType dtype, int64_t m, int64_t v, Timer& timer) {
  const Inputs in(m, v, dtype, at::kCPU);
  const at::Tensor& t = in.t;
  const at::Tensor& x = in.x;
  const Truth want = Float64Truth(x, t);
  at::Tensor g = x.clone();
  const CrossEntropyChunkResult r = CrossEntropyChunk(g, t, /*grad=*/true);
  const double loss_err = LossErr(r.loss, want.loss);
  const bool hits_equal = r.hit.equal(want.hit);
  const double grad_ulps = MaxUlps(g, want.grad, dtype);
  const bool ok = loss_err <= LossTol(dtype) && hits_equal && grad_ulps <= GradTolUlps(dtype);
  at::Tensor scratch = x.clone();
  const double ms = timer.MedianMs([&] { CrossEntropyChunk(scratch, t, true); });
  return {{"dtype", DtypeName(dtype)}, {"loss_max_rel_err", loss_err}, {"loss_tol", LossTol(dtype)},
          {"hits_equal", hits_equal},  {"grad_max_ulps", grad_ulps},   {"grad_tol_ulps", GradTolUlps(dtype)},
          {"ok", ok},                  {"aten_ms", ms}};
}

}  // namespace

nlohmann::json CheckCrossEntropyKernel(const std::string& device) {
  nlohmann::json j = {{"check", "cross_entropy"}, {"device", device}};
  try {
    const at::Device dev(device);
    c10::NoGradGuard no_grad;
    Timer timer(dev);
    nlohmann::json cases = nlohmann::json::array();
    bool ok = true;
    int64_t m = 64, v = 1003;
    if (dev.is_cuda()) {
#ifdef HERD_WITH_CUDA
      m = 1024;
      v = 128256;
      for (const at::ScalarType dt : {at::kBFloat16, at::kFloat}) cases.push_back(CudaCase(dt, m, v, dev, timer));
#else
      TORCH_CHECK(false, "cross_entropy: this build has no CUDA kernels (HERD_WITH_CUDA is off)");
#endif
    } else {
      for (const at::ScalarType dt : {at::kBFloat16, at::kFloat}) cases.push_back(CpuCase(dt, m, v, timer));
    }
    for (const auto& c : cases) ok = ok && c["ok"].get<bool>();
    j["m"] = m;
    j["v"] = v;
    j["cases"] = cases;
    j["ok"] = ok;
  } catch (const std::exception& e) {
    j["ok"] = false;
    j["error"] = e.what();
  }
  return j;
}

}  // namespace herd::engine
