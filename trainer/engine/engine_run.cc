// The engine's session: hello, assignment, load, rendezvous, train, exit.
#include "trainer/engine/engine_run.h"

#include <signal.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <ATen/Parallel.h>
#include <torch/cuda.h>
#include <torch/version.h>

#include <atomic>
#include <filesystem>

#include "common/engine_protocol.h"
#include "common/log.h"
#include "common/status.h"
#include "common/strings.h"
#include "trainer/engine/device_info.h"
#include "trainer/engine/dist/tcp_communicator.h"
#include "trainer/engine/engine_channel.h"
#include "trainer/engine/model/flops.h"
#include "trainer/engine/train/trainer.h"
#ifdef HERD_WITH_NCCL
#include "trainer/engine/dist/nccl_communicator.h"
#endif

namespace herd::engine {
namespace {

std::atomic<bool> g_sigterm{false};
void OnSigterm(int) { g_sigterm = true; }

absl::StatusOr<std::unique_ptr<Communicator>> MakeCommunicator(const EngineAssignment& a, Rendezvous& rendezvous) {
  const absl::Duration timeout = absl::Seconds(a.collective_timeout_seconds);
  if (a.collective_backend == "nccl") {
#ifdef HERD_WITH_NCCL
    return NcclCommunicator::Create({.rank = a.rank, .world_size = a.world_size, .device = 0,
                                     .key = "nccl_unique_id", .init_timeout = timeout},
                                    rendezvous);
#else
    return absl::UnimplementedError("this herd-engine was built without NCCL");
#endif
  }
  return TcpCommunicator::Create({.rank = a.rank, .world_size = a.world_size, .generation = a.generation,
                                  .bind_host = a.bind_address, .advertise_host = a.advertise_address,
                                  .key = "cpu_group", .connect_timeout = timeout},
                                 rendezvous);
}

// Everything after the assignment; any error ends the session.
absl::Status Session(EngineChannel& channel, const EngineAssignment& a, int64_t* last_step) {
  auto phase = [&](const std::string& p) { channel.Send(ProtocolMessage("phase", {{"phase", p}})).IgnoreError(); };
  phase("loading");
  at::Device device(at::kCPU);
  try {
    device = at::Device(a.device);
  } catch (const std::exception&) {
    return absl::InvalidArgumentError(herd::StrCat("assignment: device '", a.device, "' is not cpu or cuda:N"));
  }
  if (device.is_cuda() && !torch::cuda::is_available()) return absl::FailedPreconditionError("no CUDA device visible");
  const bool bf16 = a.weights_dtype.empty() ? device.is_cuda() : a.weights_dtype == "bf16";
  LoadOptions load{.device = device, .dtype = bf16 ? at::kBFloat16 : at::kFloat};
  HERD_ASSIGN_OR_RETURN(auto model, LlamaModel::Load(a.model_dir, load));
  LoraOptions lora{.r = a.lora.r, .alpha = a.lora.alpha, .dropout = a.lora.dropout, .rslora = a.lora.rslora};
  for (const std::string& name : a.lora.ExpandedTargets()) lora.targets.push_back(*ProjFromName(name));
  HERD_RETURN_IF_ERROR(model->EnableLora(lora, static_cast<uint64_t>(a.training.seed)));
  HERD_ASSIGN_OR_RETURN(auto train, PreparedData::Open(a.train_data));
  std::unique_ptr<PreparedData> validation;
  if (!a.validation_data.empty()) {
    HERD_ASSIGN_OR_RETURN(validation, PreparedData::Open(a.validation_data));
  }

  phase("rendezvous");
  ChannelRendezvous rendezvous(channel);
  HERD_ASSIGN_OR_RETURN(auto comm, MakeCommunicator(a, rendezvous));

  TrainConfig config{.model_name = a.model_name, .lora = a.lora, .training = a.training,
                     .total_steps = a.total_steps, .eval_every_steps = a.eval_every_steps,
                     .checkpoint_every_steps = a.checkpoint_every_steps,
                     .checkpoint_root = a.scratch_dir + "/checkpoints", .resume_dir = a.resume_dir,
                     .init_adapter_dir = a.init_adapter_dir,
                     .generation = a.generation, .collective_timeout = absl::Seconds(a.collective_timeout_seconds)};
  if (a.training.activation_checkpointing) {
    HERD_LOG(Info) << "activation checkpointing: every decoder layer";
  }
  std::filesystem::create_directories(config.checkpoint_root);
  TrainCallbacks cb;
  cb.on_phase = phase;
  cb.cancelled = [&] { return channel.cancelled() || g_sigterm.load(); };
  // Model FLOPs utilisation against the GPU's dense bf16 peak; unknown on CPUs and unlisted GPUs.
  const double flops_per_token = TrainingFlopsPerToken(model->config(), a.training.max_seq_len, lora.r, lora.targets);
  const std::optional<double> peak_flops = device.is_cuda() ? PeakBf16Flops(DescribeDevice(a.device).name) : std::nullopt;
  TakeStepPeakMemory(a.device);  // the first step's peak starts here, after loading
  cb.on_step = [&](const StepReport& r) {
    *last_step = r.step;
    const int64_t memory = TakeStepPeakMemory(a.device);
    nlohmann::json mfu = nullptr;
    if (peak_flops && r.step_seconds > 0) mfu = flops_per_token * static_cast<double>(r.tokens) / r.step_seconds / *peak_flops;
    channel.Send(ProtocolMessage("progress", {
        {"step", r.step}, {"total_steps", r.total_steps}, {"epoch", r.epoch}, {"loss", r.loss}, {"lr", r.lr},
        {"grad_norm", r.grad_norm}, {"tokens", r.tokens}, {"trained_tokens", r.trained_tokens},
        {"step_seconds", r.step_seconds}, {"allreduce_seconds", r.allreduce_seconds},
        {"data_wait_seconds", r.data_wait_seconds},
        {"device_memory_bytes", memory >= 0 ? nlohmann::json(memory) : nlohmann::json(nullptr)}, {"mfu", mfu}}))
        .IgnoreError();
  };
  cb.on_eval = [&](const EvalReport& r) {
    channel.Send(ProtocolMessage("eval", {{"step", r.step}, {"eval_loss", r.eval_loss},
                                          {"token_accuracy", r.token_accuracy}, {"eval_seconds", r.eval_seconds}}))
        .IgnoreError();
  };
  cb.on_checkpoint = [&](const CheckpointReport& r) {
    nlohmann::json files = nlohmann::json::array();
    for (const CheckpointFile& f : r.files) {
      files.push_back({{"name", f.name}, {"size_bytes", f.size_bytes}, {"sha256", f.sha256}});
    }
    channel.Send(ProtocolMessage("checkpoint", {{"step", r.step}, {"final", r.final}, {"dir", r.dir}, {"files", files}}))
        .IgnoreError();
  };
  return Train(*model, *train, validation.get(), *comm, config, cb);
}

}  // namespace

int RunProtocol() {
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  ::signal(SIGTERM, OnSigterm);
  ::signal(SIGPIPE, SIG_IGN);
  auto channel_or = EngineChannel::Start();
  if (!channel_or.ok()) {
    HERD_LOG(Error) << channel_or.status().message();
    return 1;
  }
  EngineChannel& channel = **channel_or;
  const DeviceInfo dev = DescribeDevice(torch::cuda::is_available() ? "cuda:0" : "cpu");
  channel.Send(ProtocolMessage("hello", {{"engine_version", HERD_VERSION}, {"pid", ::getpid()},
                                         {"device", dev.kind}, {"device_name", dev.name},
                                         {"device_memory_bytes", dev.memory_bytes}, {"torch_version", TORCH_VERSION}}))
      .IgnoreError();

  int64_t step = 0;
  absl::Status status;
  absl::StatusOr<EngineAssignment> assignment = channel.WaitAssignment();
  if (!assignment.ok()) {
    status = assignment.status();
  } else {
    SetLogTag(herd::StrCat("[", assignment->job_id, " r", assignment->rank, "]"));
    step = assignment->resume_step.value_or(0);
    status = Session(channel, *assignment, &step);
  }
  std::string reason = "completed";
  if (absl::IsCancelled(status)) {
    reason = "cancelled";
  } else if (!status.ok()) {
    reason = absl::IsDeadlineExceeded(status) ? "watchdog" : "error";
    HERD_LOG(Error) << status.message();
    channel.Send(ProtocolMessage("error", {{"code", absl::StatusCodeToString(status.code())},
                                           {"message", std::string(status.message()).substr(0, 4096)}}))
        .IgnoreError();
  }
  channel.Send(ProtocolMessage("exit", {{"reason", reason}, {"step", step}})).IgnoreError();
  // Not fflush(nullptr): that takes stdin's lock, which the reader thread holds while it blocks in read.
  std::fflush(stdout);
  std::fflush(stderr);
  std::_Exit(reason == "completed" || reason == "cancelled" ? 0 : 1);
}

}  // namespace herd::engine
