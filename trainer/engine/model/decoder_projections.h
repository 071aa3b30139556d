// The decoder layer's projections with their LoRA adapters, as decoder_ops.cc's autograd nodes run
// them: one projection's context (ProjCtx), the groups of adapters sharing an input
// (AdapterGroup: q/k/v, gate/up), their folding into the frozen matmuls (DecoderWeights::w_pad),
// and the forward and backward of a projection. Internal to the lean decoder layers. Shapes as in
// decoder_ops.cc: N tokens, r LoRA rank, s LoRA scale.
#ifndef HERD_TRAINER_ENGINE_MODEL_DECODER_PROJECTIONS_H_
#define HERD_TRAINER_ENGINE_MODEL_DECODER_PROJECTIONS_H_

#include <ATen/ATen.h>

#include <cstdint>
#include <initializer_list>
#include <vector>

#include "trainer/engine/kernels/fused_ops.h"
#include "trainer/engine/model/decoder_ops.h"

namespace herd::engine::decoder {

// a · b in `acc`. On CUDA with bf16/fp16 operands the matmul accumulates and writes float32
// itself (mm's out_dtype); should that overload be refused, the product is cast instead (once
// refused, always). Elsewhere the operands are cast first, which is exact.
at::Tensor MmTo(const at::Tensor& a, const at::Tensor& b, at::ScalarType acc);

// Everything one projection needs, resolved from the layer's weights.
struct ProjCtx {
  int k = 0;
  at::Tensor w;       // [out, in] frozen
  at::Tensor a, b;    // LoRA leaves, or undefined
  at::Tensor a_c;     // A and B in the weights' dtype (the leaves are float32; the matmuls run in
  at::Tensor b_c;     // the weights' dtype), shared by forward and backward: prepared for the whole
                      // forward (DecoderWeights::lora_a_c) or cast by MakeGroup. An AdapterGroup's
                      // members use the group's stacked A instead.
  int64_t group_col = -1;  // in an AdapterGroup: this adapter's first column of the group's x' Aᵀ
  at::Tensor w_pad;        // DecoderWeights::w_pad, or undefined
  int64_t pad_col = 0;
  bool folded = false;     // the adapter rides in the padded frozen matmul (its B written into w_pad)
  at::Tensor w_rows;       // DecoderWeights::w_rows, or undefined
  bool rows_folded = false;  // A written under W in w_rows: the backward's dx matmul adds its share
  double scale = 1;
  at::Tensor keys;    // [B, 2] dropout row keys, or undefined
  double keep = 1;

  bool adapted() const { return a.defined(); }
};

// One projection of the layer resolved from its weights and this forward's inputs.
ProjCtx MakeProj(const DecoderWeights& w, const DecoderShape& s, const DecoderInputs& in, Proj p);

// s · a b in a's dtype, the scale applied in the matmul's epilogue (beta 0: the output's old
// contents are not read), so LoRA's scale costs no kernel of its own. Into `out` where given (a
// [rows, cols] view, e.g. the tail of a wider buffer), else a new tensor.
at::Tensor ScaledMm(const at::Tensor& a, const at::Tensor& b, double s, at::Tensor out = at::Tensor());

// The adapter's input: x, or x · mask / keep under LoRA dropout. The mask is a hash of the row keys
// (model/lora_dropout.h), so backward makes the same one again instead of keeping it.
at::Tensor AdapterInput(const ProjCtx& p, const at::Tensor& x2d, int64_t B, int64_t T);

// The adapted projections of one input (q, k, v; or gate, up) with their A's stacked, [n·r, in] in
// the weights' dtype: x' Aᵀ of them all is one matmul reading x' once, and in backward A's
// gradients and the adapters' share of dx are one matmul each, writing dx once instead of once a
// projection. Only without LoRA dropout (each projection masks its input differently there) and
// with two or more adapters; otherwise inactive, and each adapter casts its own A.
struct AdapterGroup {
  at::Tensor a_cat;  // [n·r, in], undefined when inactive
  int64_t cols = 0;  // n·r
  double scale = 1;  // LoRA's s (the same for every adapter)
  bool folded = false;  // every member's B rides in its padded frozen weight (DecoderWeights::w_pad)

  bool active() const { return a_cat.defined(); }
};

// prepared_a_cat: the group's stacked A's already in the weights' dtype (DecoderWeights::lora_a_cat),
// or undefined. Adapters whose a_c/b_c came prepared are not cast again.
AdapterGroup MakeGroup(std::initializer_list<ProjCtx*> projs, const at::Tensor& prepared_a_cat = at::Tensor());

// A folded group's forward input: [x' | s · x' Aᵀ] [N, in + n·r], x' = RMSNorm(x) written straight
// into its head by the norm (*norm: y is that head). Nothing of it is kept: the backward makes x'
// again for A's gradients anyway, and s · x' Aᵀ from it for B's (a copy of the narrow tail cost
// more on an H100 than that small matmul: 21 µs a layer as a 2-D memcpy).
at::Tensor FoldedInput(const AdapterGroup& g, const at::Tensor& x2d, const at::Tensor& norm_w, double eps,
                       RmsNormResult* norm);

// One member of a folded group: buf · W'ᵀ (the adapter included), or x' Wᵀ for a member without one.
at::Tensor FoldedProject(const ProjCtx& p, const at::Tensor& buf, const at::Tensor& x2d);

// The group's s · x' Aᵀ [N, n·r] (undefined when the group is inactive).
at::Tensor GroupForward(const AdapterGroup& g, const at::Tensor& x2d);

// A's gradients of the group's members (rows of *da_cat, member order; when want_a) and their share
// of dx (when dx is not null), from each member's u = s · dy B. h is the members' input.
void GroupBackward(const AdapterGroup& g, const std::vector<at::Tensor>& u, const at::Tensor& h, bool want_a,
                   at::ScalarType lora_dtype, at::Tensor* dx, at::Tensor* da_cat);

// y = x Wᵀ + s · (x' Aᵀ) Bᵀ, x' the adapter's input. *xa = s · x' Aᵀ [N, r] (kept for B's
// gradient, which is then dyᵀ · xa with no scale to apply). A group member takes it from the
// group's (xa_cat, GroupForward).
// `residual` [N, out] (optional) is added in the matmul's epilogue, not by a kernel of its own.
at::Tensor ProjectForward(const ProjCtx& p, const at::Tensor& x2d, int64_t B, int64_t T, at::Tensor* xa,
                          const at::Tensor& xa_cat = at::Tensor(), const at::Tensor& residual = at::Tensor());

// dy [N, out] → adds dL/dx to *dx (when dx is not null; allocated on first use) and sets the
// adapter's dL/dA, dL/dB in the LoRA dtype (when asked). x2d is the projection's input; it is only
// read for A's gradient. A group member leaves A's gradient and the adapter's share of dx to
// GroupBackward and appends its u = s · dy B to *group_u instead.
void ProjectBackward(const ProjCtx& p, const at::Tensor& dy, const at::Tensor& x2d, const at::Tensor& xa, int64_t B,
                     int64_t T, at::Tensor* dx, bool want_a, bool want_b, at::Tensor* da, at::Tensor* db,
                     std::vector<at::Tensor>* group_u = nullptr);

// Whether `stack` (DecoderWeights::w_stack) holds exactly the folded members' padded weights, one
// below the other in member order.
bool StackFits(const at::Tensor& stack, std::initializer_list<const ProjCtx*> projs);

}  // namespace herd::engine::decoder

#endif  // HERD_TRAINER_ENGINE_MODEL_DECODER_PROJECTIONS_H_
