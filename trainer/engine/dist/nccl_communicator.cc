// NCCL communicator with a watchdog on every call.
#include "trainer/engine/dist/nccl_communicator.h"

#include <cuda_runtime_api.h>
#include <nccl.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <thread>

#include "absl/strings/escaping.h"
#include "common/strings.h"
#include "common/status.h"

namespace herd::engine {

namespace {

// What StallStreamForTest's host function waits on. Shared between the communicator and the
// host function, which may outlive it (it runs on CUDA's callback thread).
struct StallGate {
  std::atomic<bool> released{false};
  absl::Time give_up;
};

void CUDART_CB HoldStream(void* arg) {
  auto* gate = static_cast<std::shared_ptr<StallGate>*>(arg);
  while (!(*gate)->released.load() && absl::Now() < (*gate)->give_up) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  delete gate;
}

}  // namespace

struct NcclCommunicator::State {
  ncclComm_t comm = nullptr;
  cudaStream_t stream = nullptr;
  cudaEvent_t compute_done = nullptr;  // recorded on the legacy default stream before each call
  void* staging = nullptr;             // device copy of host data (AllReduce of host spans)
  size_t staging_bytes = 0;
  bool aborted = false;
  std::shared_ptr<StallGate> stall;  // set by StallStreamForTest only
};

namespace {

absl::Status NcclError(ncclResult_t r, std::string_view what) {
  return absl::InternalError(herd::StrCat(what, ": ", ncclGetErrorString(r)));
}

absl::Status CudaError(cudaError_t e, std::string_view what) {
  return absl::InternalError(herd::StrCat(what, ": ", cudaGetErrorString(e)));
}

// Polls a non-blocking communicator until its pending operation leaves ncclInProgress.
absl::Status WaitComm(ncclComm_t comm, absl::Time deadline, std::string_view what) {
  while (true) {
    ncclResult_t state = ncclSuccess;
    ncclResult_t r = ncclCommGetAsyncError(comm, &state);
    if (r != ncclSuccess) return NcclError(r, what);
    if (state == ncclSuccess) return absl::OkStatus();
    if (state != ncclInProgress) return NcclError(state, what);
    if (absl::Now() >= deadline) return absl::DeadlineExceededError(herd::StrCat(what, " timed out"));
    std::this_thread::yield();
  }
}

}  // namespace

std::string NcclVersion() {
  int v = 0;
  if (ncclGetVersion(&v) != ncclSuccess) return "";
  // Since 2.9: major*10000 + minor*100 + patch.
  return herd::StrCat(v / 10000, ".", (v / 100) % 100, ".", v % 100);
}

NcclCommunicator::NcclCommunicator(int rank, int world_size, std::unique_ptr<State> state)
    : rank_(rank), world_size_(world_size), state_(std::move(state)) {}

NcclCommunicator::~NcclCommunicator() {
  ReleaseStallForTest();
  if (state_->comm != nullptr) {
    if (state_->aborted) {
      ncclCommAbort(state_->comm);
    } else {
      ncclCommFinalize(state_->comm);
      WaitComm(state_->comm, absl::Now() + absl::Seconds(10), "finalize").IgnoreError();
      ncclCommDestroy(state_->comm);
    }
  }
  if (state_->stream != nullptr) cudaStreamDestroy(state_->stream);
  if (state_->compute_done != nullptr) cudaEventDestroy(state_->compute_done);
  if (state_->staging != nullptr) cudaFree(state_->staging);
}

absl::StatusOr<std::unique_ptr<NcclCommunicator>> NcclCommunicator::Create(
    const NcclGroupOptions& o, Rendezvous& rendezvous) {
  if (o.world_size < 1 || o.rank < 0 || o.rank >= o.world_size) {
    return absl::InvalidArgumentError(herd::StrCat("bad rank ", o.rank, " of world ", o.world_size));
  }
  const absl::Time deadline = absl::Now() + o.init_timeout;
  cudaError_t ce = cudaSetDevice(o.device);
  if (ce != cudaSuccess) return CudaError(ce, herd::StrCat("cudaSetDevice(", o.device, ")"));

  ncclUniqueId id;
  if (o.rank == 0) {
    ncclResult_t r = ncclGetUniqueId(&id);
    if (r != ncclSuccess) return NcclError(r, "ncclGetUniqueId");
    HERD_RETURN_IF_ERROR(rendezvous.Put(
        o.key, absl::BytesToHexString(absl::string_view(id.internal, sizeof(id.internal)))));
  } else {
    HERD_ASSIGN_OR_RETURN(std::string hex, rendezvous.Get(o.key, deadline - absl::Now()));
    std::string bytes = absl::HexStringToBytes(hex);
    if (bytes.size() != sizeof(id.internal)) {
      return absl::InvalidArgumentError("rendezvous value is not an NCCL unique id");
    }
    std::memcpy(id.internal, bytes.data(), sizeof(id.internal));
  }

  auto state = std::make_unique<State>();
  ce = cudaStreamCreateWithFlags(&state->stream, cudaStreamNonBlocking);
  if (ce != cudaSuccess) return CudaError(ce, "cudaStreamCreate");
  ce = cudaEventCreateWithFlags(&state->compute_done, cudaEventDisableTiming);
  if (ce != cudaSuccess) return CudaError(ce, "cudaEventCreate");
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;
  ncclResult_t r = ncclCommInitRankConfig(&state->comm, o.world_size, id, o.rank, &config);
  if (r != ncclSuccess && r != ncclInProgress) return NcclError(r, "ncclCommInitRankConfig");
  auto comm = std::unique_ptr<NcclCommunicator>(
      new NcclCommunicator(o.rank, o.world_size, std::move(state)));
  absl::Status s = WaitComm(comm->state_->comm, deadline, "NCCL communicator init");
  if (!s.ok()) {
    comm->state_->aborted = true;  // the destructor aborts rather than finalises
    return s;
  }
  return comm;
}

absl::Status NcclCommunicator::AllReduce(void* data, size_t count, int nccl_dtype, size_t bytes,
                                         absl::Duration timeout) {
  if (state_->aborted) return absl::FailedPreconditionError("communicator was aborted after an earlier failure");
  const absl::Time start = absl::Now();
  const absl::Time deadline = start + timeout;
  // Host data (the engine's loss and token sums) goes through a device buffer: NCCL reads and
  // writes device memory only.
  cudaPointerAttributes where{};
  const bool on_host = cudaPointerGetAttributes(&where, data) != cudaSuccess ||
                       (where.type != cudaMemoryTypeDevice && where.type != cudaMemoryTypeManaged);
  cudaGetLastError();  // an unregistered host pointer may leave an error behind on older runtimes
  void* buffer = data;
  if (on_host) {
    if (state_->staging_bytes < bytes) {
      if (state_->staging != nullptr) cudaFree(state_->staging);
      state_->staging = nullptr;
      state_->staging_bytes = 0;
      if (cudaError_t e = cudaMalloc(&state_->staging, bytes); e != cudaSuccess) {
        return CudaError(e, "all-reduce staging buffer");
      }
      state_->staging_bytes = bytes;
    }
    buffer = state_->staging;
    if (cudaError_t e = cudaMemcpy(buffer, data, bytes, cudaMemcpyHostToDevice); e != cudaSuccess) {
      return CudaError(e, "all-reduce staging copy");
    }
  } else {
    // Device data was written by torch's kernels on the legacy default stream (the engine never
    // switches streams); the communicator's stream does not synchronise with it by itself.
    if (cudaError_t e = cudaEventRecord(state_->compute_done, cudaStreamLegacy); e != cudaSuccess) {
      return CudaError(e, "cudaEventRecord");
    }
    if (cudaError_t e = cudaStreamWaitEvent(state_->stream, state_->compute_done, 0); e != cudaSuccess) {
      return CudaError(e, "cudaStreamWaitEvent");
    }
  }
  ncclResult_t r = ncclAllReduce(buffer, buffer, count, static_cast<ncclDataType_t>(nccl_dtype), ncclSum,
                                 state_->comm, state_->stream);
  absl::Status s;
  if (r != ncclSuccess && r != ncclInProgress) s = NcclError(r, "ncclAllReduce");
  if (s.ok()) s = WaitComm(state_->comm, deadline, "ncclAllReduce enqueue");
  // The watchdog: poll the stream, and abort the communicator once the deadline has passed.
  while (s.ok()) {
    cudaError_t q = cudaStreamQuery(state_->stream);
    if (q == cudaSuccess) break;
    if (q != cudaErrorNotReady) {
      s = CudaError(q, "all-reduce stream");
      break;
    }
    ncclResult_t async = ncclSuccess;
    ncclCommGetAsyncError(state_->comm, &async);
    if (async != ncclSuccess && async != ncclInProgress) {
      s = NcclError(async, "ncclAllReduce");
      break;
    }
    if (absl::Now() >= deadline) {
      s = absl::DeadlineExceededError(herd::StrCat("all-reduce #", stats_.sequence, " did not complete within ",
                                                   absl::FormatDuration(timeout)));
      break;
    }
    std::this_thread::yield();
  }
  if (!s.ok()) {
    state_->aborted = true;
    ncclCommAbort(state_->comm);
    state_->comm = nullptr;
    return s;
  }
  // The stream has finished (the watchdog loop saw it): the staged result can come back.
  if (on_host) {
    if (cudaError_t e = cudaMemcpy(data, buffer, bytes, cudaMemcpyDeviceToHost); e != cudaSuccess) {
      return CudaError(e, "all-reduce result copy");
    }
  }
  ++stats_.sequence;
  stats_.bytes += bytes;
  stats_.seconds += absl::ToDoubleSeconds(absl::Now() - start);
  return absl::OkStatus();
}

absl::Status NcclCommunicator::StallStreamForTest(absl::Duration max_hold) {
  if (state_->stall != nullptr) return absl::FailedPreconditionError("the stream is already stalled");
  auto gate = std::make_shared<StallGate>();
  gate->give_up = absl::Now() + max_hold;
  auto* arg = new std::shared_ptr<StallGate>(gate);
  cudaError_t e = cudaLaunchHostFunc(state_->stream, HoldStream, arg);
  if (e != cudaSuccess) {
    delete arg;
    return CudaError(e, "cudaLaunchHostFunc");
  }
  state_->stall = std::move(gate);
  return absl::OkStatus();
}

void NcclCommunicator::ReleaseStallForTest() {
  if (state_->stall != nullptr) state_->stall->released.store(true);
}

absl::Status NcclCommunicator::AllReduceSum(std::span<float> data, absl::Duration timeout) {
  return AllReduce(data.data(), data.size(), ncclFloat32, data.size_bytes(), timeout);
}
absl::Status NcclCommunicator::AllReduceSum(std::span<double> data, absl::Duration timeout) {
  return AllReduce(data.data(), data.size(), ncclFloat64, data.size_bytes(), timeout);
}

}  // namespace herd::engine
