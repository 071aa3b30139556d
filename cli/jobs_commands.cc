// `herd jobs ...`: see jobs_commands.h.
#include "cli/jobs_commands.h"

#include <cctype>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <random>
#include <sstream>

#include <grpcpp/grpcpp.h>

#include "absl/time/time.h"
#include "cli/call.h"
#include "cli/datasets_commands.h"
#include "cli/exit_codes.h"
#include "cli/jobs_watch.h"
#include "common/rpc/job_spec_proto.h"
#include "common/rpc/rpc.h"
#include "common/strings.h"
#include "herd/v1/jobs.grpc.pb.h"
#include "yaml-cpp/yaml.h"

namespace herd::cli {
namespace {

// A connected stub plus what every call carries.
struct Client {
  ClientConfig config;
  std::unique_ptr<herd::v1::JobService::Stub> stub;

  void Prepare(grpc::ClientContext* context) const { PrepareCall(config, context, kCallDeadline); }
};

absl::StatusOr<Client> Connect(const ClientConfig& config) {
  auto channel = herd::rpc::MakeChannel({.target = config.endpoint, .ca_file = config.ca_file});
  if (!channel.ok()) return channel.status();
  return Client{config, herd::v1::JobService::NewStub(*channel)};
}

int Fail(const Client* client, const absl::Status& status) {
  return FailCall(client ? &client->config : nullptr, status);
}

// 1-based line of the dotted `field` ("training.max_seq_len") under `node`; 0 when the file
// does not set it. (Recursion, not assignment: YAML::Node's operator= writes through.)
int FieldLine(const YAML::Node& node, std::string_view field) {
  if (!node.IsMap()) return 0;
  const size_t dot = field.find('.');
  const YAML::Node child = node[std::string(field.substr(0, dot))];
  if (!child.IsDefined()) return 0;
  if (dot == std::string_view::npos) return child.Mark().line + 1;
  return FieldLine(child, field.substr(dot + 1));
}

int FieldLine(const std::string& text, std::string_view field) {
  try {
    const YAML::Node root = YAML::Load(text);
    return FieldLine(root, field);
  } catch (const YAML::Exception&) {
    return 0;
  }
}

std::string RandomKey() {
  std::random_device rd;
  std::string key = "cli-";
  static constexpr char kHex[] = "0123456789abcdef";
  for (int i = 0; i < 32; ++i) key += kHex[rd() % 16];
  return key;
}

std::string TimeText(const google::protobuf::Timestamp& t) {
  return absl::FormatTime("%Y-%m-%d %H:%M:%S UTC", absl::FromUnixSeconds(t.seconds()),
                          absl::UTCTimeZone());
}

void PrintJob(const herd::v1::Job& j) {
  std::cout << "id:          " << j.id() << "\nname:        " << j.spec().name()
            << "\nstate:       " << StateName(j.state()) << "\nbase_model:  " << j.spec().base_model()
            << "\ndataset:     " << j.spec().dataset_id() << "\ncreated:     " << TimeText(j.create_time())
            << "\nupdated:     " << TimeText(j.update_time()) << "\n";
  if (j.has_end_time()) std::cout << "ended:       " << TimeText(j.end_time()) << "\n";
  if (j.progress().total_steps() > 0) {
    std::cout << "step:        " << j.progress().step() << " / " << j.progress().total_steps() << "\n";
  }
  if (j.has_failure()) {
    std::cout << "failure:     " << j.failure().code() << ": " << j.failure().message() << "\n";
  }
}

}  // namespace

absl::StatusOr<JobSpec> LoadSubmission(const SubmitOptions& options) {
  std::ifstream in(options.path, std::ios::binary);
  if (!in) return absl::NotFoundError(StrCat("cannot open ", options.path));
  std::stringstream buffer;
  buffer << in.rdbuf();
  const std::string text = buffer.str();
  auto spec = ParseJobSpec(text, options.path);
  if (!spec.ok()) return absl::InvalidArgumentError(spec.status().message());
  if (!options.dataset.empty()) spec->dataset = options.dataset;
  if (!options.name.empty()) spec->name = options.name;
  if (!options.base_model.empty()) spec->base_model = options.base_model;
  if (absl::Status s = spec->Validate(); !s.ok()) {
    // Validate says "field: reason"; point at the field's line when the file set it.
    const std::string message(s.message());
    const std::string field = message.substr(0, message.find(':'));
    const bool from_flag = (field == "dataset" && !options.dataset.empty()) ||
                           (field == "name" && !options.name.empty()) ||
                           (field == "base_model" && !options.base_model.empty());
    const int line = from_flag ? 0 : FieldLine(text, field);
    return absl::InvalidArgumentError(
        line > 0 ? StrCat(options.path, ":", line, ": ", message) : StrCat(options.path, ": ", message));
  }
  return spec;
}

int SubmitJob(const ClientConfig& config, const SubmitOptions& options, bool json) {
  auto spec = LoadSubmission(options);
  if (!spec.ok()) return Fail(nullptr, spec.status());
  // DESIGN.md §11: `dataset` is an id, or a local path the CLI uploads first.
  for (std::string* field : {&spec->dataset, &spec->validation_dataset}) {
    std::error_code ec;
    if (field->empty() || field->rfind("ds_", 0) == 0 || !std::filesystem::is_regular_file(*field, ec)) continue;
    std::cerr << "herd: uploading " << *field << "\n";
    std::string id;
    if (int rc = UploadDatasetForJob(config, {.path = *field}, &id); rc != kOk) return rc;
    *field = id;
  }
  auto client = Connect(config);
  if (!client.ok()) return Fail(nullptr, client.status());
  herd::v1::CreateJobRequest request;
  rpc::JobSpecToProto(*spec, request.mutable_spec());
  request.set_idempotency_key(options.idempotency_key.empty() ? RandomKey() : options.idempotency_key);
  request.set_dry_run(options.dry_run);
  grpc::ClientContext context;
  // A dry run reads and tokenises the whole dataset at the coordinator.
  PrepareCall(client->config, &context, options.dry_run ? absl::Minutes(30) : kCallDeadline);
  herd::v1::Job job;
  absl::Status s = herd::rpc::FromGrpc(client->stub->CreateJob(&context, request, &job));
  if (!s.ok()) return Fail(&*client, s);
  if (options.dry_run && !json) {
    std::cout << DescribePlan(job.plan(), spec->training.max_seq_len);
    return kOk;
  }
  std::cout << (json ? MessageToJson(job) : job.id()) << "\n";
  return kOk;
}

std::string DescribePlan(const herd::v1::PreparationPlan& p, int64_t max_seq_len) {
  std::ostringstream out;
  out << "format:             " << herd::v1::RecordFormat_Name(p.format()) << "\n";
  if (p.chat_template() != herd::v1::CHAT_TEMPLATE_UNSPECIFIED) {
    out << "chat template:      " << herd::v1::ChatTemplate_Name(p.chat_template()) << "\n";
  }
  out << "records:            " << p.records() << " for training (" << p.records_truncated() << " truncated, "
      << p.records_dropped() << " dropped), " << p.validation_records() << " for validation\n";
  out << "tokens:             " << p.tokens() << " (" << p.trained_tokens() << " trained)\n";
  out << "sequences:          " << p.sequences() << " of " << max_seq_len << " tokens ("
      << p.validation_sequences() << " for validation)\n";
  char efficiency[32];
  std::snprintf(efficiency, sizeof(efficiency), "%.1f%%", 100.0 * p.packing_efficiency());
  out << "packing efficiency: " << efficiency << "\n";
  out << "steps per epoch:    " << p.steps_per_epoch() << "\n";
  out << "total steps:        " << p.total_steps() << " on " << p.world_size() << " trainer(s), "
      << p.grad_accum_steps() << " micro-batches accumulated per step\n";
  for (const std::string& w : p.warnings()) out << "warning: " << w << "\n";
  return out.str();
}

int ListJobs(const ClientConfig& config, const std::vector<std::string>& states,
             const std::string& name_prefix, bool json) {
  herd::v1::ListJobsRequest request;
  request.set_page_size(1000);
  request.set_name_prefix(name_prefix);
  for (const std::string& s : states) {
    std::string upper;
    for (char c : s) upper += static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    if (upper.rfind("JOB_STATE_", 0) != 0) upper = "JOB_STATE_" + upper;
    herd::v1::JobState state;
    if (!herd::v1::JobState_Parse(upper, &state) || state == herd::v1::JOB_STATE_UNSPECIFIED) {
      std::cerr << "herd: --state " << s << " is not a job state (validating, queued, running, "
                << "recovering, publishing, succeeded, failed, cancelled)\n";
      return kUsage;
    }
    request.add_states(state);
  }
  auto client = Connect(config);
  if (!client.ok()) return Fail(nullptr, client.status());
  std::vector<herd::v1::Job> all;
  do {
    grpc::ClientContext context;
    client->Prepare(&context);
    herd::v1::ListJobsResponse page;
    absl::Status s = herd::rpc::FromGrpc(client->stub->ListJobs(&context, request, &page));
    if (!s.ok()) return Fail(&*client, s);
    for (const auto& j : page.jobs()) all.push_back(j);
    request.set_page_token(page.next_page_token());
  } while (!request.page_token().empty());
  if (json) {
    PrintJsonArray(all);
    return kOk;
  }
  std::printf("%-32s %-24s %-12s %-20s %s\n", "ID", "NAME", "STATE", "BASE_MODEL", "CREATED");
  for (const auto& j : all) {
    std::printf("%-32s %-24s %-12s %-20s %s\n", j.id().c_str(), j.spec().name().c_str(),
                StateName(j.state()).c_str(), j.spec().base_model().c_str(),
                TimeText(j.create_time()).c_str());
  }
  return kOk;
}

int GetJob(const ClientConfig& config, const std::string& id, bool json, bool metrics) {
  auto client = Connect(config);
  if (!client.ok()) return Fail(nullptr, client.status());
  grpc::ClientContext context;
  client->Prepare(&context);
  herd::v1::GetJobRequest request;
  request.set_id(id);
  request.set_include_loss_history(metrics);
  herd::v1::Job job;
  absl::Status s = herd::rpc::FromGrpc(client->stub->GetJob(&context, request, &job));
  if (!s.ok()) return Fail(&*client, s);
  if (json) {
    std::cout << MessageToJson(job) << "\n";
    return kOk;
  }
  PrintJob(job);
  if (metrics) std::cout << DescribeLossHistory(job);
  return kOk;
}

std::string DescribeLossHistory(const herd::v1::Job& job) {
  if (job.loss_history_size() == 0) return "loss history: none yet\n";
  std::vector<double> losses;
  for (const herd::v1::LossPoint& p : job.loss_history()) losses.push_back(p.loss());
  std::ostringstream out;
  out << "loss history (" << losses.size() << " steps): " << Sparkline(losses, 60) << "\n";
  char line[64];
  for (const herd::v1::LossPoint& p : job.loss_history()) {
    std::snprintf(line, sizeof(line), "  step %6lld  loss %.4f\n", static_cast<long long>(p.step()), p.loss());
    out << line;
  }
  return out.str();
}

int CancelJob(const ClientConfig& config, const std::string& id, const std::string& reason, bool json) {
  auto client = Connect(config);
  if (!client.ok()) return Fail(nullptr, client.status());
  grpc::ClientContext context;
  client->Prepare(&context);
  herd::v1::CancelJobRequest request;
  request.set_id(id);
  request.set_reason(reason);
  herd::v1::Job job;
  absl::Status s = herd::rpc::FromGrpc(client->stub->CancelJob(&context, request, &job));
  if (!s.ok()) return Fail(&*client, s);
  if (json) {
    std::cout << MessageToJson(job) << "\n";
  } else {
    std::cout << job.id() << ": " << StateName(job.state()) << "\n";
  }
  return kOk;
}

int ListJobEvents(const ClientConfig& config, const std::string& id, bool json) {
  auto client = Connect(config);
  if (!client.ok()) return Fail(nullptr, client.status());
  herd::v1::ListJobEventsRequest request;
  request.set_job_id(id);
  request.set_page_size(1000);
  std::vector<herd::v1::JobEvent> all;
  do {
    grpc::ClientContext context;
    client->Prepare(&context);
    herd::v1::ListJobEventsResponse page;
    absl::Status s = herd::rpc::FromGrpc(client->stub->ListJobEvents(&context, request, &page));
    if (!s.ok()) return Fail(&*client, s);
    for (const auto& e : page.events()) all.push_back(e);
    request.set_page_token(page.next_page_token());
  } while (!request.page_token().empty());
  if (json) {
    PrintJsonArray(all);
    return kOk;
  }
  std::printf("%5s  %-23s  %-16s  %s\n", "SEQ", "TIME", "TYPE", "MESSAGE");
  for (const auto& e : all) {
    std::printf("%5lld  %-23s  %-16s  %s\n", static_cast<long long>(e.sequence()),
                TimeText(e.time()).c_str(), EventTypeName(e.type()).c_str(), e.message().c_str());
  }
  return kOk;
}

}  // namespace herd::cli
