// Engine side of the line protocol.
#include "trainer/engine/engine_channel.h"

#include <unistd.h>

#include <cstdlib>
#include <iostream>

#include "common/log.h"
#include "common/status.h"
#include "common/strings.h"

namespace herd::engine {

absl::StatusOr<std::unique_ptr<EngineChannel>> EngineChannel::Start() {
  std::unique_ptr<EngineChannel> c(new EngineChannel());
  c->proto_fd_ = ::dup(STDOUT_FILENO);
  if (c->proto_fd_ < 0 || ::dup2(STDERR_FILENO, STDOUT_FILENO) < 0) {
    return absl::InternalError("cannot set up the protocol channel on stdout");
  }
  c->reader_ = std::thread([raw = c.get()] { raw->ReadLoop(); });
  return c;
}

EngineChannel::~EngineChannel() {
  // The reader blocks in read(2) on stdin for the life of the process; it is never joined.
  if (reader_.joinable()) reader_.detach();
}

absl::Status EngineChannel::Send(const nlohmann::json& message) {
  std::lock_guard<std::mutex> lock(write_mu_);
  return WriteProtocolLine(proto_fd_, message);
}

void EngineChannel::ReadLoop() {
  std::string line;
  while (std::getline(std::cin, line)) {
    absl::StatusOr<nlohmann::json> msg = ParseProtocolLine(line);
    std::lock_guard<std::mutex> lock(mu_);
    if (!msg.ok()) {
      bad_line_ = herd::StrCat(msg.status().message(), ": ", line.substr(0, 200));
    } else {
      const std::string type = (*msg)["type"];
      if (type == "assignment") {
        if (assignment_) bad_line_ = "a second assignment";
        else assignment_ = std::move(*msg);
      } else if (type == "rendezvous") {
        // Key first: in `a[k] = std::move(m)` the right side is evaluated (moved from) first.
        const std::string key = msg->value("key", std::string());
        answers_[key] = std::move(*msg);
      } else if (type == "cancel") {
        HERD_LOG(Info) << "cancel: " << msg->value("reason", std::string("(no reason)"));
        cancelled_ = true;
      } else {
        HERD_LOG(Warning) << "ignoring unknown message type " << type;
      }
    }
    cv_.notify_all();
  }
  // EOF: the agent is gone or wants this engine gone at once (protocol §7).
  HERD_LOG(Warning) << "stdin closed: exiting";
  std::_Exit(1);
}

absl::StatusOr<EngineAssignment> EngineChannel::WaitAssignment() {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [&] { return assignment_.has_value() || !bad_line_.empty() || cancelled_.load(); });
  if (!bad_line_.empty()) return absl::InvalidArgumentError(bad_line_);
  if (!assignment_) return absl::CancelledError("cancelled before the assignment");
  return AssignmentFromJson(*assignment_);
}

absl::StatusOr<std::string> EngineChannel::Rendezvous(const std::string& type, const std::string& key,
                                                      const nlohmann::json& fields, absl::Duration timeout) {
  nlohmann::json msg = ProtocolMessage(type, fields);
  msg["key"] = key;
  {
    std::lock_guard<std::mutex> lock(mu_);
    answers_.erase(key);
  }
  HERD_RETURN_IF_ERROR(Send(msg));
  std::unique_lock<std::mutex> lock(mu_);
  // The agent enforces the get's own timeout; this bound only catches an agent that never answers.
  bool answered = cv_.wait_for(lock, absl::ToChronoSeconds(timeout + absl::Seconds(60)),
                               [&] { return answers_.count(key) > 0 || cancelled_.load(); });
  if (cancelled_) return absl::CancelledError("cancelled during rendezvous");
  if (!answered) return absl::DeadlineExceededError(herd::StrCat("no answer to ", type, " ", key));
  nlohmann::json answer = std::move(answers_[key]);
  answers_.erase(key);
  if (answer.contains("error")) {
    const nlohmann::json& e = answer["error"];
    std::string code = e.value("code", std::string("UNKNOWN"));
    std::string message = herd::StrCat(type, " ", key, ": ", e.value("message", std::string()));
    if (code == "DEADLINE_EXCEEDED") return absl::DeadlineExceededError(message);
    if (code == "ALREADY_EXISTS") return absl::AlreadyExistsError(message);
    if (code == "FAILED_PRECONDITION") return absl::FailedPreconditionError(message);
    return absl::UnavailableError(message);
  }
  if (!answer.contains("value") || !answer["value"].is_string()) {
    return absl::InvalidArgumentError(herd::StrCat("rendezvous answer for ", key, " has no string value"));
  }
  return answer["value"].get<std::string>();
}

absl::Status ChannelRendezvous::Put(const std::string& key, const std::string& value) {
  return channel_.Rendezvous("rendezvous_put", key, {{"value", value}}, absl::Seconds(60)).status();
}

absl::StatusOr<std::string> ChannelRendezvous::Get(const std::string& key, absl::Duration timeout) {
  return channel_.Rendezvous("rendezvous_get", key, {{"timeout_seconds", absl::ToDoubleSeconds(timeout)}}, timeout);
}

}  // namespace herd::engine
