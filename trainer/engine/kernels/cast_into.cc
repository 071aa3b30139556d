#include "trainer/engine/kernels/cast_into.h"

#include "trainer/engine/kernels/fused_ops.h"

namespace herd::engine {

void CastInto(const std::vector<CastPair>& pairs) {
  for (const CastPair& p : pairs) {
    TORCH_CHECK(p.src.dim() == 2 && p.src.sizes() == p.dst.sizes(), "CastInto: source ", p.src.sizes(),
                " and destination ", p.dst.sizes(), " disagree");
  }
  if (pairs.empty()) return;
#ifdef HERD_WITH_CUDA
  if (pairs.front().dst.is_cuda() && FusedKernelsEnabled() && cuda_kernels::CastInto(pairs)) return;
#endif
  for (const CastPair& p : pairs) p.dst.copy_(p.src);
}

}  // namespace herd::engine
