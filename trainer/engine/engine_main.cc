// herd-engine: the libtorch process an agent starts for one assignment (DESIGN.md §1). It links
// libtorch and NCCL and never gRPC or protobuf. This main only parses flags and dispatches.
#include <cstdlib>
#include <iostream>
#include <string>

#include "CLI/CLI.hpp"
#include "common/engine_protocol.h"
#include "common/job_spec.h"
#include "common/status.h"
#include "common/log.h"
#include "trainer/engine/engine_run.h"
#include "trainer/engine/model/adapter_io.h"
#include "trainer/engine/model/llama.h"
#include "trainer/engine/probe.h"

namespace {

int Fail(const absl::Status& status, int code) {
  std::cerr << "herd-engine: " << status.message() << "\n";
  return code;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "herd-engine: trains one rank of a Herd LoRA job with libtorch.\n"
      "Normally started by herd-trainer, which speaks the line protocol of\n"
      "proto/herd/v1/engine_protocol.md with it; the flags below are for operators."};
  app.set_version_flag("--version", std::string("herd-engine ") + HERD_VERSION);
  bool probe = false;
  std::string check_job;
  std::string smoke_device;
  std::string scratch = "/tmp/herd-engine-smoke";
  app.add_flag("--probe", probe, "Print libtorch/NCCL versions and devices as JSON");
  app.add_option("--check-job", check_job, "Parse and validate a job file (DESIGN.md §11), print it with defaults")
      ->check(CLI::ExistingFile);
  app.add_option("--smoke", smoke_device,
                 "Self-check a device (cpu or cuda:N): a matmul against a float64 reference, a one-rank "
                 "all-reduce through the device's communicator and its watchdog; prints JSON lines");
  app.add_option("--scratch", scratch, "Scratch folder for --smoke")->capture_default_str();
  double watchdog_seconds = 2;
  app.add_option("--smoke-watchdog", watchdog_seconds,
                 "With --smoke: the collective timeout of the watchdog check, a collective that never "
                 "completes (0 skips it)")
      ->capture_default_str();
  std::string merge_adapter, merge_model, merge_out;
  app.add_option("--merge-adapter", merge_adapter, "Fold this PEFT adapter into --model and write a full model to --out")
      ->check(CLI::ExistingDirectory);
  app.add_option("--model", merge_model, "Base model directory (with --merge-adapter)")->check(CLI::ExistingDirectory);
  app.add_option("--out", merge_out, "Output model directory (with --merge-adapter); must not exist");
  int protocol = 0;
  app.add_option("--protocol", protocol, "Speak this version of the agent protocol on stdin/stdout (what herd-trainer and herd-train use)");
  CLI11_PARSE(app, argc, argv);

  if (protocol != 0) {
    if (protocol != herd::kEngineProtocolVersion) {
      std::cerr << "herd-engine: protocol version " << protocol << " is not supported (only "
                << herd::kEngineProtocolVersion << ")\n";
      return 2;
    }
    return herd::engine::RunProtocol();
  }
  if (!merge_adapter.empty()) {
    if (merge_model.empty() || merge_out.empty()) {
      std::cerr << "herd-engine: --merge-adapter needs --model and --out\n";
      return 1;
    }
    auto model = herd::engine::LlamaModel::Load(merge_model, {});
    if (!model.ok()) return Fail(model.status(), 2);
    if (absl::Status s = herd::engine::LoadAdapter(**model, merge_adapter); !s.ok()) return Fail(s, 2);
    if (absl::Status s = herd::engine::SaveMerged(**model, merge_out); !s.ok()) return Fail(s, 1);
    std::cout << "merged model: " << merge_out << "\n";
    return 0;
  }
  if (probe) {
    std::cout << herd::engine::ProbeDevices().dump() << "\n";
    return 0;
  }
  if (!check_job.empty()) {
    auto spec = herd::LoadJobSpec(check_job);
    if (!spec.ok()) return Fail(spec.status(), 2);
    if (absl::Status s = spec->Validate(); !s.ok()) return Fail(herd::Annotate(s, check_job), 2);
    std::cout << herd::JobSpecToYaml(*spec);
    return 0;
  }
  if (!smoke_device.empty()) {
    bool ok = true;
    std::cout << herd::engine::ProbeDevices().dump() << std::endl;
    std::vector<std::string> dtypes = {"float32"};
    if (smoke_device != "cpu") dtypes.push_back("bfloat16");
    for (const std::string& dtype : dtypes) {
      auto m = herd::engine::CheckMatmul(smoke_device, dtype, 512);
      if (!m.ok()) return Fail(m.status(), 1);
      ok = ok && (*m)["ok"].get<bool>();
      std::cout << m->dump() << std::endl;
    }
    auto a = herd::engine::CheckAllReduceOneRank(smoke_device, scratch);
    if (!a.ok()) return Fail(a.status(), 1);
    ok = ok && (*a)["ok"].get<bool>();
    std::cout << a->dump() << std::endl;  // flushed: the watchdog check below may be killed
    if (watchdog_seconds > 0) {
      auto w = herd::engine::CheckWatchdog(smoke_device, scratch, absl::Seconds(watchdog_seconds));
      if (!w.ok()) w = nlohmann::json{{"check", "watchdog"}, {"ok", false}, {"error", w.status().ToString()}};
      ok = ok && (*w)["ok"].get<bool>();
      std::cout << w->dump() << std::endl;
    }
    return ok ? 0 : 1;
  }
  std::cerr << "herd-engine: nothing to do; herd-trainer runs it with --protocol=1 (see --help)\n";
  return 2;
}
