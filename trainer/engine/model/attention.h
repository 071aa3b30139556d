// Causal self-attention of the decoder layers as one autograd function (DESIGN.md §5, issue "The
// GPU path"). Rows are either one causal document each or packed with several documents, which
// must not see each other. On CUDA with bf16/fp16, packed batches go through the varlen flash
// kernel: the B·T tokens are one flat sequence cut at `cu_seqlens`, so packed rows cost
// Σ doc_len², not T², and grouped K/V are read as they are (no expansion to Nq heads); plain rows
// take scaled_dot_product_attention's own causal kernel with its autograd (faster there). Elsewhere (CPU, fp32/fp64 on
// CUDA) scaled_dot_product_attention runs under no-grad with a block-diagonal mask for packed rows
// and the backward recomputes it, so only q, k, v are kept either way.
// Shapes: B rows, T tokens per row, Nq query heads, Nkv key/value heads (Nq % Nkv == 0), D head dim.
#ifndef HERD_TRAINER_ENGINE_MODEL_ATTENTION_H_
#define HERD_TRAINER_ENGINE_MODEL_ATTENTION_H_

#include <ATen/ATen.h>

#include <cstdint>

namespace herd::engine {

// Where the documents of a batch begin, built once per forward and shared by every layer.
struct AttentionLayout {
  int64_t batch = 0;       // B
  int64_t tokens = 0;      // T
  bool packed = false;     // rows hold several documents (doc ids were given)
  at::Tensor cu_seqlens;   // [docs + 1] int32 on the device: document starts in the flattened B·T
                           // tokens, then B·T (plain rows: 0, T, 2T, ..., B·T)
  int64_t max_seqlen = 0;  // the longest document (T for plain rows)
  at::Tensor mask;         // [B, 1, T, T] bool on the device, true = may attend: causal within a document.
                           // Packed rows built with_mask only; undefined otherwise (plain rows use is_causal)
};

// True where CausalAttention takes the varlen flash kernel: a CUDA build, a CUDA device of compute
// capability ≥ 8.0, bf16 or fp16, and D ≤ 256 a multiple of 8.
bool FlashAttentionApplies(at::Device device, at::ScalarType dtype, int64_t head_dim);

// doc_ids: [B, T] integer, a document id per token, each document one contiguous run within a row
// (a run boundary, or a row's start, begins a new document; ids need not be unique across rows);
// undefined for one causal document per row. with_mask: build `mask` for packed rows, which the
// non-flash path needs (pass !FlashAttentionApplies(...) to skip its B·T² bytes on the flash path).
// Packed rows cost one device-to-host copy of doc_ids (for max_seqlen). Throws c10::Error on bad input.
AttentionLayout MakeAttentionLayout(const at::Tensor& doc_ids, int64_t batch, int64_t tokens, at::Device device,
                                    bool with_mask = true);

enum class AttentionBackend {
  kAuto,   // where FlashAttentionApplies: SDPA's fused kernel for plain rows, varlen flash for packed
           // ones; elsewhere SDPA with recompute
  kFlash,  // the varlen flash kernel for every batch (TORCH_CHECK fails where it does not apply)
  kSdpa,   // scaled_dot_product_attention with recompute in backward, on any device and dtype
};

// softmax(scale · q·kᵀ + causal/document mask) · v per head, query head h reading key/value head
// h / (Nq / Nkv). q: [B, T, Nq, D]; k, v: [B, T, Nkv, D], same dtype and device, B and T those of
// `layout`. Returns a contiguous [B, T, Nq, D], differentiable in q, k and v. Throws c10::Error
// on bad input (or a packed layout without mask on the SDPA path).
// What kAuto means from now on, process-wide: kAuto by default; kSdpa to measure what the fused
// kernels are worth (`herd-bench --attention sdpa`: FlashAttentionApplies answers false under it,
// so layouts get their masks); kFlash to send plain rows through the varlen kernel too
// (`herd-bench --attention varlen`).
void SetAttentionBackendOverride(AttentionBackend backend);

at::Tensor CausalAttention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const AttentionLayout& layout,
                           double scale, AttentionBackend backend = AttentionBackend::kAuto);

}  // namespace herd::engine

#endif  // HERD_TRAINER_ENGINE_MODEL_ATTENTION_H_
