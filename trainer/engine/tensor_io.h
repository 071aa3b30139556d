// at::Tensor <-> safetensors, for checkpoints, adapters and the test tools. Torch-side only.
#ifndef HERD_TRAINER_ENGINE_TENSOR_IO_H_
#define HERD_TRAINER_ENGINE_TENSOR_IO_H_

#include <ATen/ATen.h>

#include <map>
#include <string>

#include "absl/status/statusor.h"
#include "common/safetensors.h"

namespace herd::engine {

// Adds a (CPU-copied, contiguous) tensor to a writer under `name`.
absl::Status AddTensor(SafetensorsWriter& writer, const std::string& name, const at::Tensor& tensor);
// A copy of one tensor of a file, on the CPU in its stored dtype.
absl::StatusOr<at::Tensor> ReadTensor(const SafetensorsFile& file, const std::string& name);
// Every tensor of a file.
absl::StatusOr<std::map<std::string, at::Tensor>> ReadAllTensors(const std::string& path);

}  // namespace herd::engine

#endif  // HERD_TRAINER_ENGINE_TENSOR_IO_H_
