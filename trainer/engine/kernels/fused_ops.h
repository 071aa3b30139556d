// The elementwise stages of a decoder layer as plain functions with explicit backwards, so that the
// layer's autograd nodes (model/decoder_ops.h) keep only what is expensive to redo (DESIGN.md §5,
// issue "The GPU path"): RMSNorm, rotary embedding and SwiGLU. On CUDA each is one hand-written
// kernel (fused_ops_cuda.cu, built with HERD_WITH_CUDA); elsewhere, and for float64, the same
// arithmetic as ATen ops. Math is float32 whatever the storage dtype (float64 stays float64);
// results are rounded to the input's dtype once. Shapes: N rows (tokens), H features, B batch,
// T tokens per row, Nh heads, D head dim, I intermediate. Throws c10::Error on bad input.
#ifndef HERD_TRAINER_ENGINE_KERNELS_FUSED_OPS_H_
#define HERD_TRAINER_ENGINE_KERNELS_FUSED_OPS_H_

#include <ATen/ATen.h>

#include <utility>

namespace herd::engine {

// Whether CUDA tensors take the hand-written kernels (this file's, the LoRA dropout mask's and the
// output head's cross-entropy) or the ATen reference. On by default; off only to measure what the
// kernels are worth (`herd-bench --no-fused-kernels`). Process-wide.
void SetFusedKernelsEnabled(bool on);
bool FusedKernelsEnabled();

struct RmsNormResult {
  at::Tensor y;     // x's shape and dtype: w · round(x · rstd)
  at::Tensor rstd;  // [N] float32 (float64 for float64 x): 1 / sqrt(mean(x²) + eps) per row
};
// transformers' LlamaRMSNorm: the normalised row is rounded to x's dtype, then multiplied by w
// (in x's dtype). x: [..., H] contiguous; w: [H] in x's dtype. `out` (optional): a [rows, H] view
// in x's dtype with dense rows, possibly spaced wider (the head of a wider buffer), that y is
// written into and returned as.
RmsNormResult RmsNormForward(const at::Tensor& x, const at::Tensor& w, double eps, const at::Tensor& out = at::Tensor());
// dL/dx for a frozen w, from the forward's x and rstd: rstd · (g − x̂ · mean(g · x̂)) with
// g = dy · w and x̂ = x · rstd, in float32; returned in x's dtype. dy may be a [rows, H] view with
// rows spaced wider than H.
// `add` (optional, x's shape and dtype): returned added to dx (a residual's gradient), in the same pass.
at::Tensor RmsNormBackward(const at::Tensor& dy, const at::Tensor& x, const at::Tensor& w, const at::Tensor& rstd,
                           const at::Tensor& add = at::Tensor());

// Rotary embedding of x: [B, T, Nh, D] (one projection's output viewed per head, contiguous) with
// cos, sin: [B, T, D] (cat(freqs, freqs), in x's dtype): x · cos + rotate_half(x) · sin, where
// rotate_half(x) = cat(−x[D/2:], x[:D/2]). Returns a new contiguous [B, T, Nh, D].
at::Tensor RopeForward(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin);
// The transpose of that rotation applied to dy: dL/dx = dy · cos + rotate_halfᵀ(dy · sin), with
// rotate_halfᵀ(s) = cat(s[D/2:], −s[:D/2]). Same shapes.
// `out` (optional): where dL/dx goes, a [B, T, Nh, D] view whose (b, t) rows are evenly spaced (a
// slice of a wider gradient buffer); returned.
at::Tensor RopeBackward(const at::Tensor& dy, const at::Tensor& cos, const at::Tensor& sin,
                        const at::Tensor& out = at::Tensor());

// transformers' LlamaMLP activation: silu(g) rounded to g's dtype, times u. g, u: [..., I].
at::Tensor SwiGluForward(const at::Tensor& g, const at::Tensor& u);
// (dL/dg, dL/du) from da and the forward's g and u, in float32 math, returned in g's dtype:
// du = da · silu(g), dg = da · u · σ(g) · (1 + g · (1 − σ(g))).
// dg_out, du_out (optional, both or neither): [rows, I] views with dense rows the same distance
// apart (the gate and up halves of one side-by-side gradient) that dg and du are written into.
std::pair<at::Tensor, at::Tensor> SwiGluBackward(const at::Tensor& da, const at::Tensor& g, const at::Tensor& u,
                                                 const at::Tensor& dg_out = at::Tensor(),
                                                 const at::Tensor& du_out = at::Tensor());

}  // namespace herd::engine

#endif  // HERD_TRAINER_ENGINE_KERNELS_FUSED_OPS_H_
