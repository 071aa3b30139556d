// Folder-backed rendezvous.
#include "trainer/engine/dist/rendezvous.h"

#include <thread>

#include "common/strings.h"
#include "common/file_util.h"

namespace herd::engine {

absl::StatusOr<std::string> FileRendezvous::PathFor(const std::string& key) const {
  if (key.empty() || key.size() > 200) return absl::InvalidArgumentError("rendezvous key length");
  for (char c : key) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-';
    if (!ok || key == "." || key == "..") {
      return absl::InvalidArgumentError(herd::StrCat("rendezvous key '", key, "' has characters outside [A-Za-z0-9._-]"));
    }
  }
  return herd::StrCat(dir_, "/", key);
}

absl::Status FileRendezvous::Put(const std::string& key, const std::string& value) {
  absl::StatusOr<std::string> path = PathFor(key);
  if (!path.ok()) return path.status();
  absl::StatusOr<std::string> existing = ReadFile(*path);
  if (existing.ok()) {
    if (*existing == value) return absl::OkStatus();
    return absl::AlreadyExistsError(herd::StrCat("rendezvous key ", key, " already holds another value"));
  }
  return WriteFileAtomic(*path, value);
}

absl::StatusOr<std::string> FileRendezvous::Get(const std::string& key, absl::Duration timeout) {
  absl::StatusOr<std::string> path = PathFor(key);
  if (!path.ok()) return path.status();
  const absl::Time deadline = absl::Now() + timeout;
  absl::Duration backoff = absl::Milliseconds(1);
  while (true) {
    absl::StatusOr<std::string> value = ReadFile(*path);
    if (value.ok() || !absl::IsNotFound(value.status())) return value;
    if (absl::Now() >= deadline) {
      return absl::DeadlineExceededError(herd::StrCat("rendezvous key ", key, " not published within ",
                                                      absl::FormatDuration(timeout)));
    }
    // The writer renames the value into place, so a poll sees all of it or nothing.
    std::this_thread::sleep_for(absl::ToChronoNanoseconds(backoff));
    backoff = std::min(backoff * 2, absl::Milliseconds(50));
  }
}

}  // namespace herd::engine
