// `herd jobs watch JOB`: follows a job live through JobService.WatchJob (jobs.proto). Prints each
// event as a line and the progress (state, step/total, loss with a sparkline of its recent
// history, tokens/s) as one updating line on a terminal, or as plain lines otherwise; with
// `--output json` every stream message as one JSON line. Resumes after a broken stream or a
// passed stream deadline from the last event seen (after_sequence). Exit codes (DESIGN.md §11):
// 0 SUCCEEDED, 6 FAILED or CANCELLED, 3 not found, 4 auth, 5 unavailable, 130 on Ctrl-C.
#ifndef HERD_CLI_JOBS_WATCH_H_
#define HERD_CLI_JOBS_WATCH_H_

#include <cstdint>
#include <deque>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "absl/time/time.h"
#include "cli/client_config.h"
#include "herd/v1/jobs.pb.h"

namespace herd::cli {

struct WatchOptions {
  std::string id;     // the job
  bool json = false;  // one JSON object per stream message
  // Deadline of one stream; the watch resumes when it passes (jobs.proto advises minutes).
  absl::Duration stream_deadline = absl::Minutes(10);
  // Exit 5 once no stream has delivered anything for this long while reconnecting.
  absl::Duration give_up_after = absl::Minutes(2);
  // Called with every message received, before it is shown (tests observe the stream with it).
  std::function<void(const herd::v1::WatchJobResponse&)> on_message;
};

// Follows the job until the stream ends at its final state or Ctrl-C; returns the exit code.
int WatchJob(const ClientConfig& config, const WatchOptions& options);

// The pieces of the display, pure so that they can be tested.

// The last `width` finite values as ▁▂▃▄▅▆▇█ scaled between their minimum and maximum; a flat
// series is all ▄; "" for no values.
std::string Sparkline(const std::vector<double>& values, size_t width);

// The loss of each progress message seen, for the sparkline: one point per newer step. A step
// at or below the newest (a new generation resumed from a checkpoint) drops the points after it.
class LossTrail {
 public:
  explicit LossTrail(size_t capacity = 200) : capacity_(capacity) {}
  void Add(int64_t step, double loss);
  std::vector<double> Values() const;

 private:
  size_t capacity_;
  std::deque<std::pair<int64_t, double>> points_;  // by step
};

// "RUNNING  step 120/1000 (12%)  epoch 0.12  loss 1.2345 ▇▅▃▂▁  lr 2.00e-04  1,234 tok/s
// eval 1.3010"; parts without a value are left out.
std::string ProgressLine(herd::v1::JobState state, const herd::v1::JobProgress& progress,
                         const std::string& sparkline);
// "12:03:04Z  #5  STATE_CHANGED  QUEUED -> RUNNING" (the failure appended when the message does
// not say it already).
std::string EventLine(const herd::v1::JobEvent& event);
// "RUNNING" for JOB_STATE_RUNNING, "STATE_CHANGED" for JOB_EVENT_TYPE_STATE_CHANGED.
std::string StateName(herd::v1::JobState state);
std::string EventTypeName(herd::v1::JobEventType type);
// The job when a watch starts: "job_x (name): RUNNING, tiny-llama on ds_y".
std::string JobLine(const herd::v1::Job& job);
// The first `columns` display columns of a UTF-8 line (a line rewritten in place must not wrap).
std::string FitColumns(const std::string& line, size_t columns);
// "1,234,567".
std::string GroupThousands(int64_t n);
// 0 SUCCEEDED, 6 FAILED or CANCELLED; -1 for a state that is not final.
int ExitCodeForFinalState(herd::v1::JobState state);

}  // namespace herd::cli

#endif  // HERD_CLI_JOBS_WATCH_H_
