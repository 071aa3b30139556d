// `herd jobs watch`: see jobs_watch.h.
#include "cli/jobs_watch.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <memory>
#include <mutex>
#include <thread>

#include <grpcpp/grpcpp.h>

#include "cli/call.h"
#include "cli/exit_codes.h"
#include "common/rpc/rpc.h"
#include "common/strings.h"
#include "herd/v1/jobs.grpc.pb.h"

namespace herd::cli {
namespace {

std::string Printf(const char* format, double value) {
  char buffer[64];
  std::snprintf(buffer, sizeof buffer, format, value);
  return buffer;
}

// Ctrl-C while watching: the signal handler writes to a pipe (all it may do), and a thread
// reading the pipe cancels the call in flight and wakes a backoff wait.
class Interrupts {
 public:
  Interrupts() {
    if (::pipe2(pipe_, O_CLOEXEC) != 0) {
      pipe_[0] = pipe_[1] = -1;
      return;
    }
    write_fd_ = pipe_[1];
    struct sigaction action = {};
    action.sa_handler = [](int) {
      const char byte = 'i';
      (void)!::write(write_fd_, &byte, 1);
    };
    sigemptyset(&action.sa_mask);
    ::sigaction(SIGINT, &action, &previous_);
    thread_ = std::thread([this] { Run(); });
  }
  ~Interrupts() {
    if (pipe_[0] < 0) return;
    ::sigaction(SIGINT, &previous_, nullptr);
    const char byte = 'q';
    (void)!::write(pipe_[1], &byte, 1);
    thread_.join();
    ::close(pipe_[0]);
    ::close(pipe_[1]);
  }
  Interrupts(const Interrupts&) = delete;
  Interrupts& operator=(const Interrupts&) = delete;

  bool interrupted() {
    std::lock_guard<std::mutex> lock(mu_);
    return interrupted_;
  }
  // The call Ctrl-C cancels; nullptr between calls.
  void SetCall(grpc::ClientContext* call) {
    std::lock_guard<std::mutex> lock(mu_);
    call_ = call;
    if (call_ != nullptr && interrupted_) call_->TryCancel();
  }
  // Waits `d`; false when interrupted.
  bool Wait(absl::Duration d) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait_for(lock, absl::ToChronoMilliseconds(d), [&] { return interrupted_; });
    return !interrupted_;
  }

 private:
  void Run() {
    while (true) {
      char byte = 0;
      const ssize_t n = ::read(pipe_[0], &byte, 1);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0 || byte == 'q') return;
      std::lock_guard<std::mutex> lock(mu_);
      interrupted_ = true;
      if (call_ != nullptr) call_->TryCancel();
      cv_.notify_all();
    }
  }

  static inline int write_fd_ = -1;  // for the signal handler
  int pipe_[2] = {-1, -1};
  struct sigaction previous_ = {};
  std::thread thread_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool interrupted_ = false;          // guarded by mu_
  grpc::ClientContext* call_ = nullptr;  // guarded by mu_
};

// Where the lines go: one live line rewritten in place on a terminal, plain lines otherwise.
class Display {
 public:
  explicit Display(bool json) : json_(json) {
    const char* term = std::getenv("TERM");
    tty_ = !json && ::isatty(STDOUT_FILENO) && !(term != nullptr && std::string(term) == "dumb");
  }
  void Json(const google::protobuf::Message& m) { std::cout << MessageToJson(m) << std::endl; }
  // A line that stays (an event, the job).
  void Line(const std::string& line) {
    if (json_) return;
    if (tty_) {
      std::cout << "\r\033[K" << line << "\n" << FitColumns(live_, Columns()) << std::flush;
    } else {
      std::cout << line << std::endl;
    }
  }
  // The progress line. Plain output prints it only when it changed and `plain` is set (new
  // progress, not merely the new state an event line already told).
  void Live(const std::string& line, bool plain) {
    if (json_ || line == live_) return;
    live_ = line;
    if (tty_) {
      std::cout << "\r\033[K" << FitColumns(live_, Columns()) << std::flush;
    } else if (plain) {
      std::cout << line << std::endl;
    }
  }
  // Leaves the live line on the screen, so that what follows starts on a line of its own.
  void Close() {
    if (tty_ && !live_.empty()) std::cout << "\n" << std::flush;
    live_.clear();
  }

 private:
  static size_t Columns() {
    struct winsize ws = {};
    if (::ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 1) return ws.ws_col - 1;
    return 79;
  }

  bool json_;
  bool tty_ = false;
  std::string live_;
};

bool Retryable(absl::StatusCode code) {
  return code == absl::StatusCode::kUnavailable || code == absl::StatusCode::kDeadlineExceeded ||
         code == absl::StatusCode::kAborted || code == absl::StatusCode::kCancelled;
}

constexpr size_t kSparklineWidth = 24;
constexpr absl::Duration kFirstBackoff = absl::Milliseconds(500);
constexpr absl::Duration kMaxBackoff = absl::Seconds(10);

}  // namespace

std::string StateName(herd::v1::JobState state) {
  std::string name = herd::v1::JobState_Name(state);
  constexpr std::string_view kPrefix = "JOB_STATE_";
  return name.rfind(kPrefix, 0) == 0 ? name.substr(kPrefix.size()) : name;
}

std::string EventTypeName(herd::v1::JobEventType type) {
  std::string name = herd::v1::JobEventType_Name(type);
  constexpr std::string_view kPrefix = "JOB_EVENT_TYPE_";
  return name.rfind(kPrefix, 0) == 0 ? name.substr(kPrefix.size()) : name;
}


std::string Sparkline(const std::vector<double>& values, size_t width) {
  static constexpr const char* kBars[] = {"▁", "▂", "▃", "▄", "▅", "▆", "▇", "█"};
  std::vector<double> finite;
  for (double v : values) {
    if (std::isfinite(v)) finite.push_back(v);
  }
  if (finite.size() > width) finite.erase(finite.begin(), finite.end() - width);
  if (finite.empty()) return "";
  const auto [lo, hi] = std::minmax_element(finite.begin(), finite.end());
  const double low = *lo, range = *hi - *lo;
  std::string out;
  for (double v : finite) {
    const int level = range > 0 ? static_cast<int>(std::lround((v - low) / range * 7)) : 3;
    out += kBars[std::clamp(level, 0, 7)];
  }
  return out;
}

void LossTrail::Add(int64_t step, double loss) {
  if (!std::isfinite(loss)) return;
  while (!points_.empty() && points_.back().first >= step) {
    if (points_.back().first == step && points_.back().second == loss) return;  // same point
    points_.pop_back();
  }
  points_.emplace_back(step, loss);
  while (points_.size() > capacity_) points_.pop_front();
}

std::vector<double> LossTrail::Values() const {
  std::vector<double> out;
  for (const auto& [step, loss] : points_) out.push_back(loss);
  return out;
}

std::string ProgressLine(herd::v1::JobState state, const herd::v1::JobProgress& p,
                         const std::string& sparkline) {
  std::vector<std::string> parts = {StateName(state)};
  if (p.total_steps() > 0) {
    parts.push_back(StrCat("step ", p.step(), "/", p.total_steps(), " (",
                           100 * p.step() / p.total_steps(), "%)"));
  } else if (p.step() > 0) {
    parts.push_back(StrCat("step ", p.step()));
  }
  if (p.epoch() > 0) parts.push_back(Printf("epoch %.2f", p.epoch()));
  if (p.has_loss()) {
    parts.push_back(Printf("loss %.4f", p.loss()) + (sparkline.empty() ? "" : " " + sparkline));
  }
  if (p.learning_rate() > 0) parts.push_back(Printf("lr %.2e", p.learning_rate()));
  if (p.tokens_per_second() > 0) {
    parts.push_back(GroupThousands(std::llround(p.tokens_per_second())) + " tok/s");
  }
  if (p.has_eval_loss()) parts.push_back(Printf("eval %.4f", p.eval_loss()));
  return StrJoin(parts, "  ");
}

std::string EventLine(const herd::v1::JobEvent& e) {
  std::string line = StrCat(absl::FormatTime("%H:%M:%SZ", absl::FromUnixSeconds(e.time().seconds()),
                                             absl::UTCTimeZone()),
                            "  #", e.sequence(), "  ", EventTypeName(e.type()), "  ", e.message());
  if (e.has_failure() && !e.failure().message().empty() &&
      e.message().find(e.failure().message()) == std::string::npos) {
    line += StrCat(" (", e.failure().code(), ": ", e.failure().message(), ")");
  }
  return line;
}

std::string JobLine(const herd::v1::Job& job) {
  std::string line = job.id();
  if (!job.spec().name().empty()) line += StrCat(" (", job.spec().name(), ")");
  return StrCat(line, ": ", StateName(job.state()), ", ", job.spec().base_model(), " on ",
                job.spec().dataset_id());
}

std::string FitColumns(const std::string& line, size_t columns) {
  size_t seen = 0;
  for (size_t i = 0; i < line.size(); ++i) {
    // A UTF-8 continuation byte (10xxxxxx) belongs to the character before it.
    if ((static_cast<unsigned char>(line[i]) & 0xC0) == 0x80) continue;
    if (seen == columns) return line.substr(0, i);
    ++seen;
  }
  return line;
}

std::string GroupThousands(int64_t n) {
  std::string digits = std::to_string(n < 0 ? -n : n);
  std::string out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return n < 0 ? "-" + out : out;
}

int ExitCodeForFinalState(herd::v1::JobState state) {
  switch (state) {
    case herd::v1::JOB_STATE_SUCCEEDED:
      return kOk;
    case herd::v1::JOB_STATE_FAILED:
    case herd::v1::JOB_STATE_CANCELLED:
      return kJobFailed;
    default:
      return -1;
  }
}

int WatchJob(const ClientConfig& config, const WatchOptions& options) {
  auto channel = herd::rpc::MakeChannel({.target = config.endpoint, .ca_file = config.ca_file});
  if (!channel.ok()) return FailCall(nullptr, channel.status());
  auto stub = herd::v1::JobService::NewStub(*channel);
  Interrupts interrupts;
  Display display(options.json);
  LossTrail trail;
  herd::v1::JobState state = herd::v1::JOB_STATE_UNSPECIFIED;
  herd::v1::JobProgress progress;
  int64_t after = 0;
  bool started = false;
  absl::Time last_contact = absl::Now();
  absl::Duration backoff = kFirstBackoff;

  auto show_progress = [&](bool plain) {
    if (progress.has_loss()) trail.Add(progress.step(), progress.loss());
    display.Live(ProgressLine(state, progress, Sparkline(trail.Values(), kSparklineWidth)), plain);
  };
  auto interrupted = [&] {
    display.Close();
    std::cerr << "herd: interrupted\n";
    return kInterrupted;
  };

  while (true) {
    if (interrupts.interrupted()) return interrupted();
    grpc::ClientContext context;
    PrepareCall(config, &context, options.stream_deadline);
    // PrepareCall's deadline has whole seconds; a stream's may be shorter (tests).
    context.set_deadline(std::chrono::system_clock::now() +
                         absl::ToChronoMilliseconds(options.stream_deadline));
    herd::v1::WatchJobRequest request;
    request.set_id(options.id);
    request.set_after_sequence(after);
    interrupts.SetCall(&context);
    std::unique_ptr<grpc::ClientReader<herd::v1::WatchJobResponse>> reader =
        stub->WatchJob(&context, request);
    herd::v1::WatchJobResponse m;
    bool received = false;
    bool ended = false;  // the final event arrived: the history is complete
    while (!ended && reader->Read(&m)) {
      received = true;
      if (options.on_message) options.on_message(m);
      if (options.json) display.Json(m);
      if (m.has_job()) {
        state = m.job().state();
        if (!started) display.Line(JobLine(m.job()));
        started = true;
        if (m.job().has_progress()) progress = m.job().progress();
        show_progress(progress.step() > 0);
      } else if (m.has_event()) {
        const herd::v1::JobEvent& e = m.event();
        after = std::max(after, e.sequence());
        if (e.type() == herd::v1::JOB_EVENT_TYPE_STATE_CHANGED) {
          state = e.state();
          ended = ExitCodeForFinalState(state) >= 0;
        }
        display.Line(EventLine(e));
        show_progress(false);
      } else if (m.has_progress()) {
        progress = m.progress();
        show_progress(true);
      }
    }
    if (ended) context.TryCancel();  // the server ends the stream here anyway
    const absl::Status status = herd::rpc::FromGrpc(reader->Finish());
    interrupts.SetCall(nullptr);
    if (interrupts.interrupted()) return interrupted();
    if (ended || (status.ok() && ExitCodeForFinalState(state) >= 0)) {
      display.Close();
      return ExitCodeForFinalState(state);
    }
    // OK before a final state should not happen; treat it like a broken stream.
    if (!status.ok() && !Retryable(status.code())) {
      display.Close();
      return FailCall(&config, status);
    }
    const absl::Time now = absl::Now();
    if (received) {
      last_contact = now;
      backoff = kFirstBackoff;
      // The stream's own deadline passed: resume at once.
      if (status.code() == absl::StatusCode::kDeadlineExceeded) continue;
    }
    if (now - last_contact > options.give_up_after) {
      display.Close();
      return FailCall(&config, status.ok()
                                   ? absl::UnavailableError("the watch stream keeps ending early")
                                   : status);
    }
    if (!interrupts.Wait(backoff)) return interrupted();
    backoff = std::min(backoff * 2, kMaxBackoff);
  }
}

}  // namespace herd::cli
