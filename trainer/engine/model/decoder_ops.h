// The decoder layer as three autograd nodes with hand-written backwards (issue "The GPU path",
// DESIGN.md §5), so that a training step keeps per token and layer only what is expensive to
// redo: the layer input x, the attention's q, k, v and output (kept by CausalAttention), the
// post-attention residual x', and the MLP's gate and up outputs g and u, plus the [N, r] LoRA
// intermediates. That is 9H + 4I bytes in bf16, against about 168 KiB (1B) to 312 KiB (8B) a token
// and layer under plain autograd; by default the SwiGLU output is kept too (2I more,
// DecoderInputs::keep_mlp_activation). The norms' outputs and the dropout masks are made again in
// backward (elementwise work), and so is the small x'Aᵀ of a folded group; no frozen matmul is
// ever recomputed.
//
//   QkvNode:    x → RMSNorm → q, k, v projections (+LoRA) → RoPE on q, k
//   CausalAttention (model/attention.h)
//   LinearNode: x' = x + o projection (+LoRA), the residual in the matmul's epilogue
//   MlpNode:    x' → RMSNorm → gate, up (+LoRA) → SwiGLU → down (+LoRA); out = x' + that, likewise
//
// Without LoRA dropout the adapters fold into the frozen matmuls (DecoderWeights::w_pad, w_rows).
//
// The frozen weights' matmuls run in their dtype (bf16 on the GPU); the LoRA matmuls run in the
// same dtype on the fp32 parameters rounded to it, and the LoRA gradients come out in float32 (on
// CUDA straight from the matmul, accumulated in float32). Norms, RoPE and SwiGLU compute in float32
// (kernels/fused_ops.h). With fp32 or fp64 weights everything is in that dtype: the values and
// gradients are the plain graph's up to summation order (decoder_ops_test).
#ifndef HERD_TRAINER_ENGINE_MODEL_DECODER_OPS_H_
#define HERD_TRAINER_ENGINE_MODEL_DECODER_OPS_H_

#include <ATen/ATen.h>

#include "trainer/engine/model/attention.h"
#include "trainer/engine/model/tensor_names.h"

namespace herd::engine {

// One layer's weights, borrowed from the model (tensors are reference-counted handles).
struct DecoderWeights {
  at::Tensor input_norm, post_norm;  // [H]
  at::Tensor w[kNumProj];            // [out, in], frozen
  at::Tensor lora_a[kNumProj];       // [r, in] leaves, or undefined (no adapter)
  at::Tensor lora_b[kNumProj];       // [out, r]
  // Optional, for adapted projections of a group (q/k/v, gate/up) without dropout: the frozen weight
  // stored as [W | zeros | B block | zeros] [out, in + n·r] (w[k] is its first `in` columns), the
  // group's B's side by side in the order of its adapted members, this one's at pad_col[k]. The
  // forward writes B into its block and computes [x' | s·x'Aᵀ] · paddedᵀ: the adapter's
  // contribution comes out of the frozen matmul, and in backward dy · padded yields dx and dy·B
  // together.
  at::Tensor w_pad[kNumProj];
  int64_t pad_col[kNumProj] = {};
  // Optional, for an adapted down without dropout: the frozen weight stored as [W ; A] [out + r, in]
  // (w[k] is its first `out` rows). The forward writes A into those rows; the backward's
  // [dy | s·dy·B] · [W ; A] is dL/d(input) with the adapter's share in the same matmul.
  at::Tensor w_rows[kNumProj];
  // Optional (LlamaModel::PrepareLoraCopies, without dropout): A and B already in the weights' dtype
  // for this forward, and q/k/v's and gate/up's stacked A's; undefined where each forward casts.
  at::Tensor lora_a_c[kNumProj], lora_b_c[kNumProj];
  at::Tensor lora_a_cat[2];
  // Optional, with w_pad: a group's padded weights one below the other ([Σ out, in + n·r]; each
  // member's w_pad is its row block), for q/k/v [0] and gate/up [1].
  at::Tensor w_stack[2];
};

struct DecoderShape {
  int64_t heads = 0, kv_heads = 0, head_dim = 0;
  double rms_eps = 1e-5;
  double lora_scale = 1;
};

// What a layer reads besides its input and weights; built once per forward.
struct DecoderInputs {
  at::Tensor cos, sin;           // [B, T, D] RoPE tables in the weights' dtype
  AttentionLayout attention;
  at::Tensor dropout_keys;       // [kNumProj, B, 2] int64 row keys of this layer, or undefined (no dropout)
  double keep = 1;               // 1 − lora dropout
  bool keep_mlp_activation = true;  // keep SwiGLU(g, u) [B·T, I] for down's A gradient instead of
                                    // making it again in backward (faster; B·T·I more bytes a layer)
};

// One decoder layer on x [B, T, H] (contiguous); returns [B, T, H]. Differentiable in x and the
// LoRA tensors. Deterministic, so activation checkpointing can rerun it. Throws c10::Error.
at::Tensor LeanDecoderLayer(const at::Tensor& x, const DecoderWeights& w, const DecoderShape& shape,
                            const DecoderInputs& in);

// RMSNorm as one node keeping x and rstd only (the final norm). w frozen.
at::Tensor RmsNormNode(const at::Tensor& x, const at::Tensor& w, double eps);

}  // namespace herd::engine

#endif  // HERD_TRAINER_ENGINE_MODEL_DECODER_OPS_H_
