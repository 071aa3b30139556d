// fork/exec of herd-engine and its protocol pipes.
#include "trainer/agent/engine_process.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "common/engine_protocol.h"
#include "common/strings.h"

extern char** environ;

namespace herd::agent {

absl::StatusOr<std::unique_ptr<EngineProcess>> EngineProcess::Start(const EngineProcessOptions& o, LineHandler on_line) {
  int in_pipe[2], out_pipe[2], exec_pipe[2];
  if (::pipe2(in_pipe, O_CLOEXEC) != 0 || ::pipe2(out_pipe, O_CLOEXEC) != 0 || ::pipe2(exec_pipe, O_CLOEXEC) != 0) {
    return absl::ResourceExhaustedError(herd::StrCat("pipe: ", std::strerror(errno)));
  }
  int err_fd = -1;
  if (!o.stderr_path.empty()) {
    err_fd = ::open(o.stderr_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (err_fd < 0) return absl::UnavailableError(herd::StrCat("open ", o.stderr_path, ": ", std::strerror(errno)));
  }
  // Everything the child needs is built before fork: after it, only async-signal-safe calls.
  std::vector<std::string> argv_s = {o.engine_path};
  argv_s.insert(argv_s.end(), o.args.begin(), o.args.end());
  std::vector<char*> argv;
  for (std::string& a : argv_s) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::vector<std::string> env_s;
  for (char** e = environ; *e; ++e) {
    std::string kv(*e);
    if (!o.env.count(kv.substr(0, kv.find('=')))) env_s.push_back(kv);
  }
  for (const auto& [k, v] : o.env) env_s.push_back(k + "=" + v);
  std::vector<char*> envp;
  for (std::string& e : env_s) envp.push_back(e.data());
  envp.push_back(nullptr);
  const pid_t parent = ::getpid();

  pid_t pid = ::fork();
  if (pid < 0) return absl::ResourceExhaustedError(herd::StrCat("fork: ", std::strerror(errno)));
  if (pid == 0) {
    ::setpgid(0, 0);
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    ::signal(SIGPIPE, SIG_DFL);  // the parent may ignore it (its HTTP server does); children should not
    if (::getppid() != parent) ::_exit(127);  // the parent died before prctl took effect
    ::dup2(in_pipe[0], STDIN_FILENO);
    ::dup2(out_pipe[1], STDOUT_FILENO);
    if (err_fd >= 0) ::dup2(err_fd, STDERR_FILENO);
    // exec_pipe closes on a successful exec; on failure the child sends its errno through it.
    if (!o.working_dir.empty() && ::chdir(o.working_dir.c_str()) != 0) {
      const int e = errno;
      (void)!::write(exec_pipe[1], &e, sizeof(e));
      ::_exit(127);
    }
    ::execve(argv[0], argv.data(), envp.data());
    const int e = errno;
    (void)!::write(exec_pipe[1], &e, sizeof(e));
    ::_exit(127);
  }
  ::setpgid(pid, pid);  // also from the parent, so Kill() works whichever side ran first
  ::close(in_pipe[0]);
  ::close(out_pipe[1]);
  if (err_fd >= 0) ::close(err_fd);
  ::close(exec_pipe[1]);
  int exec_errno = 0;
  ssize_t got;
  while ((got = ::read(exec_pipe[0], &exec_errno, sizeof(exec_errno))) < 0 && errno == EINTR) {
  }
  ::close(exec_pipe[0]);
  if (got > 0) {
    ::close(in_pipe[1]);
    ::close(out_pipe[0]);
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    return absl::UnavailableError(herd::StrCat("cannot run ", o.engine_path, ": ", std::strerror(exec_errno)));
  }
  std::unique_ptr<EngineProcess> p(new EngineProcess());
  p->pid_ = pid;
  p->stdin_fd_ = in_pipe[1];
  p->stdout_fd_ = out_pipe[0];
  p->reader_ = std::thread([raw = p.get(), on_line = std::move(on_line)] { raw->ReadLoop(on_line); });
  return p;
}

void EngineProcess::ReadLoop(LineHandler on_line) {
  std::string buffer;
  char chunk[1 << 16];
  while (true) {
    ssize_t n = ::read(stdout_fd_, chunk, sizeof(chunk));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    buffer.append(chunk, static_cast<size_t>(n));
    size_t newline;
    while ((newline = buffer.find('\n')) != std::string::npos) {
      std::string line = buffer.substr(0, newline);
      buffer.erase(0, newline + 1);
      absl::StatusOr<nlohmann::json> msg = ParseProtocolLine(line);
      if (!msg.ok()) {
        on_line(nullptr, herd::StrCat(msg.status().message(), ": ", line.substr(0, 200)));
        return;
      }
      on_line(*msg, "");
    }
    if (buffer.size() > kMaxProtocolLineBytes) {
      on_line(nullptr, "engine wrote a line longer than 1 MiB");
      return;
    }
  }
  on_line(nullptr, "");
}

absl::Status EngineProcess::Send(const nlohmann::json& message) {
  std::lock_guard<std::mutex> lock(write_mu_);
  if (stdin_fd_ < 0) return absl::FailedPreconditionError("engine stdin is closed");
  return WriteProtocolLine(stdin_fd_, message);
}

void EngineProcess::CloseStdin() {
  std::lock_guard<std::mutex> lock(write_mu_);
  if (stdin_fd_ >= 0) ::close(stdin_fd_);
  stdin_fd_ = -1;
}

void EngineProcess::Kill() {
  if (!reaped_ && pid_ > 0) ::kill(-pid_, SIGKILL);
}

int EngineProcess::Wait() {
  if (!reaped_) {
    int status = 0;
    while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
    reaped_ = true;
    exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    term_signal_ = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
  }
  return exit_code_;
}

EngineProcess::~EngineProcess() {
  Kill();
  Wait();
  CloseStdin();
  if (reader_.joinable()) reader_.join();
  if (stdout_fd_ >= 0) ::close(stdout_fd_);
}

}  // namespace herd::agent
