// The low-level pieces of the Prometheus text exposition format 0.0.4: name rules, escaping and
// number spelling. Registry::Render (metrics.h) assembles whole families from these; they are
// public so that tests and tools can check single values.
// Reference: https://prometheus.io/docs/instrumenting/exposition_formats/
#ifndef HERD_COMMON_METRICS_TEXT_FORMAT_H_
#define HERD_COMMON_METRICS_TEXT_FORMAT_H_

#include <string>
#include <string_view>

namespace herd::metrics {

// The Content-Type of a /metrics answer in this format.
inline constexpr char kTextContentType[] = "text/plain; version=0.0.4; charset=utf-8";

// [a-zA-Z_:][a-zA-Z0-9_:]*
bool IsValidMetricName(std::string_view name);
// [a-zA-Z_][a-zA-Z0-9_]*
bool IsValidLabelName(std::string_view name);

// A sample value as Prometheus spells it: "+Inf", "-Inf", "NaN"; integers up to 2^53 without
// exponent or fraction ("3", "-12"); anything else as the shortest text that reads back to the
// same double ("0.005", "1e-07", "1.5e+300").
void AppendValue(double value, std::string* out);
std::string FormatValue(double value);

// HELP text: backslash -> "\\", newline -> "\n".
void AppendEscapedHelp(std::string_view help, std::string* out);
// Label value: backslash -> "\\", double quote -> "\"", newline -> "\n".
void AppendEscapedLabelValue(std::string_view value, std::string* out);

// Prometheus rejects a whole scrape over one label value that is not UTF-8; label values come
// from users (tenant names, job names), so every malformed sequence becomes U+FFFD instead.
bool IsValidUtf8(std::string_view text);
std::string SanitizeUtf8(std::string_view text);

}  // namespace herd::metrics

#endif  // HERD_COMMON_METRICS_TEXT_FORMAT_H_
