// Learning-rate schedules, transcribed from transformers/optimization.py (the lr_lambda
// functions) with the same double arithmetic in the same order; LambdaLR then multiplies the
// peak learning rate by the factor.
#include "trainer/engine/train/schedule.h"

#include <algorithm>
#include <cmath>
#include <numbers>

#include "common/strings.h"

namespace herd::engine {
namespace {

double Factor(LrScheduler scheduler, int64_t step, int64_t warmup, int64_t total) {
  if (step < warmup) {
    // max(1.0, warmup) for constant and max(1, warmup) for the others: the same double here.
    return static_cast<double>(step) / static_cast<double>(std::max<int64_t>(1, warmup));
  }
  switch (scheduler) {
    case LrScheduler::kConstant:
      return 1.0;
    case LrScheduler::kLinear:
      return std::max(0.0, static_cast<double>(total - step) /
                               static_cast<double>(std::max<int64_t>(1, total - warmup)));
    case LrScheduler::kCosine: {
      constexpr double kNumCycles = 0.5;
      const double progress = static_cast<double>(step - warmup) /
                              static_cast<double>(std::max<int64_t>(1, total - warmup));
      return std::max(0.0,
                      0.5 * (1.0 + std::cos(std::numbers::pi * kNumCycles * 2.0 * progress)));
    }
  }
  return 0.0;
}

}  // namespace

absl::StatusOr<LrScheduler> ParseLrScheduler(std::string_view name) {
  if (name == "cosine") return LrScheduler::kCosine;
  if (name == "linear") return LrScheduler::kLinear;
  if (name == "constant") return LrScheduler::kConstant;
  return absl::InvalidArgumentError(
      herd::StrCat("lr_scheduler '", name, "' is not one of cosine, linear, constant"));
}

absl::StatusOr<LrSchedule> LrSchedule::Create(double peak_lr, std::string_view scheduler,
                                              double warmup_ratio, int64_t total_steps) {
  auto parsed = ParseLrScheduler(scheduler);
  if (!parsed.ok()) return parsed.status();
  if (!(peak_lr >= 0 && std::isfinite(peak_lr))) {
    return absl::InvalidArgumentError(
        herd::StrCat("learning_rate ", peak_lr, " must be finite and >= 0"));
  }
  if (!(warmup_ratio >= 0 && warmup_ratio < 1)) {
    return absl::InvalidArgumentError(
        herd::StrCat("warmup_ratio ", warmup_ratio, " is not in [0, 1)"));
  }
  if (total_steps < 1) {
    return absl::InvalidArgumentError(
        herd::StrCat("the schedule needs at least one step, got ", total_steps));
  }
  // TrainingArguments.get_warmup_steps: math.ceil(num_training_steps * warmup).
  const auto warmup =
      static_cast<int64_t>(std::ceil(static_cast<double>(total_steps) * warmup_ratio));
  return LrSchedule(peak_lr, *parsed, warmup, total_steps);
}

double LrSchedule::LearningRate(int64_t step) const {
  step = std::clamp<int64_t>(step, 0, total_steps_);
  return peak_lr_ * Factor(scheduler_, step, warmup_steps_, total_steps_);
}

}  // namespace herd::engine
