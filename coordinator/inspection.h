// Inspection of a stored dataset as a model sees it (`herd datasets inspect ID`,
// DatasetService.InspectDataset): the first records tokenised with a published model's tokenizer,
// templated and masked as preparation does it. Like preparation (preparation.h) it runs
// herd-prepare as a child (--dump-examples --limit --pieces) over links to the model's published
// files, because libsentencepiece may not share a process with gRPC/protobuf (docs/toolchain.md).
#ifndef HERD_COORDINATOR_INSPECTION_H_
#define HERD_COORDINATOR_INSPECTION_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "coordinator/store/dataset_store.h"
#include "datasets/example_dump.h"

namespace herd::coordinator {

namespace store {
class Store;
}

struct InspectorOptions {
  store::Store* store = nullptr;        // published models and blobs; not owned
  std::string herd_prepare;             // path of the herd-prepare program
  std::string work_dir;                 // scratch space for the model links and the dump
  absl::Duration timeout = absl::Minutes(2);  // one inspection, then herd-prepare is killed

  absl::Status Validate() const;
};

struct InspectRequest {
  std::string model;               // a published model's name
  int32_t limit = 3;               // records, from the first; at least 1
  std::string format;              // datasets/records.h name; "" = the dataset's
  std::string chat_template;       // "llama2" | "llama3"; "" = recognised from the model
  bool train_on_inputs = false;
  int64_t max_seq_len = 0;         // > 0: cut each example to this many tokens
};

// One record as the model sees it, and the whole answer (datasets/example_dump.h).
using InspectedExample = datasets::InspectedExample;
using Inspection = datasets::ExampleDump;

class Inspector {
 public:
  explicit Inspector(InspectorOptions options) : options_(std::move(options)) {}

  // Inspects `dataset` (already found for the caller's tenant). NOT_FOUND no published model of
  // that name; FAILED_PRECONDITION the model's chat template is not one Herd renders (chat
  // records, chat_template ""); INVALID_ARGUMENT bad options or records herd-prepare refuses
  // (its message, naming the line); DEADLINE_EXCEEDED past the timeout; INTERNAL otherwise.
  absl::StatusOr<Inspection> Inspect(const store::DatasetRecord& dataset,
                                     const InspectRequest& request) const;

 private:
  // Constant after construction.
  const InspectorOptions options_;
};

}  // namespace herd::coordinator

#endif  // HERD_COORDINATOR_INSPECTION_H_
