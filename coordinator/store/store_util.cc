// Ids, page tokens and name rules (store_util.h).
#include "coordinator/store/store_util.h"

#include <fcntl.h>
#include <sys/random.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstring>
#include <optional>

#include "absl/strings/escaping.h"
#include "common/sha256.h"
#include "common/strings.h"

namespace herd::coordinator::store {

absl::StatusOr<std::string> RandomBytes(size_t n) {
  std::string out(n, '\0');
  size_t got = 0;
  while (got < n) {
    ssize_t r = ::getrandom(out.data() + got, n - got, 0);
    if (r < 0) {
      if (errno == EINTR) continue;
      return absl::UnavailableError(herd::StrCat("getrandom: ", std::strerror(errno)));
    }
    got += static_cast<size_t>(r);
  }
  return out;
}

std::string Base32(std::string_view bytes) {
  static constexpr char kAlphabet[] = "abcdefghijklmnopqrstuvwxyz234567";
  std::string out;
  uint32_t buffer = 0;
  int bits = 0;
  for (unsigned char c : bytes) {
    buffer = (buffer << 8) | c;
    bits += 8;
    while (bits >= 5) {
      out += kAlphabet[(buffer >> (bits - 5)) & 31];
      bits -= 5;
    }
  }
  if (bits > 0) out += kAlphabet[(buffer << (5 - bits)) & 31];
  return out;
}

absl::StatusOr<std::string> NewId(std::string_view prefix) {
  auto bytes = RandomBytes(16);
  if (!bytes.ok()) return bytes.status();
  return herd::StrCat(prefix, Base32(*bytes));
}

absl::StatusOr<int> NormalizePageSize(int page_size) {
  if (page_size < 0) {
    return absl::InvalidArgumentError(herd::StrCat("page_size ", page_size, " is negative"));
  }
  if (page_size == 0) return 100;
  return page_size > 1000 ? 1000 : page_size;
}

namespace {

std::string FilterHash(std::string_view kind, std::string_view filter_key) {
  Sha256 h;
  h.Update(kind);
  h.Update(std::string_view("\0", 1));
  h.Update(filter_key);
  return h.HexDigest().substr(0, 16);
}

absl::Status BadToken() {
  return absl::InvalidArgumentError(
      "page_token is malformed or was made for a different listing or other filters");
}

}  // namespace

std::string EncodePageToken(std::string_view kind, int64_t cursor, std::string_view filter_key) {
  std::string plain = herd::StrCat("1.", cursor, ".", FilterHash(kind, filter_key));
  return absl::WebSafeBase64Escape(absl::string_view(plain.data(), plain.size()));
}

absl::StatusOr<std::optional<int64_t>> DecodePageToken(std::string_view token,
                                                       std::string_view kind,
                                                       std::string_view filter_key) {
  if (token.empty()) return std::optional<int64_t>();
  if (token.size() > 200) return BadToken();
  std::string plain;
  if (!absl::WebSafeBase64Unescape(absl::string_view(token.data(), token.size()), &plain)) {
    return BadToken();
  }
  std::string_view p = plain;
  if (p.substr(0, 2) != "1.") return BadToken();
  p.remove_prefix(2);
  size_t dot = p.find('.');
  if (dot == std::string_view::npos) return BadToken();
  int64_t cursor = 0;
  auto [end, ec] = std::from_chars(p.data(), p.data() + dot, cursor);
  if (ec != std::errc() || end != p.data() + dot) return BadToken();
  if (p.substr(dot + 1) != FilterHash(kind, filter_key)) return BadToken();
  return std::optional<int64_t>(cursor);
}

absl::Status ValidateName(std::string_view field, std::string_view name) {
  auto bad = [&](std::string_view why) {
    return absl::InvalidArgumentError(herd::StrCat(field, ": ", why));
  };
  if (name.empty()) return bad("must not be empty");
  if (name.size() > 128) return bad(herd::StrCat("is ", name.size(), " bytes; at most 128"));
  if (name == "." || name == "..") return bad("must not be '.' or '..'");
  for (unsigned char c : name) {
    if (c < 0x20 || c == 0x7f) return bad("must not contain control characters");
    if (c == '/' || c == '\\') return bad("must not contain '/' or '\\'");
  }
  auto space = [](unsigned char c) { return c == ' ' || c == '\t'; };
  if (space(name.front()) || space(name.back())) {
    return bad("must not start or end with whitespace");
  }
  // UTF-8 well-formedness (no overlongs or surrogates; RFC 3629).
  size_t i = 0;
  while (i < name.size()) {
    unsigned char c = name[i];
    int extra = c < 0x80 ? 0 : (c >> 5) == 6 ? 1 : (c >> 4) == 14 ? 2 : (c >> 3) == 30 ? 3 : -1;
    if (extra < 0) return bad("is not valid UTF-8");
    uint32_t cp = extra == 0 ? c : extra == 1 ? (c & 0x1f) : extra == 2 ? (c & 0x0f) : (c & 0x07);
    for (int k = 1; k <= extra; ++k) {
      if (i + k >= name.size()) return bad("is not valid UTF-8");
      unsigned char cc = name[i + k];
      if ((cc >> 6) != 2) return bad("is not valid UTF-8");
      cp = (cp << 6) | (cc & 0x3f);
    }
    static constexpr uint32_t kMin[] = {0, 0x80, 0x800, 0x10000};
    if (cp < kMin[extra] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) {
      return bad("is not valid UTF-8");
    }
    if (cp >= 0x80 && cp <= 0x9f) return bad("must not contain control characters");
    i += extra + 1;
  }
  return absl::OkStatus();
}

bool IsSha256Hex(std::string_view s) {
  if (s.size() != 64) return false;
  for (char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

}  // namespace herd::coordinator::store
