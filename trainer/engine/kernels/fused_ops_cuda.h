// Private: the host-side launchers of the CUDA kernels (fused_ops_cuda.cu, lora_dropout_cuda.cu),
// built only with HERD_WITH_CUDA. Each takes CUDA tensors that passed the public function's shape
// checks and returns std::nullopt, launching nothing, where its kernel does not handle the input
// (a dtype other than float32/bfloat16/float16, mixed dtypes, a row too long for the registers);
// the caller then runs the ATen reference. Launches on the current stream of the input's device.
#ifndef HERD_TRAINER_ENGINE_KERNELS_FUSED_OPS_CUDA_H_
#define HERD_TRAINER_ENGINE_KERNELS_FUSED_OPS_CUDA_H_

#include <ATen/core/Tensor.h>

#include <optional>
#include <utility>

#include "trainer/engine/kernels/fused_ops.h"

namespace herd::engine::cuda_kernels {

// The distance in elements between the rows of a 2-D t whose rows are dense (its last dimension
// unit-stride, or one column), e.g. a block of a wider matrix; -1 for anything else.
int64_t RowSpacing(const at::Tensor& t);

// out: where y goes (see herd::engine::RmsNormForward), or undefined for a new tensor.
std::optional<RmsNormResult> RmsNormForward(const at::Tensor& x, const at::Tensor& w, double eps,
                                            const at::Tensor& out = at::Tensor());
std::optional<at::Tensor> RmsNormBackward(const at::Tensor& dy, const at::Tensor& x, const at::Tensor& w,
                                          const at::Tensor& rstd, const at::Tensor& add = at::Tensor());
std::optional<at::Tensor> RopeForward(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin);
std::optional<at::Tensor> RopeBackward(const at::Tensor& dy, const at::Tensor& cos, const at::Tensor& sin,
                                       const at::Tensor& out = at::Tensor());
std::optional<at::Tensor> SwiGluForward(const at::Tensor& g, const at::Tensor& u);
// dg_out, du_out: optional, as for herd::engine::SwiGluBackward.
std::optional<std::pair<at::Tensor, at::Tensor>> SwiGluBackward(const at::Tensor& da, const at::Tensor& g,
                                                               const at::Tensor& u,
                                                               const at::Tensor& dg_out = at::Tensor(),
                                                               const at::Tensor& du_out = at::Tensor());
// row_keys: [B, 2] int64 on CUDA; returns [B, tokens, features] bool, contiguous.
at::Tensor DropoutKeepMask(const at::Tensor& row_keys, int64_t tokens, int64_t features, double keep);

}  // namespace herd::engine::cuda_kernels

#endif  // HERD_TRAINER_ENGINE_KERNELS_FUSED_OPS_CUDA_H_
