// `herd adapters list|download`: the AdapterService calls behind the CLI's adapter commands
// (DESIGN.md §3.10, §11). Each returns the process exit code (exit_codes.h) and prints for
// people, or the API objects as JSON with `json` set.
//
// A download lands in a hidden folder beside the destination, `<parent>/.<name>.herd-partial`,
// which also holds the checkpoint it is fetching (`.herd-download`, JSON). A rerun resumes from
// the bytes already there, passing the recorded digest as if_sha256 so a checkpoint that changed
// meanwhile restarts the download instead of mixing bytes. Every file's sha256 and the manifest
// digest are checked before anything is moved to the destination; a file that fails its check
// is fetched again. Only whole, verified files ever appear at the destination.
#ifndef HERD_CLI_ADAPTERS_COMMANDS_H_
#define HERD_CLI_ADAPTERS_COMMANDS_H_

#include <cstdint>
#include <optional>
#include <string>

#include "cli/client_config.h"

namespace herd::cli {

struct DownloadOptions {
  std::string job_id;
  std::optional<int64_t> step;  // unset: the final adapter, or else the newest checkpoint
  std::string out_dir;          // destination folder; created (with its parents) when missing
  int max_attempts = 6;         // streams tried (resuming where the last one stopped) before giving up
  bool progress = true;         // a progress bar on stderr, when stderr is a terminal
};

// Name of the hidden folder a download into `out_dir` keeps its partial files in.
std::string PartialDirFor(const std::string& out_dir);

int ListAdapters(const ClientConfig& config, const std::string& job_id, bool json);
// Downloads, verifies and installs the adapter files into options.out_dir; prints that folder
// (or the Checkpoint as JSON with `json`). Exit 2 when the bytes fail verification every time.
int DownloadAdapter(const ClientConfig& config, const DownloadOptions& options, bool json);

}  // namespace herd::cli

#endif  // HERD_CLI_ADAPTERS_COMMANDS_H_
