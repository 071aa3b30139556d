// Protocol checks and exit classification of an engine's lines.
#include "trainer/agent/engine_conversation.h"

#include <filesystem>
#include <functional>

#include "common/strings.h"

namespace herd::agent {
namespace fs = std::filesystem;
namespace v1 = herd::v1;
using nlohmann::json;

namespace {

enum class Kind { kInt, kNumber, kString, kBool, kArray };

bool Is(const json& v, Kind kind) {
  switch (kind) {
    case Kind::kInt: return v.is_number_integer();
    case Kind::kNumber: return v.is_number();
    case Kind::kString: return v.is_string();
    case Kind::kBool: return v.is_boolean();
    case Kind::kArray: return v.is_array();
  }
  return false;
}

// "" when `m[key]` has `kind` (or, when !required, is absent or null), else what is wrong.
std::string Field(const json& m, const char* key, Kind kind, bool required = true) {
  auto it = m.find(key);
  if (it == m.end() || it->is_null()) return required ? StrCat(key, " is missing") : "";
  return Is(*it, kind) ? "" : StrCat(key, " has the wrong type");
}

std::string FirstProblem(std::initializer_list<std::string> problems) {
  for (const std::string& p : problems) {
    if (!p.empty()) return p;
  }
  return "";
}

std::optional<double> OptionalNumber(const json& m, const char* key) {
  auto it = m.find(key);
  if (it == m.end() || !it->is_number()) return std::nullopt;
  return it->get<double>();
}

void SetTime(google::protobuf::Timestamp* t, absl::Time now) {
  const int64_t nanos = absl::ToUnixNanos(now);
  t->set_seconds(nanos / 1000000000);
  t->set_nanos(static_cast<int32_t>(nanos % 1000000000));
}

v1::AssignmentPhase PhaseOf(const std::string& phase) {
  if (phase == "loading") return v1::ASSIGNMENT_PHASE_PREPARING;
  if (phase == "rendezvous") return v1::ASSIGNMENT_PHASE_RENDEZVOUS;
  return v1::ASSIGNMENT_PHASE_TRAINING;
}

}  // namespace

EngineConversation::EngineConversation(int rank, std::string checkpoints_dir)
    : rank_(rank), checkpoints_dir_(fs::path(std::move(checkpoints_dir)).lexically_normal().string()) {}

std::string EngineConversation::Accept(const json& m) {
  const std::string type = m.value("type", "");
  std::string problem;
  if (saw_exit()) {
    problem = "a line after exit";
  } else if (type == "hello") {
    problem = saw_hello_ ? "a second hello" : "";
    saw_hello_ = true;
  } else if (!saw_hello_) {
    problem = "a line before hello";
  } else if (type == "phase") {
    problem = Field(m, "phase", Kind::kString);
    if (problem.empty()) phase_ = PhaseOf(m["phase"].get<std::string>());
  } else if (type == "rendezvous_put" || type == "rendezvous_get") {
    problem = FirstProblem({Field(m, "key", Kind::kString),
                            type == "rendezvous_put" ? Field(m, "value", Kind::kString)
                                                     : Field(m, "timeout_seconds", Kind::kNumber)});
    if (problem.empty() && !outstanding_keys_.insert(m["key"].get<std::string>()).second) {
      problem = "a second outstanding request for one rendezvous key";
    }
  } else if (type == "progress") {
    problem = FirstProblem({Field(m, "step", Kind::kInt), Field(m, "total_steps", Kind::kInt, false),
                            Field(m, "epoch", Kind::kNumber, false), Field(m, "loss", Kind::kNumber, false),
                            Field(m, "lr", Kind::kNumber, false), Field(m, "grad_norm", Kind::kNumber, false),
                            Field(m, "tokens", Kind::kInt, false), Field(m, "trained_tokens", Kind::kInt, false),
                            Field(m, "step_seconds", Kind::kNumber, false)});
    if (problem.empty()) {
      const int64_t step = m["step"].get<int64_t>();
      if (step <= last_step_ && last_step_ > 0) problem = StrCat("progress step ", step, " after ", last_step_);
      last_step_ = step;
    }
  } else if (type == "eval") {
    problem = FirstProblem({Field(m, "step", Kind::kInt), Field(m, "eval_loss", Kind::kNumber, false),
                            Field(m, "token_accuracy", Kind::kNumber, false)});
    if (problem.empty()) {
      const int64_t step = m["step"].get<int64_t>();
      if (step <= last_eval_ || step > last_step_) problem = StrCat("eval step ", step, " out of order");
      last_eval_ = step;
    }
  } else if (type == "checkpoint") {
    problem = FirstProblem({rank_ != 0 ? "a checkpoint from a rank other than 0" : "",
                            Field(m, "step", Kind::kInt), Field(m, "final", Kind::kBool, false),
                            Field(m, "dir", Kind::kString), Field(m, "files", Kind::kArray)});
    if (problem.empty()) {
      const int64_t step = m["step"].get<int64_t>();
      const fs::path dir = fs::path(m["dir"].get<std::string>()).lexically_normal();
      if (step <= last_checkpoint_ || step > last_step_) problem = StrCat("checkpoint step ", step, " out of order");
      if (m.value("final", false) && saw_final_) problem = "a second final checkpoint";
      if (dir.parent_path().string() != checkpoints_dir_ || dir.filename().string().rfind("step-", 0) != 0) {
        problem = StrCat("checkpoint folder ", dir.string(), " is not under ", checkpoints_dir_);
      }
      for (const json& f : m["files"]) {
        if (!problem.empty()) break;
        problem = f.is_object() ? FirstProblem({Field(f, "name", Kind::kString), Field(f, "size_bytes", Kind::kInt),
                                                Field(f, "sha256", Kind::kString)})
                                : "a checkpoint file entry is not an object";
        if (!problem.empty()) break;
        const std::string name = f["name"].get<std::string>();
        std::error_code ec;
        const fs::path path = dir / name;
        if (name.empty() || name.find('/') != std::string::npos || name[0] == '.' || !fs::is_regular_file(path, ec) ||
            static_cast<int64_t>(fs::file_size(path, ec)) != f["size_bytes"].get<int64_t>()) {
          problem = StrCat("checkpoint file ", name, " is missing or differs in size");
        }
      }
      last_checkpoint_ = step;
      if (m.value("final", false)) saw_final_ = true;
    }
  } else if (type == "error") {
    problem = FirstProblem({Field(m, "code", Kind::kString), Field(m, "message", Kind::kString)});
    if (problem.empty()) error_ = {m["code"].get<std::string>(), m["message"].get<std::string>()};
  } else if (type == "exit") {
    problem = FirstProblem({Field(m, "reason", Kind::kString), Field(m, "step", Kind::kInt, false)});
    if (problem.empty()) {
      exit_reason_ = m["reason"].get<std::string>();
      exit_step_ = m.value("step", int64_t{0});
    }
  }
  if (problem.empty()) return "";
  return StrCat(problem, ": ", m.dump(-1, ' ', false, json::error_handler_t::replace).substr(0, 200));
}

v1::ReportEngineExitRequest EngineConversation::ExitReport(int exit_code, int signal, bool cancel_sent,
                                                           const std::string& violation,
                                                           const std::string& hung) const {
  v1::ReportEngineExitRequest r;
  r.set_step(std::max(last_step_, exit_step_));
  if (signal != 0) {
    r.set_signal(signal);
  } else {
    r.set_exit_code(exit_code);
  }
  auto fail = [&r](v1::EngineExitReason reason, const std::string& code, const std::string& message) {
    r.set_reason(reason);
    r.mutable_failure()->set_code(code);
    r.mutable_failure()->set_message(message.substr(0, 4096));
  };
  const std::string how = signal != 0 ? StrCat("killed by signal ", signal) : StrCat("exit code ", exit_code);
  if (!violation.empty()) {
    fail(v1::ENGINE_EXIT_REASON_PROTOCOL_VIOLATION, "INTERNAL", StrCat("engine broke the protocol: ", violation));
  } else if (!hung.empty()) {
    fail(v1::ENGINE_EXIT_REASON_HUNG, "UNAVAILABLE", hung);
  } else if (cancel_sent || (exit_reason_ == "cancelled" && signal == 0 && exit_code == 0)) {
    r.set_reason(v1::ENGINE_EXIT_REASON_CANCELLED);
  } else if (exit_reason_ == "completed" && signal == 0 && exit_code == 0) {
    if (rank_ == 0 && !saw_final_) {
      fail(v1::ENGINE_EXIT_REASON_PROTOCOL_VIOLATION, "INTERNAL", "rank 0 exited completed without a final checkpoint");
    } else {
      r.set_reason(v1::ENGINE_EXIT_REASON_COMPLETED);
    }
  } else if ((exit_reason_ == "error" || exit_reason_ == "watchdog") && error_ && signal == 0 && exit_code == 1) {
    fail(exit_reason_ == "watchdog" ? v1::ENGINE_EXIT_REASON_WATCHDOG : v1::ENGINE_EXIT_REASON_ERROR, error_->first,
         error_->second);
  } else if (!exit_reason_ && signal == 0 && exit_code == 0) {
    fail(v1::ENGINE_EXIT_REASON_PROTOCOL_VIOLATION, "INTERNAL", "engine exited with code 0 without an exit line");
  } else {
    std::string message = StrCat("engine died (", how, ")");
    if (exit_reason_) message += StrCat(" after exit '", *exit_reason_, "'");
    if (error_) message += StrCat("; its last error: ", error_->first, ": ", error_->second);
    fail(v1::ENGINE_EXIT_REASON_CRASHED, "ABORTED", message);
  }
  return r;
}

v1::ProgressPoint ProgressFromLine(const json& m, int rank, absl::Time now) {
  v1::ProgressPoint p;
  p.set_rank(rank);
  p.set_step(m.value("step", int64_t{0}));
  auto integer = [&m](const char* key) {
    auto it = m.find(key);
    return it != m.end() && it->is_number_integer() ? it->get<int64_t>() : int64_t{0};
  };
  p.set_total_steps(integer("total_steps"));
  p.set_epoch(OptionalNumber(m, "epoch").value_or(0));
  if (auto v = OptionalNumber(m, "loss")) p.set_loss(*v);
  p.set_learning_rate(OptionalNumber(m, "lr").value_or(0));
  if (auto v = OptionalNumber(m, "grad_norm")) p.set_grad_norm(*v);
  p.set_tokens(integer("tokens"));
  p.set_trained_tokens(integer("trained_tokens"));
  p.set_step_seconds(OptionalNumber(m, "step_seconds").value_or(0));
  p.set_allreduce_seconds(OptionalNumber(m, "allreduce_seconds").value_or(0));
  p.set_data_wait_seconds(OptionalNumber(m, "data_wait_seconds").value_or(0));
  p.set_device_memory_bytes(integer("device_memory_bytes"));
  if (auto v = OptionalNumber(m, "mfu")) p.set_mfu(*v);
  SetTime(p.mutable_time(), now);
  return p;
}

v1::EvalPoint EvalFromLine(const json& m, absl::Time now) {
  v1::EvalPoint e;
  e.set_step(m.value("step", int64_t{0}));
  if (auto v = OptionalNumber(m, "eval_loss")) e.set_eval_loss(*v);
  e.set_token_accuracy(OptionalNumber(m, "token_accuracy").value_or(0));
  SetTime(e.mutable_time(), now);
  return e;
}

std::string Utf8Tail(const std::string& text, size_t max_bytes) {
  size_t start = text.size() > max_bytes ? text.size() - max_bytes : 0;
  while (start < text.size() && (static_cast<unsigned char>(text[start]) & 0xC0) == 0x80) ++start;
  std::string out;
  out.reserve(text.size() - start);
  for (size_t i = start; i < text.size();) {
    const unsigned char c = static_cast<unsigned char>(text[i]);
    // Lead bytes that start a valid sequence: no overlong C0/C1, nothing past U+10FFFF.
    const size_t len = c < 0x80 ? 1 : (c >= 0xC2 && c <= 0xDF) ? 2 : (c >> 4) == 0xE ? 3 : (c >= 0xF0 && c <= 0xF4) ? 4 : 0;
    bool ok = len > 0 && i + len <= text.size();
    for (size_t k = 1; ok && k < len; ++k) ok = (static_cast<unsigned char>(text[i + k]) & 0xC0) == 0x80;
    if (ok && len >= 3) {  // no overlong 3/4-byte forms, no surrogates, nothing past U+10FFFF
      const unsigned char d = static_cast<unsigned char>(text[i + 1]);
      ok = !(c == 0xE0 && d < 0xA0) && !(c == 0xED && d >= 0xA0) && !(c == 0xF0 && d < 0x90) && !(c == 0xF4 && d >= 0x90);
    }
    if (ok) {
      out.append(text, i, len);
      i += len;
    } else {
      out.push_back('?');  // one byte for one: the tail stays within max_bytes
      ++i;
    }
  }
  return out;
}

}  // namespace herd::agent
