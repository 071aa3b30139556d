// The fused stages: the ATen form (namespace reference), which is the path on CPU and for float64
// everywhere and the reference the CUDA kernels are checked against, and the public functions,
// which send CUDA tensors of float32/bfloat16/float16 to the kernels of fused_ops_cuda.cu when the
// engine is built with HERD_WITH_CUDA.
#include "trainer/engine/kernels/fused_ops.h"

#include <atomic>

#include "trainer/engine/kernels/fused_ops_reference.h"
#ifdef HERD_WITH_CUDA
#include "trainer/engine/kernels/fused_ops_cuda.h"
#endif

namespace herd::engine {
namespace {

at::ScalarType MathType(const at::Tensor& x) { return x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat; }

at::Tensor RotateHalf(const at::Tensor& x) {
  const int64_t half = x.size(-1) / 2;
  return at::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
}

at::Tensor RotateHalfTransposed(const at::Tensor& s) {
  const int64_t half = s.size(-1) / 2;
  return at::cat({s.narrow(-1, half, half), -s.narrow(-1, 0, half)}, -1);
}

void CheckRope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  TORCH_CHECK(x.dim() == 4 && cos.dim() == 3 && cos.sizes() == sin.sizes(), "Rope: x [B, T, Nh, D] and cos/sin [B, T, D] expected, got ",
              x.sizes(), ", ", cos.sizes(), ", ", sin.sizes());
  TORCH_CHECK(cos.size(0) == x.size(0) && cos.size(1) == x.size(1) && cos.size(2) == x.size(3) && x.size(3) % 2 == 0,
              "Rope: cos/sin ", cos.sizes(), " do not fit x ", x.sizes());
}

void CheckRmsNorm(const at::Tensor& x, const at::Tensor& w) {
  TORCH_CHECK(x.dim() >= 1 && x.size(-1) == w.numel(), "RmsNorm: x ", x.sizes(), " and weight ", w.sizes(), " disagree");
}

void CheckRmsNormBackward(const at::Tensor& dy, const at::Tensor& x, const at::Tensor& w, const at::Tensor& rstd) {
  CheckRmsNorm(x, w);
  TORCH_CHECK(dy.sizes() == x.sizes() && rstd.numel() * x.size(-1) == x.numel(), "RmsNorm backward: dy ", dy.sizes(),
              ", x ", x.sizes(), " and rstd ", rstd.sizes(), " disagree");
}

void CheckSwiGlu(const at::Tensor& g, const at::Tensor& u) {
  TORCH_CHECK(g.sizes() == u.sizes(), "SwiGlu: gate ", g.sizes(), " and up ", u.sizes(), " disagree");
}

}  // namespace

namespace reference {

RmsNormResult RmsNormForward(const at::Tensor& x, const at::Tensor& w, double eps) {
  CheckRmsNorm(x, w);
  at::Tensor x32 = x.to(MathType(x));
  at::Tensor rstd = at::rsqrt(x32.pow(2).mean(-1) + eps);  // [...]
  at::Tensor y = w * (x32 * rstd.unsqueeze(-1)).to(x.scalar_type());
  return {y, rstd.reshape({-1})};
}

at::Tensor RmsNormBackward(const at::Tensor& dy, const at::Tensor& x, const at::Tensor& w, const at::Tensor& rstd) {
  CheckRmsNormBackward(dy, x, w, rstd);
  const at::ScalarType m = MathType(x);
  at::Tensor r = rstd.reshape(x.sizes().slice(0, x.dim() - 1)).unsqueeze(-1).to(m);
  at::Tensor xhat = x.to(m) * r;
  at::Tensor g = dy.to(m) * w.to(m);
  at::Tensor dx = r * (g - xhat * (g * xhat).mean(-1, /*keepdim=*/true));
  return dx.to(x.scalar_type());
}

at::Tensor RopeForward(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  CheckRope(x, cos, sin);
  const at::ScalarType m = MathType(x);
  at::Tensor c = cos.unsqueeze(2).to(m), s = sin.unsqueeze(2).to(m);  // [B, T, 1, D]
  at::Tensor x32 = x.to(m);
  return (x32 * c + RotateHalf(x32) * s).to(x.scalar_type()).contiguous();
}

at::Tensor RopeBackward(const at::Tensor& dy, const at::Tensor& cos, const at::Tensor& sin) {
  CheckRope(dy, cos, sin);
  const at::ScalarType m = MathType(dy);
  at::Tensor c = cos.unsqueeze(2).to(m), s = sin.unsqueeze(2).to(m);
  at::Tensor d32 = dy.to(m);
  return (d32 * c + RotateHalfTransposed(d32 * s)).to(dy.scalar_type()).contiguous();
}

at::Tensor SwiGluForward(const at::Tensor& g, const at::Tensor& u) {
  CheckSwiGlu(g, u);
  return at::silu(g) * u;
}

std::pair<at::Tensor, at::Tensor> SwiGluBackward(const at::Tensor& da, const at::Tensor& g, const at::Tensor& u) {
  CheckSwiGlu(g, u);
  TORCH_CHECK(da.sizes() == g.sizes(), "SwiGlu backward: da ", da.sizes(), " and gate ", g.sizes(), " disagree");
  const at::ScalarType m = MathType(g);
  at::Tensor g32 = g.to(m), u32 = u.to(m), d32 = da.to(m);
  at::Tensor sig = at::sigmoid(g32);
  at::Tensor du = d32 * g32 * sig;
  at::Tensor dg = d32 * u32 * sig * (1 + g32 * (1 - sig));
  return {dg.to(g.scalar_type()), du.to(u.scalar_type())};
}

}  // namespace reference

namespace {
std::atomic<bool> g_fused_kernels{true};
}  // namespace

void SetFusedKernelsEnabled(bool on) { g_fused_kernels.store(on); }
bool FusedKernelsEnabled() { return g_fused_kernels.load(std::memory_order_relaxed); }

// The CUDA kernels where they apply; otherwise (and on every other device) the reference.
#ifdef HERD_WITH_CUDA
#define HERD_TRY_CUDA(cond, call)                \
  do {                                           \
    if ((cond) && FusedKernelsEnabled()) {       \
      if (auto r = call) return *std::move(r);   \
    }                                            \
  } while (false)
#else
#define HERD_TRY_CUDA(cond, call) \
  do {                            \
  } while (false)
#endif

RmsNormResult RmsNormForward(const at::Tensor& x, const at::Tensor& w, double eps, const at::Tensor& out) {
  CheckRmsNorm(x, w);
  if (out.defined()) {
    const int64_t h = x.size(-1);
    TORCH_CHECK(out.dim() == 2 && out.size(0) * h == x.numel() && out.size(1) == h && out.stride(-1) == 1 &&
                    out.scalar_type() == x.scalar_type() && out.device() == x.device(),
                "RmsNorm: out must be [", x.numel() / std::max<int64_t>(h, 1), ", ", h, "] ", x.scalar_type(),
                " with dense rows, got ", out.sizes(), " ", out.scalar_type());
  }
  HERD_TRY_CUDA(x.is_cuda(), cuda_kernels::RmsNormForward(x, w, eps, out));
  RmsNormResult r = reference::RmsNormForward(x, w, eps);
  if (out.defined()) r.y = out.copy_(r.y.view(out.sizes()));
  return r;
}

at::Tensor RmsNormBackward(const at::Tensor& dy, const at::Tensor& x, const at::Tensor& w, const at::Tensor& rstd,
                           const at::Tensor& add) {
  CheckRmsNormBackward(dy, x, w, rstd);
  TORCH_CHECK(!add.defined() || (add.numel() == x.numel() && add.scalar_type() == x.scalar_type() &&
                                 add.device() == x.device()),
              "RmsNorm backward: add must be x's shape and dtype, got ", add.sizes(), " ", add.scalar_type());
  HERD_TRY_CUDA(x.is_cuda(), cuda_kernels::RmsNormBackward(dy, x, w, rstd, add));
  at::Tensor dx = reference::RmsNormBackward(dy, x, w, rstd);
  return add.defined() ? dx.add_(add.view(dx.sizes())) : dx;
}

at::Tensor RopeForward(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  CheckRope(x, cos, sin);
  HERD_TRY_CUDA(x.is_cuda(), cuda_kernels::RopeForward(x, cos, sin));
  return reference::RopeForward(x, cos, sin);
}

at::Tensor RopeBackward(const at::Tensor& dy, const at::Tensor& cos, const at::Tensor& sin, const at::Tensor& out) {
  CheckRope(dy, cos, sin);
  TORCH_CHECK(!out.defined() || (out.sizes() == dy.sizes() && out.scalar_type() == dy.scalar_type()),
              "Rope backward: out must be dy's shape and dtype, got ", out.sizes(), " ", out.scalar_type());
  HERD_TRY_CUDA(dy.is_cuda(), cuda_kernels::RopeBackward(dy, cos, sin, out));
  at::Tensor dx = reference::RopeBackward(dy, cos, sin);
  return out.defined() ? out.copy_(dx) : dx;
}

at::Tensor SwiGluForward(const at::Tensor& g, const at::Tensor& u) {
  CheckSwiGlu(g, u);
  HERD_TRY_CUDA(g.is_cuda(), cuda_kernels::SwiGluForward(g, u));
  return reference::SwiGluForward(g, u);
}

std::pair<at::Tensor, at::Tensor> SwiGluBackward(const at::Tensor& da, const at::Tensor& g, const at::Tensor& u,
                                                 const at::Tensor& dg_out, const at::Tensor& du_out) {
  CheckSwiGlu(g, u);
  TORCH_CHECK(da.sizes() == g.sizes(), "SwiGlu backward: da ", da.sizes(), " and gate ", g.sizes(), " disagree");
  TORCH_CHECK(dg_out.defined() == du_out.defined(), "SwiGlu backward: give both outputs or neither");
  HERD_TRY_CUDA(g.is_cuda(), cuda_kernels::SwiGluBackward(da, g, u, dg_out, du_out));
  auto [dg, du] = reference::SwiGluBackward(da, g, u);
  if (!dg_out.defined()) return {dg, du};
  return {dg_out.copy_(dg.view(dg_out.sizes())), du_out.copy_(du.view(du_out.sizes()))};
}

#undef HERD_TRY_CUDA

}  // namespace herd::engine
