// The learning-rate schedule of a job (training.lr_scheduler, learning_rate, warmup_ratio;
// DESIGN.md §11): linear warmup from 0, then cosine decay to 0, linear decay to 0, or constant.
// Values are those of Hugging Face transformers' get_{cosine,linear,constant}_schedule_with_warmup
// with the warmup length TrainingArguments.get_warmup_steps gives, so a Herd job and the same job
// in the HF Trainer see the same learning rate at every step. No torch.
#ifndef HERD_TRAINER_ENGINE_TRAIN_SCHEDULE_H_
#define HERD_TRAINER_ENGINE_TRAIN_SCHEDULE_H_

#include <cstdint>
#include <string_view>

#include "absl/status/statusor.h"

namespace herd::engine {

enum class LrScheduler { kCosine, kLinear, kConstant };

// "cosine", "linear" or "constant" (the job file's spelling); INVALID_ARGUMENT otherwise.
absl::StatusOr<LrScheduler> ParseLrScheduler(std::string_view name);

class LrSchedule {
 public:
  // warmup_steps = ceil(total_steps * warmup_ratio), computed in double as transformers does
  // (so 100 steps at 0.07 warm up for 8 steps, not 7). INVALID_ARGUMENT unless peak_lr is finite
  // and >= 0, scheduler parses, 0 <= warmup_ratio < 1 and total_steps >= 1.
  static absl::StatusOr<LrSchedule> Create(double peak_lr, std::string_view scheduler,
                                           double warmup_ratio, int64_t total_steps);

  // The learning rate for 0-based optimizer step `step` (the first update uses step 0, which is
  // 0 whenever there is warmup, as in transformers). Steps past total_steps are treated as
  // total_steps (0 for cosine and linear; transformers' cosine would rise again there), and
  // negative steps as 0.
  double LearningRate(int64_t step) const;

  double peak_lr() const { return peak_lr_; }
  LrScheduler scheduler() const { return scheduler_; }
  int64_t warmup_steps() const { return warmup_steps_; }
  int64_t total_steps() const { return total_steps_; }

 private:
  LrSchedule(double peak_lr, LrScheduler scheduler, int64_t warmup_steps, int64_t total_steps)
      : peak_lr_(peak_lr),
        scheduler_(scheduler),
        warmup_steps_(warmup_steps),
        total_steps_(total_steps) {}

  double peak_lr_;
  LrScheduler scheduler_;
  int64_t warmup_steps_;
  int64_t total_steps_;
};

}  // namespace herd::engine

#endif  // HERD_TRAINER_ENGINE_TRAIN_SCHEDULE_H_
