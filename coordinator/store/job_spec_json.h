// The job specification as stored in jobs.spec_json: the job file's fields (DESIGN.md §11) as
// one JSON object with sorted keys, so equal specs have equal text (the idempotency check
// compares them). Decoding fills absent fields with their defaults, so rows written before a
// field existed still load.
#ifndef HERD_COORDINATOR_STORE_JOB_SPEC_JSON_H_
#define HERD_COORDINATOR_STORE_JOB_SPEC_JSON_H_

#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "common/job_spec.h"

namespace herd::coordinator::store {

std::string JobSpecToJson(const JobSpec& spec);
// DATA_LOSS when the text is not a JSON object of the expected shape.
absl::StatusOr<JobSpec> JobSpecFromJson(std::string_view json);

}  // namespace herd::coordinator::store

#endif  // HERD_COORDINATOR_STORE_JOB_SPEC_JSON_H_
