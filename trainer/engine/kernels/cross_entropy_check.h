// The device check of the chunk cross-entropy kernel (cross_entropy.h), for herd-kernel-check: the
// kernel against the ATen reference on the LLaMA 3 output head's shape, with timings. Kept apart
// from cross_entropy.h so that the op's header does not pull in nlohmann/json.
#ifndef HERD_TRAINER_ENGINE_KERNELS_CROSS_ENTROPY_CHECK_H_
#define HERD_TRAINER_ENGINE_KERNELS_CROSS_ENTROPY_CHECK_H_

#include <string>

#include "nlohmann/json.hpp"

namespace herd::engine {

// On a CUDA `device` ("cuda:0"): m = 1024 rows of V = 128,256 random logits (N(0, 3²)), bf16 and
// float32, the kernel at 256, 512 and 1024 threads per row against float64 math on the same logits
// (ATen's float32 chain, reference::CrossEntropyChunk, is measured against it too, for information):
// loss max |Δ| / max(|ref|, 1) (tol 1e-4 for bf16, 1e-5 for float32), hits equal, the gradient's max
// |Δ| in units of the last place of the logits' dtype (tol 1 for bf16, 64 for float32: both are one
// rounding of exp(l − lse) − [j = t], with lse from sums in another order), the logits untouched
// without `grad`; and the median of 20 timed runs (CUDA events, L2 flushed before each) of the kernel
// with and without the gradient and of the ATen chain, with the kernel's GB/s over its compulsory
// traffic (2 bytes per bf16 logit without the gradient, 6 with). On "cpu" (small = any device
// without CUDA) the reference against float64 log_softmax/argmax on [64, 1003], timed the same way.
// Returns {"check": "cross_entropy", "device", "m", "v", "ok", "cases": [...]}; never throws (an
// exception becomes "ok": false with "error").
nlohmann::json CheckCrossEntropyKernel(const std::string& device);

}  // namespace herd::engine

#endif  // HERD_TRAINER_ENGINE_KERNELS_CROSS_ENTROPY_CHECK_H_
