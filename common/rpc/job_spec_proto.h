// The job file (herd::JobSpec, DESIGN.md §11) on the wire (herd.v1.JobSpec) and back: one
// conversion for the coordinator's JobService and the CLI's `jobs submit`.
#ifndef HERD_COMMON_RPC_JOB_SPEC_PROTO_H_
#define HERD_COMMON_RPC_JOB_SPEC_PROTO_H_

#include "absl/status/statusor.h"
#include "common/job_spec.h"
#include "herd/v1/common.pb.h"

namespace herd::rpc {

// The wire spec as the store keeps it: every default filled in, Validate()d, target_modules
// expanded to the explicit list. INVALID_ARGUMENT naming the field for an unknown enum value, a
// duplicate target module or a value out of range; UNIMPLEMENTED for overlong_records DROP (not
// stored yet).
absl::StatusOr<JobSpec> JobSpecFromProto(const herd::v1::JobSpec& in);
// A spec on the wire, every field set (target_modules expanded).
void JobSpecToProto(const JobSpec& in, herd::v1::JobSpec* out);

}  // namespace herd::rpc

#endif  // HERD_COMMON_RPC_JOB_SPEC_PROTO_H_
