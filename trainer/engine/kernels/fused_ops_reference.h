// The ATen form of the fused stages (fused_ops.h) and of the dropout mask (model/lora_dropout.h),
// callable on any device: the public functions run these on CPU and for float64, and the CUDA
// kernels are checked against them on the same device (fused_ops_test.cc, herd-kernel-check).
#ifndef HERD_TRAINER_ENGINE_KERNELS_FUSED_OPS_REFERENCE_H_
#define HERD_TRAINER_ENGINE_KERNELS_FUSED_OPS_REFERENCE_H_

#include <ATen/ATen.h>

#include <utility>

#include "trainer/engine/kernels/fused_ops.h"

namespace herd::engine::reference {

RmsNormResult RmsNormForward(const at::Tensor& x, const at::Tensor& w, double eps);
at::Tensor RmsNormBackward(const at::Tensor& dy, const at::Tensor& x, const at::Tensor& w, const at::Tensor& rstd);
at::Tensor RopeForward(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin);
at::Tensor RopeBackward(const at::Tensor& dy, const at::Tensor& cos, const at::Tensor& sin);
at::Tensor SwiGluForward(const at::Tensor& g, const at::Tensor& u);
std::pair<at::Tensor, at::Tensor> SwiGluBackward(const at::Tensor& da, const at::Tensor& g, const at::Tensor& u);
// Defined in model/lora_dropout.cc: the int64 tensor-op hash.
at::Tensor DropoutKeepMask(const at::Tensor& row_keys, int64_t tokens, int64_t features, double keep);

}  // namespace herd::engine::reference

#endif  // HERD_TRAINER_ENGINE_KERNELS_FUSED_OPS_REFERENCE_H_
