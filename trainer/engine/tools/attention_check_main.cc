// herd-attention-check: CausalAttention (model/attention.h) against a naive float64
// softmax(q·kᵀ)·v with an explicit mask, forward and dq/dk/dv, on plain and packed rows with
// grouped K/V; one JSON line per case, exit status 1 when any is off. On CUDA it checks the flash
// varlen path (bf16) beside the previous model path (bf16 SDPA, masked with K/V expanded for
// packed rows) and the fp32 SDPA path, then times flash varlen against the masked SDPA on a packed
// [8, 2048] batch of the 1B head layout (32/8 heads, D 64), fwd+bwd, with peak memory.
//   herd-attention-check --device cuda:0      (the device script)
//   herd-attention-check --device cpu         (a ctest: the SDPA path only)
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <torch/cuda.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <functional>
#include <iostream>
#include <limits>
#include <string>
#include <vector>
#ifdef HERD_WITH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#endif

#include "CLI/CLI.hpp"
#include "nlohmann/json.hpp"
#include "trainer/engine/model/attention.h"

namespace herd::engine {
namespace {

// max |x − ref| / max(max |ref|, floor): the floor keeps the measure meaningful where the reference
// is (nearly) zero everywhere, and rounding noise would otherwise count as a huge relative error.
double RelErr(const at::Tensor& x, const at::Tensor& ref, double floor = 1e-30) {
  const double scale = ref.abs().max().item<double>();
  return (x.to(ref.scalar_type()) - ref).abs().max().item<double>() / std::max(scale, floor);
}

// Per-row document lengths filling T: lengths drawn from [lo, hi], the last one cut to fit.
std::vector<std::vector<int64_t>> RandomDocs(int64_t B, int64_t T, int64_t lo, int64_t hi, uint64_t seed) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  std::vector<std::vector<int64_t>> docs(B);
  for (auto& row : docs) {
    int64_t left = T;
    while (left > 0) {
      const int64_t len = std::min(left, at::randint(lo, hi + 1, {1}, gen, at::kLong).item<int64_t>());
      row.push_back(len);
      left -= len;
    }
  }
  return docs;
}

at::Tensor DocIds(const std::vector<std::vector<int64_t>>& docs, int64_t T) {
  std::vector<int64_t> ids;
  for (const auto& row : docs) {
    for (size_t d = 0; d < row.size(); ++d) ids.insert(ids.end(), row[d], static_cast<int64_t>(d));
  }
  return at::tensor(ids, at::kLong).view({static_cast<int64_t>(docs.size()), T});
}

// [B, 1, T, T] bool causal within documents, from the lengths (plain rows: one document each).
at::Tensor Mask(const std::vector<std::vector<int64_t>>& docs, int64_t B, int64_t T, at::Device dev) {
  at::Tensor causal = at::ones({T, T}, at::kBool).tril();
  if (docs.empty()) return causal.expand({B, 1, T, T}).to(dev);
  at::Tensor run = at::empty({B, T}, at::kLong);  // document index per token
  for (int64_t b = 0; b < B; ++b) {
    int64_t t = 0;
    for (size_t d = 0; d < docs[b].size(); ++d) {
      run[b].narrow(0, t, docs[b][d]).fill_(static_cast<int64_t>(d));
      t += docs[b][d];
    }
  }
  return ((run.unsqueeze(2) == run.unsqueeze(1)).logical_and(causal)).unsqueeze(1).to(dev);
}

// softmax(scale · q·kᵀ masked) · v with K/V expanded: [B, T, N, D] in and out, in q's dtype.
at::Tensor Naive(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& mask, double scale) {
  const int64_t group = q.size(2) / k.size(2);
  at::Tensor kt = k.repeat_interleave(group, 2).transpose(1, 2), vt = v.repeat_interleave(group, 2).transpose(1, 2);
  at::Tensor s = at::matmul(q.transpose(1, 2), kt.transpose(-1, -2)) * scale;  // [B, Nq, T, T]
  s = s.masked_fill(mask.logical_not(), -std::numeric_limits<double>::infinity());
  return at::matmul(at::softmax(s, -1), vt).transpose(1, 2);
}

// The model's attention before CausalAttention: plain autograd through SDPA.
at::Tensor OldPath(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& mask,
                   double scale) {
  const int64_t group = q.size(2) / k.size(2);
  at::Tensor qt = q.transpose(1, 2), kt = k.transpose(1, 2), vt = v.transpose(1, 2);
  at::Tensor o = mask.defined()
                     ? at::scaled_dot_product_attention(qt, kt.repeat_interleave(group, 1),
                                                        vt.repeat_interleave(group, 1), mask, 0.0, false, scale)
                     : at::scaled_dot_product_attention(qt, kt, vt, std::nullopt, 0.0, true, scale, group > 1);
  return o.transpose(1, 2);
}

struct Result {
  at::Tensor out, dq, dk, dv;
};

template <typename Fn>
Result Run(Fn fn, at::ScalarType dt, const at::Tensor& q0, const at::Tensor& k0, const at::Tensor& v0,
           const at::Tensor& g) {
  // Copies: .to() of a tensor already in dt would be the tensor itself, shared between runs.
  at::Tensor q = q0.to(dt, false, true).set_requires_grad(true), k = k0.to(dt, false, true).set_requires_grad(true);
  at::Tensor v = v0.to(dt, false, true).set_requires_grad(true);
  at::Tensor out = fn(q, k, v);
  out.backward(g.to(dt));
  return {out.detach(), q.grad(), k.grad(), v.grad()};
}

// `g_max`: max |g|, the upstream gradient. dq and dk are sums of terms of g's size here (unit-scale
// q, k, v), but vanish where every document is one token (a softmax over one score has no
// gradient), so their errors are measured against at least a tenth of max |g|: that is below their
// true maxima in the other cases (0.4 max |g| or more), where the measure stays as it was.
nlohmann::json Errors(const Result& r, const Result& ref, double g_max, double* worst) {
  nlohmann::json e = {{"out", RelErr(r.out, ref.out)},
                      {"dq", RelErr(r.dq, ref.dq, 0.1 * g_max)},
                      {"dk", RelErr(r.dk, ref.dk, 0.1 * g_max)},
                      {"dv", RelErr(r.dv, ref.dv)}};
  *worst = 0;
  for (const auto& [name, x] : e.items()) *worst = std::max(*worst, x.get<double>());
  return e;
}

struct Case {
  std::string name;
  int64_t B, T, heads, kv_heads, D;
  int64_t doc_lo = 0, doc_hi = 0;  // packed rows of documents with lengths drawn from [lo, hi]; 0: plain
};

// One case: every path the device has against the float64 reference. Returns false when off.
bool CheckCase(const Case& c, at::Device dev) {
  const bool cuda = dev.is_cuda(), packed = c.doc_hi > 0;
  const auto docs = packed ? RandomDocs(c.B, c.T, c.doc_lo, c.doc_hi, 7) : std::vector<std::vector<int64_t>>{};
  AttentionLayout layout = MakeAttentionLayout(packed ? DocIds(docs, c.T) : at::Tensor(), c.B, c.T, dev);
  const at::Tensor mask = Mask(docs, c.B, c.T, dev);
  const double scale = 1.0 / std::sqrt(static_cast<double>(c.D));
  // Inputs rounded to bf16 first, so that every path (and the reference) reads the same values.
  auto opts = at::TensorOptions().dtype(at::kFloat).device(dev);
  auto gen = [&](int64_t n) { return at::randn({c.B, c.T, n, c.D}, opts).to(at::kBFloat16).to(at::kDouble); };
  at::manual_seed(11);
  at::Tensor q = gen(c.heads), k = gen(c.kv_heads), v = gen(c.kv_heads), g = gen(c.heads);
  const Result ref =
      Run([&](auto& a, auto& b, auto& d) { return Naive(a, b, d, mask, scale); }, at::kDouble, q, k, v, g);
  const double g_max = g.abs().max().item<double>();
  auto causal = [&](AttentionBackend be) {
    return [&, be](auto& a, auto& b, auto& d) { return CausalAttention(a, b, d, layout, scale, be); };
  };
  auto old_path = [&](auto& a, auto& b, auto& d) { return OldPath(a, b, d, packed ? mask : at::Tensor(), scale); };
  struct Path {
    std::string name;
    at::ScalarType dtype;
    double tolerance;  // on the worst relative error
    bool checked;      // a failure fails the run (the old path is shown for comparison only)
    std::function<at::Tensor(at::Tensor&, at::Tensor&, at::Tensor&)> fn;
  };
  std::vector<Path> paths = {{"sdpa_fp64", at::kDouble, 1e-10, true, causal(AttentionBackend::kSdpa)},
                             {"sdpa_fp32", at::kFloat, 1e-4, true, causal(AttentionBackend::kSdpa)}};
  if (cuda) {
    paths.push_back({"flash_bf16", at::kBFloat16, 3e-2, true, causal(AttentionBackend::kFlash)});
    // What training takes: SDPA's own fused kernel for plain rows, the varlen kernel for packed ones.
    paths.push_back({"auto_bf16", at::kBFloat16, 3e-2, true, causal(AttentionBackend::kAuto)});
    paths.push_back({"old_sdpa_bf16", at::kBFloat16, 3e-2, false, old_path});
  }
  bool ok = true;
  for (const Path& p : paths) {
    nlohmann::json line = {{"check", "attention"},
                           {"device", dev.str()},
                           {"case", c.name},
                           {"path", p.name},
                           {"shape", {c.B, c.T, c.heads, c.kv_heads, c.D}},
                           {"docs", layout.cu_seqlens.size(0) - 1},
                           {"max_seqlen", layout.max_seqlen}};
    try {
      double worst = 0;
      line["rel_err"] = Errors(Run(p.fn, p.dtype, q, k, v, g), ref, g_max, &worst);
      line["tolerance"] = p.tolerance;
      line["ok"] = worst < p.tolerance;
      if (p.checked && !(worst < p.tolerance)) ok = false;
    } catch (const c10::Error& e) {
      line["error"] = e.what_without_backtrace();
      line["ok"] = false;
      if (p.checked) ok = false;
    }
    std::cout << line.dump() << std::endl;
  }
  return ok;
}

#ifdef HERD_WITH_CUDA
// Milliseconds per fwd+bwd (median of `iters`) and the peak bytes above what was allocated before.
std::pair<double, int64_t> Time(const std::function<at::Tensor()>& fwd, const at::Tensor& g, int iters) {
  for (int i = 0; i < 3; ++i) fwd().backward(g);
  torch::cuda::synchronize();
  const int dev = g.device().index();
  const int64_t before = c10::cuda::CUDACachingAllocator::getDeviceStats(dev)
                             .allocated_bytes[static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE)]
                             .current;
  c10::cuda::CUDACachingAllocator::resetPeakStats(dev);
  std::vector<double> ms;
  for (int i = 0; i < iters; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    fwd().backward(g);
    torch::cuda::synchronize();
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  const int64_t peak = c10::cuda::CUDACachingAllocator::getDeviceStats(dev)
                           .allocated_bytes[static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE)]
                           .peak;
  std::sort(ms.begin(), ms.end());
  return {ms[ms.size() / 2], peak - before};
}

// Flash varlen against the masked SDPA the model used before, on a packed 1B-shaped batch; the
// same tokens as unpacked rows (T² work: varlen, and SDPA's dense causal flash) for scale.
void TimePacked(at::Device dev) try {
  const int64_t B = 8, T = 2048, Nq = 32, Nkv = 8, D = 64;
  const auto docs = RandomDocs(B, T, 64, 1024, 3);
  double sum_sq = 0;
  int64_t n_docs = 0;
  for (const auto& row : docs) {
    for (int64_t len : row) sum_sq += static_cast<double>(len) * static_cast<double>(len);
    n_docs += static_cast<int64_t>(row.size());
  }
  AttentionLayout packed = MakeAttentionLayout(DocIds(docs, T), B, T, dev, /*with_mask=*/true);
  AttentionLayout plain = MakeAttentionLayout(at::Tensor(), B, T, dev);
  const double scale = 0.125;
  auto opts = at::TensorOptions().dtype(at::kBFloat16).device(dev);
  at::Tensor q = at::randn({B, T, Nq, D}, opts).requires_grad_(), k = at::randn({B, T, Nkv, D}, opts).requires_grad_();
  at::Tensor v = at::randn({B, T, Nkv, D}, opts).requires_grad_(), g = at::randn({B, T, Nq, D}, opts);
  const int iters = 20;
  auto [flash_ms, flash_mem] =
      Time([&] { return CausalAttention(q, k, v, packed, scale, AttentionBackend::kFlash); }, g, iters);
  auto [masked_ms, masked_mem] = Time([&] { return OldPath(q, k, v, packed.mask, scale); }, g, iters);
  auto [recompute_ms, recompute_mem] =
      Time([&] { return CausalAttention(q, k, v, packed, scale, AttentionBackend::kSdpa); }, g, iters);
  auto [plain_ms, plain_mem] =
      Time([&] { return CausalAttention(q, k, v, plain, scale, AttentionBackend::kFlash); }, g, iters);
  auto [dense_ms, dense_mem] = Time([&] { return OldPath(q, k, v, at::Tensor(), scale); }, g, iters);
  const double mib = 1 << 20;
  nlohmann::json line = {{"check", "attention_timing"},
                         {"device", dev.str()},
                         {"shape", {B, T, Nq, Nkv, D}},
                         {"dtype", "bf16"},
                         {"docs", n_docs},
                         {"max_seqlen", packed.max_seqlen},
                         {"flops_vs_dense", sum_sq / (static_cast<double>(B) * T * T)},
                         {"fwd_bwd_ms",
                          {{"flash_varlen_packed", flash_ms},
                           {"sdpa_masked_packed_old", masked_ms},
                           {"sdpa_masked_packed_recompute", recompute_ms},
                           {"flash_varlen_unpacked", plain_ms},
                           {"flash_dense_causal_unpacked", dense_ms}}},
                         {"peak_extra_mib",
                          {{"flash_varlen_packed", flash_mem / mib},
                           {"sdpa_masked_packed_old", masked_mem / mib},
                           {"sdpa_masked_packed_recompute", recompute_mem / mib},
                           {"flash_varlen_unpacked", plain_mem / mib},
                           {"flash_dense_causal_unpacked", dense_mem / mib}}},
                         {"speedup_vs_old", masked_ms / flash_ms}};
  std::cout << line.dump() << std::endl;
} catch (const c10::Error& e) {
  // Reported, not failed: the accuracy lines decide the exit status.
  std::cout << nlohmann::json({{"check", "attention_timing"}, {"error", e.what_without_backtrace()}}).dump()
            << std::endl;
}
#endif

int Main(const std::string& device) {
  const at::Device dev(device);
  if (dev.is_cuda() && !torch::cuda::is_available()) {
    std::cout << nlohmann::json({{"check", "attention"}, {"error", "no CUDA device"}, {"ok", false}}).dump()
              << std::endl;
    return 1;
  }
  std::vector<Case> cases;
  if (dev.is_cuda()) {
    cases = {{"plain_gqa_1b", 2, 512, 32, 8, 64},
             {"packed_gqa_1b", 2, 512, 32, 8, 64, 1, 200},
             {"packed_mha_d128", 2, 384, 8, 8, 128, 1, 150},
             {"packed_mqa", 2, 256, 8, 1, 64, 1, 100},
             {"single_token_docs_gqa", 2, 16, 32, 8, 64, 1, 1}};
  } else {
    cases = {{"plain_mha", 2, 24, 4, 4, 16},
             {"plain_gqa", 2, 24, 4, 2, 16},
             {"packed_gqa", 3, 24, 4, 2, 16, 1, 8},
             {"packed_mqa", 2, 24, 4, 1, 16, 1, 8},
             {"single_token_docs", 2, 6, 4, 2, 16, 1, 1}};
  }
  bool ok = true;
  for (const Case& c : cases) ok = CheckCase(c, dev) && ok;
#ifdef HERD_WITH_CUDA
  if (dev.is_cuda()) TimePacked(dev);
#endif
  return ok ? 0 : 1;
}

}  // namespace
}  // namespace herd::engine

int main(int argc, char** argv) {
  CLI::App app{"herd-attention-check: CausalAttention against a float64 reference; flash timings on CUDA"};
  std::string device = "cpu";
  app.add_option("--device", device, "cpu or cuda:N")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  try {
    return herd::engine::Main(device);
  } catch (const c10::Error& e) {
    std::cout << nlohmann::json({{"check", "attention"}, {"error", e.what_without_backtrace()}, {"ok", false}}).dump()
              << std::endl;
    return 1;
  } catch (const std::exception& e) {
    std::cout << nlohmann::json({{"check", "attention"}, {"error", e.what()}, {"ok", false}}).dump() << std::endl;
    return 1;
  }
}
