// The training loop. Shapes: B micro-batch rows, T sequence length.
#include "trainer/engine/train/trainer.h"

#include <c10/core/GradMode.h>

#include <cmath>
#include <filesystem>

#include "common/sharding.h"
#include "common/status.h"
#include "common/strings.h"
#include "trainer/engine/model/adapter_io.h"
#include "trainer/engine/train/checkpoint.h"
#include "trainer/engine/train/optimizer.h"
#include "trainer/engine/train/schedule.h"

namespace herd::engine {
namespace {

double Seconds(absl::Time since) { return absl::ToDoubleSeconds(absl::Now() - since); }

// Copies every parameter's gradient into one flat float32 buffer (zeros where a rank computed
// none), so one all-reduce moves all of them. [Σ numel]
at::Tensor FlattenGrads(const std::vector<at::Tensor>& params) {
  std::vector<at::Tensor> parts;
  parts.reserve(params.size());
  for (const at::Tensor& p : params) {
    parts.push_back(p.grad().defined() ? p.grad().reshape({-1}) : at::zeros({p.numel()}, p.options()));
  }
  return at::cat(parts).to(at::kFloat).contiguous();
}

// Each gradient becomes a view of the all-reduced buffer (no copy: one kernel launch fewer per
// parameter); the next step's backward makes fresh ones.
void UnflattenGrads(const at::Tensor& flat, const std::vector<at::Tensor>& params) {
  int64_t offset = 0;
  for (const at::Tensor& p : params) {
    p.mutable_grad() = flat.narrow(0, offset, p.numel()).view(p.sizes()).to(p.scalar_type());
    offset += p.numel();
  }
}

ShardShape ShapeFor(const TrainConfig& c, const PreparedData& data, int world_size) {
  return ShardShape{.num_sequences = data.num_rows(),
                    .epochs = c.training.epochs,
                    .global_batch = c.training.global_batch_size,
                    .micro_batch = c.training.micro_batch_size,
                    .world_size = world_size,
                    .seed = static_cast<uint64_t>(c.training.seed)};
}

// Continues training an existing adapter: it must have the job's LoRA shape (r, alpha,
// targets, rsLoRA), or the job would silently train something else than it says.
absl::Status LoadInitialAdapter(LlamaModel& model, const std::string& dir) {
  const LoraOptions want = model.lora_options();
  HERD_RETURN_IF_ERROR(LoadAdapter(model, dir));
  const LoraOptions& got = model.lora_options();
  if (got.r != want.r || got.alpha != want.alpha || got.rslora != want.rslora || got.targets != want.targets) {
    return absl::FailedPreconditionError(herd::StrCat("initial adapter ", dir, " has r=", got.r, " alpha=", got.alpha,
                                                      " rslora=", got.rslora, " and ", got.targets.size(),
                                                      " target modules; the job asks for r=", want.r, " alpha=",
                                                      want.alpha, " rslora=", want.rslora, " and ",
                                                      want.targets.size()));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<EvalReport> Evaluate(const LlamaModel& model, const PreparedData& data, int64_t micro_batch,
                                    Communicator& comm, absl::Duration collective_timeout) {
  const absl::Time start = absl::Now();
  c10::AutoGradMode no_grad(false);
  double sums[3] = {0, 0, 0};  // Σ token losses, trained tokens, correct
  try {
    std::vector<int64_t> mine;
    for (int64_t r = comm.rank(); r < data.num_rows(); r += comm.world_size()) mine.push_back(r);
    for (size_t first = 0; first < mine.size(); first += static_cast<size_t>(micro_batch)) {
      std::vector<int64_t> rows(mine.begin() + first,
                                mine.begin() + std::min(mine.size(), first + static_cast<size_t>(micro_batch)));
      Batch batch = data.MakeBatch(rows, rows, model.embed_device());
      LlamaModel::LossSums s = model.Loss(model.Hidden(batch, nullptr), batch.targets, kDefaultLossChunkTokens,
                                          batch.trained);
      sums[0] += s.loss_sum.item<double>();
      sums[1] += static_cast<double>(s.tokens);
      sums[2] += s.correct.item<double>();
    }
  } catch (const std::exception& e) {
    return absl::InternalError(herd::StrCat("evaluating on ", data.path(), ": ", e.what()));
  }
  HERD_RETURN_IF_ERROR(comm.AllReduceSum(std::span<double>(sums), collective_timeout));
  EvalReport report;
  report.tokens = static_cast<int64_t>(sums[1]);
  report.eval_loss = sums[1] > 0 ? sums[0] / sums[1] : 0.0;
  report.token_accuracy = sums[1] > 0 ? sums[2] / sums[1] : 0.0;
  report.eval_seconds = Seconds(start);
  return report;
}

absl::Status Train(LlamaModel& model, const PreparedData& train, const PreparedData* validation, Communicator& comm,
                   const TrainConfig& config, const TrainCallbacks& cb) {
  const TrainingSpec& t = config.training;
  const int rank = comm.rank();
  const ShardShape shape = ShapeFor(config, train, comm.world_size());
  HERD_RETURN_IF_ERROR(shape.Validate());
  int64_t total = config.total_steps;
  if (total <= 0) total = t.max_steps ? std::min(*t.max_steps, shape.TotalSteps()) : shape.TotalSteps();

  const nlohmann::json fingerprint = ResumeFingerprint(config, model);
  int64_t start_step = 0;
  if (!config.resume_dir.empty()) {
    // The adapter replaces the model's tensors, so it is loaded before the optimizer takes them.
    if (cb.on_phase) cb.on_phase("loading");
    HERD_ASSIGN_OR_RETURN(TrainerState resumed, ReadTrainerState(config.resume_dir, fingerprint));
    HERD_RETURN_IF_ERROR(LoadAdapter(model, config.resume_dir));
    start_step = resumed.step;
  } else if (!config.init_adapter_dir.empty()) {
    HERD_RETURN_IF_ERROR(LoadInitialAdapter(model, config.init_adapter_dir));
  }
  const std::vector<at::Tensor> params = model.LoraParameters();
  HERD_ASSIGN_OR_RETURN(AdamW optimizer, AdamW::Create(params, AdamWOptions{.weight_decay = t.weight_decay}));
  if (!config.resume_dir.empty()) HERD_RETURN_IF_ERROR(LoadOptimizerState(config.resume_dir, optimizer));
  HERD_ASSIGN_OR_RETURN(const LrSchedule schedule,
                        LrSchedule::Create(t.learning_rate, t.lr_scheduler, t.warmup_ratio, total));
  auto epoch_at = [&](int64_t steps) {
    return static_cast<double>(steps * t.global_batch_size) / static_cast<double>(train.num_rows());
  };
  auto checkpoint = [&](int64_t step, bool final) -> absl::Status {
    if (rank != 0) return absl::OkStatus();
    if (cb.on_phase) cb.on_phase("checkpointing");
    TrainerState state{.step = step, .total_steps = total, .epoch = epoch_at(step),
                       .generation = config.generation, .world_size = comm.world_size(), .fingerprint = fingerprint};
    HERD_ASSIGN_OR_RETURN(CheckpointReport report,
                          WriteCheckpoint(model, optimizer, state, config.model_name, config.checkpoint_root, final));
    if (cb.on_checkpoint) cb.on_checkpoint(report);
    return absl::OkStatus();
  };
  auto evaluate = [&](int64_t step) -> absl::Status {
    if (validation == nullptr) return absl::OkStatus();
    if (cb.on_phase) cb.on_phase("evaluating");
    HERD_ASSIGN_OR_RETURN(EvalReport report,
                          Evaluate(model, *validation, t.micro_batch_size, comm, config.collective_timeout));
    report.step = step;
    if (rank == 0 && cb.on_eval) cb.on_eval(report);
    return absl::OkStatus();
  };

  if (start_step == 0 && config.eval_every_steps > 0) HERD_RETURN_IF_ERROR(evaluate(0));  // the "before"
  if (cb.on_phase) cb.on_phase("training");
  for (int64_t step = start_step; step < total; ++step) {
    if (cb.cancelled && cb.cancelled()) return absl::CancelledError("cancelled");
    const absl::Time step_start = absl::Now();
    StepReport report;
    report.step = step + 1;
    report.total_steps = total;

    // 1. This rank's micro-batches, and the global count of trained tokens (the loss divisor).
    const std::vector<MicroBatch> plan = ShardForStep(shape, step, rank);
    double counts[1] = {0};
    for (const MicroBatch& mb : plan) counts[0] += static_cast<double>(train.TrainedTokens(mb.rows));
    HERD_RETURN_IF_ERROR(comm.AllReduceSum(std::span<double>(counts), config.collective_timeout));
    const double global_tokens = std::max(counts[0], 1.0);
    report.trained_tokens = static_cast<int64_t>(counts[0]);

    // 2. Forward, loss and backward per micro-batch; gradients accumulate in the parameters.
    double stats[2] = {0, 0};  // Σ token losses, Σ correct
    try {
      for (const at::Tensor& p : params) p.mutable_grad() = at::Tensor();
      for (const MicroBatch& mb : plan) {
        if (mb.rows.empty()) continue;
        const absl::Time wait = absl::Now();
        Batch batch = train.MakeBatch(mb.rows, mb.stream_positions, model.embed_device());
        report.data_wait_seconds += Seconds(wait);
        report.tokens += (batch.doc_ids >= 0).sum().item<int64_t>();
        const DropoutKey key{.seed = static_cast<uint64_t>(t.seed), .step = step};
        LlamaModel::LossSums sums = model.Loss(model.Hidden(batch, &key, t.activation_checkpointing),
                                               batch.targets, config.loss_chunk_tokens, batch.trained);
        (sums.loss_sum / global_tokens).backward();
        // Read after the backward is queued: the one wait of the micro-batch.
        stats[0] += sums.loss_sum.item<double>();
        stats[1] += sums.correct.item<double>();
      }
    } catch (const std::exception& e) {
      return absl::InternalError(herd::StrCat("step ", step + 1, ": ", e.what()));
    }

    // 3. One all-reduce of every LoRA gradient, then clip, AdamW and the schedule.
    const absl::Time reduce_start = absl::Now();
    at::Tensor flat = FlattenGrads(params);
    HERD_RETURN_IF_ERROR(comm.AllReduceSum(std::span<float>(flat.data_ptr<float>(), flat.numel()),
                                           config.collective_timeout));
    HERD_RETURN_IF_ERROR(comm.AllReduceSum(std::span<double>(stats), config.collective_timeout));
    report.allreduce_seconds = Seconds(reduce_start);
    UnflattenGrads(flat, params);

    report.loss = stats[0] / global_tokens;
    HERD_ASSIGN_OR_RETURN(report.grad_norm, ClipGradNorm(params, t.max_grad_norm));
    report.lr = schedule.LearningRate(step);
    report.epoch = epoch_at(step + 1);
    if (!std::isfinite(report.loss) || !std::isfinite(report.grad_norm)) {
      report.step_seconds = Seconds(step_start);
      if (cb.on_step) cb.on_step(report);
      return absl::OutOfRangeError(herd::StrCat("step ", step + 1, ": loss ", report.loss, ", gradient norm ",
                                                report.grad_norm, " (not finite)"));
    }
    HERD_RETURN_IF_ERROR(optimizer.Step(report.lr));
    report.step_seconds = Seconds(step_start);
    if (cb.on_step) cb.on_step(report);

    const bool last = step + 1 == total;
    if (!last && config.eval_every_steps > 0 && (step + 1) % config.eval_every_steps == 0) {
      HERD_RETURN_IF_ERROR(evaluate(step + 1));
    }
    if (!last && config.checkpoint_every_steps > 0 && (step + 1) % config.checkpoint_every_steps == 0) {
      HERD_RETURN_IF_ERROR(checkpoint(step + 1, /*final=*/false));
    }
    if (cb.on_phase && !last) cb.on_phase("training");
  }
  HERD_RETURN_IF_ERROR(evaluate(total));
  return checkpoint(total, /*final=*/true);
}

}  // namespace herd::engine
