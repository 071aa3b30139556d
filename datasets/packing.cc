// Best-fit packing of whole documents into fixed-length rows.
#include "datasets/packing.h"

#include <algorithm>
#include <set>
#include <utility>
#include <vector>

#include "common/strings.h"
#include "nlohmann/json.hpp"

namespace herd::datasets {
namespace {

// A document as placed: which example, and how many of its tokens are kept.
struct Placed {
  size_t example;
  int64_t length;
};

// Targets counted over the first `length` tokens (trained[0] never counts: nothing predicts it).
int64_t TrainedTargets(const Example& e, int64_t length) {
  return std::count(e.trained.begin() + 1, e.trained.begin() + length, uint8_t{1});
}

}  // namespace

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

absl::StatusOr<PreparedRows> Pack(std::span<const Example> examples, const PackingOptions& options,
                                  PackStats* stats) {
  if (absl::Status s = options.Validate(); !s.ok()) return s;
  const int64_t T = options.max_seq_len;
  PackStats st;
  st.examples = static_cast<int64_t>(examples.size());

  // Placement: rows as lists of documents; `open` orders rows by (room left, row index).
  std::vector<std::vector<Placed>> rows;
  std::vector<int64_t> room;
  std::set<std::pair<int64_t, size_t>> open;
  for (size_t e = 0; e < examples.size(); ++e) {
    const Example& ex = examples[e];
    if (ex.ids.size() != ex.trained.size()) {
      return absl::InvalidArgumentError(herd::StrCat(
          "example ", e, " has ", ex.ids.size(), " ids but ", ex.trained.size(), " trained flags"));
    }
    int64_t length = static_cast<int64_t>(ex.ids.size());
    if (length > T) {
      if (options.overflow == Overflow::kDrop) {
        ++st.dropped_too_long;
        continue;
      }
      ++st.truncated;
      length = T;
    }
    const int64_t trained = length == 0 ? 0 : TrainedTargets(ex, length);
    if (trained == 0) {
      ++st.dropped_untrained;
      continue;
    }
    ++st.documents;
    st.tokens += length;
    st.trained_tokens += trained;

    size_t r = rows.size();
    if (options.packing) {
      auto it = open.lower_bound({length, 0});
      if (it != open.end()) {
        r = it->second;
        open.erase(it);
      }
    }
    if (r == rows.size()) {
      rows.emplace_back();
      room.push_back(T);
    }
    rows[r].push_back({e, length});
    room[r] -= length;
    if (options.packing && room[r] > 0) open.insert({room[r], r});
  }

  // Layout.
  PreparedRows out;
  out.seq_len = T;
  out.rows = static_cast<int64_t>(rows.size());
  const size_t n = rows.size() * static_cast<size_t>(T);
  out.input_ids.assign(n, options.pad_id);
  out.targets.assign(n, kIgnoreTarget);
  out.position_ids.assign(n, 0);
  out.doc_ids.assign(n, kPadDocId);
  for (size_t r = 0; r < rows.size(); ++r) {
    size_t slot = r * static_cast<size_t>(T);
    for (size_t d = 0; d < rows[r].size(); ++d) {
      const Example& ex = examples[rows[r][d].example];
      const int64_t length = rows[r][d].length;
      for (int64_t i = 0; i < length; ++i, ++slot) {
        out.input_ids[slot] = ex.ids[i];
        out.position_ids[slot] = static_cast<int32_t>(i);
        out.doc_ids[slot] = static_cast<int32_t>(d);
        if (i + 1 < length && ex.trained[i + 1]) out.targets[slot] = ex.ids[i + 1];
      }
    }
  }
  st.sequences = out.rows;
  st.slots = static_cast<int64_t>(n);
  if (stats) *stats = st;
  return out;
}

}  // namespace herd::datasets
