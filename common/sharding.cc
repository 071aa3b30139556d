// Deterministic global order and per-rank shards.
#include "common/sharding.h"

#include "common/strings.h"

namespace herd {
namespace {

uint64_t SplitMix(uint64_t& state) {
  uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

}  // namespace

absl::Status ShardShape::Validate() const {
  auto bad = [](std::string_view what) { return absl::InvalidArgumentError(std::string(what)); };
  if (num_sequences < 1) return bad("the prepared data holds no sequences");
  if (epochs < 1) return bad("epochs must be >= 1");
  if (micro_batch < 1 || world_size < 1 || global_batch < 1) return bad("batch sizes must be >= 1");
  if (global_batch % (micro_batch * world_size) != 0) {
    return absl::InvalidArgumentError(herd::StrCat("global batch ", global_batch, " is not a multiple of micro batch ",
                                                   micro_batch, " x world size ", world_size));
  }
  return absl::OkStatus();
}

int64_t ShardShape::TotalSteps() const {
  const int64_t total = epochs * num_sequences;
  return (total + global_batch - 1) / global_batch;
}

std::vector<int64_t> EpochOrder(int64_t n, uint64_t seed, int64_t epoch) {
  std::vector<int64_t> order(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) order[i] = i;
  uint64_t state = seed * 0x100000001b3ULL ^ static_cast<uint64_t>(epoch) * 0x9e3779b97f4a7c15ULL;
  for (int64_t i = n - 1; i > 0; --i) {
    // Multiply-shift maps 64 random bits onto [0, i] without modulo bias worth caring about here.
    const int64_t j = static_cast<int64_t>((static_cast<unsigned __int128>(SplitMix(state)) * (i + 1)) >> 64);
    std::swap(order[i], order[j]);
  }
  return order;
}

std::vector<MicroBatch> ShardForStep(const ShardShape& s, int64_t step, int rank) {
  const int64_t stream_end = s.epochs * s.num_sequences;
  const int64_t per_rank = s.global_batch / s.world_size;
  const int64_t first = step * s.global_batch + rank * per_rank;
  std::vector<MicroBatch> out(static_cast<size_t>(s.GradAccum()));
  int64_t cached_epoch = -1;
  std::vector<int64_t> order;
  for (int64_t k = 0; k < per_rank; ++k) {
    const int64_t pos = first + k;
    if (pos >= stream_end) break;
    const int64_t epoch = pos / s.num_sequences;
    if (epoch != cached_epoch) {
      order = EpochOrder(s.num_sequences, s.seed, epoch);
      cached_epoch = epoch;
    }
    MicroBatch& mb = out[static_cast<size_t>(k / s.micro_batch)];
    mb.rows.push_back(order[static_cast<size_t>(pos % s.num_sequences)]);
    mb.stream_positions.push_back(pos);
  }
  return out;
}

}  // namespace herd
