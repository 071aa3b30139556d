// `herd jobs submit|list|get|cancel|events`: the JobService calls behind the CLI's job commands
// (DESIGN.md §3 step 2, §11). Each returns the process exit code (exit_codes.h) and prints for
// people, or the API objects as JSON with `json` set.
#ifndef HERD_CLI_JOBS_COMMANDS_H_
#define HERD_CLI_JOBS_COMMANDS_H_

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "cli/client_config.h"
#include "herd/v1/jobs.pb.h"
#include "common/job_spec.h"

namespace herd::cli {

struct SubmitOptions {
  std::string path;             // the job file (DESIGN.md §11)
  std::string dataset;          // overrides the file's `dataset` when not empty
  std::string name;             // overrides `name` when not empty
  std::string base_model;       // overrides `base_model` when not empty
  std::string idempotency_key;  // "" = a fresh random key for this submission
  bool dry_run = false;         // prepare only and print the plan; nothing is created
};

// The preparation plan of a dry run, for people: records, tokens, sequences, packing, steps.
std::string DescribePlan(const herd::v1::PreparationPlan& plan, int64_t max_seq_len);

// The job file with the flags applied and validated. INVALID_ARGUMENT "FILE:LINE: FIELD: reason"
// (the line of the field in the file; no line for a field set by a flag or left at its default);
// NOT_FOUND when the file cannot be read.
absl::StatusOr<JobSpec> LoadSubmission(const SubmitOptions& options);

// Submits the job file; prints the job id (exit 2 for a bad file, naming file:line:field). With
// dry_run, prints the plan instead (a failed preparation exits 2 with its reason).
int SubmitJob(const ClientConfig& config, const SubmitOptions& options, bool json);
// `states` are job-state names ("running", "JOB_STATE_RUNNING"); empty = all.
int ListJobs(const ClientConfig& config, const std::vector<std::string>& states,
             const std::string& name_prefix, bool json);
// The loss history of a job as text: a sparkline over all of it, then one line per step.
std::string DescribeLossHistory(const herd::v1::Job& job);
// With `metrics`, also the loss history (DescribeLossHistory).
int GetJob(const ClientConfig& config, const std::string& id, bool json, bool metrics = false);
int CancelJob(const ClientConfig& config, const std::string& id, const std::string& reason, bool json);
int ListJobEvents(const ClientConfig& config, const std::string& id, bool json);

}  // namespace herd::cli

#endif  // HERD_CLI_JOBS_COMMANDS_H_
