// Local multi-process runs of the engine.
#include "trainer/agent/local_run.h"

#include <condition_variable>
#include <deque>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>

#include "absl/time/time.h"
#include "common/strings.h"
#include "trainer/agent/engine_process.h"

namespace herd::agent {
namespace {

struct Event {
  int rank;
  nlohmann::json message;  // null at end of stream
  std::string violation;
};

struct StepTotals {
  int reports = 0;
  int64_t tokens = 0;
  double seconds = 0;
  nlohmann::json rank0;
};

std::string LogTail(const std::string& path, size_t bytes) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return "";
  in.seekg(0, std::ios::end);
  const std::streamoff size = in.tellg();
  in.seekg(std::max<std::streamoff>(0, size - static_cast<std::streamoff>(bytes)));
  std::string tail((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return tail;
}

}  // namespace

absl::StatusOr<LocalRunResult> RunLocal(const LocalRunOptions& o, const LocalRunCallbacks& cb) {
  std::mutex mu;
  std::condition_variable cv;
  std::deque<Event> events;  // guarded by mu

  std::vector<std::unique_ptr<EngineProcess>> engines;
  std::vector<std::string> logs(o.nproc);
  for (int r = 0; r < o.nproc; ++r) {
    const std::string scratch = herd::StrCat(o.work_dir, "/rank-", r);
    std::error_code ec;
    std::filesystem::create_directories(scratch, ec);
    if (ec) return absl::UnavailableError(herd::StrCat("cannot create ", scratch, ": ", ec.message()));
    logs[r] = o.engine_logs_to_stderr ? "" : scratch + "/engine.stderr.log";
    EngineProcessOptions po{.engine_path = o.engine_path, .working_dir = scratch, .stderr_path = logs[r],
                            .env = {{"OMP_NUM_THREADS", std::to_string(o.omp_threads)}}};
    auto engine = EngineProcess::Start(po, [&, r](const nlohmann::json& m, const std::string& violation) {
      std::lock_guard<std::mutex> lock(mu);
      events.push_back({r, m, violation});
      cv.notify_one();
    });
    if (!engine.ok()) return engine.status();
    engines.push_back(std::move(*engine));
  }

  std::map<std::string, std::string> kv;                        // the rendezvous store
  std::map<std::string, std::vector<std::pair<int, absl::Time>>> waiting;  // gets not yet answered
  std::map<int64_t, StepTotals> steps;
  std::vector<bool> done(o.nproc, false);
  int running = o.nproc;
  absl::Status failure;
  LocalRunResult result;
  bool cancelled = false;

  auto fail = [&](absl::Status s) {
    if (failure.ok()) failure = std::move(s);
    for (auto& e : engines) e->Kill();
  };
  auto answer = [&](int rank, const std::string& key, const nlohmann::json& body) {
    nlohmann::json msg = ProtocolMessage("rendezvous", body);
    msg["key"] = key;
    engines[rank]->Send(msg).IgnoreError();
  };

  while (running > 0) {
    Event ev;
    {
      std::unique_lock<std::mutex> lock(mu);
      cv.wait_for(lock, std::chrono::milliseconds(200), [&] { return !events.empty(); });
      if (events.empty()) {
        // Housekeeping: interrupts and rendezvous gets past their deadline.
        if (o.interrupted && o.interrupted->load() && !cancelled) {
          cancelled = true;
          for (auto& e : engines) e->Send(ProtocolMessage("cancel", {{"reason", "interrupted"}})).IgnoreError();
        }
        for (auto& [key, list] : waiting) {
          for (auto it = list.begin(); it != list.end();) {
            if (absl::Now() < it->second) {
              ++it;
              continue;
            }
            answer(it->first, key, {{"error", {{"code", "DEADLINE_EXCEEDED"}, {"message", "no rank published " + key}}}});
            it = list.erase(it);
          }
        }
        continue;
      }
      ev = std::move(events.front());
      events.pop_front();
    }
    const int r = ev.rank;
    if (ev.message.is_null()) {
      const int code = engines[r]->Wait();
      done[r] = true;
      --running;
      if (!ev.violation.empty()) {
        fail(absl::InternalError(herd::StrCat("rank ", r, " broke the engine protocol: ", ev.violation)));
      } else if (code != 0 && failure.ok() && !cancelled) {
        fail(absl::InternalError(herd::StrCat("rank ", r, " exited with code ", code,
                                              logs[r].empty() ? "" : "; end of its log:\n" + LogTail(logs[r], 2000))));
      }
      continue;
    }
    const std::string type = ev.message["type"];
    const nlohmann::json& m = ev.message;
    if (type == "hello") {
      EngineAssignment a = o.assignment;
      a.rank = r;
      a.world_size = o.nproc;
      a.scratch_dir = std::filesystem::absolute(herd::StrCat(o.work_dir, "/rank-", r)).string();
      engines[r]->Send(AssignmentToJson(a)).IgnoreError();
    } else if (type == "rendezvous_put") {
      const std::string key = m.value("key", ""), value = m.value("value", "");
      if (kv.count(key) && kv[key] != value) {
        answer(r, key, {{"error", {{"code", "ALREADY_EXISTS"}, {"message", key + " holds another value"}}}});
      } else {
        kv[key] = value;
        answer(r, key, {{"value", value}});
        for (auto& [rank, deadline] : waiting[key]) answer(rank, key, {{"value", value}});
        waiting.erase(key);
      }
    } else if (type == "rendezvous_get") {
      const std::string key = m.value("key", "");
      if (kv.count(key)) {
        answer(r, key, {{"value", kv[key]}});
      } else {
        waiting[key].push_back({r, absl::Now() + absl::Seconds(m.value("timeout_seconds", 60.0))});
      }
    } else if (type == "progress") {
      const int64_t step = m.value("step", int64_t{0});
      StepTotals& t = steps[step];
      ++t.reports;
      t.tokens += m.value("tokens", int64_t{0});
      t.seconds = std::max(t.seconds, m.value("step_seconds", 0.0));
      if (r == 0) t.rank0 = m;
      if (t.reports == o.nproc) {
        nlohmann::json merged = t.rank0;
        merged["tokens"] = t.tokens;
        merged["step_seconds"] = t.seconds;
        result.steps = std::max(result.steps, step);
        if (cb.on_step) cb.on_step(merged);
        steps.erase(step);
      }
    } else if (type == "eval") {
      if (cb.on_eval) cb.on_eval(m);
    } else if (type == "checkpoint") {
      if (m.value("final", false)) result.final_checkpoint_dir = m.value("dir", "");
      if (cb.on_checkpoint) cb.on_checkpoint(m);
    } else if (type == "error") {
      fail(absl::Status(StatusCodeFromName(m.value("code", "UNKNOWN")),
                        herd::StrCat("rank ", r, ": ", m.value("message", ""))));
    }
  }
  if (!failure.ok()) return failure;
  if (cancelled) return absl::CancelledError("interrupted");
  if (result.final_checkpoint_dir.empty()) {
    return absl::InternalError("every engine exited but rank 0 sent no final checkpoint");
  }
  return result;
}

}  // namespace herd::agent
