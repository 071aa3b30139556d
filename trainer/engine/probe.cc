// Device probe and self-checks over libtorch. libtorch exceptions stop here (STYLE.md).
#include "trainer/engine/probe.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/cuda.h>
#include <torch/version.h>

#include <filesystem>

#include "common/strings.h"
#include "common/status.h"
#include "trainer/engine/dist/rendezvous.h"
#include "trainer/engine/dist/tcp_communicator.h"
#ifdef HERD_WITH_NCCL
#include "trainer/engine/dist/nccl_communicator.h"
#endif

namespace herd::engine {
namespace {

absl::StatusOr<at::Device> ParseDevice(const std::string& device) {
  if (device == "cpu") return at::Device(at::kCPU);
  if (device.rfind("cuda", 0) == 0) {
    try {
      at::Device d(device);
      if (!torch::cuda::is_available()) return absl::UnavailableError("no CUDA device is available");
      if (d.has_index() && d.index() >= static_cast<int>(torch::cuda::device_count())) {
        return absl::UnavailableError(herd::StrCat(device, " does not exist"));
      }
      return d;
    } catch (const std::exception& e) {
      return absl::InvalidArgumentError(herd::StrCat("bad device '", device, "'"));
    }
  }
  return absl::InvalidArgumentError(herd::StrCat("bad device '", device, "' (want cpu or cuda:N)"));
}

}  // namespace

nlohmann::json ProbeDevices() {
  nlohmann::json j;
  j["torch"] = TORCH_VERSION;
  j["cuda_available"] = torch::cuda::is_available();
  j["cuda_devices"] = torch::cuda::device_count();
  j["cpu_threads"] = at::get_num_threads();
#ifdef HERD_WITH_CUDA
  j["built_with_cuda"] = true;
#else
  j["built_with_cuda"] = false;
#endif
#ifdef HERD_WITH_NCCL
  j["nccl"] = NcclVersion();
#else
  j["nccl"] = nullptr;
#endif
  return j;
}

absl::StatusOr<nlohmann::json> CheckMatmul(const std::string& device, const std::string& dtype, int n) {
  HERD_ASSIGN_OR_RETURN(at::Device dev, ParseDevice(device));
  at::ScalarType type;
  if (dtype == "float32") type = at::kFloat;
  else if (dtype == "bfloat16") type = at::kBFloat16;
  else return absl::InvalidArgumentError(herd::StrCat("bad dtype '", dtype, "'"));
  try {
    at::manual_seed(1234);
    at::Tensor a = at::randn({n, n}, at::kDouble);  // [n, n]
    at::Tensor b = at::randn({n, n}, at::kDouble);  // [n, n]
    // The reference multiplies the operands as the device sees them (rounded to dtype).
    at::Tensor a_dev = a.to(dev, type);
    at::Tensor b_dev = b.to(dev, type);
    at::Tensor ref = at::matmul(a_dev.to(at::kCPU, at::kDouble), b_dev.to(at::kCPU, at::kDouble));
    at::Tensor out = at::matmul(a_dev, b_dev).to(at::kCPU, at::kDouble);
    double rel = (out - ref).abs().max().item<double>() / ref.abs().max().item<double>();
    // bf16 keeps 8 significant bits in the output; fp32 accumulates to ~1e-6.
    double tolerance = type == at::kBFloat16 ? 1e-2 : 1e-5;
    return nlohmann::json{{"device", device}, {"dtype", dtype}, {"n", n},
                          {"max_rel_error", rel}, {"ok", rel < tolerance}};
  } catch (const std::exception& e) {
    return absl::InternalError(herd::StrCat("matmul on ", device, ": ", e.what()));
  }
}

absl::StatusOr<nlohmann::json> CheckAllReduceOneRank(const std::string& device,
                                                     const std::string& scratch_dir) {
  HERD_ASSIGN_OR_RETURN(at::Device dev, ParseDevice(device));
  std::filesystem::create_directories(scratch_dir);
  FileRendezvous rendezvous(scratch_dir);
  try {
    at::Tensor input = at::arange(0, 1 << 20, at::kFloat).mul_(0.5);  // [1M]
    at::Tensor buf = input.to(dev).contiguous();
    std::unique_ptr<Communicator> comm;
    if (dev.is_cuda()) {
#ifdef HERD_WITH_NCCL
      HERD_ASSIGN_OR_RETURN(comm, NcclCommunicator::Create({.device = dev.index() < 0 ? 0 : dev.index()},
                                                           rendezvous));
#else
      return absl::UnavailableError("this engine was built without NCCL");
#endif
    } else {
      HERD_ASSIGN_OR_RETURN(comm, TcpCommunicator::Create({}, rendezvous));
    }
    if (dev.is_cuda()) torch::cuda::synchronize();  // the copy ran on the compute stream
    HERD_RETURN_IF_ERROR(comm->AllReduceSum(std::span<float>(buf.data_ptr<float>(), buf.numel()),
                                            absl::Seconds(60)));
    bool same = at::equal(buf.to(at::kCPU), input);
    return nlohmann::json{{"backend", comm->backend()}, {"device", device}, {"elements", buf.numel()},
                          {"ok", same}};
  } catch (const std::exception& e) {
    return absl::InternalError(herd::StrCat("all-reduce on ", device, ": ", e.what()));
  }
}

}  // namespace herd::engine
