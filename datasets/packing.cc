// Best-fit packing of whole documents into fixed-length rows.
#include "datasets/packing.h"

#include <algorithm>
#include <set>
#include <utility>
#include <vector>

#include "common/status.h"
#include "common/strings.h"
#include "nlohmann/json.hpp"

namespace herd::datasets {

std::string_view OverflowName(Overflow o) { return o == Overflow::kDrop ? "drop" : "truncate"; }

std::optional<Overflow> ParseOverflowName(std::string_view name) {
  if (name == "truncate") return Overflow::kTruncate;
  if (name == "drop") return Overflow::kDrop;
  return std::nullopt;
}

absl::Status PackingOptions::Validate() const {
  if (max_seq_len < 2) {
    return absl::InvalidArgumentError(
        herd::StrCat("max_seq_len must be at least 2, got ", max_seq_len));
  }
  if (max_seq_len > (int64_t{1} << 24)) {
    return absl::InvalidArgumentError(herd::StrCat("max_seq_len ", max_seq_len, " is too large"));
  }
  if (pad_id < 0)
    return absl::InvalidArgumentError(herd::StrCat("pad_id must be >= 0, got ", pad_id));
  return absl::OkStatus();
}

double PackStats::packing_efficiency() const {
  return slots == 0 ? 0.0 : static_cast<double>(tokens) / static_cast<double>(slots);
}

std::string PackStats::ToJson() const {
  nlohmann::ordered_json j = {
      {"examples", examples},
      {"documents", documents},
      {"tokens", tokens},
      {"trained_tokens", trained_tokens},
      {"sequences", sequences},
      {"slots", slots},
      {"truncated", truncated},
      {"dropped_too_long", dropped_too_long},
      {"dropped_untrained", dropped_untrained},
      {"packing_efficiency", packing_efficiency()},
  };
  return j.dump();
}

DocumentSize SizeOf(const Example& example, const PackingOptions& options) {
  const size_t kept =
      std::min({example.ids.size(), example.trained.size(),
                static_cast<size_t>(std::max<int64_t>(options.max_seq_len, 0))});
  DocumentSize size;
  size.tokens = static_cast<uint32_t>(std::min<size_t>(example.ids.size(), UINT32_MAX));
  if (kept > 1) {
    size.trained_targets = static_cast<uint32_t>(
        std::count(example.trained.begin() + 1, example.trained.begin() + kept, uint8_t{1}));
  }
  return size;
}

absl::StatusOr<PackPlan> PlanPacking(std::span<const DocumentSize> sizes,
                                     const PackingOptions& options, PackStats* stats) {
  if (absl::Status s = options.Validate(); !s.ok()) return s;
  if (sizes.size() >= UINT32_MAX) {
    return absl::InvalidArgumentError(herd::StrCat(sizes.size(), " documents are too many to pack"));
  }
  const int64_t T = options.max_seq_len;
  PackStats st;
  st.examples = static_cast<int64_t>(sizes.size());

  // Placement: each document's row; `open` orders rows by (room left, row index).
  constexpr uint32_t kNone = UINT32_MAX;
  std::vector<uint32_t> row_of(sizes.size(), kNone);
  std::vector<int64_t> room;
  std::set<std::pair<int64_t, uint32_t>> open;
  for (size_t d = 0; d < sizes.size(); ++d) {
    int64_t length = sizes[d].tokens;
    if (length > T) {
      if (options.overflow == Overflow::kDrop) {
        ++st.dropped_too_long;
        continue;
      }
      ++st.truncated;
      length = T;
    }
    const int64_t trained = length == 0 ? 0 : sizes[d].trained_targets;
    if (trained == 0) {
      ++st.dropped_untrained;
      continue;
    }
    ++st.documents;
    st.tokens += length;
    st.trained_tokens += trained;

    uint32_t r = static_cast<uint32_t>(room.size());
    if (options.packing) {
      auto it = open.lower_bound({length, 0});
      if (it != open.end()) {
        r = it->second;
        open.erase(it);
      }
    }
    if (r == room.size()) room.push_back(T);
    row_of[d] = r;
    room[r] -= length;
    if (options.packing && room[r] > 0) open.insert({room[r], r});
  }

  // Rows as runs of documents: a counting sort by row keeps each row's placement order.
  PackPlan plan;
  plan.seq_len = T;
  plan.row_begin.assign(room.size() + 1, 0);
  for (uint32_t r : row_of) {
    if (r != kNone) ++plan.row_begin[r + 1];
  }
  for (size_t r = 0; r < room.size(); ++r) plan.row_begin[r + 1] += plan.row_begin[r];
  plan.placed.resize(static_cast<size_t>(st.documents));
  std::vector<int64_t> cursor(plan.row_begin.begin(), plan.row_begin.end() - 1);
  for (size_t d = 0; d < sizes.size(); ++d) {
    if (row_of[d] == kNone) continue;
    const uint32_t length = static_cast<uint32_t>(std::min<int64_t>(sizes[d].tokens, T));
    plan.placed[cursor[row_of[d]]++] = {static_cast<uint32_t>(d), length};
  }
  st.sequences = plan.rows();
  st.slots = plan.rows() * T;
  if (stats) *stats = st;
  return plan;
}

absl::Status LayoutRows(const PackPlan& plan, int64_t first, int64_t last,
                        const PackingOptions& options, const DocumentSource& source,
                        PreparedRows* out) {
  if (first < 0 || last < first || last > plan.rows()) {
    return absl::InvalidArgumentError(
        herd::StrCat("rows [", first, ", ", last, ") are not in the plan's ", plan.rows()));
  }
  const int64_t T = plan.seq_len;
  const size_t n = static_cast<size_t>((last - first) * T);
  out->seq_len = T;
  out->rows = last - first;
  out->input_ids.assign(n, options.pad_id);
  out->targets.assign(n, kIgnoreTarget);
  out->position_ids.assign(n, 0);
  out->doc_ids.assign(n, kPadDocId);
  int32_t* ids = out->input_ids.data();
  int32_t* targets = out->targets.data();
  int32_t* positions = out->position_ids.data();
  int32_t* docs = out->doc_ids.data();
  for (int64_t r = first; r < last; ++r) {
    size_t slot = static_cast<size_t>((r - first) * T);
    for (int64_t k = plan.row_begin[r]; k < plan.row_begin[r + 1]; ++k) {
      const PackPlan::Placed& p = plan.placed[k];
      absl::StatusOr<DocumentTokens> doc = source(p.document);
      if (!doc.ok()) return doc.status();
      if (doc->ids.size() < p.length || doc->trained.size() < p.length) {
        return absl::InternalError(herd::StrCat("document ", p.document, " has fewer than the ",
                                                p.length, " tokens placed"));
      }
      const int32_t d = static_cast<int32_t>(k - plan.row_begin[r]);
      for (uint32_t i = 0; i < p.length; ++i, ++slot) {
        ids[slot] = doc->ids[i];
        positions[slot] = static_cast<int32_t>(i);
        docs[slot] = d;
        if (i + 1 < p.length && doc->trained[i + 1]) targets[slot] = doc->ids[i + 1];
      }
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<PreparedRows> Pack(std::span<const Example> examples, const PackingOptions& options,
                                  PackStats* stats) {
  if (absl::Status s = options.Validate(); !s.ok()) return s;
  std::vector<DocumentSize> sizes;
  sizes.reserve(examples.size());
  for (size_t e = 0; e < examples.size(); ++e) {
    const Example& ex = examples[e];
    if (ex.ids.size() != ex.trained.size()) {
      return absl::InvalidArgumentError(herd::StrCat(
          "example ", e, " has ", ex.ids.size(), " ids but ", ex.trained.size(), " trained flags"));
    }
    if (ex.ids.size() >= UINT32_MAX) {
      return absl::InvalidArgumentError(herd::StrCat("example ", e, " is too long to pack"));
    }
    sizes.push_back(SizeOf(ex, options));
  }
  PackStats st;
  HERD_ASSIGN_OR_RETURN(PackPlan plan, PlanPacking(sizes, options, &st));
  PreparedRows out;
  HERD_RETURN_IF_ERROR(LayoutRows(
      plan, 0, plan.rows(), options,
      [&](uint32_t d) -> absl::StatusOr<DocumentTokens> {
        return DocumentTokens{examples[d].ids, examples[d].trained};
      },
      &out));
  if (stats) *stats = st;
  return out;
}

}  // namespace herd::datasets
