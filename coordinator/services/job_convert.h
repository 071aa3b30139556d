// Store records of jobs to their herd.v1 messages, shared by the JobService methods
// (job_service.cc, job_watch.cc).
#ifndef HERD_COORDINATOR_SERVICES_JOB_CONVERT_H_
#define HERD_COORDINATOR_SERVICES_JOB_CONVERT_H_

#include "coordinator/store/job_store.h"
#include "herd/v1/jobs.pb.h"

namespace herd::coordinator::services {

herd::v1::JobState JobStateToProto(store::JobState s);
// Progress and plan come from the row's JSON snapshots; the caller may overwrite `progress`
// with the live one.
void ToProto(const store::JobRecord& in, herd::v1::Job* out);
void ToProto(const store::JobEvent& in, herd::v1::JobEvent* out);

}  // namespace herd::coordinator::services

#endif  // HERD_COORDINATOR_SERVICES_JOB_CONVERT_H_
