// `herd datasets upload|list|get|delete`: the DatasetService calls behind the CLI's dataset
// commands (DESIGN.md §3 step 1). Each returns the process exit code (exit_codes.h) and prints
// for people, or the API objects as JSON with `json` set.
#ifndef HERD_CLI_DATASETS_COMMANDS_H_
#define HERD_CLI_DATASETS_COMMANDS_H_

#include <string>

#include "cli/client_config.h"

namespace herd::cli {

struct UploadOptions {
  std::string path;          // the JSONL file
  std::string name;          // dataset label; "" = the file's base name
  bool skip_invalid = false; // keep the valid records instead of rejecting the file
  int max_attempts = 6;      // streams tried (resuming from the committed offset) before giving up
};

// Streams the file in chunks, resuming from the server's committed offset when the connection
// breaks; prints the dataset id (or, for a rejected file, its problems by line: exit 2).
int UploadDataset(const ClientConfig& config, const UploadOptions& options, bool json);
// The same upload for `jobs submit` with a local path: reports to stderr only and gives the new
// dataset's id through `dataset_id`. Returns the exit code.
int UploadDatasetForJob(const ClientConfig& config, const UploadOptions& options, std::string* dataset_id);
int ListDatasets(const ClientConfig& config, bool json);
int GetDataset(const ClientConfig& config, const std::string& id, bool json);
int DeleteDataset(const ClientConfig& config, const std::string& id);

}  // namespace herd::cli

#endif  // HERD_CLI_DATASETS_COMMANDS_H_
