// herd: the command users run (DESIGN.md §1, §11 for exit codes).
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "cli/adapters_commands.h"
#include "cli/client_config.h"
#include "cli/cluster_commands.h"
#include "cli/datasets_commands.h"
#include "cli/datasets_inspect.h"
#include "cli/exit_codes.h"
#include "cli/jobs_commands.h"
#include "cli/jobs_watch.h"
#include "common/rpc/rpc.h"
#include "common/job_spec.h"
#include "datasets/records.h"

extern char** environ;

namespace {

using herd::cli::kInvalid;
using herd::cli::kNotFound;
using herd::cli::kOk;
using herd::cli::kUnavailable;
using herd::cli::kUsage;

int ValidateDataset(const std::string& path, bool skip_invalid) {
  std::ifstream in(path);
  if (!in) {
    std::cerr << "herd: cannot open " << path << "\n";
    return kNotFound;
  }
  herd::datasets::ValidationOptions options{.skip_invalid = skip_invalid};
  herd::datasets::ValidationReport report = herd::datasets::ValidateJsonl(in, options);
  for (const auto& p : report.problems) std::cerr << path << ": " << herd::datasets::DescribeProblem(p) << "\n";
  if (report.invalid > static_cast<int64_t>(report.problems.size())) {
    std::cerr << path << ": ... and " << report.invalid - static_cast<int64_t>(report.problems.size())
              << " more invalid records\n";
  }
  std::cout << path << ": " << report.accepted << " valid records"
            << (report.format ? " (" + std::string(herd::datasets::FormatName(*report.format)) + ")" : "") << ", "
            << report.invalid << " invalid";
  if (!report.ok(options)) {
    std::cout << (report.accepted == 0 ? "; no usable records" : "; the file would be rejected whole (use --skip-invalid to keep the valid records)")
              << "\n";
    return kInvalid;
  }
  std::cout << (report.invalid > 0 ? "; invalid records would be dropped\n" : "\n");
  return kOk;
}

int ValidateJob(const std::string& path) {
  auto spec = herd::LoadJobSpec(path);
  if (!spec.ok()) {
    std::cerr << "herd: " << spec.status().message() << "\n";
    return spec.status().code() == absl::StatusCode::kNotFound ? kNotFound : kInvalid;
  }
  if (absl::Status s = spec->Validate(); !s.ok()) {
    std::cerr << "herd: " << path << ": " << s.message() << "\n";
    return kInvalid;
  }
  std::cout << herd::JobSpecToYaml(*spec);
  return kOk;
}

absl::StatusOr<herd::cli::ClientConfig> ClientConfigFromEverywhere(const std::string& endpoint,
                                                                   const std::string& token,
                                                                   const std::string& config) {
  herd::cli::ClientConfigInputs in{endpoint, token, config, {}};
  for (char** e = environ; *e; ++e) {
    std::string kv(*e);
    size_t eq = kv.find('=');
    if (eq != std::string::npos) in.env[kv.substr(0, eq)] = kv.substr(eq + 1);
  }
  return herd::cli::ResolveClientConfig(in);
}

int Status(const herd::cli::ClientConfig& c) {
  auto channel = herd::rpc::MakeChannel({.target = c.endpoint, .ca_file = c.ca_file});
  if (!channel.ok()) {
    std::cerr << "herd: " << c.source << ": " << channel.status().message() << "\n";
    return kUsage;
  }
  absl::Status health = herd::rpc::CheckHealth(**channel, c.endpoint, absl::Seconds(10));
  if (!health.ok()) {
    std::cerr << "herd: " << health.message() << " (endpoint from " << c.source << ")\n";
    return kUnavailable;
  }
  std::cout << "coordinator at " << c.endpoint << ": serving\n";
  return kOk;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"herd: fine-tune LLaMA models with LoRA on your own Herd cluster."};
  app.set_version_flag("--version", std::string("herd ") + HERD_VERSION);
  app.require_subcommand(1);
  app.fallthrough();  // global options (--output, --token, ...) also after the subcommand
  std::string endpoint, token, config;
  app.add_option("--endpoint", endpoint, "Coordinator address host:port (or HERD_ENDPOINT, or ~/.config/herd/config.yaml)");
  app.add_option("--token", token, "Bearer token (or HERD_TOKEN)");
  app.add_option("--config", config, "Client config file (default ~/.config/herd/config.yaml)");
  std::string output = "text";
  app.add_option("--output,-o", output, "Output format: text or json (the API objects)")
      ->check(CLI::IsMember({"text", "json"}));

  CLI::App* datasets = app.add_subcommand("datasets", "Datasets: check, upload, list, inspect, delete");
  datasets->require_subcommand(1);
  CLI::App* ds_validate = datasets->add_subcommand(
      "validate", "Check a JSONL file the way the coordinator will: lists problems by line and field");
  std::string ds_path;
  bool skip_invalid = false;
  ds_validate->add_option("FILE", ds_path, "JSONL dataset")->required();
  ds_validate->add_flag("--skip-invalid", skip_invalid, "Accept the file if some records are valid");
  CLI::App* ds_upload = datasets->add_subcommand(
      "upload", "Upload a JSONL file (resumable); prints the dataset id, or the problems by line");
  herd::cli::UploadOptions upload;
  ds_upload->add_option("FILE", upload.path, "JSONL dataset")->required();
  ds_upload->add_option("--name", upload.name, "Dataset label (default: the file name)");
  ds_upload->add_flag("--skip-invalid", upload.skip_invalid,
                      "Keep the valid records and drop invalid ones instead of rejecting the file");
  CLI::App* ds_list = datasets->add_subcommand("list", "List your datasets, newest first");
  std::string ds_id;
  CLI::App* ds_get = datasets->add_subcommand("get", "Show one dataset");
  ds_get->add_option("ID", ds_id, "Dataset id (ds_...)")->required();
  CLI::App* ds_delete = datasets->add_subcommand("delete", "Delete a dataset");
  ds_delete->add_option("ID", ds_id, "Dataset id (ds_...)")->required();
  CLI::App* ds_inspect = datasets->add_subcommand(
      "inspect", "Show the first records as a model sees them: tokens, trained tokens highlighted, counts");
  herd::cli::InspectOptions inspect;
  ds_inspect->add_option("ID_OR_FILE", inspect.target,
                         "Uploaded dataset id (ds_...) or a local JSONL file")->required();
  ds_inspect->add_option("--model", inspect.model,
                         "With an id: a model a trainer published (herd models list); with a file: a local "
                         "model directory (tokenizer.model or tokenizer.json)")->required();
  ds_inspect->add_option("-n", inspect.limit, "Records to show, from the first")
      ->capture_default_str()->check(CLI::Range(1, 100));
  ds_inspect->add_option("--format", inspect.format, "text|prompt_completion|chat|alpaca|tokenized|auto")
      ->capture_default_str()
      ->check(CLI::IsMember({"text", "prompt_completion", "chat", "alpaca", "tokenized", "auto"}));
  ds_inspect->add_option("--chat-template", inspect.chat_template, "llama2|llama3|auto")
      ->capture_default_str()->check(CLI::IsMember({"llama2", "llama3", "auto"}));
  ds_inspect->add_flag("--train-on-inputs", inspect.train_on_inputs, "Train on prompts and user turns too");
  ds_inspect->add_option("--max-seq-len", inspect.max_seq_len,
                         "Cut each example to this many tokens, as preparation does")->check(CLI::PositiveNumber);

  CLI::App* trainers = app.add_subcommand("trainers", "Trainer agents registered with the coordinator");
  trainers->require_subcommand(1);
  CLI::App* trainers_list = trainers->add_subcommand("list", "List trainers: state, models, current job");
  CLI::App* models = app.add_subcommand("models", "Base models the trainers hold");
  models->require_subcommand(1);
  CLI::App* models_list = models->add_subcommand("list", "List models and how many trainers hold each");

  CLI::App* jobs = app.add_subcommand("jobs", "Jobs: check, submit, list, inspect, watch, cancel");
  jobs->require_subcommand(1);
  CLI::App* job_validate = jobs->add_subcommand("validate", "Check a job file and print it with every default filled in");
  std::string job_path;
  job_validate->add_option("JOB_YAML", job_path, "Job file (DESIGN.md §11)")->required();
  CLI::App* job_submit = jobs->add_subcommand("submit", "Submit a job file; prints the job id");
  herd::cli::SubmitOptions submit;
  job_submit->add_option("JOB_YAML", submit.path, "Job file (DESIGN.md §11)")->required();
  job_submit->add_option("--dataset", submit.dataset, "Dataset id (overrides the file)");
  job_submit->add_option("--name", submit.name, "Job label (overrides the file)");
  job_submit->add_option("--base-model", submit.base_model, "Base model (overrides the file)");
  job_submit->add_flag("--dry-run", submit.dry_run,
                       "Prepare only: print records, tokens, sequences, packing efficiency and steps; create nothing");
  job_submit->add_option("--idempotency-key", submit.idempotency_key,
                         "Retry key: the same key and spec return the same job (default: a fresh random key)");
  CLI::App* job_list = jobs->add_subcommand("list", "List your jobs, newest first");
  std::vector<std::string> job_states;
  std::string job_name_prefix;
  job_list->add_option("--state", job_states, "Only jobs in this state (repeatable): validating, queued, ...");
  job_list->add_option("--name-prefix", job_name_prefix, "Only jobs whose name starts with this");
  std::string job_id, cancel_reason;
  CLI::App* job_get = jobs->add_subcommand("get", "Show one job");
  job_get->add_option("ID", job_id, "Job id (job_...)")->required();
  bool job_metrics = false;
  job_get->add_flag("--metrics", job_metrics, "Also print the loss history (a sparkline, then each step)");
  CLI::App* job_cancel = jobs->add_subcommand("cancel", "Cancel a job (final at once)");
  job_cancel->add_option("ID", job_id, "Job id (job_...)")->required();
  job_cancel->add_option("--reason", cancel_reason, "Note stored with the cancellation");
  CLI::App* job_events = jobs->add_subcommand("events", "List a job's events in order");
  job_events->add_option("ID", job_id, "Job id (job_...)")->required();
  CLI::App* job_watch = jobs->add_subcommand(
      "watch", "Follow a job live: events, step, loss, tokens/s; exits 0 SUCCEEDED, 6 FAILED/CANCELLED");
  job_watch->add_option("ID", job_id, "Job id (job_...)")->required();

  CLI::App* adapters = app.add_subcommand("adapters", "Adapters: list a job's checkpoints, download one");
  adapters->require_subcommand(1);
  std::string adapter_job;
  CLI::App* adapters_list = adapters->add_subcommand("list", "List a job's stored checkpoints by step");
  adapters_list->add_option("JOB", adapter_job, "Job id (job_...)")->required();
  CLI::App* adapters_download = adapters->add_subcommand(
      "download", "Download a PEFT adapter (resumable, sha256-verified); prints its folder");
  herd::cli::DownloadOptions download;
  adapters_download->add_option("JOB", download.job_id, "Job id (job_...)")->required();
  int64_t download_step = 0;
  CLI::Option* download_step_option = adapters_download->add_option(
      "--step", download_step, "Checkpoint step (default: the final adapter, else the newest checkpoint)");
  // Here -o is the destination (DESIGN.md §3.10); the output format stays --output.
  adapters_download->add_option("--out,-o", download.out_dir,
                                "Destination folder for adapter_config.json and adapter_model.safetensors")
      ->required();

  CLI::App* show_config = app.add_subcommand("config", "Show where this CLI connects and where that came from");
  CLI::App* status = app.add_subcommand("status", "Check that the coordinator is up and serving");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int rc = app.exit(e);
    return rc == 0 ? kOk : kUsage;
  }
  if (*ds_validate) return ValidateDataset(ds_path, skip_invalid);
  if (*ds_inspect) {
    return herd::cli::InspectDataset(
        inspect, [&] { return ClientConfigFromEverywhere(endpoint, token, config); }, output == "json",
        ::isatty(STDOUT_FILENO) == 1);
  }
  if (*job_validate) return ValidateJob(job_path);
  auto client = ClientConfigFromEverywhere(endpoint, token, config);
  if (!client.ok()) {
    std::cerr << "herd: " << client.status().message() << "\n";
    return kInvalid;
  }
  if (*status) return Status(*client);
  const bool json = output == "json";
  if (*ds_upload) return herd::cli::UploadDataset(*client, upload, json);
  if (*ds_list) return herd::cli::ListDatasets(*client, json);
  if (*ds_get) return herd::cli::GetDataset(*client, ds_id, json);
  if (*ds_delete) return herd::cli::DeleteDataset(*client, ds_id);
  if (*job_submit) return herd::cli::SubmitJob(*client, submit, json);
  if (*job_list) return herd::cli::ListJobs(*client, job_states, job_name_prefix, json);
  if (*job_get) return herd::cli::GetJob(*client, job_id, json, job_metrics);
  if (*job_cancel) return herd::cli::CancelJob(*client, job_id, cancel_reason, json);
  if (*job_events) return herd::cli::ListJobEvents(*client, job_id, json);
  if (*job_watch) return herd::cli::WatchJob(*client, {.id = job_id, .json = json});
  if (*adapters_list) return herd::cli::ListAdapters(*client, adapter_job, json);
  if (*adapters_download) {
    if (download_step_option->count() > 0) download.step = download_step;
    return herd::cli::DownloadAdapter(*client, download, json);
  }
  if (*trainers_list) return herd::cli::ListTrainers(*client, json);
  if (*models_list) return herd::cli::ListModels(*client, json);
  if (*show_config) {
    std::cout << "endpoint: " << client->endpoint << "  (from " << client->source << ")\ntoken: "
              << (client->token.empty() ? "(none)" : "(set)") << "\n";
    return kOk;
  }
  return kUsage;
}
