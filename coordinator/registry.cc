#include "coordinator/registry.h"

#include <algorithm>
#include <random>
#include <utility>

#include "common/sha256.h"
#include "common/strings.h"

namespace herd::coordinator {
namespace {

constexpr size_t kMaxModels = 64;
constexpr size_t kMaxFilesPerModel = 32;

bool ValidUtf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    size_t extra = 0;
    if (c >= 0x80) {
      if ((c >> 5) == 0x6) {
        extra = 1;
      } else if ((c >> 4) == 0xE) {
        extra = 2;
      } else if ((c >> 3) == 0x1E) {
        extra = 3;
      } else {
        return false;
      }
    }
    if (i + extra >= s.size()) return false;
    for (size_t k = 1; k <= extra; ++k) {
      if ((static_cast<unsigned char>(s[i + k]) >> 6) != 0x2) return false;
    }
    i += extra + 1;
  }
  return true;
}

// The name rules of common.proto, for trainer, model and file names.
absl::Status CheckName(std::string_view field, std::string_view name) {
  auto bad = [&](std::string_view why) {
    return absl::InvalidArgumentError(StrCat(field, " \"", name.substr(0, 160), "\" ", why));
  };
  if (name.empty() || name.size() > 128) return bad("must be 1 to 128 bytes");
  if (!ValidUtf8(name)) return bad("is not valid UTF-8");
  for (char c : name) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7f) return bad("contains a control character");
    if (c == '/' || c == '\\') return bad("contains a path separator");
  }
  if (name == "." || name == "..") return bad("is not a name");
  if (name.front() == ' ' || name.back() == ' ' || name.front() == '\t' || name.back() == '\t') {
    return bad("has leading or trailing whitespace");
  }
  return absl::OkStatus();
}

bool IsSha256Hex(std::string_view s) {
  return s.size() == 64 && std::all_of(s.begin(), s.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
}

bool ValidHostPort(std::string_view address) {
  const size_t colon = address.rfind(':');
  if (colon == std::string_view::npos || colon == 0 || colon + 1 == address.size()) return false;
  std::string_view port = address.substr(colon + 1);
  if (port.size() > 5 || !std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    return false;
  }
  const int value = std::stoi(std::string(port));
  if (value < 1 || value > 65535) return false;
  for (char c : address.substr(0, colon)) {
    if (static_cast<unsigned char>(c) <= 0x20 || c == '/') return false;
  }
  return true;
}

// Why two publications of one model name differ, or "" when they agree.
std::string ModelDifference(const HeldModel& known, const HeldModel& offered) {
  if (known.weights_sha256 != offered.weights_sha256) {
    return StrCat("weights differ (", known.weights_sha256.substr(0, 12), "… registered, ",
                  offered.weights_sha256.substr(0, 12), "… offered)");
  }
  std::vector<std::string> differing;
  for (const auto& [file, sha] : known.files) {
    auto it = offered.files.find(file);
    if (it == offered.files.end() || it->second != sha) differing.push_back(file);
  }
  for (const auto& [file, sha] : offered.files) {
    if (!known.files.contains(file)) differing.push_back(file);
  }
  if (!differing.empty()) return StrCat("files differ: ", StrJoin(differing, ", "));
  return "";
}

}  // namespace

std::string_view DeviceKindName(DeviceKind kind) {
  switch (kind) {
    case DeviceKind::kCpu: return "cpu";
    case DeviceKind::kCuda: return "cuda";
    case DeviceKind::kUnspecified: break;
  }
  return "unspecified";
}

std::string_view TrainerStateName(TrainerState state) {
  switch (state) {
    case TrainerState::kIdle: return "idle";
    case TrainerState::kBusy: return "busy";
    case TrainerState::kLost: return "lost";
  }
  return "unknown";
}

std::string AssignmentRef::ToString() const { return StrCat(job_id, "/g", generation, "/r", rank); }

absl::Status AssignmentRef::Validate() const {
  if (job_id.empty()) return absl::InvalidArgumentError("assignment ref: job_id is empty");
  if (generation < 1) return absl::InvalidArgumentError(StrCat("assignment ref: generation ", generation, " < 1"));
  if (rank < 0) return absl::InvalidArgumentError(StrCat("assignment ref: rank ", rank, " < 0"));
  return absl::OkStatus();
}

absl::Status TrainerRegistration::Validate() const {
  if (absl::Status s = CheckName("trainer name", name); !s.ok()) return s;
  if (device_kind == DeviceKind::kUnspecified) {
    return absl::InvalidArgumentError("device kind must be cpu or cuda");
  }
  if (device_memory_bytes < 0) return absl::InvalidArgumentError("device memory_bytes is negative");
  if (!metrics_address.empty() && !ValidHostPort(metrics_address)) {
    return absl::InvalidArgumentError(StrCat("metrics_address \"", metrics_address, "\" is not host:port"));
  }
  if (models.size() > kMaxModels) {
    return absl::ResourceExhaustedError(StrCat(models.size(), " models; at most ", kMaxModels));
  }
  std::set<std::string> seen;
  for (const HeldModel& m : models) {
    if (absl::Status s = CheckName("model name", m.name); !s.ok()) return s;
    if (!seen.insert(m.name).second) {
      return absl::InvalidArgumentError(StrCat("model \"", m.name, "\" is listed twice"));
    }
    if (m.files.size() > kMaxFilesPerModel) {
      return absl::ResourceExhaustedError(
          StrCat("model \"", m.name, "\": ", m.files.size(), " files; at most ", kMaxFilesPerModel));
    }
    for (const auto& [file, sha] : m.files) {
      if (absl::Status s = CheckName(StrCat("model \"", m.name, "\" file name"), file); !s.ok()) return s;
      if (!IsSha256Hex(sha)) {
        return absl::InvalidArgumentError(StrCat("model \"", m.name, "\" file ", file, ": sha256 is not 64 lowercase hex"));
      }
    }
    if (!m.files.contains("config.json")) {
      return absl::InvalidArgumentError(StrCat("model \"", m.name, "\" has no config.json"));
    }
    if (!m.files.contains("tokenizer.model") && !m.files.contains("tokenizer.json")) {
      return absl::InvalidArgumentError(
          StrCat("model \"", m.name, "\" has no tokenizer (tokenizer.model or tokenizer.json)"));
    }
    if (!IsSha256Hex(m.weights_sha256)) {
      return absl::InvalidArgumentError(StrCat("model \"", m.name, "\": weights_sha256 is not 64 lowercase hex"));
    }
    if (m.weights_size_bytes < 0) {
      return absl::InvalidArgumentError(StrCat("model \"", m.name, "\": weights_size_bytes is negative"));
    }
  }
  return absl::OkStatus();
}

absl::Status RegistryOptions::Validate() const {
  if (heartbeat_interval <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("heartbeat_interval must be positive");
  }
  if (lease <= heartbeat_interval) {
    return absl::InvalidArgumentError(StrCat("lease (", absl::FormatDuration(lease),
                                             ") must exceed heartbeat_interval (",
                                             absl::FormatDuration(heartbeat_interval), ")"));
  }
  if (lost_retention < absl::ZeroDuration()) {
    return absl::InvalidArgumentError("lost_retention must not be negative");
  }
  return absl::OkStatus();
}

std::string TrainerIdForName(std::string_view name) {
  return StrCat("tr_", Sha256Hex(name).substr(0, 20));
}

absl::StatusOr<std::unique_ptr<TrainerRegistry>> TrainerRegistry::Create(const RegistryOptions& options,
                                                                         Clock* clock) {
  if (absl::Status s = options.Validate(); !s.ok()) return s;
  if (clock == nullptr) return absl::InvalidArgumentError("registry needs a clock");
  return std::unique_ptr<TrainerRegistry>(new TrainerRegistry(options, clock));
}

TrainerRegistry::TrainerRegistry(const RegistryOptions& options, Clock* clock)
    : options_(options), clock_(clock), session_rng_(std::random_device{}()) {}

bool TrainerRegistry::LeaseRunning(const Trainer& t, absl::Time now) const {
  return t.live && now - t.last_heartbeat_time <= options_.lease;
}

std::string TrainerRegistry::NewSessionIdLocked() {
  return StrCat("ses_", Sha256Hex(StrCat(session_rng_(), ":", session_rng_(), ":",
                                         absl::ToUnixNanos(clock_->Now())))
                            .substr(0, 32));
}

absl::Status TrainerRegistry::CheckModelsLocked(const TrainerRegistration& registration,
                                                const std::set<std::string>& models_in_use) const {
  const absl::Time now = clock_->Now();
  for (const HeldModel& offered : registration.models) {
    auto known = models_.find(offered.name);
    if (known == models_.end()) continue;
    const std::string difference = ModelDifference(known->second.model, offered);
    if (difference.empty()) continue;
    std::vector<std::string> holders;
    for (const auto& [id, t] : trainers_) {
      if (t.registration.name == registration.name || !LeaseRunning(t, now)) continue;
      for (const HeldModel& m : t.registration.models) {
        if (m.name == offered.name) holders.push_back(t.registration.name);
      }
    }
    if (!holders.empty() || models_in_use.contains(offered.name)) {
      return absl::FailedPreconditionError(StrCat(
          "model \"", offered.name, "\" is already registered and ", difference, "; ",
          holders.empty() ? std::string("unfinished jobs use it")
                          : StrCat("live trainers hold it (", StrJoin(holders, ", "), ")"),
          ". Rename the model, or change it once no live trainer holds the old one and no "
          "unfinished job uses it"));
    }
  }
  return absl::OkStatus();
}

void TrainerRegistry::RecordModelsLocked(const TrainerRegistration& registration, absl::Time now) {
  for (const HeldModel& m : registration.models) {
    auto it = models_.find(m.name);
    if (it == models_.end() || !ModelDifference(it->second.model, m).empty()) {
      models_[m.name] = ModelRecord{m, now};
    } else {
      it->second.model = m;  // same files and weights; refresh the descriptive fields
    }
  }
}

absl::StatusOr<RegisterResult> TrainerRegistry::Register(const TrainerRegistration& registration,
                                                         const std::set<std::string>& models_in_use) {
  if (absl::Status s = registration.Validate(); !s.ok()) return s;
  absl::MutexLock lock(&mu_);
  const absl::Time now = clock_->Now();
  // A trainer restored from the store keeps the id it was stored with.
  auto known_id = id_by_name_.find(registration.name);
  const std::string id = known_id != id_by_name_.end() ? known_id->second : TrainerIdForName(registration.name);
  auto existing = trainers_.find(id);
  if (existing != trainers_.end() && existing->second.live) {
    if (LeaseRunning(existing->second, now)) {
      return absl::AlreadyExistsError(StrCat(
          "trainer \"", registration.name, "\" has a live session (last heartbeat ",
          absl::FormatDuration(now - existing->second.last_heartbeat_time),
          " ago); another process holds the name, or retry once its lease of ",
          absl::FormatDuration(options_.lease), " has run out"));
    }
    // The lease has run out but ExpireLeases has not run yet: its LOST transition (and the
    // failure of its work) must be reported first.
    return absl::AlreadyExistsError(StrCat("trainer \"", registration.name,
                                           "\": the previous session is expiring; retry"));
  }
  if (absl::Status s = CheckModelsLocked(registration, models_in_use); !s.ok()) return s;
  RecordModelsLocked(registration, now);

  Trainer& t = trainers_[id];
  t.id = id;
  t.registration = registration;
  t.live = true;
  t.session_id = NewSessionIdLocked();
  t.register_time = now;
  t.last_heartbeat_time = now;
  t.current.reset();
  t.step = 0;
  t.drains.clear();
  if (auto expected = expected_.find(id); expected != expected_.end()) {
    // Its engine kept running while the coordinator restarted: BUSY with it from now on, or
    // with stopping it when the coordinator has given up waiting.
    Expected& e = expected->second;
    if (e.cancel_reason) {
      t.drains.push_back(Drain{Cancellation{e.assignment.ref, *e.cancel_reason}, true, false});
    } else {
      t.current = Current{std::move(e.assignment), true, true, true};
    }
    expected_.erase(expected);
  }
  id_by_name_[registration.name] = id;
  return RegisterResult{id, t.session_id, options_.heartbeat_interval, options_.lease, InfoLocked(t)};
}

void TrainerRegistry::RestoreLost(const std::string& trainer_id, const TrainerRegistration& registration,
                                  absl::Time register_time, absl::Time last_heartbeat_time) {
  absl::MutexLock lock(&mu_);
  if (trainers_.contains(trainer_id)) return;
  Trainer& t = trainers_[trainer_id];
  t.id = trainer_id;
  t.registration = registration;
  t.register_time = register_time;
  t.last_heartbeat_time = last_heartbeat_time;
  id_by_name_[registration.name] = trainer_id;
  for (const HeldModel& m : registration.models) {
    if (!models_.contains(m.name)) models_[m.name] = ModelRecord{m, register_time};
  }
}

absl::StatusOr<HeartbeatReply> TrainerRegistry::Heartbeat(const std::string& trainer_id,
                                                          const std::string& session_id,
                                                          const std::vector<AssignmentStatus>& statuses) {
  if (trainer_id.empty() || session_id.empty()) {
    return absl::InvalidArgumentError("heartbeat needs trainer_id and session_id");
  }
  for (const AssignmentStatus& s : statuses) {
    if (absl::Status v = s.ref.Validate(); !v.ok()) return v;
  }
  absl::MutexLock lock(&mu_);
  const absl::Time now = clock_->Now();
  auto it = trainers_.find(trainer_id);
  if (it == trainers_.end() || !it->second.live || it->second.session_id != session_id) {
    return absl::NotFoundError(StrCat("no session ", session_id, " for trainer ", trainer_id,
                                      " (lost, superseded or coordinator restarted); register again"));
  }
  Trainer& t = it->second;
  if (!LeaseRunning(t, now)) {
    return absl::NotFoundError(StrCat("session ", session_id, " of trainer ", trainer_id,
                                      " has expired; register again"));
  }
  t.last_heartbeat_time = now;
  const bool was_busy = t.Busy();

  HeartbeatReply reply;
  reply.heartbeat_interval = options_.heartbeat_interval;
  std::set<AssignmentRef> listed;
  for (const AssignmentStatus& s : statuses) {
    if (!listed.insert(s.ref).second) continue;
    if (t.current && t.current->assignment.ref == s.ref) {
      t.current->acknowledged = true;
      if (t.current->adopting) reply.adopted.push_back(s.ref);
      t.current->adopting = false;
      t.step = std::max(t.step, s.step);
      continue;
    }
    const bool draining = std::any_of(t.drains.begin(), t.drains.end(), [&](const Drain& d) {
      return d.cancellation.ref == s.ref;
    });
    if (!draining) {
      t.drains.push_back(Drain{Cancellation{s.ref, "not an assignment of this trainer"}, true, false});
    }
  }
  if (t.current && t.current->acknowledged && !listed.contains(t.current->assignment.ref)) {
    reply.dropped.push_back(t.current->assignment.ref);
    t.current.reset();
  }
  std::erase_if(t.drains, [&](const Drain& d) {
    return (d.delivered || !d.send) && !listed.contains(d.cancellation.ref);
  });
  for (Drain& d : t.drains) {
    if (!d.send) continue;
    reply.cancellations.push_back(d.cancellation);
    d.delivered = true;
  }
  if (t.current && !t.current->acknowledged) {
    reply.assignments.push_back(t.current->assignment);
    t.current->delivered = true;
  }
  reply.freed = was_busy && !t.Busy();
  return reply;
}

std::vector<LostTrainer> TrainerRegistry::ExpireLeases() {
  absl::MutexLock lock(&mu_);
  const absl::Time now = clock_->Now();
  std::vector<LostTrainer> lost;
  for (auto it = trainers_.begin(); it != trainers_.end();) {
    Trainer& t = it->second;
    if (t.live && !LeaseRunning(t, now)) {
      LostTrainer l{t.id, t.registration.name, std::nullopt, t.step, t.last_heartbeat_time};
      if (t.current) l.assignment = t.current->assignment.ref;
      lost.push_back(std::move(l));
      t.live = false;
      t.session_id.clear();
      t.current.reset();
      t.drains.clear();
    }
    if (!t.live && now - t.last_heartbeat_time > options_.lost_retention) {
      id_by_name_.erase(t.registration.name);
      it = trainers_.erase(it);
    } else {
      ++it;
    }
  }
  return lost;
}

std::vector<LiveTrainer> TrainerRegistry::LiveTrainers() const {
  absl::MutexLock lock(&mu_);
  const absl::Time now = clock_->Now();
  std::vector<LiveTrainer> out;
  for (const auto& [name, id] : id_by_name_) {
    const Trainer& t = trainers_.at(id);
    if (!LeaseRunning(t, now)) continue;
    LiveTrainer live{IdleTrainer{t.id, name, t.registration.device_kind, {}}, !t.Busy()};
    for (const HeldModel& m : t.registration.models) live.trainer.weights_by_model[m.name] = m.weights_sha256;
    out.push_back(std::move(live));
  }
  return out;
}

absl::Status TrainerRegistry::AssignWorld(const std::vector<std::string>& trainer_ids,
                                          const std::vector<Assignment>& assignments) {
  if (trainer_ids.size() != assignments.size()) {
    return absl::InvalidArgumentError("AssignWorld: one assignment per trainer");
  }
  absl::MutexLock lock(&mu_);
  const absl::Time now = clock_->Now();
  for (const std::string& id : trainer_ids) {
    auto it = trainers_.find(id);
    if (it == trainers_.end() || !LeaseRunning(it->second, now) || it->second.Busy()) {
      return absl::FailedPreconditionError(StrCat("trainer ", id, " is not live and idle"));
    }
  }
  for (size_t i = 0; i < trainer_ids.size(); ++i) {
    Trainer& t = trainers_.at(trainer_ids[i]);
    t.current = Current{assignments[i], false, false};
    t.step = 0;
  }
  return absl::OkStatus();
}

absl::Status TrainerRegistry::ExpectAdoption(const std::string& trainer_id, const Assignment& assignment) {
  if (absl::Status s = assignment.ref.Validate(); !s.ok()) return s;
  absl::MutexLock lock(&mu_);
  if (auto e = expected_.find(trainer_id); e != expected_.end() && !(e->second.assignment.ref == assignment.ref)) {
    return absl::FailedPreconditionError(StrCat("trainer ", trainer_id, " is already expected to come back with ",
                                                e->second.assignment.ref.ToString()));
  }
  auto it = trainers_.find(trainer_id);
  if (it != trainers_.end() && LeaseRunning(it->second, clock_->Now())) {
    Trainer& t = it->second;
    if (t.Busy()) {
      return absl::FailedPreconditionError(StrCat("trainer ", trainer_id, " is live and busy"));
    }
    t.current = Current{assignment, true, true, true};
    t.step = 0;
    return absl::OkStatus();
  }
  expected_[trainer_id] = Expected{assignment, std::nullopt};
  return absl::OkStatus();
}

bool TrainerRegistry::Release(const std::string& trainer_id, const AssignmentRef& ref,
                              const std::string& reason, bool send_cancel) {
  absl::MutexLock lock(&mu_);
  if (auto e = expected_.find(trainer_id); e != expected_.end() && e->second.assignment.ref == ref) {
    if (send_cancel) {
      e->second.cancel_reason = reason;
    } else {
      expected_.erase(e);
    }
    return false;
  }
  auto it = trainers_.find(trainer_id);
  if (it == trainers_.end()) return false;
  Trainer& t = it->second;
  if (!t.current || !(t.current->assignment.ref == ref)) return false;
  const bool delivered = t.current->delivered;
  const bool acknowledged = t.current->acknowledged;
  t.current.reset();
  // Sent but not acknowledged: the answer may have been lost, or the engine may be starting.
  if (delivered) t.drains.push_back(Drain{Cancellation{ref, reason}, send_cancel || !acknowledged, false});
  return !t.Busy();
}

std::vector<Assignment> TrainerRegistry::DeliverPending(const std::string& trainer_id) {
  absl::MutexLock lock(&mu_);
  auto it = trainers_.find(trainer_id);
  if (it == trainers_.end() || !it->second.current || it->second.current->acknowledged) return {};
  it->second.current->delivered = true;
  return {it->second.current->assignment};
}

bool TrainerRegistry::ResolveExit(const std::string& trainer_id, const AssignmentRef& ref) {
  absl::MutexLock lock(&mu_);
  if (auto e = expected_.find(trainer_id); e != expected_.end() && e->second.assignment.ref == ref) {
    expected_.erase(e);
  }
  auto it = trainers_.find(trainer_id);
  if (it == trainers_.end()) return false;
  Trainer& t = it->second;
  const bool was_busy = t.Busy();
  if (t.current && t.current->assignment.ref == ref) t.current.reset();
  std::erase_if(t.drains, [&](const Drain& d) { return d.cancellation.ref == ref; });
  return was_busy && !t.Busy() && t.live;
}

TrainerInfo TrainerRegistry::InfoLocked(const Trainer& t) const {
  TrainerInfo info;
  info.id = t.id;
  info.registration = t.registration;
  info.state = !t.live ? TrainerState::kLost : t.Busy() ? TrainerState::kBusy : TrainerState::kIdle;
  if (t.current) {
    info.assignment = t.current->assignment.ref;
  } else if (!t.drains.empty()) {
    info.assignment = t.drains.front().cancellation.ref;
  }
  info.step = t.step;
  info.register_time = t.register_time;
  info.last_heartbeat_time = t.last_heartbeat_time;
  return info;
}

std::vector<TrainerInfo> TrainerRegistry::ListTrainers() const {
  absl::MutexLock lock(&mu_);
  std::vector<TrainerInfo> out;
  for (const auto& [name, id] : id_by_name_) out.push_back(InfoLocked(trainers_.at(id)));
  return out;
}

std::optional<TrainerInfo> TrainerRegistry::GetTrainer(const std::string& trainer_id) const {
  absl::MutexLock lock(&mu_);
  auto it = trainers_.find(trainer_id);
  if (it == trainers_.end()) return std::nullopt;
  return InfoLocked(it->second);
}

std::vector<ModelInfo> TrainerRegistry::ListModels() const {
  absl::MutexLock lock(&mu_);
  std::vector<ModelInfo> out;
  for (const auto& [name, record] : models_) {
    ModelInfo info{record.model, {}, record.create_time};
    for (const auto& [trainer_name, id] : id_by_name_) {
      const Trainer& t = trainers_.at(id);
      if (!t.live) continue;
      for (const HeldModel& m : t.registration.models) {
        if (m.name == name) info.trainer_ids.push_back(id);
      }
    }
    out.push_back(std::move(info));
  }
  return out;
}

}  // namespace herd::coordinator
