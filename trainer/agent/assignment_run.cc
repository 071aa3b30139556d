// One assignment: prepare, run and watch the engine, relay, report, clean up.
#include "trainer/agent/assignment_run.h"

#include <filesystem>
#include <fstream>

#include "common/engine_protocol.h"
#include "common/rpc/job_spec_proto.h"
#include "common/status.h"
#include "common/strings.h"
#include "trainer/agent/engine_conversation.h"
#include "trainer/agent/engine_process.h"
#include "trainer/agent/relay.h"
#include "trainer/agent/rendezvous_relay.h"

namespace herd::agent {
namespace fs = std::filesystem;
namespace v1 = herd::v1;
using nlohmann::json;

namespace {

constexpr size_t kStderrTailBytes = 16 << 10;  // trainers.proto: ReportEngineExitRequest.stderr_tail

// A job id or file name that is safe as one path component.
bool SafeName(const std::string& s) {
  return !s.empty() && s.size() <= 255 && s[0] != '.' && s.find('/') == std::string::npos &&
         s.find('\0') == std::string::npos;
}

absl::Duration FromProto(const google::protobuf::Duration& d) {
  return absl::Seconds(d.seconds()) + absl::Nanoseconds(d.nanos());
}

std::string ReadTail(const std::string& path, size_t bytes) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return "";
  in.seekg(0, std::ios::end);
  const std::streamoff size = in.tellg();
  in.seekg(std::max<std::streamoff>(0, size - static_cast<std::streamoff>(bytes)));
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

}  // namespace

AssignmentRun::AssignmentRun(const SupervisorOptions& options, CoordinatorApi& api, BlobCache& blobs,
                             std::string trainer_id, v1::Assignment assignment)
    : options_(options),
      api_(api),
      blobs_(blobs),
      trainer_id_(std::move(trainer_id)),
      assignment_(std::move(assignment)),
      scratch_(StrCat(fs::absolute(options.scratch_dir).lexically_normal().string(), "/", assignment_.ref().job_id(),
                      "/g", assignment_.ref().generation(), "-r", assignment_.ref().rank())) {}

AssignmentRun::~AssignmentRun() { Join(); }

void AssignmentRun::Start() {
  thread_ = std::thread([this] { Main(); });
}

void AssignmentRun::Join() {
  if (thread_.joinable()) thread_.join();
}

void AssignmentRun::Cancel(const std::string& reason, bool shutdown) {
  std::lock_guard<std::mutex> lock(mu_);
  if (cancel_reason_.empty()) cancel_reason_ = reason.empty() ? "cancelled" : reason;
  if (shutdown) shutdown_ = true;
  cv_.notify_all();
}

bool AssignmentRun::stopping() const {
  std::lock_guard<std::mutex> lock(mu_);
  return !cancel_reason_.empty() || engine_gone_;
}

v1::AssignmentStatus AssignmentRun::Status() const {
  v1::AssignmentStatus s;
  *s.mutable_ref() = assignment_.ref();
  s.set_phase(static_cast<v1::AssignmentPhase>(phase_.load()));
  s.set_step(step_.load());
  return s;
}

void AssignmentRun::Log(const std::string& line) const {
  if (options_.log) options_.log(StrCat(RefName(assignment_.ref()), ": ", line));
}

void AssignmentRun::Push(Event event) {
  std::lock_guard<std::mutex> lock(mu_);
  events_.push_back(std::move(event));
  cv_.notify_all();
}

bool AssignmentRun::Pause(absl::Duration d) {
  std::unique_lock<std::mutex> lock(mu_);
  return cv_.wait_for(lock, absl::ToChronoNanoseconds(d), [&] { return !cancel_reason_.empty() || engine_gone_; });
}

void AssignmentRun::MarkStale(const absl::Status& s) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stale_ = true;
  }
  Cancel(StrCat("the coordinator moved on: ", s.message()));
}

void AssignmentRun::Main() {
  Log(StrCat("assignment received (world ", assignment_.world_size(), ", model ", assignment_.base_model(), ", ",
             assignment_.total_steps(), " steps)"));
  v1::ReportEngineExitRequest report;
  absl::StatusOr<json> line = Prepare();
  if (line.ok()) {
    report = Supervise(*line);
  } else if (stopping()) {
    report.set_reason(v1::ENGINE_EXIT_REASON_CANCELLED);
  } else {
    report.set_reason(v1::ENGINE_EXIT_REASON_START_FAILED);
    report.mutable_failure()->set_code(absl::StatusCodeToString(line.status().code()));
    report.mutable_failure()->set_message(std::string(line.status().message()).substr(0, 4096));
  }
  phase_ = v1::ASSIGNMENT_PHASE_FINISHING;
  // The engine is gone: its metrics end now, not after the report's retries.
  if (options_.observer != nullptr) options_.observer->OnRunEnded(assignment_.ref(), report.reason());
  ReportExit(std::move(report));
  if (!options_.keep_scratch) {
    std::error_code ec;
    fs::remove_all(scratch_, ec);
    fs::remove(fs::path(scratch_).parent_path(), ec);  // the job's folder, once empty
  }
  done_ = true;
}

absl::StatusOr<json> AssignmentRun::Prepare() {
  const v1::Assignment& a = assignment_;
  if (!SafeName(a.ref().job_id())) return absl::InvalidArgumentError(StrCat("bad job id '", a.ref().job_id(), "'"));
  std::error_code ec;
  fs::remove_all(scratch_, ec);  // a leftover of an agent that died
  fs::create_directories(scratch_, ec);
  if (ec) return absl::UnavailableError(StrCat("cannot create ", scratch_, ": ", ec.message()));
  auto model = options_.models.find(a.base_model());
  if (model == options_.models.end()) {
    return absl::NotFoundError(StrCat("this trainer does not hold model '", a.base_model(), "'"));
  }
  if (a.weights_sha256() != model->second.weights_sha256) {
    return absl::FailedPreconditionError(StrCat("the weights of '", a.base_model(), "' differ: this trainer holds ",
                                                model->second.weights_sha256, ", the assignment names ",
                                                a.weights_sha256()));
  }
  HERD_ASSIGN_OR_RETURN(JobSpec spec, rpc::JobSpecFromProto(a.spec()));
  auto fetch = [&](const std::string& sha, int64_t size) {
    return blobs_.Fetch(api_, trainer_id_, a.ref(), sha, size, [this] { return stopping(); });
  };
  EngineAssignment e;
  HERD_ASSIGN_OR_RETURN(e.train_data, fetch(a.train_data().sha256(), a.train_data().size_bytes()));
  if (a.has_validation_data() && !a.validation_data().sha256().empty()) {
    HERD_ASSIGN_OR_RETURN(e.validation_data, fetch(a.validation_data().sha256(), a.validation_data().size_bytes()));
  }
  if (a.has_resume_from()) {
    e.resume_dir = scratch_ + "/resume";
    e.resume_step = a.resume_from().step();
    fs::create_directories(e.resume_dir, ec);
    for (const v1::FileInfo& f : a.resume_from().files()) {
      if (!SafeName(f.name())) return absl::InvalidArgumentError(StrCat("bad resume file name '", f.name(), "'"));
      HERD_ASSIGN_OR_RETURN(std::string blob, fetch(f.sha256(), f.size_bytes()));
      const std::string to = StrCat(e.resume_dir, "/", f.name());
      fs::create_hard_link(blob, to, ec);
      if (ec) fs::copy_file(blob, to, fs::copy_options::overwrite_existing, ec);
      if (ec) return absl::UnavailableError(StrCat("cannot place ", to, ": ", ec.message()));
    }
  }
  const bool cuda = options_.device.rfind("cuda", 0) == 0;
  e.job_id = a.ref().job_id();
  e.generation = a.ref().generation();
  e.rank = a.ref().rank();
  e.world_size = a.world_size();
  e.device = cuda ? "cuda:0" : "cpu";  // CUDA_VISIBLE_DEVICES leaves the engine one GPU
  e.model_name = a.base_model();
  e.model_dir = fs::absolute(model->second.dir).lexically_normal().string();
  e.lora = spec.lora;
  e.training = spec.training;
  e.total_steps = a.total_steps();
  e.steps_per_epoch = a.steps_per_epoch();
  e.grad_accum_steps = a.grad_accum_steps();
  e.eval_every_steps = a.eval_every_steps();
  e.checkpoint_every_steps = spec.checkpoints.every_steps;
  e.scratch_dir = scratch_;
  const bool nccl = a.device_kind() == v1::DEVICE_KIND_CUDA || (a.device_kind() == v1::DEVICE_KIND_UNSPECIFIED && cuda);
  e.collective_backend = nccl ? "nccl" : "tcp";
  e.bind_address = options_.bind_address;
  e.advertise_address = options_.advertise_address;
  if (a.has_collective_timeout() && FromProto(a.collective_timeout()) > absl::ZeroDuration()) {
    e.collective_timeout_seconds = absl::ToDoubleSeconds(FromProto(a.collective_timeout()));
  }
  e.silence_timeout_seconds = absl::ToDoubleSeconds(options_.silence_timeout);
  e.cancel_grace_seconds = absl::ToDoubleSeconds(options_.cancel_grace);
  return AssignmentToJson(e);
}

v1::ReportEngineExitRequest AssignmentRun::Supervise(const json& assignment_line) {
  const int rank = assignment_.ref().rank();
  EngineConversation conv(rank, scratch_ + "/checkpoints");
  RelayOptions ro{.trainer_id = trainer_id_, .ref = assignment_.ref(), .interval = options_.progress_interval,
                  .upload_attempts = options_.upload_attempts, .retry_backoff = options_.retry_backoff,
                  .on_stale = [this](const absl::Status& s) { MarkStale(s); },
                  .log = [this](const std::string& l) { Log(l); }};
  Relay relay(std::move(ro), api_);

  EngineProcessOptions po{.engine_path = options_.engine_path, .working_dir = scratch_,
                          .stderr_path = scratch_ + "/engine.stderr.log", .env = options_.engine_env};
  po.env["OMP_NUM_THREADS"] = std::to_string(options_.omp_threads);
  if (options_.device.rfind("cuda:", 0) == 0) po.env["CUDA_VISIBLE_DEVICES"] = options_.device.substr(5);
  auto engine = EngineProcess::Start(po, [this](const json& m, const std::string& v) { Push({m, v, ""}); });
  if (!engine.ok()) {
    relay.Stop();
    v1::ReportEngineExitRequest r;
    r.set_reason(v1::ENGINE_EXIT_REASON_START_FAILED);
    r.mutable_failure()->set_code(absl::StatusCodeToString(engine.status().code()));
    r.mutable_failure()->set_message(std::string(engine.status().message()));
    return r;
  }
  engine_ = *std::move(engine);
  Log(StrCat("started herd-engine, pid ", engine_->pid()));
  if (options_.observer != nullptr) options_.observer->OnEngineStarted(assignment_.ref());

  const absl::Time started = absl::Now();
  absl::Time last_line = started, kill_at = absl::InfiniteFuture();
  bool cancel_sent = false, killed = false;
  std::string violation, hung;
  auto kill = [&] {
    engine_->Kill();
    killed = true;
  };
  while (true) {
    Event ev;
    bool have = false;
    std::string cancel_reason;
    {
      std::unique_lock<std::mutex> lock(mu_);
      absl::Time deadline = kill_at;
      if (!killed) {
        if (!conv.saw_hello()) {
          deadline = std::min(deadline, started + options_.hello_timeout);
        } else if (!conv.waiting_on_agent()) {
          deadline = std::min(deadline, last_line + options_.silence_timeout);
        }
      }
      cv_.wait_until(lock, absl::ToChronoTime(deadline),
                     [&] { return !events_.empty() || (!cancel_reason_.empty() && !cancel_sent); });
      if (!events_.empty()) {
        ev = std::move(events_.front());
        events_.pop_front();
        have = true;
      }
      cancel_reason = cancel_reason_;
    }
    if (!cancel_reason.empty() && !cancel_sent) {
      cancel_sent = true;
      kill_at = absl::Now() + options_.cancel_grace;
      Log(StrCat("cancelling the engine: ", cancel_reason));
      if (!killed) engine_->Send(ProtocolMessage("cancel", {{"reason", cancel_reason}})).IgnoreError();
    }
    if (!have) {
      const absl::Time now = absl::Now();
      if (now >= kill_at) {
        Log(StrCat("the engine did not exit within ", options_.cancel_grace, " of cancel; killing it"));
        kill();
        kill_at = absl::InfiniteFuture();
      } else if (!killed && !conv.saw_hello() && now >= started + options_.hello_timeout) {
        hung = StrCat("no hello within ", options_.hello_timeout);
        kill();
      } else if (!killed && conv.saw_hello() && !conv.waiting_on_agent() && now >= last_line + options_.silence_timeout) {
        hung = StrCat("the engine was silent for ", options_.silence_timeout);
        kill();
      }
      continue;
    }
    if (!ev.answered_key.empty()) {
      conv.Answered(ev.answered_key);
      last_line = absl::Now();
      continue;
    }
    if (ev.message.is_null()) {  // end of the engine's stdout
      if (!ev.violation.empty() && !killed) {
        violation = ev.violation;
        kill();
      }
      break;
    }
    last_line = absl::Now();
    if (killed) continue;
    if (std::string v = conv.Accept(ev.message); !v.empty()) {
      violation = v;
      Log(StrCat("protocol violation: ", v));
      kill();
      continue;
    }
    const json& m = ev.message;
    const std::string type = m["type"];
    if (type == "hello") {
      Log(StrCat("engine ", m.value("engine_version", "?"), " on ", m.value("device_name", "?"), " says hello"));
      engine_->Send(assignment_line).IgnoreError();
    } else if (type == "phase") {
      phase_ = conv.phase();
    } else if (type == "rendezvous_put" || type == "rendezvous_get") {
      phase_ = v1::ASSIGNMENT_PHASE_RENDEZVOUS;
      rendezvous_threads_.emplace_back([this, m] { HandleRendezvous(m); });
    } else if (type == "progress") {
      phase_ = v1::ASSIGNMENT_PHASE_TRAINING;
      step_ = conv.last_step();
      v1::ProgressPoint point = ProgressFromLine(m, rank, absl::Now());
      if (options_.observer != nullptr) options_.observer->OnProgress(assignment_.ref(), point);
      relay.AddProgress(std::move(point));
    } else if (type == "eval") {
      relay.AddEval(EvalFromLine(m, absl::Now()));
    } else if (type == "checkpoint") {
      relay.AddCheckpoint(m);
    } else if (type == "error") {
      Log(StrCat("engine error ", m.value("code", ""), ": ", m.value("message", "")));
    } else if (type == "exit") {
      Log(StrCat("engine exit line: ", m.value("reason", ""), " at step ", m.value("step", int64_t{0})));
    } else {
      Log(StrCat("ignoring an engine line of unknown type '", type, "'"));
    }
  }
  engine_->CloseStdin();
  const int code = engine_->Wait();
  const int signal = engine_->term_signal();
  {
    std::lock_guard<std::mutex> lock(mu_);
    engine_gone_ = true;
    cv_.notify_all();
  }
  for (std::thread& t : rendezvous_threads_) t.join();
  rendezvous_threads_.clear();
  phase_ = v1::ASSIGNMENT_PHASE_FINISHING;
  v1::ReportEngineExitRequest report = conv.ExitReport(code, signal, cancel_sent, violation, hung);
  if (cancel_sent) {
    relay.Stop();  // the job has moved on: what is pending is of no use
  } else {
    std::optional<absl::Status> final_upload = relay.Finish();
    if (report.reason() == v1::ENGINE_EXIT_REASON_COMPLETED && rank == 0) {
      const absl::Status s = final_upload.value_or(absl::InternalError("the final checkpoint was not uploaded"));
      if (!s.ok()) {
        report.set_reason(v1::ENGINE_EXIT_REASON_UPLOAD_FAILED);
        report.mutable_failure()->set_code(absl::StatusCodeToString(s.code()));
        report.mutable_failure()->set_message(std::string(s.message()).substr(0, 4096));
      }
    }
  }
  engine_.reset();
  return report;
}

void AssignmentRun::HandleRendezvous(const json& m) {
  RendezvousRelayOptions o{.trainer_id = trainer_id_, .ref = assignment_.ref(), .wait_chunk = options_.rendezvous_wait,
                           .put_retry_for = options_.put_retry_for, .retry_backoff = options_.retry_backoff,
                           .pause = [this](absl::Duration d) { return Pause(d); },
                           .on_stale = [this](const absl::Status& s) { MarkStale(s); }};
  std::optional<json> body = RelayRendezvous(api_, o, m);
  if (!body) return;  // the engine is going away: no answer needed
  json answer = ProtocolMessage("rendezvous", *body);
  answer["key"] = m["key"];
  if (engine_) engine_->Send(answer).IgnoreError();
  Push({nullptr, "", m["key"].get<std::string>()});
}

void AssignmentRun::ReportExit(v1::ReportEngineExitRequest report) {
  report.set_trainer_id(trainer_id_);
  *report.mutable_ref() = assignment_.ref();
  report.set_stderr_tail(Utf8Tail(ReadTail(scratch_ + "/engine.stderr.log", kStderrTailBytes), kStderrTailBytes));
  Log(StrCat("engine ended: ", v1::EngineExitReason_Name(report.reason()), " at step ", report.step(),
             report.has_failure() ? StrCat(" (", report.failure().code(), ": ", report.failure().message(), ")") : ""));
  absl::Duration backoff = options_.retry_backoff;
  absl::Time give_up = absl::InfiniteFuture();
  while (true) {
    absl::Status s = api_.ReportEngineExit(report);
    if (s.ok() || absl::IsFailedPrecondition(s)) return;
    if (absl::IsInvalidArgument(s) || absl::IsUnauthenticated(s) || absl::IsPermissionDenied(s) ||
        absl::IsUnimplemented(s)) {
      Log(StrCat("ReportEngineExit refused: ", s.ToString()));
      return;
    }
    std::unique_lock<std::mutex> lock(mu_);
    if (stale_) return;  // the coordinator has moved on: this report is of no use to it
    if (shutdown_ && give_up == absl::InfiniteFuture()) give_up = absl::Now() + options_.report_give_up_on_shutdown;
    if (absl::Now() >= give_up) {
      Log(StrCat("giving up on ReportEngineExit at shutdown: ", s.ToString()));
      return;
    }
    Log(StrCat("ReportEngineExit: ", s.ToString(), "; retrying"));
    // Woken early when a shutdown starts, so its bounded retries begin at once.
    const bool was_shutdown = shutdown_;
    cv_.wait_for(lock, absl::ToChronoNanoseconds(std::min(backoff, give_up - absl::Now())),
                 [&] { return shutdown_ != was_shutdown; });
    backoff = std::min(backoff * 2, absl::Seconds(30));
  }
}

}  // namespace herd::agent
