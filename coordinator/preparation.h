// Preparation of a job's data at the coordinator (DESIGN.md §3 step 4): the base model's
// published tokenizer files and the dataset blob go to herd-prepare, run as a child process
// (libsentencepiece may not share a process with gRPC/protobuf, docs/toolchain.md), which
// validates, tokenises, templates, masks, splits, packs and fixes the seeded global order. The
// prepared files become blobs; the figures become the job's PreparationPlan (jobs.proto).
//
// The seam of the data-pipeline work: everything about tokens lives in datasets/ and
// herd-prepare; this class only runs it and reads its report.
#ifndef HERD_COORDINATOR_PREPARATION_H_
#define HERD_COORDINATOR_PREPARATION_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/job_spec.h"
#include "common/subprocess.h"

namespace herd::coordinator {

struct PreparerOptions {
  std::string herd_prepare;             // path of the herd-prepare program
  std::string work_dir;                 // scratch space (same file system as the blobs is best)
  absl::Duration timeout = absl::Hours(2);  // one preparation, then it is killed

  absl::Status Validate() const;
};

// What preparation found and what the job will run (jobs.proto PreparationPlan).
struct PreparationPlan {
  std::string format;         // "chat", ... (datasets/records.h names)
  std::string chat_template;  // "llama2" | "llama3" | "" when the format uses none
  int64_t records = 0;        // training records
  int64_t records_truncated = 0;
  int64_t records_dropped = 0;
  int64_t tokens = 0;
  int64_t trained_tokens = 0;
  int64_t sequences = 0;
  double packing_efficiency = 0;
  int64_t validation_records = 0;
  int64_t validation_sequences = 0;
  int64_t steps_per_epoch = 0;
  int64_t total_steps = 0;
  int32_t world_size = 1;
  int32_t grad_accum_steps = 1;
  std::vector<std::string> warnings;

  // The proto3 JSON form of herd.v1.PreparationPlan (what JobRecord.plan_json holds).
  std::string ToProtoJson() const;
  // Reads ToProtoJson()'s output back (total_steps etc. for assignments).
  static absl::StatusOr<PreparationPlan> FromProtoJson(const std::string& json);
};

struct PreparationInput {
  JobSpec spec;                   // defaults filled in
  std::string dataset_path;       // the dataset's blob file
  bool skip_invalid = false;      // the dataset was accepted with --skip-invalid
  std::string validation_path;    // a separate validation dataset's blob file; "" = split
  bool validation_skip_invalid = false;
  // The model's published files: name (config.json, tokenizer.json, ...) -> file path.
  std::map<std::string, std::string> model_files;
  // SHA-256 over everything the output depends on (data and model file digests, the spec's
  // preparation fields, Herd's version): equal keys give byte-equal prepared files, so one
  // preparation serves every job with the same key. "" = do not cache.
  std::string cache_key;
};

struct PreparationOutput {
  PreparationPlan plan;
  std::string train_path;       // prepared training rows (in `scratch`; the caller stores it)
  std::string validation_path;  // "" without validation data
};

class Preparer {
 public:
  explicit Preparer(PreparerOptions options) : options_(std::move(options)) {}

  // Prepares into `scratch` (a fresh folder the caller removes). Errors a user can act on are
  // INVALID_ARGUMENT / FAILED_PRECONDITION with herd-prepare's own message ("line 7: ...",
  // "no record fits max_seq_len 512"); DEADLINE_EXCEEDED past the timeout; INTERNAL otherwise.
  absl::StatusOr<PreparationOutput> Prepare(const PreparationInput& input, const std::string& scratch) const;

 private:
  // Constant after construction.
  const PreparerOptions options_;
};

// herd-prepare's complaint, for people: its stderr without the "herd-prepare: " prefix (the tail
// when long), or how it died.
std::string PrepareFailureReason(const SubprocessResult& result);

// The plan's schedule for `sequences` prepared rows (DESIGN.md §4, common/sharding.h):
// steps per epoch, total steps (capped by max_steps), and gradient accumulation at W trainers.
absl::Status FillSchedule(const JobSpec& spec, PreparationPlan& plan);

}  // namespace herd::coordinator

#endif  // HERD_COORDINATOR_PREPARATION_H_
