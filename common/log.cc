// Logging to stderr.
#include "common/log.h"

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <mutex>
#include <string>

namespace herd {
namespace {

LogLevel InitialLevel() {
  LogLevel level = LogLevel::kInfo;
  if (const char* env = std::getenv("HERD_LOG_LEVEL")) ParseLogLevel(env, &level);
  return level;
}

std::atomic<int> g_min_level{static_cast<int>(InitialLevel())};
std::mutex g_tag_mu;
std::string g_tag;  // guarded by g_tag_mu

}  // namespace

void SetMinLogLevel(LogLevel level) { g_min_level = static_cast<int>(level); }
LogLevel MinLogLevel() { return static_cast<LogLevel>(g_min_level.load()); }

bool ParseLogLevel(std::string_view text, LogLevel* level) {
  if (text == "debug") *level = LogLevel::kDebug;
  else if (text == "info") *level = LogLevel::kInfo;
  else if (text == "warning" || text == "warn") *level = LogLevel::kWarning;
  else if (text == "error") *level = LogLevel::kError;
  else return false;
  return true;
}

void SetLogTag(std::string_view tag) {
  std::lock_guard<std::mutex> lock(g_tag_mu);
  g_tag = std::string(tag);
}

namespace internal {

LogLine::LogLine(LogLevel level, const char* file, int line) {
  auto now = std::chrono::system_clock::now();
  std::time_t secs = std::chrono::system_clock::to_time_t(now);
  int millis = static_cast<int>(
      std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000);
  std::tm tm;
  gmtime_r(&secs, &tm);
  char stamp[32];
  std::strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &tm);
  static constexpr char kLetters[] = {'D', 'I', 'W', 'E'};
  const char* base = std::strrchr(file, '/');
  char ms[8];
  std::snprintf(ms, sizeof(ms), ".%03dZ", millis);
  out_ << stamp << ms << ' ' << kLetters[static_cast<int>(level)] << ' ';
  {
    std::lock_guard<std::mutex> lock(g_tag_mu);
    if (!g_tag.empty()) out_ << g_tag << ' ';
  }
  out_ << (base ? base + 1 : file) << ':' << line << "] ";
}

LogLine::~LogLine() {
  out_ << '\n';
  std::string text = out_.str();
  size_t off = 0;
  while (off < text.size()) {
    ssize_t n = ::write(STDERR_FILENO, text.data() + off, text.size() - off);
    if (n <= 0) break;
    off += static_cast<size_t>(n);
  }
}

}  // namespace internal
}  // namespace herd
