// The trainers the coordinator knows (DESIGN.md §3.3, §3.5; trainers.proto, cluster.proto):
// sessions and leases, the models each trainer holds, and per trainer the work it has been
// given and the cancellations it still has to act on. In memory only: what must be persisted
// comes back as return values (the registration, the trainers declared LOST) for the caller to
// write. The Scheduler decides who works on what; the registry records it and delivers it on
// heartbeats. Thread-safe.
//
// Delivery. An assignment is sent on every heartbeat answer until a heartbeat lists it (the
// acknowledgement). A cancellation is sent on every answer until a heartbeat that no longer
// lists its assignment arrives after it was sent once, or the trainer reports the engine's
// exit. A trainer is IDLE only when it has neither current work nor cancellations outstanding,
// so it never gets new work while an old engine may still be stopping.
//
// Adoption (DESIGN.md §3.9). After a coordinator restart the scheduler may expect a trainer to
// come back still running an assignment (ExpectAdoption). When that trainer registers again it
// holds the assignment at once (BUSY, nothing to deliver); its next heartbeat either lists it
// (reported in HeartbeatReply::adopted) or not (reported in HeartbeatReply::dropped).
#ifndef HERD_COORDINATOR_REGISTRY_H_
#define HERD_COORDINATOR_REGISTRY_H_

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "coordinator/clock.h"

namespace herd::coordinator {

enum class DeviceKind { kUnspecified, kCpu, kCuda };
std::string_view DeviceKindName(DeviceKind kind);  // "cpu", "cuda", "unspecified"

// One rank of one generation of a job: the unit of work a trainer runs.
struct AssignmentRef {
  std::string job_id;
  int64_t generation = 0;  // 1, 2, ...
  int rank = 0;            // 0 .. world_size-1

  friend bool operator==(const AssignmentRef&, const AssignmentRef&) = default;
  friend auto operator<=>(const AssignmentRef&, const AssignmentRef&) = default;
  std::string ToString() const;  // "job_x/g2/r0"
  // INVALID_ARGUMENT for an empty job id, generation < 1 or rank < 0.
  absl::Status Validate() const;
};

// Work for one trainer. The scheduling part only: the gRPC service adds the job's spec, data
// blobs, schedule and resume checkpoint when it converts this to herd.v1.Assignment.
struct Assignment {
  AssignmentRef ref;
  int world_size = 1;
  std::string base_model;
  std::string weights_sha256;        // the model's weights digest (trainers holding it agree)
  DeviceKind device_kind = DeviceKind::kCpu;  // shared by the whole world: NCCL or TCP
  int64_t grad_accum_steps = 1;      // global_batch / (world_size * micro_batch)
  absl::Time create_time;
};

// An order to stop one assignment's engine.
struct Cancellation {
  AssignmentRef ref;
  std::string reason;  // "job cancelled by user", "rank 1 failed", ...
};

enum class AssignmentPhase { kPreparing, kRendezvous, kTraining, kFinishing };

// What a trainer says about one assignment it holds, in a heartbeat.
struct AssignmentStatus {
  AssignmentRef ref;
  AssignmentPhase phase = AssignmentPhase::kPreparing;
  int64_t step = 0;  // steps completed
};

// The shape of a model, from its config.json (cluster.proto ModelConfigSummary).
struct ModelConfigSummary {
  std::string architecture;
  int num_layers = 0;
  int hidden_size = 0;
  int intermediate_size = 0;
  int num_attention_heads = 0;
  int num_key_value_heads = 0;
  int head_dim = 0;
  int vocab_size = 0;
  int max_position_embeddings = 0;
  double rope_theta = 0;
  bool tie_word_embeddings = false;
};

// A base model as a trainer publishes it. Two trainers hold the same model exactly when the
// name, the weights digest and the metadata files agree.
struct HeldModel {
  std::string name;
  std::map<std::string, std::string> files;  // metadata file name -> sha256 (config.json, ...)
  std::string weights_sha256;                // manifest digest of the weight files
  int64_t weights_size_bytes = 0;
  ModelConfigSummary config;                 // for ListModels; the service parses config.json
  std::string tokenizer;                     // "sentencepiece" | "bpe"
  std::string chat_template;                 // "llama2" | "llama3" | "" (none recognised)
};

struct TrainerRegistration {
  std::string name;                 // stable, unique in the cluster (common.proto name rules)
  DeviceKind device_kind = DeviceKind::kUnspecified;
  std::string device_name;          // "NVIDIA H100 80GB HBM3" or the CPU model
  int device_index = 0;             // CUDA ordinal; 0 for the CPU
  int64_t device_memory_bytes = 0;  // memory the engine may use
  std::string metrics_address;      // host:port of its /metrics; "" = none
  std::string agent_version;
  std::string engine_version;
  std::vector<HeldModel> models;

  // INVALID_ARGUMENT: bad trainer or model name, unspecified device, a model without
  // config.json or a tokenizer, a bad digest, a duplicate model, a malformed metrics address.
  // RESOURCE_EXHAUSTED: more than 64 models or 32 files in a model.
  absl::Status Validate() const;
};

enum class TrainerState { kIdle, kBusy, kLost };
std::string_view TrainerStateName(TrainerState state);  // "idle", "busy", "lost"

// A trainer as ListTrainers shows it.
struct TrainerInfo {
  std::string id;
  TrainerRegistration registration;
  TrainerState state = TrainerState::kIdle;
  std::optional<AssignmentRef> assignment;  // its work (or the work it is stopping) when busy
  int64_t step = 0;                         // last step a heartbeat reported for it
  absl::Time register_time;                 // start of the current (or last) session
  absl::Time last_heartbeat_time;
};

// A model as ListModels shows it.
struct ModelInfo {
  HeldModel model;
  std::vector<std::string> trainer_ids;  // non-LOST trainers holding it, by trainer name
  absl::Time create_time;                // first registered with these files and weights
};

// A trainer that can be given work, as the scheduler sees it.
struct IdleTrainer {
  std::string id;
  std::string name;
  DeviceKind device_kind = DeviceKind::kCpu;
  std::map<std::string, std::string> weights_by_model;  // model name -> weights sha256
};

// A live trainer as the scheduler sees it (idle or not).
struct LiveTrainer {
  IdleTrainer trainer;
  bool idle = false;
};

struct RegistryOptions {
  // How often trainers heartbeat (told to them at registration and in every answer).
  absl::Duration heartbeat_interval = absl::Seconds(5);
  // A trainer silent this long is LOST. Must exceed heartbeat_interval.
  absl::Duration lease = absl::Seconds(15);
  // LOST trainers stay listed this long after their last heartbeat (cluster.proto).
  absl::Duration lost_retention = absl::Hours(24);

  absl::Status Validate() const;
};

struct RegisterResult {
  std::string trainer_id;  // stable per name: "tr_" + a digest of the name
  std::string session_id;  // new for every registration
  absl::Duration heartbeat_interval;
  absl::Duration lease;
  TrainerInfo trainer;     // what to persist
};

struct HeartbeatReply {
  // For the trainer.
  std::vector<Assignment> assignments;      // not yet acknowledged
  std::vector<Cancellation> cancellations;  // apply before the assignments
  absl::Duration heartbeat_interval;
  // For the scheduler, not sent.
  bool freed = false;                  // the trainer went from busy to idle
  std::vector<AssignmentRef> dropped;  // acknowledged (or adopted) work the trainer stopped
                                       // listing without reporting an exit: its rank has failed
  std::vector<AssignmentRef> adopted;  // adopted work listed for the first time since the
                                       // trainer registered again: it is running it
};

// A trainer whose lease ran out (persist it; its rank, if any, has failed).
struct LostTrainer {
  std::string trainer_id;
  std::string name;
  std::optional<AssignmentRef> assignment;  // the work it held
  int64_t step = 0;                         // last step reported for that work
  absl::Time last_heartbeat_time;
};

class TrainerRegistry {
 public:
  // INVALID_ARGUMENT when options fail Validate(). `clock` must outlive the registry.
  static absl::StatusOr<std::unique_ptr<TrainerRegistry>> Create(const RegistryOptions& options,
                                                                 Clock* clock);

  // Opens a session. ALREADY_EXISTS while the name has a live session (the lease has not run
  // out); FAILED_PRECONDITION when a model name is known with other weights or files and a live
  // trainer holds those, or the model is in `models_in_use` (unfinished jobs); Validate()'s
  // errors. A LOST trainer comes back IDLE (its old work was failed when it was lost), or BUSY
  // with the assignment an ExpectAdoption left for it.
  absl::StatusOr<RegisterResult> Register(const TrainerRegistration& registration,
                                          const std::set<std::string>& models_in_use = {});

  // Renews the lease and exchanges work (see the top of this file). INVALID_ARGUMENT empty ids
  // or a malformed ref; NOT_FOUND unknown, superseded or expired session (register again).
  // Work listed that the trainer should not be running gets a cancellation.
  absl::StatusOr<HeartbeatReply> Heartbeat(const std::string& trainer_id,
                                           const std::string& session_id,
                                           const std::vector<AssignmentStatus>& statuses);

  // Declares LOST every live trainer whose last heartbeat is older than the lease, dropping its
  // work and cancellations, and forgets LOST trainers past lost_retention.
  std::vector<LostTrainer> ExpireLeases();

  // Restores a trainer known from the store (after a coordinator restart) as LOST, so it is
  // listed and keeps its models until it registers again.
  void RestoreLost(const std::string& trainer_id, const TrainerRegistration& registration,
                   absl::Time register_time, absl::Time last_heartbeat_time);

  // --- For the scheduler. ---
  // Live trainers (lease not run out), by name.
  std::vector<LiveTrainer> LiveTrainers() const;
  // Gives each trainer its assignment (parallel vectors), all or none: FAILED_PRECONDITION
  // when one of them is not live and idle.
  absl::Status AssignWorld(const std::vector<std::string>& trainer_ids,
                           const std::vector<Assignment>& assignments);
  // After a coordinator restart: `trainer_id` is believed to be running `assignment` already.
  // A trainer not live now holds it from its next registration on; a live idle one at once.
  // Either way it is not delivered: the next heartbeat must list it (see the top of this
  // file). Released like other work (Release, ResolveExit). FAILED_PRECONDITION when the
  // trainer is live and busy, or already expected back with other work.
  absl::Status ExpectAdoption(const std::string& trainer_id, const Assignment& assignment);
  // Takes `ref` away from its trainer. Work never delivered is simply withdrawn; delivered work
  // becomes a cancellation with `reason` (or, with send_cancel false, is waited out silently:
  // the trainer is freed when it reports the exit or stops listing it). An adoption whose
  // trainer has not come back yet becomes, with send_cancel, a cancellation it will find when it
  // registers (BUSY until it lets go), else is forgotten. Returns whether the trainer became idle.
  bool Release(const std::string& trainer_id, const AssignmentRef& ref, const std::string& reason,
               bool send_cancel);
  // The trainer's unacknowledged assignment, if any, marked as sent: for a heartbeat answer
  // built after a scheduling pass that gave this trainer work.
  std::vector<Assignment> DeliverPending(const std::string& trainer_id);
  // The trainer reported that `ref`'s engine has ended: the work or its cancellation is done.
  // Returns whether the trainer became idle.
  bool ResolveExit(const std::string& trainer_id, const AssignmentRef& ref);

  // --- Views. ---
  std::vector<TrainerInfo> ListTrainers() const;  // by name, LOST included
  std::vector<ModelInfo> ListModels() const;      // by name, unheld models included
  std::optional<TrainerInfo> GetTrainer(const std::string& trainer_id) const;
  const RegistryOptions& options() const { return options_; }

 private:
  struct Current {
    Assignment assignment;
    bool delivered = false;     // sent in a heartbeat answer
    bool acknowledged = false;  // listed in a heartbeat
    bool adopting = false;      // adopted at registration, not yet listed by a heartbeat
  };
  struct Drain {
    Cancellation cancellation;
    bool send = true;        // false: wait silently for the trainer to let go
    bool delivered = false;  // sent at least once
  };
  struct Trainer {
    std::string id;
    TrainerRegistration registration;
    bool live = false;
    std::string session_id;
    absl::Time register_time;
    absl::Time last_heartbeat_time;
    std::optional<Current> current;
    int64_t step = 0;
    std::vector<Drain> drains;

    bool Busy() const { return current.has_value() || !drains.empty(); }
  };
  struct ModelRecord {
    HeldModel model;
    absl::Time create_time;
  };

  TrainerRegistry(const RegistryOptions& options, Clock* clock);

  bool LeaseRunning(const Trainer& t, absl::Time now) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  TrainerInfo InfoLocked(const Trainer& t) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status CheckModelsLocked(const TrainerRegistration& registration,
                                 const std::set<std::string>& models_in_use) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void RecordModelsLocked(const TrainerRegistration& registration, absl::Time now)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  std::string NewSessionIdLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // Constant after construction.
  const RegistryOptions options_;
  Clock* const clock_;

  mutable absl::Mutex mu_;
  std::map<std::string, Trainer> trainers_ ABSL_GUARDED_BY(mu_);  // by id
  std::map<std::string, std::string> id_by_name_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, ModelRecord> models_ ABSL_GUARDED_BY(mu_);  // by name
  // Work a trainer not yet back is expected to hold when it registers again (ExpectAdoption),
  // by trainer id; once released with a cancellation, it comes back with that cancellation
  // outstanding instead (its engine may still run).
  struct Expected {
    Assignment assignment;
    std::optional<std::string> cancel_reason;
  };
  std::map<std::string, Expected> expected_ ABSL_GUARDED_BY(mu_);
  std::mt19937_64 session_rng_ ABSL_GUARDED_BY(mu_);
};

// "tr_" + the first 20 hex digits of sha256(name): the same id for a name across sessions and
// coordinator restarts, without storing a counter.
std::string TrainerIdForName(std::string_view name);

}  // namespace herd::coordinator

#endif  // HERD_COORDINATOR_REGISTRY_H_
