// Deterministic LoRA dropout masks (DESIGN.md §4), made on the device of the tensor they apply to.
//
// Each mask element is a hash of (seed, step, global sequence index, layer, projection, position in
// the row): never of the rank, the packing or the device. The hash runs as integer tensor ops whose
// values never leave [0, 2^63) (32-bit words in int64, multiplied only by constants below 2^31), so
// CPU and CUDA compute the very same bits, and nothing is drawn on the host or copied per mask.
#ifndef HERD_TRAINER_ENGINE_MODEL_LORA_DROPOUT_H_
#define HERD_TRAINER_ENGINE_MODEL_LORA_DROPOUT_H_

#include <ATen/ATen.h>

#include <cstdint>
#include <vector>

namespace herd::engine {

// What the deterministic LoRA dropout masks depend on (DESIGN.md §4): never the rank.
struct DropoutKey {
  uint64_t seed = 0;
  int64_t step = 0;
};

// The 64-bit key of one row's mask at one (layer, projection). `sequence_id` is the row's global
// index in the data set.
uint64_t DropoutRowKey(const DropoutKey& key, int64_t sequence_id, int layer, int projection);

// The row keys of one forward, for every (layer, projection, row): [layers, projections, B, 2]
// int64 on `device`, the low and the high 32 bits of DropoutRowKey. Row b's sequence index is
// sequence_ids[b], or b where sequence_ids is shorter. Computed on the host: one copy of
// 16·layers·projections·B bytes per forward. Throws c10::Error.
at::Tensor DropoutKeyTable(const DropoutKey& key, const std::vector<int64_t>& sequence_ids, int64_t rows,
                           int layers, int projections, at::Device device);

// The keep mask of B rows of `tokens` × `features` elements: [B, tokens, features] bool, on
// row_keys' device (no host round trip). row_keys: [B, 2] int64, one slice of DropoutKeyTable.
// Element (t, f) of row b is kept when 16 bits of Hash(row key, t·⌈features/2⌉ + f/2) (the low
// half for even f, the high half for odd f) are below round(keep·2^16): keep is resolved to
// 1/65536. Throws c10::Error.
at::Tensor DropoutKeepMask(const at::Tensor& row_keys, int64_t tokens, int64_t features, double keep);

}  // namespace herd::engine

#endif  // HERD_TRAINER_ENGINE_MODEL_LORA_DROPOUT_H_
