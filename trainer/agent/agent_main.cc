// herd-trainer: the agent process, one per GPU (DESIGN.md §1). Parses its configuration and
// checks the models it would publish at registration.
#include <iostream>

#include "CLI/CLI.hpp"
#include "common/rpc/rpc.h"
#include "common/status.h"
#include "nlohmann/json.hpp"
#include "trainer/agent/agent_config.h"
#include "trainer/agent/model_scan.h"

int main(int argc, char** argv) {
  CLI::App app{
      "herd-trainer: a Herd trainer agent. Registers with the coordinator, heartbeats, and runs\n"
      "one herd-engine per assignment on its device."};
  app.set_version_flag("--version", std::string("herd-trainer ") + HERD_VERSION);
  std::string config_path;
  herd::agent::AgentConfig flags;
  bool list_models = false;
  app.add_option("--config", config_path, "trainer.yaml (docs/configuration.md); flags override it")
      ->check(CLI::ExistingFile);
  auto* coordinator = app.add_option("--coordinator", flags.coordinator, "Coordinator gRPC address host:port");
  auto* models = app.add_option("--models", flags.models_dir, "Folder holding one Hugging Face model directory per model");
  auto* device = app.add_option("--device", flags.device, "cpu or cuda:N");
  bool check = false;
  app.add_flag("--list-models", list_models, "Check and list the models this trainer would publish, as JSON");
  app.add_flag("--check", check, "Check the models and that the coordinator answers, then exit");
  CLI11_PARSE(app, argc, argv);

  herd::agent::AgentConfig config;
  if (!config_path.empty()) {
    auto loaded = herd::agent::LoadAgentConfig(config_path);
    if (!loaded.ok()) {
      std::cerr << "herd-trainer: " << loaded.status().message() << "\n";
      return 2;
    }
    config = *loaded;
  }
  if (*coordinator) config.coordinator = flags.coordinator;
  if (*models) config.models_dir = flags.models_dir;
  if (*device) config.device = flags.device;
  if (absl::Status s = config.Validate(); !s.ok()) {
    std::cerr << "herd-trainer: " << s.message() << "\n";
    return 2;
  }
  auto found = herd::agent::ScanModels(config.models_dir);
  if (!found.ok()) {
    std::cerr << "herd-trainer: " << found.status().message() << "\n";
    return found.status().code() == absl::StatusCode::kNotFound ? 3 : 2;
  }
  if (list_models) {
    nlohmann::json out = nlohmann::json::array();
    for (const auto& m : *found) {
      out.push_back({{"name", m.name}, {"path", m.path}, {"layers", m.num_layers}, {"hidden_size", m.hidden_size},
                     {"heads", m.num_heads}, {"kv_heads", m.num_kv_heads}, {"vocab_size", m.vocab_size},
                     {"tokenizer", m.tokenizer}, {"weight_files", m.weight_files}});
    }
    std::cout << out.dump(2) << "\n";
    return 0;
  }
  auto channel = herd::rpc::MakeChannel({.target = config.coordinator, .ca_file = config.ca_file});
  if (!channel.ok()) {
    std::cerr << "herd-trainer: coordinator: " << channel.status().message() << "\n";
    return 2;
  }
  if (absl::Status s = herd::rpc::CheckHealth(**channel, config.coordinator, absl::Seconds(10)); !s.ok()) {
    std::cerr << "herd-trainer: " << s.message() << "\n";
    return 5;
  }
  std::cout << "herd-trainer: " << found->size() << " model(s) under " << config.models_dir << ", coordinator at "
            << config.coordinator << " is serving\n";
  if (check) return 0;
  std::cerr << "herd-trainer: registration with the coordinator is not built yet (cluster issue); "
               "use --list-models to check this trainer's models\n";
  return 1;
}
