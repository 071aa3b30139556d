// Cross-entropy of one chunk of the output head's logits (model/autograd_ops.cc, ChunkedCe): per
// row the loss lse − logit[target], whether the argmax is the target, and for training the
// gradient softmax − onehot(target) written over the logits. On CUDA (HERD_WITH_CUDA) one kernel
// (cross_entropy_cuda.cu) does it in two passes over each row, reading the logits in their own
// dtype: 2 bytes per bf16 logit without the gradient, 6 with it, where the ATen chain moves ~30.
// Elsewhere, and for float64, the ATen reference below, which is what ChunkedCe computed before.
// Shapes: m rows (tokens of the chunk), V vocabulary.
#ifndef HERD_TRAINER_ENGINE_KERNELS_CROSS_ENTROPY_H_
#define HERD_TRAINER_ENGINE_KERNELS_CROSS_ENTROPY_H_

#include <ATen/ATen.h>

namespace herd::engine {

struct CrossEntropyChunkResult {
  at::Tensor loss;  // [m] float32 (float64 for float64 logits): lse − logit[target]
  at::Tensor hit;   // [m] bool: argmax == target (argmax: the first index of the maximum, as at::argmax)
};

// logits: [m, V] contiguous, bfloat16/float16/float32/float64; targets: [m] int64 in [0, V), on
// logits' device. The math is float32 whatever the storage (float64 for float64 logits):
//   M = max_j l_j,  S = Σ_j exp(l_j − M),  lse = M + log S,  loss = lse − l_target,
//   grad_j = exp(l_j − lse) − [j == target]   (computed in float32, rounded once to logits' dtype).
// With `grad` the logits are overwritten in place by grad (then p · head is dL/drows of the summed
// loss); without it they are left alone. Logits are assumed finite (rows of −inf are handled, +inf
// and NaN give NaN or inf losses, as in ATen, but the argmax of such a row is unspecified).
// Targets must be in range: the reference throws (gather), the CUDA kernel does not check (no
// device sync) and gives a NaN loss, no hit and no −1 in the gradient for such a row. Throws
// c10::Error on bad shapes or dtypes. Runs with autograd off; logits must not need a gradient.
CrossEntropyChunkResult CrossEntropyChunk(at::Tensor& logits, const at::Tensor& targets, bool grad);

namespace reference {
// The same as ATen ops, on any device: exactly ChunkedCe's former arithmetic (logits.to(float32),
// at::logsumexp, gather, argmax, exp(l − lse) and scatter_add of −1, then the rounding copy back).
// Allocates a float32 [m, V] copy unless the logits are float32 or float64 already.
CrossEntropyChunkResult CrossEntropyChunk(at::Tensor& logits, const at::Tensor& targets, bool grad);
}  // namespace reference

}  // namespace herd::engine

#endif  // HERD_TRAINER_ENGINE_KERNELS_CROSS_ENTROPY_H_
