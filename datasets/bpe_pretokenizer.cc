// The LLaMA-3 split regex as a hand-written matcher: at each position the alternatives are tried
// in the regex's order and the first that matches wins (leftmost-first, like Oniguruma), with
// each alternative's greedy/backtracking result worked out in closed form.
#include "datasets/bpe_pretokenizer.h"

#include <cstdint>

#include "datasets/unicode_categories.h"

namespace herd::datasets {
namespace {

enum Class : uint8_t { kLetter, kNumber, kSpace, kOther };

struct Char {
  char32_t cp;
  uint32_t offset;  // byte offset in the text
  Class cls;
};

// Decodes UTF-8; a byte that does not start a well-formed sequence is one kOther character.
std::vector<Char> Decode(std::string_view s) {
  std::vector<Char> out;
  out.reserve(s.size() + 1);
  size_t i = 0;
  while (i < s.size()) {
    const auto b = [&](size_t k) { return static_cast<uint8_t>(s[k]); };
    const uint8_t c = b(i);
    size_t n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    char32_t cp = c;
    bool ok = n >= 1 && i + n <= s.size();
    if (ok && n > 1) {
      cp = c & (0x7f >> n);
      for (size_t k = 1; k < n && ok; ++k) {
        ok = (b(i + k) & 0xc0) == 0x80;
        cp = (cp << 6) | (b(i + k) & 0x3f);
      }
      // Overlong forms, surrogates and values past U+10FFFF are not well formed.
      static constexpr char32_t kMin[] = {0, 0, 0x80, 0x800, 0x10000};
      ok = ok && cp >= kMin[n] && cp <= 0x10ffff && !(cp >= 0xd800 && cp <= 0xdfff);
    }
    if (!ok) {
      out.push_back({c, static_cast<uint32_t>(i), kOther});
      ++i;
      continue;
    }
    const Class cls = IsUnicodeLetter(cp)       ? kLetter
                      : IsUnicodeNumber(cp)     ? kNumber
                      : IsUnicodeWhiteSpace(cp) ? kSpace
                                                : kOther;
    out.push_back({cp, static_cast<uint32_t>(i), cls});
    i += n;
  }
  return out;
}

bool IsNewline(char32_t c) { return c == '\r' || c == '\n'; }

// (?i:'s|'t|'re|'ve|'m|'ll|'d) at i: its length, or 0. Case folding makes U+017F (ſ) an 's'.
size_t Contraction(const std::vector<Char>& t, size_t i) {
  if (t[i].cp != '\'' || i + 1 >= t.size()) return 0;
  const auto lower = [&](size_t k) -> char32_t {
    if (k >= t.size()) return 0;
    const char32_t c = t[k].cp;
    if (c == 0x17f) return 's';
    return c < 0x80 ? (c | 0x20) : c;
  };
  const char32_t a = lower(i + 1);
  if (a == 's' || a == 't' || a == 'm' || a == 'd') return 2;
  const char32_t b = lower(i + 2);
  if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return 3;
  return 0;
}

// The length of the match at i (> 0): the regex matches something at every position.
size_t MatchAt(const std::vector<Char>& t, size_t i) {
  const size_t n = t.size();
  const auto run = [&](size_t from, auto pred) {
    size_t j = from;
    while (j < n && pred(t[j])) ++j;
    return j;
  };
  const auto is = [](Class c) { return [c](const Char& ch) { return ch.cls == c; }; };
  if (size_t len = Contraction(t, i)) return len;
  // [^\r\n\p{L}\p{N}]?\p{L}+
  if (t[i].cls == kLetter) return run(i, is(kLetter)) - i;
  if (t[i].cls != kNumber && !IsNewline(t[i].cp) && i + 1 < n && t[i + 1].cls == kLetter) {
    return run(i + 1, is(kLetter)) - i;
  }
  // \p{N}{1,3}
  if (t[i].cls == kNumber) {
    size_t j = i;
    while (j < n && j - i < 3 && t[j].cls == kNumber) ++j;
    return j - i;
  }
  //  ?[^\s\p{L}\p{N}]+[\r\n]*
  const size_t other_from = t[i].cp == ' ' && i + 1 < n && t[i + 1].cls == kOther ? i + 1 : i;
  if (t[other_from].cls == kOther) {
    const size_t j = run(other_from, is(kOther));
    return run(j, [](const Char& c) { return IsNewline(c.cp); }) - i;
  }
  // Only white space is left. \s*[\r\n]+ ends at the run's last newline.
  const size_t end = run(i, is(kSpace));
  for (size_t k = end; k > i; --k) {
    if (IsNewline(t[k - 1].cp)) return k - i;
  }
  // \s+(?!\S): the whole run at the end of the text, else all but its last character; \s+ for a
  // single space before a non-space.
  if (end == n || end - i == 1) return end - i;
  return end - 1 - i;
}

}  // namespace

std::vector<std::string_view> SplitLlama3(std::string_view text) {
  std::vector<std::string_view> pieces;
  const std::vector<Char> t = Decode(text);
  for (size_t i = 0; i < t.size();) {
    const size_t j = i + MatchAt(t, i);
    const size_t from = t[i].offset;
    const size_t to = j < t.size() ? t[j].offset : text.size();
    pieces.push_back(text.substr(from, to - from));
    i = j;
  }
  return pieces;
}

}  // namespace herd::datasets
