// Many small float32 → weights-dtype copies at once: LoRA's compute copies (A and B in bf16, some of
// them blocks of the padded frozen weights), made once a forward. On CUDA one kernel launch does
// them all (per copy it would be ~13 tiny kernels a layer); elsewhere each is a copy_.
#ifndef HERD_TRAINER_ENGINE_KERNELS_CAST_INTO_H_
#define HERD_TRAINER_ENGINE_KERNELS_CAST_INTO_H_

#include <ATen/ATen.h>

#include <vector>

namespace herd::engine {

struct CastPair {
  at::Tensor src;  // [rows, cols]
  at::Tensor dst;  // [rows, cols], any dtype; rows may be spaced wider than cols (a block of a wider matrix)
};

// dst.copy_(src) for every pair, in order. Throws c10::Error on shapes that disagree.
void CastInto(const std::vector<CastPair>& pairs);

namespace cuda_kernels {
// The one-launch form: true when it took them all (CUDA, float32 sources with dense rows, one
// bf16 or fp16 destination dtype with dense rows, one device); false (nothing done) otherwise.
bool CastInto(const std::vector<CastPair>& pairs);
}  // namespace cuda_kernels

}  // namespace herd::engine

#endif  // HERD_TRAINER_ENGINE_KERNELS_CAST_INTO_H_
