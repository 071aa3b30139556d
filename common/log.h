// Minimal structured logging to stderr: one line per event, "2026-11-26T18:57:44.123Z I file.cc:42] msg".
// Herd has its own rather than spdlog because the engine cannot link spdlog: spdlog brings
// Debian's fmt, and libtorch ships its own fmt (DESIGN.md §1, docs/toolchain.md).
#ifndef HERD_COMMON_LOG_H_
#define HERD_COMMON_LOG_H_

#include <sstream>
#include <string_view>

namespace herd {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3 };

// Messages below this level are dropped. Default kInfo; HERD_LOG_LEVEL=debug|info|warning|error.
void SetMinLogLevel(LogLevel level);
LogLevel MinLogLevel();
// Parses "debug", "info", "warning"/"warn", "error"; returns false on anything else.
bool ParseLogLevel(std::string_view text, LogLevel* level);
// Prefix for every line (process name and rank, say), "" by default.
void SetLogTag(std::string_view tag);

namespace internal {
class LogLine {
 public:
  LogLine(LogLevel level, const char* file, int line);
  ~LogLine();  // writes the whole line with one write(2), so lines from threads do not interleave
  std::ostream& stream() { return out_; }

 private:
  std::ostringstream out_;
};
}  // namespace internal

}  // namespace herd

#define HERD_LOG(level)                                                        \
  if (::herd::LogLevel::k##level < ::herd::MinLogLevel()) {                    \
  } else                                                                       \
    ::herd::internal::LogLine(::herd::LogLevel::k##level, __FILE__, __LINE__).stream()

#endif  // HERD_COMMON_LOG_H_
