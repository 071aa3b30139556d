// `herd trainers list` and `herd models list`: the cluster as the coordinator sees it.
#ifndef HERD_CLI_CLUSTER_COMMANDS_H_
#define HERD_CLI_CLUSTER_COMMANDS_H_

#include "cli/client_config.h"

namespace herd::cli {

int ListTrainers(const ClientConfig& config, bool json);
int ListModels(const ClientConfig& config, bool json);

}  // namespace herd::cli

#endif  // HERD_CLI_CLUSTER_COMMANDS_H_
