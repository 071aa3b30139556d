// Device probe and self-checks over libtorch. libtorch exceptions stop here (STYLE.md).
#include "trainer/engine/probe.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/cuda.h>
#include <torch/version.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <thread>
#include <vector>

#include "common/strings.h"
#include "common/status.h"
#include "trainer/engine/device_info.h"
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

// `scratch/name`, emptied: an address or NCCL id left by an earlier run in the same scratch folder
// would send this run's group astray (or fail its rendezvous).
absl::StatusOr<std::string> FreshFolder(const std::string& scratch, const std::string& name) {
  const std::string dir = herd::StrCat(scratch, "/", name);
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  if (!ec) std::filesystem::create_directories(dir, ec);
  if (ec) return absl::InternalError(herd::StrCat("cannot make a fresh ", dir, ": ", ec.message()));
  return dir;
}

// Runs the all-reduce that cannot complete, then one more call, and reports both.
nlohmann::json TimeStalledAllReduce(Communicator& comm, std::span<float> data, absl::Duration timeout) {
  const absl::Time start = absl::Now();
  const absl::Status stalled = comm.AllReduceSum(data, timeout);
  const double seconds = absl::ToDoubleSeconds(absl::Now() - start);
  const absl::Status after = comm.AllReduceSum(data, absl::Seconds(1));
  const bool fired = absl::IsDeadlineExceeded(stalled);
  const bool aborted = absl::IsFailedPrecondition(after);
  return nlohmann::json{{"check", "watchdog"}, {"backend", comm.backend()}, {"fired", fired},
                        {"seconds", seconds}, {"timeout_s", absl::ToDoubleSeconds(timeout)},
                        {"aborted", aborted}, {"status", stalled.ToString()},
                        {"ok", fired && aborted && seconds < absl::ToDoubleSeconds(timeout) + 10}};
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
  // Each CUDA device's name and memory: herd-trainer registers its GPU with them.
  nlohmann::json devices = nlohmann::json::array();
  for (int i = 0; i < static_cast<int>(torch::cuda::device_count()); ++i) {
    const DeviceInfo d = DescribeDevice(herd::StrCat("cuda:", i));
    devices.push_back({{"index", i}, {"name", d.name}, {"memory_bytes", d.memory_bytes}});
  }
  j["devices"] = devices;
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
  HERD_ASSIGN_OR_RETURN(std::string dir, FreshFolder(scratch_dir, "all-reduce"));
  FileRendezvous rendezvous(dir);
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

absl::StatusOr<nlohmann::json> CheckWatchdog(const std::string& device, const std::string& scratch_dir,
                                             absl::Duration timeout) {
  HERD_ASSIGN_OR_RETURN(at::Device dev, ParseDevice(device));
  HERD_ASSIGN_OR_RETURN(std::string dir, FreshFolder(scratch_dir, "watchdog"));
  FileRendezvous rendezvous(dir);
  nlohmann::json result;
  if (dev.is_cuda()) {
#ifdef HERD_WITH_NCCL
    at::Tensor buf;  // declared first so that it outlives the communicator and its stream's work
    float* data = nullptr;
    try {
      buf = at::ones({1024}, at::TensorOptions().dtype(at::kFloat).device(dev));  // [1024]
      torch::cuda::synchronize();
      data = buf.data_ptr<float>();
    } catch (const std::exception& e) {
      return absl::InternalError(herd::StrCat("watchdog check on ", device, ": ", e.what()));
    }
    HERD_ASSIGN_OR_RETURN(std::unique_ptr<NcclCommunicator> comm,
                          NcclCommunicator::Create({.device = dev.index() < 0 ? 0 : dev.index()}, rendezvous));
    const std::span<float> span(data, 1024);
    // A healthy collective first: the watchdog must not fire on a group that works.
    HERD_RETURN_IF_ERROR(herd::Annotate(comm->AllReduceSum(span, absl::Seconds(60)), "all-reduce before the stall"));
    HERD_RETURN_IF_ERROR(comm->StallStreamForTest(timeout + absl::Seconds(30)));
    // Released a second after the deadline whatever happens, in case the abort waits for the stream.
    std::thread releaser([&comm, timeout] {
      std::this_thread::sleep_for(absl::ToChronoMilliseconds(timeout + absl::Seconds(1)));
      comm->ReleaseStallForTest();
    });
    result = TimeStalledAllReduce(*comm, span, timeout);
    releaser.join();
#else
    return absl::UnavailableError("this engine was built without NCCL");
#endif
  } else {
    // Rank 1 joins the group and then never takes part: a hung peer.
    std::atomic<bool> release{false};
    std::thread peer([&dir, &release] {
      FileRendezvous peer_rendezvous(dir);
      auto comm = TcpCommunicator::Create({.rank = 1, .world_size = 2, .connect_timeout = absl::Seconds(30)},
                                          peer_rendezvous);
      while (!release.load()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    });
    auto comm = TcpCommunicator::Create({.rank = 0, .world_size = 2, .connect_timeout = absl::Seconds(30)},
                                        rendezvous);
    if (comm.ok()) {
      std::vector<float> data(1024, 1.0f);
      result = TimeStalledAllReduce(**comm, std::span<float>(data), timeout);
    }
    release.store(true);
    peer.join();
    if (!comm.ok()) return herd::Annotate(comm.status(), "two-rank TCP group for the watchdog check");
  }
  result["device"] = device;
  return result;
}

}  // namespace herd::engine
