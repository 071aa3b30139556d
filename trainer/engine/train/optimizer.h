// AdamW over the LoRA parameters, and gradient-norm clipping (DESIGN.md §5): the two steps of the
// training loop between the all-reduce and the schedule. Both follow PyTorch operation by
// operation (torch.optim.AdamW's default single-tensor path, torch.nn.utils.clip_grad_norm_), so
// a Herd run and the same run in PyTorch agree to float32 rounding; optimizer_test.cc checks it
// against torch in the same test run. Torch-side header.
#ifndef HERD_TRAINER_ENGINE_TRAIN_OPTIMIZER_H_
#define HERD_TRAINER_ENGINE_TRAIN_OPTIMIZER_H_

#include <ATen/ATen.h>

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/safetensors.h"

namespace herd::engine {

// torch.optim.AdamW's defaults except weight_decay, which defaults to Herd's job default (0.0,
// DESIGN.md §11) rather than torch's 0.01. The learning rate is not here: it comes from the
// schedule on every Step.
struct AdamWOptions {
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.0;  // decoupled: param *= 1 - lr * weight_decay before the update

  // INVALID_ARGUMENT unless 0 <= beta < 1, eps > 0 and weight_decay >= 0 (all finite).
  absl::Status Validate() const;
};

// AdamW with float32 state (exp_avg, exp_avg_sq) beside each parameter, on its device, and one
// step count shared by all parameters. amsgrad and maximize are not supported.
//
// Every parameter must have a gradient on every Step. torch skips a parameter whose .grad is
// None and keeps a step count per parameter; Herd's LoRA gradients all live in one flat buffer,
// so a missing gradient can only be a bug, and Step reports it rather than guessing (skipping, or
// treating it as zero, which would still move the parameter through momentum and weight decay).
class AdamW {
 public:
  // `params` are the tensors to optimise (LoraParameters() order, which is also the order of the
  // checkpoint's state tensors). They must be defined and float32; the optimizer keeps handles
  // to them and updates them in place. State starts at zero, step 0. INVALID_ARGUMENT otherwise.
  static absl::StatusOr<AdamW> Create(std::vector<at::Tensor> params, const AdamWOptions& options);

  // One update with learning rate `lr`, reading each parameter's .grad() (already all-reduced,
  // averaged and clipped). Runs without autograd recording. INVALID_ARGUMENT, with nothing
  // changed, when lr is negative or not finite or a gradient is missing or differs from its
  // parameter in shape, dtype or device; INTERNAL if libtorch fails mid-update.
  absl::Status Step(double lr);

  // Optimiser steps taken so far (restored by Load).
  int64_t step() const { return step_; }
  const std::vector<at::Tensor>& params() const { return params_; }
  const AdamWOptions& options() const { return options_; }

  // Adds the state to a checkpoint: "optimizer.step" (I64 scalar) and, for parameter i,
  // "optimizer.exp_avg.<i>" and "optimizer.exp_avg_sq.<i>" (F32, the parameter's shape).
  absl::Status Save(SafetensorsWriter& writer) const;
  // Restores what Save wrote, onto the parameters' devices. INVALID_ARGUMENT naming the file and
  // the tensor when the state does not fit these parameters (another count, shape or dtype, a
  // missing tensor, a negative step); the optimizer is unchanged then.
  absl::Status Load(const SafetensorsFile& file);

 private:
  AdamW(std::vector<at::Tensor> params, const AdamWOptions& options);

  AdamWOptions options_;
  std::vector<at::Tensor> params_;
  std::vector<at::Tensor> exp_avg_;     // one per parameter, same shape and device
  std::vector<at::Tensor> exp_avg_sq_;  // one per parameter, same shape and device
  int64_t step_ = 0;
};

// Scales the gradients of `params` in place so their total L2 norm (of all gradients as one
// vector) is at most `max_norm`, as torch.nn.utils.clip_grad_norm_ does (coefficient
// max_norm / (norm + 1e-6), capped at 1), and returns the norm before clipping. Parameters
// without a gradient are skipped (no gradients: norm 0). `max_norm` <= 0 disables clipping but
// the norm is still returned (for the herd_grad_norm metric). A non-finite norm is returned
// without scaling anything; the caller should fail the step, where torch would scale by NaN.
// INTERNAL if libtorch fails.
absl::StatusOr<double> ClipGradNorm(const std::vector<at::Tensor>& params, double max_norm);

}  // namespace herd::engine

#endif  // HERD_TRAINER_ENGINE_TRAIN_OPTIMIZER_H_
