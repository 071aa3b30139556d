// JobControl: preparation worker, scheduler bookkeeping, cancellation, publication, restore.
#include "coordinator/job_control.h"

#include <filesystem>
#include <map>
#include <utility>

#include "common/file_util.h"
#include "common/log.h"
#include "common/sha256.h"
#include "common/status.h"
#include "common/strings.h"
#include "nlohmann/json.hpp"
#include "trainer/engine/model/adapter_format.h"
#include "trainer/engine/model/llama_config.h"

namespace herd::coordinator {
namespace {

namespace fs = std::filesystem;
using store::JobRecord;
using store::JobState;

// A fresh scratch folder under `root` (removed by the caller).
absl::StatusOr<std::string> MakeScratch(const std::string& root, std::string_view label) {
  std::error_code ec;
  fs::create_directories(root, ec);
  if (ec) return absl::UnavailableError(StrCat("cannot create ", root, ": ", ec.message()));
  std::string pattern = StrCat(root, "/", label, "-XXXXXX");
  if (::mkdtemp(pattern.data()) == nullptr) {
    return absl::UnavailableError(StrCat("cannot create a folder under ", root, ": ", std::strerror(errno)));
  }
  return pattern;
}

void RemoveAll(const std::string& path) {
  std::error_code ec;
  fs::remove_all(path, ec);
}

}  // namespace

absl::Status PersistSchedulerEvents(store::Store& store, const SchedulerEvents& events) {
  absl::Status first;
  auto note = [&first](const absl::Status& s) {
    if (!s.ok() && first.ok()) first = s;
  };
  for (const LostTrainer& lost : events.lost) {
    // By name: a row registered before ids were shared with the registry has a store-made id.
    auto record = store.trainers().GetByName(lost.name);
    if (!record.ok()) {
      note(record.status());
      continue;
    }
    note(store.trainers().SetState(record->id, "LOST", lost.last_heartbeat_time));
  }
  // Before the worlds: a job given up after a restart may form its next generation in the same call.
  for (const JobRecovering& recovering : events.recovering) {
    auto name_of = [&store](const std::string& id) {
      auto trainer = store.trainers().Get(id);
      return trainer.ok() ? trainer->name : id;
    };
    std::vector<std::string> names;
    for (const std::string& id : recovering.missing_trainer_ids) names.push_back(name_of(id));
    // A running world that lost a rank: name the whole world (the rank that failed first may be
    // the peer of the trainer at fault, its engine failing for want of it).
    std::vector<std::string> world;
    for (const std::string& id : recovering.trainer_ids) world.push_back(name_of(id));
    auto job = store.jobs().GetById(recovering.job_id);
    const int64_t resume_step = job.ok() ? job->last_checkpoint_step : 0;
    store::TransitionInfo info;
    const std::string who =
        names.empty() ? "" : StrCat("trainer", names.size() == 1 ? " " : "s ", StrJoin(names, ", "), " ");
    // After a restart the reason says what the missing trainers did; else it names the failed rank.
    info.message = StrCat(recovering.after_restart ? StrCat("coordinator restarted: ", who) : "", recovering.reason,
                          "; generation ", recovering.generation,
                          recovering.after_restart || world.empty() ? "" : StrCat(" on ", StrJoin(world, ", ")),
                          " is replaced",
                          resume_step > 0 ? StrCat(", resuming after step ", resume_step) : "");
    info.expected_from = JobState::kRunning;
    note(store.jobs().Transition(recovering.job_id, JobState::kRecovering, info).status());
  }
  for (const WorldStarted& started : events.started) {
    store::WorldInfo world;
    world.generation = started.generation;
    world.trainer_ids = started.trainer_ids;
    // A later generation resumes from the newest stored checkpoint.
    if (auto job = store.jobs().GetById(started.job_id); job.ok()) world.resume_step = job->last_checkpoint_step;
    world.message = StrCat("generation ", started.generation, " formed on ", started.trainer_ids.size(), " ",
                           DeviceKindName(started.device_kind), " trainer(s)",
                           world.resume_step > 0 ? StrCat(", resuming after step ", world.resume_step) : "");
    note(store.jobs().FormWorld(started.job_id, world).status());
  }
  for (const WorldAdopted& adopted : events.adopted) {
    store::JobEvent event;
    event.type = store::JobEventType::kNotice;
    event.generation = adopted.generation;
    event.message = StrCat("generation ", adopted.generation, " keeps running: its ", adopted.trainer_ids.size(),
                           " trainer(s) came back after the coordinator's restart");
    auto appended = store.jobs().AppendEvent(adopted.job_id, event);
    if (!absl::IsFailedPrecondition(appended.status())) note(appended.status());  // final: nothing to add
  }
  for (const JobEnded& ended : events.ended) {
    if (ended.end == JobEnd::kSucceeded) continue;  // Finish's caller has written it
    auto job = store.jobs().GetById(ended.job_id);
    if (job.ok() && store::IsFinal(job->state)) continue;  // CancelJob wrote it first
    store::TransitionInfo info;
    info.message = ended.reason;
    if (ended.end == JobEnd::kCancelled) {
      info.failure = store::Failure{.code = "CANCELLED", .message = ended.reason};
      note(store.jobs().Transition(ended.job_id, JobState::kCancelled, info).status());
    } else {
      info.failure = store::Failure{.code = ended.trainer_fault ? "UNAVAILABLE" : "ABORTED", .message = ended.reason};
      note(store.jobs().Transition(ended.job_id, JobState::kFailed, info).status());
    }
  }
  return first;
}

void RunSchedulerTicks(Scheduler& scheduler, store::Store& store, absl::Notification& stop, absl::Duration period,
                       std::function<absl::Status(const SchedulerEvents&)> persist,
                       std::function<void()> each_tick) {
  while (!stop.WaitForNotificationWithTimeout(period)) {
    SchedulerEvents events = scheduler.Tick();
    if (each_tick) each_tick();
    if (events.empty()) continue;
    for (const LostTrainer& lost : events.lost) HERD_LOG(Warning) << "trainer " << lost.name << " lost";
    if (absl::Status s = persist ? persist(events) : PersistSchedulerEvents(store, events); !s.ok()) {
      HERD_LOG(Error) << "could not record scheduler events: " << s;
    }
  }
}

JobRequest MakeJobRequest(const JobRecord& job) {
  JobRequest r;
  r.job_id = job.id;
  r.tenant = job.tenant;
  r.base_model = job.spec.base_model;
  r.trainers = job.spec.resources.trainers;
  r.priority = job.spec.resources.priority;
  r.global_batch_size = job.spec.training.global_batch_size;
  r.micro_batch_size = job.spec.training.micro_batch_size;
  r.last_generation = job.generation;
  r.recoveries = job.recoveries;
  r.submit_time = job.create_time;
  return r;
}

JobControl::JobControl(store::Store* store, Scheduler* scheduler, JobControlOptions options)
    : store_(store), scheduler_(scheduler), options_(std::move(options)), preparer_(options_.preparer) {}

JobControl::~JobControl() { Stop(); }

void JobControl::Start() {
  absl::MutexLock lock(&mu_);
  if (worker_.joinable()) return;
  stopping_ = false;
  cancel_ = false;
  worker_ = std::thread([this] { WorkerLoop(); });
}

void JobControl::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  cancel_ = true;
  if (worker_.joinable()) worker_.join();
}

void JobControl::WorkerLoop() {
  while (true) {
    std::string job_id;
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(
          +[](JobControl* self) ABSL_EXCLUSIVE_LOCKS_REQUIRED(self->mu_) {
            return self->stopping_ || !self->pending_.empty();
          },
          this));
      if (stopping_) return;
      job_id = pending_.front();
      pending_.pop_front();
      busy_ = true;
    }
    PrepareOne(job_id);
    absl::MutexLock lock(&mu_);
    busy_ = false;
  }
}

void JobControl::WaitForIdle() {
  absl::MutexLock lock(&mu_);
  mu_.Await(absl::Condition(
      +[](JobControl* self) ABSL_EXCLUSIVE_LOCKS_REQUIRED(self->mu_) {
        return self->stopping_ || (self->pending_.empty() && !self->busy_);
      },
      this));
}

void JobControl::Prepare(const std::string& job_id) {
  absl::MutexLock lock(&mu_);
  pending_.push_back(job_id);
}

absl::Status JobControl::CheckSpec(const JobSpec& spec) const {
  auto model = store_->trainers().GetModel(spec.base_model);
  if (absl::IsNotFound(model.status())) {
    return absl::FailedPreconditionError(
        StrCat("base_model: no trainer has registered a model named ", spec.base_model, " (see `herd models list`)"));
  }
  HERD_RETURN_IF_ERROR(model.status());
  for (const store::NamedBlob& f : model->files) {
    if (f.name != "config.json") continue;
    HERD_ASSIGN_OR_RETURN(std::string text, store_->blobs().Read(f.blob.sha256));
    auto config = engine::ParseLlamaConfig(text, StrCat(spec.base_model, "/config.json"));
    if (config.ok() && spec.training.max_seq_len > config->max_position_embeddings) {
      return absl::FailedPreconditionError(StrCat("training.max_seq_len ", spec.training.max_seq_len,
                                                  " is above ", spec.base_model, "'s max_position_embeddings ",
                                                  config->max_position_embeddings));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<PreparationInput> JobControl::Inputs(std::string_view tenant, const JobSpec& spec) const {
  PreparationInput in;
  in.spec = spec;
  HERD_ASSIGN_OR_RETURN(store::DatasetRecord data, store_->datasets().Get(tenant, spec.dataset));
  in.dataset_path = store_->blobs().PathOf(data.sha256);
  in.skip_invalid = data.skip_invalid;
  std::string validation_sha;
  if (!spec.validation_dataset.empty()) {
    HERD_ASSIGN_OR_RETURN(store::DatasetRecord v, store_->datasets().Get(tenant, spec.validation_dataset));
    in.validation_path = store_->blobs().PathOf(v.sha256);
    in.validation_skip_invalid = v.skip_invalid;
    validation_sha = v.sha256;
  }
  auto model = store_->trainers().GetModel(spec.base_model);
  if (absl::IsNotFound(model.status())) {
    return absl::FailedPreconditionError(StrCat("base_model: no trainer has registered ", spec.base_model));
  }
  HERD_RETURN_IF_ERROR(model.status());
  std::map<std::string, std::string> model_digests;
  for (const store::NamedBlob& f : model->files) {
    in.model_files[f.name] = store_->blobs().PathOf(f.blob.sha256);
    model_digests[f.name] = f.blob.sha256;
  }
  // Everything herd-prepare's output depends on (the schedule is not: it is recomputed per job).
  std::string key = StrCat("herd-prepare ", HERD_VERSION, "\ndata ", data.sha256, " ", data.skip_invalid,
                           "\nformat ", spec.format, "\ntemplate ", spec.chat_template, "\ninputs ",
                           spec.train_on_inputs, "\nseq ", spec.training.max_seq_len, " ", spec.training.packing,
                           "\nseed ", spec.training.seed, "\n");
  if (in.validation_path.empty()) {
    key += StrCat("split ", spec.validation_split, "\n");
  } else {
    key += StrCat("validation ", validation_sha, " ", in.validation_skip_invalid, "\n");
  }
  for (const auto& [name, sha] : model_digests) key += StrCat("model ", name, " ", sha, "\n");
  in.cache_key = Sha256Hex(key);
  return in;
}

// The cache of prepared data (DESIGN.md §4: produced once per dataset, tokenizer, template and
// sequence length): <work_dir>/cache/<key>.json names the blobs and the data-level plan.
std::optional<store::PreparedInfo> JobControl::CachedPreparation(const std::string& key, const JobSpec& spec) const {
  if (key.empty()) return std::nullopt;
  auto text = ReadFile(StrCat(options_.preparer.work_dir, "/cache/", key, ".json"));
  if (!text.ok()) return std::nullopt;
  nlohmann::json j = nlohmann::json::parse(*text, nullptr, false);
  if (!j.is_object() || !j.contains("train") || !j.contains("plan")) return std::nullopt;
  auto blob = [&](const nlohmann::json& b) -> std::optional<store::BlobRef> {
    if (!b.is_object()) return std::nullopt;
    store::BlobRef ref{.sha256 = b.value("sha256", ""), .size_bytes = b.value("size_bytes", int64_t{0})};
    // Touch renews the blob's age for the garbage collector; a collected blob misses the cache.
    auto size = store_->blobs().Touch(ref.sha256);
    if (!size.ok() || *size != ref.size_bytes) return std::nullopt;
    return ref;
  };
  store::PreparedInfo info;
  auto train = blob(j["train"]);
  if (!train) return std::nullopt;
  info.train_data = *train;
  if (j.contains("validation") && !j["validation"].is_null()) {
    info.validation_data = blob(j["validation"]);
    if (!info.validation_data) return std::nullopt;
  }
  auto plan = PreparationPlan::FromProtoJson(j["plan"].get<std::string>());
  if (!plan.ok() || !FillSchedule(spec, *plan).ok()) return std::nullopt;
  info.plan_json = plan->ToProtoJson();
  info.message = StrCat(plan->records, " records, ", plan->sequences, " sequences of ", spec.training.max_seq_len,
                        " tokens (", static_cast<int>(plan->packing_efficiency * 1000) / 10.0, "% packed), ",
                        plan->total_steps, " steps; prepared data reused (same dataset, tokenizer and settings)");
  return info;
}

void JobControl::RememberPreparation(const std::string& key, const store::PreparedInfo& info) const {
  if (key.empty()) return;
  auto ref = [](const store::BlobRef& b) { return nlohmann::json{{"sha256", b.sha256}, {"size_bytes", b.size_bytes}}; };
  nlohmann::json j = {{"train", ref(info.train_data)},
                      {"validation", info.validation_data ? ref(*info.validation_data) : nlohmann::json()},
                      {"plan", info.plan_json}};
  const std::string dir = StrCat(options_.preparer.work_dir, "/cache");
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (absl::Status s = WriteFileAtomic(StrCat(dir, "/", key, ".json"), j.dump()); !s.ok()) {
    HERD_LOG(Warning) << "could not remember a preparation: " << s;
  }
}

absl::StatusOr<PreparationPlan> JobControl::DryRun(std::string_view tenant, const JobSpec& spec) const {
  HERD_RETURN_IF_ERROR(CheckSpec(spec));
  HERD_ASSIGN_OR_RETURN(PreparationInput in, Inputs(tenant, spec));
  HERD_ASSIGN_OR_RETURN(std::string scratch, MakeScratch(options_.preparer.work_dir, "dry-run"));
  auto out = preparer_.Prepare(in, scratch);
  RemoveAll(scratch);
  if (!out.ok()) {
    if (absl::IsInvalidArgument(out.status())) {
      return absl::FailedPreconditionError(StrCat("preparation failed: ", out.status().message()));
    }
    return out.status();
  }
  return out->plan;
}

void JobControl::PrepareOne(const std::string& job_id) {
  auto job = store_->jobs().GetById(job_id);
  if (!job.ok() || job->state != JobState::kValidating) return;  // cancelled meanwhile, or gone
  auto fail = [&](const absl::Status& s) {
    HERD_LOG(Warning) << "job " << job_id << ": preparation failed: " << s;
    store::TransitionInfo info;
    info.message = StrCat("preparation failed: ", s.message());
    info.failure = store::Failure{.code = std::string(absl::StatusCodeToString(s.code())), .message = std::string(s.message())};
    info.expected_from = JobState::kValidating;
    if (auto t = store_->jobs().Transition(job_id, JobState::kFailed, info); t.ok()) Ended(job_id);
  };
  auto in = Inputs(job->tenant, job->spec);
  if (!in.ok()) return fail(in.status());
  if (std::optional<store::PreparedInfo> cached = CachedPreparation(in->cache_key, job->spec)) {
    auto queued = store_->jobs().Prepared(job_id, *cached);
    if (!queued.ok()) return;  // cancelled meanwhile
    return Submit(*queued);
  }
  auto scratch = MakeScratch(options_.preparer.work_dir, job_id);
  if (!scratch.ok()) return fail(scratch.status());
  const absl::Time start = absl::Now();
  PreparerOptions popts = options_.preparer;
  auto out = Preparer(popts).Prepare(*in, *scratch);
  if (!out.ok()) {
    RemoveAll(*scratch);
    if (cancel_) return;  // stopping: the job stays VALIDATING and is prepared after a restart
    return fail(out.status());
  }
  store::PreparedInfo info;
  info.plan_json = out->plan.ToProtoJson();
  auto train = store_->blobs().PutFile(out->train_path);
  if (!train.ok()) {
    RemoveAll(*scratch);
    return fail(train.status());
  }
  info.train_data = *train;
  if (!out->validation_path.empty()) {
    auto validation = store_->blobs().PutFile(out->validation_path);
    if (!validation.ok()) {
      RemoveAll(*scratch);
      return fail(validation.status());
    }
    info.validation_data = *validation;
  }
  RemoveAll(*scratch);
  const PreparationPlan& p = out->plan;
  info.message = StrCat(p.records, " records, ", p.sequences, " sequences of ", job->spec.training.max_seq_len,
                        " tokens (", static_cast<int>(p.packing_efficiency * 1000) / 10.0, "% packed), ",
                        p.total_steps, " steps; prepared in ", absl::FormatDuration(absl::Trunc(absl::Now() - start, absl::Milliseconds(1))));
  auto queued = store_->jobs().Prepared(job_id, info);
  if (!queued.ok()) {
    HERD_LOG(Warning) << "job " << job_id << ": could not record its preparation: " << queued.status();
    return;  // cancelled meanwhile
  }
  RememberPreparation(in->cache_key, info);
  if (options_.on_prepared) options_.on_prepared(absl::ToDoubleSeconds(absl::Now() - start), p.tokens);
  Submit(*queued);
}

void JobControl::Submit(const JobRecord& queued) {
  const std::string& job_id = queued.id;
  auto events = scheduler_->Submit(MakeJobRequest(queued));
  if (!events.ok()) {
    store::TransitionInfo t;
    t.failure = store::Failure{.code = std::string(absl::StatusCodeToString(events.status().code())),
                               .message = std::string(events.status().message())};
    t.message = StrCat("could not queue: ", events.status().message());
    if (store_->jobs().Transition(job_id, JobState::kFailed, t).ok()) Ended(job_id);
    return;
  }
  if (absl::Status s = Persist(*events); !s.ok()) {
    HERD_LOG(Error) << "could not record scheduler events: " << s;
  }
}

absl::StatusOr<JobRecord> JobControl::Cancel(std::string_view tenant, std::string_view id, std::string_view reason) {
  HERD_ASSIGN_OR_RETURN(JobRecord job, store_->jobs().Cancel(tenant, id, reason));
  auto events = scheduler_->Cancel(job.id);
  if (events.ok()) {
    if (absl::Status s = Persist(*events); !s.ok()) {
      HERD_LOG(Error) << "could not record scheduler events: " << s;
    }
  } else if (!absl::IsNotFound(events.status())) {
    HERD_LOG(Error) << "scheduler could not cancel " << job.id << ": " << events.status();
  }
  Ended(job.id);
  return job;
}

absl::Status JobControl::Persist(const SchedulerEvents& events) {
  absl::Status s = PersistSchedulerEvents(*store_, events);
  if (options_.on_events) options_.on_events(events);
  for (const JobEnded& e : events.ended) Ended(e.job_id);
  return s;
}

void JobControl::Ended(const std::string& job_id) {
  if (options_.on_final) options_.on_final(job_id);
}

absl::Status JobControl::PublishFinal(const std::string& job_id, const store::NewCheckpoint& checkpoint) {
  HERD_ASSIGN_OR_RETURN(JobRecord job, store_->jobs().GetById(job_id));
  // The checks (DESIGN.md §3.10) on the two adapter files, through links in a scratch folder.
  absl::Status verdict = [&]() -> absl::Status {
    HERD_ASSIGN_OR_RETURN(std::string scratch, MakeScratch(options_.preparer.work_dir, StrCat("publish-", job_id)));
    absl::Status s = [&]() -> absl::Status {
      for (const store::NamedBlob& f : checkpoint.files) {
        if (f.name != store::kAdapterConfigFile && f.name != store::kAdapterWeightsFile) continue;
        std::error_code ec;
        fs::create_symlink(store_->blobs().PathOf(f.blob.sha256), StrCat(scratch, "/", f.name), ec);
        if (ec) return absl::UnavailableError(StrCat("cannot link ", f.name, ": ", ec.message()));
      }
      HERD_ASSIGN_OR_RETURN(store::ModelRecord model, store_->trainers().GetModel(job.spec.base_model));
      std::string config_text;
      for (const store::NamedBlob& f : model.files) {
        if (f.name == "config.json") {
          HERD_ASSIGN_OR_RETURN(config_text, store_->blobs().Read(f.blob.sha256));
        }
      }
      HERD_ASSIGN_OR_RETURN(engine::LlamaConfig config,
                            engine::ParseLlamaConfig(config_text, StrCat(job.spec.base_model, "/config.json")));
      HERD_ASSIGN_OR_RETURN(engine::AdapterConfig adapter, engine::ValidateAdapterDir(scratch, config));
      HERD_ASSIGN_OR_RETURN(std::vector<engine::Proj> want, engine::ParseTargetModules(job.spec.lora.target_modules));
      if (adapter.r != job.spec.lora.r || adapter.alpha != job.spec.lora.alpha ||
          adapter.rslora != job.spec.lora.rslora || adapter.targets != want) {
        return absl::InvalidArgumentError(StrCat("adapter_config.json does not match the job's LoRA settings (r ",
                                                 adapter.r, " vs ", job.spec.lora.r, ", alpha ", adapter.alpha,
                                                 " vs ", job.spec.lora.alpha, ")"));
      }
      return absl::OkStatus();
    }();
    RemoveAll(scratch);
    return s;
  }();
  if (!verdict.ok()) {
    if (absl::IsUnavailable(verdict)) return verdict;  // our fault: the agent retries
    store::TransitionInfo info;
    info.message = StrCat("the final adapter failed the publication checks: ", verdict.message());
    info.failure = store::Failure{.code = "INVALID_ARGUMENT", .message = info.message};
    HERD_RETURN_IF_ERROR(store_->jobs().Transition(job_id, JobState::kFailed, info).status());
    if (auto events = scheduler_->Finish(job_id, JobEnd::kFailed, info.message); events.ok()) {
      (void)Persist(*events);
    }
    Ended(job_id);
    return absl::InvalidArgumentError(info.message);
  }
  // Stored first, then the states: a restart between them finds the final adapter and publishes.
  HERD_RETURN_IF_ERROR(store_->checkpoints().Add(job_id, checkpoint).status());
  HERD_ASSIGN_OR_RETURN(job, store_->jobs().GetById(job_id));
  if (job.state == JobState::kRunning) {
    HERD_RETURN_IF_ERROR(store_->jobs().Transition(job_id, JobState::kPublishing, {.message = "checking the final adapter"}).status());
  }
  if (job.state != JobState::kSucceeded) {
    HERD_RETURN_IF_ERROR(store_->jobs()
                             .Transition(job_id, JobState::kSucceeded,
                                         {.message = StrCat("adapter published (step ", checkpoint.step, ")")})
                             .status());
  }
  if (options_.on_published) options_.on_published(job_id, checkpoint.step);
  if (auto events = scheduler_->Finish(job_id, JobEnd::kSucceeded, "adapter published"); events.ok()) {
    (void)Persist(*events);
  }
  Ended(job_id);
  return absl::OkStatus();
}

absl::Status JobControl::Restore() {
  HERD_ASSIGN_OR_RETURN(std::vector<JobRecord> jobs,
                        store_->jobs().ListByState({JobState::kValidating, JobState::kQueued, JobState::kRunning,
                                                    JobState::kRecovering, JobState::kPublishing}));
  for (const JobRecord& job : jobs) {
    switch (job.state) {
      case JobState::kValidating:
        Prepare(job.id);
        break;
      case JobState::kQueued:
      case JobState::kRecovering: {
        auto events = scheduler_->Submit(MakeJobRequest(job));
        if (!events.ok()) return events.status();
        HERD_RETURN_IF_ERROR(Persist(*events));
        break;
      }
      case JobState::kRunning:
      case JobState::kPublishing: {
        // A stored final adapter means the job had finished: publish it.
        auto latest = store_->checkpoints().Latest(job.id);
        if (latest.ok() && *latest && (*latest)->final) {
          if (job.state == JobState::kRunning) {
            HERD_RETURN_IF_ERROR(store_->jobs().Transition(job.id, JobState::kPublishing, {.message = "publishing after a restart"}).status());
          }
          HERD_RETURN_IF_ERROR(store_->jobs().Transition(job.id, JobState::kSucceeded, {.message = "adapter published"}).status());
          break;
        }
        if (job.state == JobState::kPublishing) {
          store::TransitionInfo info{.message = "the coordinator restarted while publishing, before the adapter was stored"};
          info.failure = store::Failure{.code = "ABORTED", .message = info.message};
          HERD_RETURN_IF_ERROR(store_->jobs().Transition(job.id, JobState::kFailed, info).status());
          break;
        }
        // DESIGN.md §3.9: the world keeps running if its trainers come back within the grace;
        // the scheduler reports RECOVERING (persisted by PersistSchedulerEvents) if they do not.
        if (options_.restart_grace > absl::ZeroDuration()) {
          const absl::Status adopted =
              scheduler_->Adopt(MakeJobRequest(job), job.generation, job.trainer_ids, options_.restart_grace);
          if (adopted.ok()) {
            HERD_LOG(Info) << "job " << job.id << ": waiting up to " << options_.restart_grace << " for the "
                           << job.trainer_ids.size() << " trainer(s) of generation " << job.generation;
            break;
          }
          HERD_LOG(Warning) << "job " << job.id << ": cannot keep generation " << job.generation
                            << " running (" << adopted << "); recovering";
        }
        HERD_ASSIGN_OR_RETURN(
            JobRecord recovering,
            store_->jobs().Transition(job.id, JobState::kRecovering,
                                      {.message = StrCat("coordinator restarted: generation ", job.generation,
                                                         " is replaced, resuming after step ",
                                                         job.last_checkpoint_step)}));
        auto events = scheduler_->Submit(MakeJobRequest(recovering));
        if (!events.ok()) return events.status();
        HERD_RETURN_IF_ERROR(Persist(*events));
        break;
      }
      default:
        break;
    }
  }
  return absl::OkStatus();
}

}  // namespace herd::coordinator
