// Packing examples into fixed-length rows (DESIGN.md §4): documents longer than max_seq_len are
// truncated or dropped, then documents are placed whole into rows of exactly max_seq_len slots
// (several per row when packing, one per row otherwise) and the tail of each row is padded. Each
// document keeps its own positions and document index, so attention and RoPE see it alone, and
// its last token predicts nothing. Deterministic: the same examples give the same rows.
#ifndef HERD_DATASETS_PACKING_H_
#define HERD_DATASETS_PACKING_H_

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "datasets/examples.h"
#include "datasets/prepared.h"

namespace herd::datasets {

enum class Overflow { kTruncate, kDrop };  // what happens to a document over max_seq_len

std::string_view OverflowName(Overflow o);  // "truncate", "drop"
std::optional<Overflow> ParseOverflowName(std::string_view name);

struct PackingOptions {
  int64_t max_seq_len = 2048;               // slots per row; at least 2
  bool packing = true;                      // several documents per row
  Overflow overflow = Overflow::kTruncate;  // kTruncate keeps the first max_seq_len tokens
  int32_t pad_id = 0;                       // input id of padding slots (never a target)

  absl::Status Validate() const;
};

struct PackStats {
  int64_t examples = 0;           // examples given
  int64_t documents = 0;          // documents placed in rows
  int64_t tokens = 0;             // non-padding slots
  int64_t trained_tokens = 0;     // slots with a target (what the loss is averaged over)
  int64_t sequences = 0;          // rows
  int64_t slots = 0;              // sequences * max_seq_len
  int64_t truncated = 0;          // documents cut to max_seq_len
  int64_t dropped_too_long = 0;   // documents over max_seq_len dropped (Overflow::kDrop)
  int64_t dropped_untrained = 0;  // documents left with nothing to train on (e.g. truncation
                                  // cut off the whole completion), dropped

  double packing_efficiency() const;  // tokens / slots; 0 when there are no rows
  std::string ToJson() const;         // one JSON object with every field above
};

// Packs `examples` in order: each document goes into the open row with the least room that still
// fits it (best fit; the earliest such row on ties), else into a new row. Rows come out in the
// order they were opened, documents within a row in the order they were placed.
absl::StatusOr<PreparedRows> Pack(std::span<const Example> examples, const PackingOptions& options,
                                  PackStats* stats);

// Pack in two steps, for documents kept outside memory (prepare.cc): the placement needs only each
// document's size, the layout reads the tokens of a few rows at a time.

// What placement needs to know of a document.
struct DocumentSize {
  uint32_t tokens = 0;           // the example's length
  uint32_t trained_targets = 0;  // trained flags among its first min(tokens, max_seq_len)
                                 // tokens, the first token not counted (nothing predicts it)
};
DocumentSize SizeOf(const Example& example, const PackingOptions& options);

// Where every document goes. Rows are runs of `placed`, documents in placement order.
struct PackPlan {
  struct Placed {
    uint32_t document;  // index into the sizes given to PlanPacking
    uint32_t length;    // tokens kept (a truncated document keeps max_seq_len)
  };
  int64_t seq_len = 0;
  std::vector<Placed> placed;
  std::vector<int64_t> row_begin = {0};  // rows() + 1 offsets into placed

  int64_t rows() const { return static_cast<int64_t>(row_begin.size()) - 1; }
};

// Pack's placement, truncation, drops and figures; PackStats::sequences and slots included.
absl::StatusOr<PackPlan> PlanPacking(std::span<const DocumentSize> sizes,
                                     const PackingOptions& options, PackStats* stats);

// A document's first tokens, at least as many as the plan keeps of it.
struct DocumentTokens {
  std::span<const int32_t> ids;
  std::span<const uint8_t> trained;
};
using DocumentSource = std::function<absl::StatusOr<DocumentTokens>(uint32_t document)>;

// Lays out rows [first, last) of `plan` into `out` (replacing its contents): Pack's rows.
absl::Status LayoutRows(const PackPlan& plan, int64_t first, int64_t last,
                        const PackingOptions& options, const DocumentSource& source,
                        PreparedRows* out);

}  // namespace herd::datasets

#endif  // HERD_DATASETS_PACKING_H_
