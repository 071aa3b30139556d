// Two memory-saving autograd operations of the training step (issue "The GPU path", DESIGN.md §5):
// the output head + cross-entropy in chunks, whose gradient is taken while each chunk's logits
// exist so full-vocabulary logits are never kept; and activation checkpointing of a function (one
// decoder layer) that keeps only its input and recomputes the rest in backward. Both are exact: the values and gradients are those of the plain
// autograd graph, up to floating-point summation order. libtorch's autograd headers stay in the .cc.
#ifndef HERD_TRAINER_ENGINE_MODEL_AUTOGRAD_OPS_H_
#define HERD_TRAINER_ENGINE_MODEL_AUTOGRAD_OPS_H_

#include <ATen/ATen.h>

#include <functional>
#include <vector>

namespace herd::engine {

// Tokens per chunk of the output head when nobody says otherwise: with a 128,256-entry vocabulary
// one chunk's float32 logits are 0.5 GiB (their softmax reuses that memory).
inline constexpr int64_t kDefaultLossChunkTokens = 1024;

struct ChunkedCrossEntropyResult {
  at::Tensor loss_sum;  // scalar in `acc`: Σ token cross-entropy (differentiable in `rows`)
  at::Tensor correct;   // scalar int64: rows whose argmax is the target (no gradient)
};

// Σ_i CE(rows[i] · headᵀ, targets[i]) computed `chunk_tokens` rows at a time, logits in `acc`
// (float32, or float64 for a float64 model). Only one chunk's [chunk_tokens, V] logits exist at a
// time. When rows needs a gradient the forward also computes dΣ/drows chunk by chunk (the
// matmul the backward would do) and keeps that [N, H] result instead of any logits; the backward
// only scales it, so nothing is recomputed. rows: [N, H]; head: [V, H], frozen (TORCH_CHECK fails
// when it requires grad); targets: [N] int64 in [0, V), every one trained (no -100). Throws
// c10::Error on bad input.
ChunkedCrossEntropyResult ChunkedCrossEntropy(const at::Tensor& rows, const at::Tensor& head,
                                              const at::Tensor& targets, int64_t chunk_tokens, at::ScalarType acc);

// y = fn(x), with autograd keeping only x: backward reruns fn on x with grad enabled and
// back-propagates through that. `params` are the leaf tensors fn reads that need gradients (they
// accumulate into .grad as usual). fn must be deterministic (the LoRA dropout masks are: they are
// drawn from (seed, step, sequence, layer, projection)) and must outlive the backward. Without
// grad mode, or when nothing requires grad, this is just fn(x).
at::Tensor Checkpointed(std::function<at::Tensor(const at::Tensor&)> fn, const at::Tensor& x,
                        const std::vector<at::Tensor>& params);

}  // namespace herd::engine

#endif  // HERD_TRAINER_ENGINE_MODEL_AUTOGRAD_OPS_H_
