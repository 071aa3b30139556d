// String building for messages. Debian's Abseil is built with its own absl::string_view (not
// std::string_view), so absl::StrCat refuses std::string_view arguments; these accept anything
// that streams, std::string_view and absl::string_view alike.
#ifndef HERD_COMMON_STRINGS_H_
#define HERD_COMMON_STRINGS_H_

#include <sstream>
#include <string>
#include <string_view>

namespace herd {

template <typename... Args>
std::string StrCat(const Args&... args) {
  std::ostringstream out;
  (out << ... << args);
  return out.str();
}

template <typename Range>
std::string StrJoin(const Range& items, std::string_view separator) {
  std::ostringstream out;
  bool first = true;
  for (const auto& item : items) {
    if (!first) out << separator;
    out << item;
    first = false;
  }
  return out.str();
}

}  // namespace herd

#endif  // HERD_COMMON_STRINGS_H_
