// Store records of jobs to their herd.v1 messages, shared by the JobService methods
// (job_service.cc, job_watch.cc).
#ifndef HERD_COORDINATOR_SERVICES_JOB_CONVERT_H_
#define HERD_COORDINATOR_SERVICES_JOB_CONVERT_H_

#include <string>

#include "coordinator/store/job_store.h"
#include "herd/v1/jobs.pb.h"

namespace herd::coordinator {
struct JobProgressView;  // coordinator/progress_board.h
class ProgressBoard;
}  // namespace herd::coordinator

namespace herd::coordinator::services {

herd::v1::JobState JobStateToProto(store::JobState s);
// Progress and plan come from the row's JSON snapshots; the caller may overwrite `progress`
// with the live one.
void ToProto(const store::JobRecord& in, herd::v1::Job* out);
void ToProto(const store::JobEvent& in, herd::v1::JobEvent* out);
// The live progress of a job (ProgressBoard) as users see it; in progress_convert.cc.
void ToProto(const JobProgressView& in, herd::v1::JobProgress* out);
// Overwrites job->progress with the board's live view of job->id(), when `board` is not null
// and knows the job (GetJob, WatchJob); returns the view's version, 0 when nothing was set.
int64_t SetLiveProgress(const ProgressBoard* board, herd::v1::Job* job);
// The snapshot kept in the job's row when it ends (JobStore::SaveProgress): JobProgress's proto
// JSON plus "loss_history": [[step, loss], ...].
std::string ProgressSnapshotJson(const JobProgressView& view);
// Job.loss_history from the live board, else from the stored snapshot.
void SetLossHistory(const ProgressBoard* board, const std::string& progress_json, herd::v1::Job* job);

}  // namespace herd::coordinator::services

#endif  // HERD_COORDINATOR_SERVICES_JOB_CONVERT_H_
