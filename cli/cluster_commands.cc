// ClusterService calls of the CLI.
#include "cli/cluster_commands.h"

#include <cstdio>
#include <iostream>
#include <vector>

#include "cli/call.h"
#include "cli/exit_codes.h"
#include "common/rpc/rpc.h"
#include "common/strings.h"
#include "herd/v1/cluster.grpc.pb.h"

namespace herd::cli {
namespace {

std::string StateName(herd::v1::TrainerState s) {
  switch (s) {
    case herd::v1::TRAINER_STATE_IDLE: return "idle";
    case herd::v1::TRAINER_STATE_BUSY: return "busy";
    case herd::v1::TRAINER_STATE_LOST: return "lost";
    default: return "-";
  }
}

}  // namespace

int ListTrainers(const ClientConfig& config, bool json) {
  auto channel = herd::rpc::MakeChannel({.target = config.endpoint, .ca_file = config.ca_file});
  if (!channel.ok()) return FailCall(nullptr, channel.status());
  auto stub = herd::v1::ClusterService::NewStub(*channel);
  herd::v1::ListTrainersRequest request;
  request.set_page_size(1000);
  std::vector<herd::v1::Trainer> all;
  do {
    grpc::ClientContext context;
    PrepareCall(config, &context);
    herd::v1::ListTrainersResponse page;
    absl::Status s = herd::rpc::FromGrpc(stub->ListTrainers(&context, request, &page));
    if (!s.ok()) return FailCall(&config, s);
    all.insert(all.end(), page.trainers().begin(), page.trainers().end());
    request.set_page_token(page.next_page_token());
  } while (!request.page_token().empty());
  if (json) {
    PrintJsonArray(all);
    return kOk;
  }
  std::printf("%-28s %-28s %-6s %-30s %s\n", "ID", "NAME", "STATE", "MODELS", "JOB");
  for (const auto& t : all) {
    std::printf("%-28s %-28s %-6s %-30s %s\n", t.id().c_str(), t.name().c_str(), StateName(t.state()).c_str(),
                herd::StrJoin(t.models(), ",").c_str(), t.job_id().empty() ? "-" : t.job_id().c_str());
  }
  return kOk;
}

int ListModels(const ClientConfig& config, bool json) {
  auto channel = herd::rpc::MakeChannel({.target = config.endpoint, .ca_file = config.ca_file});
  if (!channel.ok()) return FailCall(nullptr, channel.status());
  auto stub = herd::v1::ClusterService::NewStub(*channel);
  herd::v1::ListModelsRequest request;
  request.set_page_size(1000);
  std::vector<herd::v1::Model> all;
  do {
    grpc::ClientContext context;
    PrepareCall(config, &context);
    herd::v1::ListModelsResponse page;
    absl::Status s = herd::rpc::FromGrpc(stub->ListModels(&context, request, &page));
    if (!s.ok()) return FailCall(&config, s);
    all.insert(all.end(), page.models().begin(), page.models().end());
    request.set_page_token(page.next_page_token());
  } while (!request.page_token().empty());
  if (json) {
    PrintJsonArray(all);
    return kOk;
  }
  std::printf("%-32s %-10s %s\n", "MODEL", "TRAINERS", "WEIGHTS SHA256");
  for (const auto& m : all) {
    std::printf("%-32s %-10d %s\n", m.name().c_str(), m.trainer_ids_size(), m.weights_sha256().c_str());
  }
  return kOk;
}

}  // namespace herd::cli
