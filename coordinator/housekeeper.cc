// Housekeeper: see housekeeper.h.
#include "coordinator/housekeeper.h"

#include "common/log.h"
#include "common/status.h"
#include "coordinator/store/gc.h"

namespace herd::coordinator {

absl::Status Housekeeper::RunOnce() {
  HERD_ASSIGN_OR_RETURN(int expired, store_->uploads().DeleteExpired());
  HERD_ASSIGN_OR_RETURN(store::GcStats gc,
                        store::CollectGarbage(&store_->db(), &store_->blobs(), clock_->Now()));
  if (expired > 0 || gc.blobs_deleted > 0) {
    HERD_LOG(Info) << "housekeeping: " << expired << " expired uploads, " << gc.blobs_deleted
                   << " unreferenced blobs (" << gc.bytes_deleted << " bytes) deleted";
  }
  return absl::OkStatus();
}

void Housekeeper::Start() {
  if (!thread_.joinable()) thread_ = std::thread([this] { Loop(); });
}

void Housekeeper::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  if (thread_.joinable()) thread_.join();
}

void Housekeeper::Loop() {
  while (true) {
    if (absl::Status s = RunOnce(); !s.ok()) {
      HERD_LOG(Warning) << "housekeeping: " << s;
    }
    absl::MutexLock lock(&mu_);
    if (mu_.AwaitWithTimeout(absl::Condition(&stopping_), interval_)) return;
  }
}

}  // namespace herd::coordinator
