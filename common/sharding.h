// Which sequences each rank trains on at each step (DESIGN.md §4): a pure function of
// (seed, step, rank, world size, batch shape) over a seeded global order, so any world size sees
// the same global batch, a resumed job continues exactly where it stopped, and the coordinator
// can compute what an engine will read.
//
// The global stream is the concatenation of per-epoch permutations of [0, num_sequences); step s
// covers stream positions [s*G, (s+1)*G) (G = global batch, the last step may be short). Rank r
// of W takes the contiguous slots [r*G/W, (r+1)*G/W) of its step, cut into micro-batches.
#ifndef HERD_COMMON_SHARDING_H_
#define HERD_COMMON_SHARDING_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"

namespace herd {

struct ShardShape {
  int64_t num_sequences = 0;      // rows in the prepared data
  int64_t epochs = 1;
  int64_t global_batch = 8;       // sequences per optimiser step
  int64_t micro_batch = 1;        // sequences per forward on one rank
  int64_t world_size = 1;
  uint64_t seed = 42;

  // INVALID_ARGUMENT unless global_batch is a multiple of micro_batch * world_size, etc.
  absl::Status Validate() const;
  // Optimiser steps to see every sequence `epochs` times: ceil(epochs * N / G).
  int64_t TotalSteps() const;
  // Micro-batches per step on each rank: G / (M * W).
  int64_t GradAccum() const { return global_batch / (micro_batch * world_size); }
};

struct MicroBatch {
  std::vector<int64_t> rows;              // prepared-data row of each sequence (may be < M at the end)
  std::vector<int64_t> stream_positions;  // global index of each sequence (LoRA dropout keys on it)
};

// The micro-batches of `rank` at `step` (0-based). Empty micro-batches are kept so every rank
// runs the same number of collectives.
std::vector<MicroBatch> ShardForStep(const ShardShape& shape, int64_t step, int rank);

// The seeded permutation of [0, n) for one epoch (Fisher–Yates over splitmix64: the same on every
// machine and compiler).
std::vector<int64_t> EpochOrder(int64_t n, uint64_t seed, int64_t epoch);

}  // namespace herd

#endif  // HERD_COMMON_SHARDING_H_
