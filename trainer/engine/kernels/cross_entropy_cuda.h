// Private: the host-side launcher of the cross-entropy kernel (cross_entropy_cuda.cu), built only
// with HERD_WITH_CUDA. Takes CUDA tensors that passed CrossEntropyChunk's shape checks and returns
// std::nullopt, launching nothing, where the kernel does not handle them (float64, V ≥ 2³¹, more
// than 2³¹ rows); the caller then runs the ATen reference. Launches on the current stream.
#ifndef HERD_TRAINER_ENGINE_KERNELS_CROSS_ENTROPY_CUDA_H_
#define HERD_TRAINER_ENGINE_KERNELS_CROSS_ENTROPY_CUDA_H_

#include <ATen/core/Tensor.h>

#include <optional>

#include "trainer/engine/kernels/cross_entropy.h"

namespace herd::engine::cuda_kernels {

// Threads per block (one block per row): 256, 512 or 1024, all at 1024 threads per SM, so fewer
// rows in flight at once as it grows (more of each row still in L2 for the second pass); 0 picks
// kDefaultCrossEntropyThreads. Other values are a c10::Error. herd-kernel-check times each: on an
// H100 (1024 rows × 128,256 bf16 logits with gradient) 256: 0.273 ms, 512: 0.261 ms, 1024: 0.271 ms.
inline constexpr int kDefaultCrossEntropyThreads = 512;
std::optional<CrossEntropyChunkResult> CrossEntropyChunk(at::Tensor& logits, const at::Tensor& targets, bool grad,
                                                         int threads = 0);

}  // namespace herd::engine::cuda_kernels

#endif  // HERD_TRAINER_ENGINE_KERNELS_CROSS_ENTROPY_CUDA_H_
