// Conversions between libtorch tensors and safetensors entries.
#include "trainer/engine/tensor_io.h"

#include <cstring>

#include "common/status.h"
#include "common/strings.h"

namespace herd::engine {
namespace {

absl::StatusOr<Dtype> ToDtype(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return Dtype::kF32;
    case at::kDouble: return Dtype::kF64;
    case at::kHalf: return Dtype::kF16;
    case at::kBFloat16: return Dtype::kBF16;
    case at::kLong: return Dtype::kI64;
    case at::kInt: return Dtype::kI32;
    case at::kShort: return Dtype::kI16;
    case at::kChar: return Dtype::kI8;
    case at::kByte: return Dtype::kU8;
    case at::kBool: return Dtype::kBool;
    default: return absl::InvalidArgumentError(herd::StrCat("no safetensors dtype for ", at::toString(t)));
  }
}

at::ScalarType FromDtype(Dtype d) {
  switch (d) {
    case Dtype::kF64: return at::kDouble;
    case Dtype::kF32: return at::kFloat;
    case Dtype::kF16: return at::kHalf;
    case Dtype::kBF16: return at::kBFloat16;
    case Dtype::kI64: return at::kLong;
    case Dtype::kI32: return at::kInt;
    case Dtype::kI16: return at::kShort;
    case Dtype::kI8: return at::kChar;
    case Dtype::kU8: return at::kByte;
    case Dtype::kBool: return at::kBool;
  }
  return at::kByte;
}

}  // namespace

absl::Status AddTensor(SafetensorsWriter& writer, const std::string& name, const at::Tensor& tensor) {
  HERD_ASSIGN_OR_RETURN(Dtype dtype, ToDtype(tensor.scalar_type()));
  at::Tensor host = tensor.detach().to(at::kCPU).contiguous();
  std::vector<int64_t> shape(host.sizes().begin(), host.sizes().end());
  return writer.Add(name, dtype, std::move(shape), host.data_ptr(), host.nbytes());
}

absl::StatusOr<at::Tensor> ReadTensor(const SafetensorsFile& file, const std::string& name) {
  HERD_ASSIGN_OR_RETURN(const SafetensorsTensor* t, file.Get(name));
  at::Tensor out = at::empty(t->shape, at::TensorOptions().dtype(FromDtype(t->dtype)));
  if (!t->data.empty()) std::memcpy(out.data_ptr(), t->data.data(), t->data.size());
  return out;
}

absl::StatusOr<std::map<std::string, at::Tensor>> ReadAllTensors(const std::string& path) {
  HERD_ASSIGN_OR_RETURN(auto file, SafetensorsFile::Open(path));
  std::map<std::string, at::Tensor> out;
  for (const SafetensorsTensor& t : file->tensors()) {
    HERD_ASSIGN_OR_RETURN(out[t.name], ReadTensor(*file, t.name));
  }
  return out;
}

}  // namespace herd::engine
