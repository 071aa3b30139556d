// Number spelling, escaping, name rules and UTF-8 repair of the Prometheus text format.
#include "common/metrics/text_format.h"

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <random>
#include <string>

#include "gtest/gtest.h"

namespace herd::metrics {
namespace {

TEST(TextFormatTest, FormatValue) {
  struct Case {
    double value;
    std::string text;
  };
  const Case kCases[] = {
      {0, "0"},
      {-0.0, "0"},
      {1, "1"},
      {-12, "-12"},
      {1e6, "1000000"},                            // integers never get an exponent...
      {9007199254740992.0, "9007199254740992"},    // ... up to 2^53
      {18014398509481984.0, "18014398509481984"},  // beyond it, the shortest exact form:
      {1e16, "1e+16"},                             // fixed or scientific, whichever is shorter
      {0.005, "0.005"},
      {0.1, "0.1"},
      {2.5, "2.5"},
      {-0.25, "-0.25"},
      {1e-7, "1e-07"},
      {1.5e300, "1.5e+300"},
      {1.0 / 3, "0.3333333333333333"},
      {123456.789, "123456.789"},
      {5e-324, "5e-324"},
      {std::numeric_limits<double>::infinity(), "+Inf"},
      {-std::numeric_limits<double>::infinity(), "-Inf"},
      {std::numeric_limits<double>::quiet_NaN(), "NaN"},
  };
  for (const Case& c : kCases) {
    EXPECT_EQ(FormatValue(c.value), c.text) << "value " << c.value;
  }
}

TEST(TextFormatTest, FormatValueRoundTrips) {
  std::mt19937_64 rng(7);
  std::uniform_int_distribution<uint64_t> bits;
  for (int i = 0; i < 20000; ++i) {
    double v;
    const uint64_t b = bits(rng);
    std::memcpy(&v, &b, sizeof(v));
    if (!std::isfinite(v)) continue;
    const std::string text = FormatValue(v);
    EXPECT_EQ(std::strtod(text.c_str(), nullptr), v) << text;
  }
}

TEST(TextFormatTest, Escaping) {
  struct Case {
    std::string raw, help, label;
  };
  const Case kCases[] = {
      {"plain text", "plain text", "plain text"},
      {"back\\slash", "back\\\\slash", "back\\\\slash"},
      {"two\nlines", "two\\nlines", "two\\nlines"},
      {"say \"hi\"", "say \"hi\"", "say \\\"hi\\\""},  // HELP leaves quotes alone
      {"tab\there", "tab\there", "tab\there"},
      {"\\n is not a newline", "\\\\n is not a newline", "\\\\n is not a newline"},
      {"caf\xC3\xA9", "caf\xC3\xA9", "caf\xC3\xA9"},
      {"", "", ""},
  };
  for (const Case& c : kCases) {
    std::string help, label;
    AppendEscapedHelp(c.raw, &help);
    AppendEscapedLabelValue(c.raw, &label);
    EXPECT_EQ(help, c.help) << "raw " << c.raw;
    EXPECT_EQ(label, c.label) << "raw " << c.raw;
  }
}

TEST(TextFormatTest, Names) {
  struct Case {
    std::string name;
    bool metric_ok, label_ok;
  };
  const Case kCases[] = {
      // clang-format off
      {"herd_jobs", true, true},
      {"_x", true, true},
      {"a1", true, true},
      {"job:rate5m", true, false},  // colons: metric names only (recording rules)
      {":x", true, false},
      {"1abc", false, false},
      {"", false, false},
      {"has-dash", false, false},
      {"has space", false, false},
      {"caf\xC3\xA9", false, false},
      // clang-format on
  };
  for (const Case& c : kCases) {
    EXPECT_EQ(IsValidMetricName(c.name), c.metric_ok) << c.name;
    EXPECT_EQ(IsValidLabelName(c.name), c.label_ok) << c.name;
  }
}

TEST(TextFormatTest, Utf8) {
  struct Case {
    std::string text;
    bool valid;
    std::string sanitized;
  };
  const std::string r = "\xEF\xBF\xBD";  // U+FFFD
  const Case kCases[] = {
      {"ascii", true, "ascii"},
      {"caf\xC3\xA9", true, "caf\xC3\xA9"},
      {"\xF0\x9F\x98\x80", true, "\xF0\x9F\x98\x80"},  // U+1F600
      {"bad\xFFtail", false, "bad" + r + "tail"},
      {"cut\xC3", false, "cut" + r},                                 // truncated sequence
      {"\xC0\xAF", false, r + r},                                    // overlong '/'
      {"\xED\xA0\x80", false, r + r + r},                            // surrogate U+D800
      {"\xF4\x90\x80\x80", false, r + r + r + r},                    // above U+10FFFF
      {std::string("nul\0ok", 6), true, std::string("nul\0ok", 6)},  // NUL is valid UTF-8
  };
  for (const Case& c : kCases) {
    EXPECT_EQ(IsValidUtf8(c.text), c.valid) << c.text;
    EXPECT_EQ(SanitizeUtf8(c.text), c.sanitized) << c.text;
    EXPECT_TRUE(IsValidUtf8(SanitizeUtf8(c.text)));
  }
}

}  // namespace
}  // namespace herd::metrics
