// The chunk cross-entropy: the ATen reference (ChunkedCe's former arithmetic, the path on CPU and
// for float64) and the dispatch that sends CUDA logits of float32/bfloat16/float16 to the kernel of
// cross_entropy_cuda.cu when the engine is built with HERD_WITH_CUDA.
#include "trainer/engine/kernels/cross_entropy.h"

#include <c10/core/GradMode.h>

#include "trainer/engine/kernels/fused_ops.h"
#ifdef HERD_WITH_CUDA
#include "trainer/engine/kernels/cross_entropy_cuda.h"
#endif

namespace herd::engine {
namespace {

void CheckInputs(const at::Tensor& logits, const at::Tensor& targets) {
  TORCH_CHECK(logits.dim() == 2 && targets.dim() == 1 && logits.size(0) == targets.size(0) && logits.size(1) > 0,
              "CrossEntropyChunk: logits [m, V] and targets [m] expected, got ", logits.sizes(), " and ",
              targets.sizes());
  const at::ScalarType s = logits.scalar_type();
  TORCH_CHECK(s == at::kFloat || s == at::kDouble || s == at::kBFloat16 || s == at::kHalf,
              "CrossEntropyChunk: floating-point logits expected, got ", s);
  TORCH_CHECK(targets.scalar_type() == at::kLong, "CrossEntropyChunk: int64 targets expected, got ",
              targets.scalar_type());
  TORCH_CHECK(logits.is_contiguous(), "CrossEntropyChunk: the logits must be contiguous");
  TORCH_CHECK(targets.device() == logits.device(), "CrossEntropyChunk: logits on ", logits.device(),
              " but targets on ", targets.device());
  TORCH_CHECK(!logits.requires_grad(), "CrossEntropyChunk: the logits must not require grad (they may be overwritten)");
}

}  // namespace

namespace reference {

CrossEntropyChunkResult CrossEntropyChunk(at::Tensor& logits, const at::Tensor& targets, bool grad) {
  CheckInputs(logits, targets);
  c10::NoGradGuard no_grad;
  const at::ScalarType acc = logits.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  const int64_t m = logits.size(0);
  at::Tensor t = targets.unsqueeze(1);                            // [m, 1]
  at::Tensor l = logits.to(acc);                                  // [m, V]; logits itself when already acc
  at::Tensor lse = at::logsumexp(l, {1}, /*keepdim=*/true);       // [m, 1]
  at::Tensor loss = (lse - l.gather(1, t)).squeeze(1);            // [m]
  at::Tensor hit = (l.argmax(1, /*keepdim=*/true) == t).squeeze(1);  // [m]
  if (grad) {
    at::Tensor p = l.sub_(lse).exp_();  // softmax, in place of l
    p.scatter_add_(1, t, at::full({m, 1}, -1.0, p.options()));
    if (!p.is_same(logits)) logits.copy_(p);
  }
  return {loss, hit};
}

}  // namespace reference

CrossEntropyChunkResult CrossEntropyChunk(at::Tensor& logits, const at::Tensor& targets, bool grad) {
  CheckInputs(logits, targets);
#ifdef HERD_WITH_CUDA
  if (logits.is_cuda() && FusedKernelsEnabled()) {
    if (auto r = cuda_kernels::CrossEntropyChunk(logits, targets, grad)) return *std::move(r);
  }
#endif
  return reference::CrossEntropyChunk(logits, targets, grad);
}

}  // namespace herd::engine
