// Periodic clean-up of the coordinator's store: upload sessions past their expire_time, and
// blobs no row references any more (rejected uploads, deleted datasets; gc.h). Runs on its own
// thread every `interval` from Start() until Stop().
#ifndef HERD_COORDINATOR_HOUSEKEEPER_H_
#define HERD_COORDINATOR_HOUSEKEEPER_H_

#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "coordinator/store/store.h"

namespace herd::coordinator {

class Housekeeper {
 public:
  // `store` and `clock` are not owned and outlive this object.
  Housekeeper(store::Store* store, Clock* clock, absl::Duration interval = absl::Minutes(10))
      : store_(store), clock_(clock), interval_(interval) {}
  ~Housekeeper() { Stop(); }
  Housekeeper(const Housekeeper&) = delete;
  Housekeeper& operator=(const Housekeeper&) = delete;

  // One pass (also what the thread runs): expired uploads, then unreferenced blobs older than
  // the garbage collector's grace period. Errors are logged by the thread and retried next pass.
  absl::Status RunOnce();

  void Start();
  void Stop();  // idempotent; waits for a pass in progress

 private:
  void Loop();

  // Constant after construction.
  store::Store* const store_;
  Clock* const clock_;
  const absl::Duration interval_;

  absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace herd::coordinator

#endif  // HERD_COORDINATOR_HOUSEKEEPER_H_
