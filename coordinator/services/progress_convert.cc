// ProgressBoard's JobProgressView -> herd.v1.JobProgress (declared in job_convert.h), for GetJob
// and WatchJob, and the board's view into a Job.
#include "coordinator/progress_board.h"
#include "coordinator/services/convert.h"
#include "coordinator/services/job_convert.h"

namespace herd::coordinator::services {

void ToProto(const JobProgressView& in, herd::v1::JobProgress* out) {
  out->Clear();
  out->set_step(in.step);
  out->set_total_steps(in.total_steps);
  out->set_epoch(in.epoch);
  if (in.loss) out->set_loss(*in.loss);
  out->set_learning_rate(in.learning_rate);
  out->set_tokens_per_second(in.tokens_per_second);
  out->set_trained_tokens(in.trained_tokens);
  if (in.eval_loss) out->set_eval_loss(*in.eval_loss);
  if (in.eval_token_accuracy) out->set_eval_token_accuracy(*in.eval_token_accuracy);
  // No point has arrived yet (only total_steps is known): leave the time unset.
  if (in.update_time != absl::Time()) ToTimestamp(in.update_time, out->mutable_update_time());
}

int64_t SetLiveProgress(const ProgressBoard* board, herd::v1::Job* job) {
  if (board == nullptr) return 0;
  std::optional<JobProgressView> view = board->Get(job->id());
  if (!view) return 0;
  ToProto(*view, job->mutable_progress());
  return view->version;
}

}  // namespace herd::coordinator::services
