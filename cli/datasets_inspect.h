// `herd datasets inspect ID|FILE --model M`: the first records as the model sees them, the
// rendered text split into tokens with the trained ones highlighted (DESIGN.md §4 loss masks),
// and per example and in total how many tokens there are and how many are trained.
//
// Two routes, because the CLI may not tokenise in its own process (libsentencepiece and gRPC's
// protobuf cannot share one, docs/toolchain.md):
//   - FILE + a local model directory: runs herd-prepare --dump-examples (installed beside herd)
//     as a child and reads what it writes;
//   - ID (an uploaded dataset) + a published model's name: DatasetService.InspectDataset, which
//     does the same at the coordinator.
// Both end in a herd.v1.InspectDatasetResponse, which RenderInspection prints.
#ifndef HERD_CLI_DATASETS_INSPECT_H_
#define HERD_CLI_DATASETS_INSPECT_H_

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "cli/client_config.h"
#include "herd/v1/datasets.pb.h"

namespace herd::cli {

struct InspectOptions {
  std::string target;                // dataset id (ds_...) or a local JSONL file
  std::string model;                 // a published model's name, or a local model directory
  int limit = 3;                     // records shown, from the first; 1..100
  std::string format = "auto";       // text|prompt_completion|chat|alpaca|tokenized|auto
  std::string chat_template = "auto";  // llama2|llama3|auto
  bool train_on_inputs = false;
  int64_t max_seq_len = 0;           // > 0: cut each example as preparation would
  std::string herd_prepare;          // "" = the herd-prepare installed beside this program
};

// How the tokens are shown.
struct RenderOptions {
  // ANSI colours (stdout is a terminal): tokens on alternating backgrounds, green when trained.
  // Without: tokens separated by "·", trained runs between "⟦" and "⟧".
  bool color = false;
};

// One example's tokens: `pieces` (the text of each token) and `trained` (one flag each) as text
// for a terminal or a file. A newline inside a piece shows as "↵" and breaks the line; other
// control characters as "<0xNN>", so data cannot drive the terminal.
std::string RenderTokens(const std::vector<std::string>& pieces, const std::vector<bool>& trained,
                         const RenderOptions& options);

// Every example with its header and counts, then the totals.
std::string RenderInspection(const herd::v1::InspectDatasetResponse& inspection,
                             const RenderOptions& options);

// herd-prepare --dump-examples --pieces output (one JSON object a line) as the RPC's answer.
// INVALID_ARGUMENT when a line is not what herd-prepare writes.
absl::StatusOr<herd::v1::InspectDatasetResponse> ParseExampleDump(std::string_view jsonl);

// Runs the command; returns the exit code (exit_codes.h). `config` is asked for only on the ID
// route (the FILE route needs no coordinator). `color` applies to text output.
int InspectDataset(const InspectOptions& options,
                   const std::function<absl::StatusOr<ClientConfig>()>& config, bool json, bool color);

}  // namespace herd::cli

#endif  // HERD_CLI_DATASETS_INSPECT_H_
