// The output of `herd-prepare --dump-examples --pieces` (one JSON object a line: a record's line,
// token ids, their text pieces, trained flags, uncut length, or the template's error), read back
// by the programs that run herd-prepare as a child: the coordinator's InspectDataset and the
// CLI's local `herd datasets inspect FILE`.
#ifndef HERD_DATASETS_EXAMPLE_DUMP_H_
#define HERD_DATASETS_EXAMPLE_DUMP_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace herd::datasets {

// One record as the model sees it; ids, pieces and trained have one entry per token.
struct InspectedExample {
  int64_t line = 0;
  std::vector<int32_t> ids;
  std::vector<std::string> pieces;
  std::vector<bool> trained;
  int64_t length = 0;   // tokens before the max_seq_len cut
  std::string error;    // the template refused the record; the lists are empty
};

struct ExampleDump {
  std::string format;         // "chat", ... (records.h names), from the first line
  std::string chat_template;  // "llama2" | "llama3" for chat; "" otherwise
  std::vector<InspectedExample> examples;
};

// INVALID_ARGUMENT naming the line when the text is not what herd-prepare writes.
absl::StatusOr<ExampleDump> ParseExampleDump(std::string_view jsonl);

}  // namespace herd::datasets

#endif  // HERD_DATASETS_EXAMPLE_DUMP_H_
