// Counter-based LoRA dropout masks: a 32-bit hash per pair of elements, as int64 tensor ops (the
// reference, and the path on CPU), or as one CUDA kernel in uint32 arithmetic when the keys are on
// a GPU (kernels/lora_dropout_cuda.cu, built with HERD_WITH_CUDA): the same bits either way.
#include "trainer/engine/model/lora_dropout.h"

#include <cmath>
#include <initializer_list>

#include "trainer/engine/kernels/fused_ops.h"
#include "trainer/engine/kernels/fused_ops_reference.h"
#ifdef HERD_WITH_CUDA
#include "trainer/engine/kernels/fused_ops_cuda.h"
#endif

namespace herd::engine {
namespace {

constexpr int64_t kLow32 = 0xffffffffLL;
constexpr int64_t kLow16 = 0xffffLL;

uint64_t SplitMix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

uint64_t Mix(std::initializer_list<uint64_t> parts) {
  uint64_t h = 0x6a09e667f3bcc909ULL;
  for (uint64_t p : parts) h = SplitMix(h ^ p);
  return h;
}

// splitmix32's finaliser (hash-prospector's [16 21f0aaad 15 735a2d97 15]), in place on values in
// [0, 2^32). Both multipliers are below 2^31, so every product is below 2^63: exact in int64 on
// any device, with no reliance on overflow, and no shift ever sees a negative value.
void Mix32(at::Tensor& x) {
  x.bitwise_xor_(x.bitwise_right_shift(16));
  x.mul_(0x21f0aaadLL).bitwise_and_(kLow32);
  x.bitwise_xor_(x.bitwise_right_shift(15));
  x.mul_(0x735a2d97LL).bitwise_and_(kLow32);
  x.bitwise_xor_(x.bitwise_right_shift(15));
}

}  // namespace

uint64_t DropoutRowKey(const DropoutKey& key, int64_t sequence_id, int layer, int projection) {
  return Mix({key.seed, static_cast<uint64_t>(key.step), static_cast<uint64_t>(sequence_id),
              static_cast<uint64_t>(layer), static_cast<uint64_t>(projection)});
}

at::Tensor DropoutKeyTable(const DropoutKey& key, const std::vector<int64_t>& sequence_ids, int64_t rows,
                           int layers, int projections, at::Device device) {
  std::vector<int64_t> words;
  words.reserve(static_cast<size_t>(layers) * projections * rows * 2);
  for (int layer = 0; layer < layers; ++layer) {
    for (int proj = 0; proj < projections; ++proj) {
      for (int64_t row = 0; row < rows; ++row) {
        const int64_t seq = row < static_cast<int64_t>(sequence_ids.size()) ? sequence_ids[row] : row;
        const uint64_t k = DropoutRowKey(key, seq, layer, proj);
        words.push_back(static_cast<int64_t>(k & kLow32));
        words.push_back(static_cast<int64_t>(k >> 32));
      }
    }
  }
  return at::tensor(words, at::TensorOptions().dtype(at::kLong).device(device)).view({layers, projections, rows, 2});
}

namespace {

void CheckKeepMaskArgs(const at::Tensor& row_keys, int64_t tokens, int64_t features) {
  TORCH_CHECK(row_keys.dim() == 2 && row_keys.size(1) == 2 && row_keys.scalar_type() == at::kLong,
              "DropoutKeepMask: row_keys must be [B, 2] int64, got ", row_keys.sizes(), " ", row_keys.scalar_type());
  TORCH_CHECK(tokens >= 0 && features >= 0, "DropoutKeepMask: negative shape");
}

}  // namespace

at::Tensor DropoutKeepMask(const at::Tensor& row_keys, int64_t tokens, int64_t features, double keep) {
  CheckKeepMaskArgs(row_keys, tokens, features);
#ifdef HERD_WITH_CUDA
  if (row_keys.is_cuda() && FusedKernelsEnabled()) return cuda_kernels::DropoutKeepMask(row_keys, tokens, features, keep);
#endif
  return reference::DropoutKeepMask(row_keys, tokens, features, keep);
}

at::Tensor reference::DropoutKeepMask(const at::Tensor& row_keys, int64_t tokens, int64_t features, double keep) {
  CheckKeepMaskArgs(row_keys, tokens, features);
  const int64_t rows = row_keys.size(0);
  const int64_t pairs = (features + 1) / 2;  // one 32-bit hash gives two 16-bit uniforms
  const int64_t n = tokens * pairs;
  at::Tensor lo = row_keys.select(1, 0).unsqueeze(1);  // [B, 1]
  at::Tensor hi = row_keys.select(1, 1).unsqueeze(1);  // [B, 1]
  // The counter of each pair of elements within the row, made on the device. [1, n]
  at::Tensor counter = at::arange(n, row_keys.options()).unsqueeze(0);
  const bool wide = n > kLow32 + 1;  // counters past 32 bits: rows of 2^33 elements or more
  // The counter's low word with the key's low word, mixed; then the key's high word (and the
  // counter's high word), mixed again. [B, n]
  at::Tensor h = at::bitwise_xor(wide ? counter.bitwise_and(kLow32) : counter, lo);
  Mix32(h);
  h.bitwise_xor_(wide ? hi.bitwise_xor(counter.bitwise_right_shift(32)) : hi);
  Mix32(h);
  const int64_t threshold = std::llround(keep * 65536.0);  // keep if u16 < threshold
  at::Tensor even = h.bitwise_and(kLow16).lt(threshold);    // [B, n] bool
  at::Tensor odd = h.bitwise_right_shift(16).lt(threshold);
  return at::stack({even, odd}, -1).view({rows, tokens, 2 * pairs}).narrow(-1, 0, features);  // [B, T, features]
}

}  // namespace herd::engine
