// herd-train: fine-tune on one machine without a cluster. Prepares the data like the coordinator
// does, starts --nproc herd-engine processes (ranks on loopback, rendezvous in memory), prints a
// line per step and the eval loss before and after, and writes the PEFT adapter to <out>/adapter.
// It links the tokenizer but neither libtorch nor gRPC (docs/toolchain.md).
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <filesystem>
#include <iostream>

#include "CLI/CLI.hpp"
#include "common/engine_protocol.h"
#include "common/file_util.h"
#include "common/job_spec.h"
#include "common/sharding.h"
#include "common/status.h"
#include "common/strings.h"
#include "datasets/prepare.h"
#include "datasets/sentencepiece_tokenizer.h"
#include "trainer/agent/local_run.h"

namespace fs = std::filesystem;

namespace {

std::atomic<bool> g_interrupted{false};
void OnInterrupt(int) { g_interrupted = true; }

enum ExitCode { kOk = 0, kFailed = 1, kInvalid = 2, kInterrupted = 130 };

struct Flags {
  std::string model, data, validation_data, out, config, engine, resume, init_adapter, device = "cpu";
  std::string weights_dtype;  // "" = by device
  int nproc = 1, threads = 1;
  int64_t max_steps = 0, epochs = 0, global_batch = 0, micro_batch = 0, max_seq_len = 0, seed = -1;
  int64_t eval_every = -1, checkpoint_every = 0;
  double learning_rate = 0;
  bool activation_checkpointing = false;  // on; the job file's value otherwise
  bool verbose = false;
};

int Fail(const absl::Status& s, int code) {
  std::cerr << "herd-train: " << s.message() << "\n";
  return code;
}

std::string EngineBesideUs() {
  std::error_code ec;
  fs::path self = fs::read_symlink("/proc/self/exe", ec);
  return (self.parent_path() / "herd-engine").string();
}

absl::StatusOr<herd::datasets::PrepareResult> Prepare(const herd::datasets::Tokenizer& tokenizer, const std::string& data,
                                                      const herd::JobSpec& spec, double split, const std::string& out,
                                                      const std::string& validation_out) {
  herd::datasets::PrepareOptions p;
  if (spec.format != "auto") p.format = herd::datasets::ParseFormatName(spec.format);
  p.examples.train_on_inputs = spec.train_on_inputs;
  if (spec.chat_template == "llama2") p.examples.chat_template = herd::datasets::ChatTemplate::kLlama2;
  if (spec.chat_template == "llama3") p.examples.chat_template = herd::datasets::ChatTemplate::kLlama3;
  p.packing.max_seq_len = spec.training.max_seq_len;
  p.packing.packing = spec.training.packing;
  if (tokenizer.eos_id() >= 0) p.packing.pad_id = tokenizer.eos_id();
  p.validation_split = split;
  p.seed = static_cast<uint64_t>(spec.training.seed);
  p.output_path = out;
  p.validation_output_path = validation_out;
  return herd::datasets::PrepareJsonl(data, tokenizer, p);
}

int Run(const Flags& f) {
  // The job: defaults, then the job file, then flags.
  herd::JobSpec spec;
  if (!f.config.empty()) {
    auto loaded = herd::LoadJobSpec(f.config);
    if (!loaded.ok()) return Fail(loaded.status(), kInvalid);
    spec = *loaded;
  }
  const std::string model_dir = fs::absolute(f.model).lexically_normal().string();
  const std::string model_name = fs::path(model_dir).filename().string();
  spec.base_model = model_name;
  spec.dataset = f.data;
  spec.resources.trainers = f.nproc;
  if (f.max_steps > 0) spec.training.max_steps = f.max_steps;
  if (f.epochs > 0) spec.training.epochs = f.epochs;
  if (f.global_batch > 0) spec.training.global_batch_size = f.global_batch;
  if (f.micro_batch > 0) spec.training.micro_batch_size = f.micro_batch;
  if (f.max_seq_len > 0) spec.training.max_seq_len = f.max_seq_len;
  if (f.seed >= 0) spec.training.seed = f.seed;
  if (f.learning_rate > 0) spec.training.learning_rate = f.learning_rate;
  if (f.checkpoint_every > 0) spec.checkpoints.every_steps = f.checkpoint_every;
  if (f.activation_checkpointing) spec.training.activation_checkpointing = true;
  if (absl::Status s = spec.Validate(); !s.ok()) return Fail(s, kInvalid);

  const std::string work = fs::absolute(f.out).string() + "/work";
  std::error_code ec;
  fs::create_directories(work, ec);
  if (ec) return Fail(absl::UnavailableError(herd::StrCat("cannot create ", work, ": ", ec.message())), kFailed);

  // 1. Data, as the coordinator would prepare it.
  auto tokenizer = herd::datasets::LoadTokenizer(model_dir);
  if (!tokenizer.ok()) return Fail(tokenizer.status(), kInvalid);
  const std::string train_file = work + "/train.prepared", validation_file = work + "/validation.prepared";
  const double split = f.validation_data.empty() ? spec.validation_split : 0.0;
  auto prepared = Prepare(**tokenizer, f.data, spec, split, train_file, validation_file);
  if (!prepared.ok()) return Fail(prepared.status(), kInvalid);
  bool have_validation = prepared->wrote_validation;
  if (!f.validation_data.empty()) {
    auto v = Prepare(**tokenizer, f.validation_data, spec, 0.0, validation_file, "");
    if (!v.ok()) return Fail(v.status(), kInvalid);
    have_validation = true;
  }
  const auto& st = prepared->train;
  std::printf("data: %lld records (%lld for validation), %lld sequences of %lld tokens, %lld tokens trained, "
              "packing efficiency %.1f%%\n",
              static_cast<long long>(prepared->records), static_cast<long long>(prepared->validation_records),
              static_cast<long long>(st.sequences), static_cast<long long>(spec.training.max_seq_len),
              static_cast<long long>(st.trained_tokens), 100.0 * st.packing_efficiency());

  // 2. The schedule every rank follows.
  herd::ShardShape shape{.num_sequences = st.sequences, .epochs = spec.training.epochs,
                         .global_batch = spec.training.global_batch_size,
                         .micro_batch = spec.training.micro_batch_size, .world_size = f.nproc,
                         .seed = static_cast<uint64_t>(spec.training.seed)};
  if (absl::Status s = shape.Validate(); !s.ok()) return Fail(s, kInvalid);
  int64_t total = shape.TotalSteps();
  if (spec.training.max_steps) total = std::min(total, *spec.training.max_steps);

  herd::EngineAssignment a;
  a.job_id = "local";
  a.device = f.device;
  a.weights_dtype = f.weights_dtype;
  a.model_name = model_name;
  a.model_dir = model_dir;
  a.train_data = train_file;
  a.validation_data = have_validation ? validation_file : "";
  a.lora = spec.lora;
  a.training = spec.training;
  a.total_steps = total;
  a.steps_per_epoch = (st.sequences + spec.training.global_batch_size - 1) / spec.training.global_batch_size;
  a.grad_accum_steps = shape.GradAccum();
  a.eval_every_steps = f.eval_every >= 0 ? f.eval_every : total;
  a.checkpoint_every_steps = spec.checkpoints.every_steps;
  if (!f.resume.empty()) {
    a.resume_dir = fs::absolute(f.resume).string();
    a.resume_step = 0;  // the engine reads the real step from the checkpoint
  }
  if (!f.init_adapter.empty()) a.init_adapter_dir = fs::absolute(f.init_adapter).string();
  a.collective_backend = f.device == "cpu" ? "tcp" : "nccl";
  a.collective_timeout_seconds = 300;

  herd::agent::LocalRunOptions run{.engine_path = f.engine.empty() ? EngineBesideUs() : f.engine,
                                   .assignment = a, .nproc = f.nproc, .work_dir = work, .omp_threads = f.threads,
                                   .engine_logs_to_stderr = f.verbose, .interrupted = &g_interrupted};
  std::printf("training: %lld steps on %d rank(s), global batch %lld, lr %g (%s)%s\n", static_cast<long long>(total),
              f.nproc, static_cast<long long>(spec.training.global_batch_size), spec.training.learning_rate,
              spec.training.lr_scheduler.c_str(),
              spec.training.activation_checkpointing ? ", activation checkpointing" : "");
  double first_eval = -1, last_eval = -1;
  herd::agent::LocalRunCallbacks cb;
  cb.on_step = [&](const nlohmann::json& p) {
    const double seconds = p.value("step_seconds", 0.0);
    std::printf("step %lld/%lld  loss %.4f  lr %.3g  grad_norm %.3f  %.0f tokens/s\n",
                static_cast<long long>(p.value("step", int64_t{0})), static_cast<long long>(total),
                p["loss"].is_number() ? p["loss"].get<double>() : NAN, p.value("lr", 0.0),
                p["grad_norm"].is_number() ? p["grad_norm"].get<double>() : NAN,
                seconds > 0 ? static_cast<double>(p.value("tokens", int64_t{0})) / seconds : 0.0);
    std::fflush(stdout);
  };
  cb.on_eval = [&](const nlohmann::json& e) {
    const double loss = e["eval_loss"].is_number() ? e["eval_loss"].get<double>() : NAN;
    if (first_eval < 0) first_eval = loss;
    last_eval = loss;
    std::printf("eval after step %lld: loss %.4f, token accuracy %.3f\n",
                static_cast<long long>(e.value("step", int64_t{0})), loss, e.value("token_accuracy", 0.0));
    std::fflush(stdout);
  };
  cb.on_checkpoint = [&](const nlohmann::json& c) {
    if (!c.value("final", false)) std::printf("checkpoint: %s\n", c.value("dir", "").c_str());
  };
  auto result = herd::agent::RunLocal(run, cb);
  if (!result.ok()) return Fail(result.status(), absl::IsCancelled(result.status()) ? kInterrupted : kFailed);

  // 3. The adapter, in the PEFT layout, where the user asked.
  const std::string adapter = fs::absolute(f.out).string() + "/adapter";
  fs::create_directories(adapter, ec);
  for (const char* name : {"adapter_config.json", "adapter_model.safetensors"}) {
    auto bytes = herd::ReadFile(herd::StrCat(result->final_checkpoint_dir, "/", name));
    if (!bytes.ok()) return Fail(bytes.status(), kFailed);
    if (absl::Status s = herd::WriteFileAtomic(herd::StrCat(adapter, "/", name), *bytes); !s.ok()) return Fail(s, kFailed);
  }
  if (first_eval >= 0) std::printf("eval loss: %.4f before, %.4f after\n", first_eval, last_eval);
  std::printf("adapter: %s\n", adapter.c_str());
  std::printf("checkpoint with optimizer state (for --resume): %s\n", result->final_checkpoint_dir.c_str());
  return kOk;
}


// `herd-train export --merge`: the engine does the arithmetic (it links libtorch; this process
// does not), so it runs herd-engine --merge-adapter beside this binary.
int Export(const std::string& engine, const std::string& model, const std::string& adapter, const std::string& out) {
  const std::string engine_path = engine.empty() ? EngineBesideUs() : engine;
  pid_t pid = ::fork();
  if (pid == 0) {
    ::execl(engine_path.c_str(), engine_path.c_str(), "--merge-adapter", adapter.c_str(), "--model", model.c_str(),
            "--out", out.c_str(), static_cast<char*>(nullptr));
    std::perror(engine_path.c_str());
    ::_exit(127);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : kFailed;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"herd-train: LoRA fine-tuning of a LLaMA model on this machine.\n"
               "Example: herd-train --model models/tiny-llama --data datasets/samples/support_qa.jsonl --out out/run --nproc 2"};
  app.set_version_flag("--version", std::string("herd-train ") + HERD_VERSION);
  Flags f;
  app.add_option("--model", f.model, "Hugging Face model directory (config.json, safetensors, tokenizer)")->check(CLI::ExistingDirectory);
  app.add_option("--data", f.data, "Training data, JSONL (chat messages, prompt/completion, text, alpaca, tokenized)")->check(CLI::ExistingFile);
  app.add_option("--out", f.out, "Output folder: adapter/, work/ (prepared data, checkpoints, engine logs)");
  app.add_option("--config", f.config, "Job file (DESIGN.md §11); the flags below override it")->check(CLI::ExistingFile);
  app.add_option("--validation-data", f.validation_data, "Validation JSONL (default: hold out validation_split of --data)")->check(CLI::ExistingFile);
  app.add_option("--nproc", f.nproc, "Ranks (engine processes) on this machine")->capture_default_str()->check(CLI::Range(1, 64));
  app.add_option("--device", f.device, "cpu (cuda:N needs a CUDA build)")->capture_default_str();
  app.add_option("--threads", f.threads, "OMP threads per rank")->capture_default_str();
  app.add_option("--max-steps", f.max_steps, "Stop after this many optimiser steps");
  app.add_option("--epochs", f.epochs, "Passes over the data");
  app.add_option("--global-batch-size", f.global_batch, "Sequences per optimiser step (all ranks)");
  app.add_option("--micro-batch-size", f.micro_batch, "Sequences per forward pass on one rank");
  app.add_option("--max-seq-len", f.max_seq_len, "Tokens per packed sequence");
  app.add_option("--learning-rate", f.learning_rate, "Peak learning rate");
  app.add_option("--seed", f.seed, "Seed for order, split, LoRA init and dropout");
  app.add_option("--eval-every", f.eval_every, "Evaluate every N steps (default: before and after training)");
  app.add_option("--checkpoint-every", f.checkpoint_every, "Checkpoint every N steps (default: the job file's)");
  app.add_option("--weights-dtype", f.weights_dtype,
                 "Frozen weights in bf16 or fp32 (default: bf16 on CUDA, fp32 on CPU; bf16 on a CPU runs the "
                 "GPU's arithmetic, slowly)")
      ->check(CLI::IsMember({"bf16", "fp32"}));
  app.add_flag("--activation-checkpointing", f.activation_checkpointing,
               "Recompute each decoder layer in backward: less activation memory, about a third more compute, "
               "the same result (default: the job file's training.activation_checkpointing, else off)");
  app.add_option("--resume", f.resume, "Continue from a checkpoint folder (work/rank-0/checkpoints/step-N)")->check(CLI::ExistingDirectory);
  app.add_option("--init-adapter", f.init_adapter, "Start from this PEFT adapter (same r/alpha/targets as the job) with a fresh optimizer")
      ->check(CLI::ExistingDirectory);
  app.add_option("--engine", f.engine, "herd-engine binary (default: beside herd-train)");
  app.add_flag("--verbose", f.verbose, "Engine logs on stderr instead of work/rank-N/engine.stderr.log");
  CLI::App* export_cmd = app.add_subcommand("export", "Write a trained adapter in another form");
  bool merge = false;
  std::string export_model, export_adapter, export_out;
  export_cmd->add_flag("--merge", merge, "Fold the adapter into the base weights: a full Hugging Face model directory");
  export_cmd->add_option("--model", export_model, "Base model directory")->required()->check(CLI::ExistingDirectory);
  export_cmd->add_option("--adapter", export_adapter, "Adapter directory (out/adapter)")->required()->check(CLI::ExistingDirectory);
  export_cmd->add_option("--out", export_out, "New model directory (must not exist)")->required();
  export_cmd->add_option("--engine", f.engine, "herd-engine binary (default: beside herd-train)");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? kOk : 1;
  }
  struct sigaction sa {};
  sa.sa_handler = OnInterrupt;
  ::sigaction(SIGINT, &sa, nullptr);
  ::sigaction(SIGTERM, &sa, nullptr);
  if (*export_cmd) {
    if (!merge) {
      std::cerr << "herd-train export: say --merge (the only export so far: base + adapter as one model)\n";
      return 1;
    }
    return Export(f.engine, export_model, export_adapter, export_out);
  }
  for (const auto& [value, flag] : {std::pair{&f.model, "--model"}, {&f.data, "--data"}, {&f.out, "--out"}}) {
    if (value->empty()) {
      std::cerr << "herd-train: " << flag << " is required (see --help)\n";
      return 1;
    }
  }
  return Run(f);
}
