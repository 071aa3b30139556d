// Reading YAML configs with errors a user can act on: every error names the file, the line and
// the dotted field ("job.yaml:7: training.learning_rate: expected a number, got 'fast'"), and
// unknown keys are errors, so a typo never silently falls back to a default.
#ifndef HERD_COMMON_YAML_UTIL_H_
#define HERD_COMMON_YAML_UTIL_H_

#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "yaml-cpp/yaml.h"

namespace herd {

// Parses YAML text; `source` names it in errors (a file path, "--config", ...).
absl::StatusOr<YAML::Node> ParseYaml(std::string_view text, std::string_view source);
// Reads and parses a YAML file.
absl::StatusOr<YAML::Node> LoadYamlFile(const std::string& path);

// Reads the fields of one YAML mapping. Read*() leave the output untouched when the key is
// absent (so callers pre-set defaults), and remember which keys were read so Finish() can
// reject the rest.
class YamlFields {
 public:
  // `node` must be a map or null (null = all defaults). `prefix` is the dotted path of `node`.
  YamlFields(YAML::Node node, std::string source, std::string prefix = "");

  absl::Status Read(std::string_view key, std::string* out);  // null keeps the default
  absl::Status Read(std::string_view key, bool* out);
  absl::Status Read(std::string_view key, int64_t* out);
  absl::Status Read(std::string_view key, int* out);
  absl::Status Read(std::string_view key, double* out);
  absl::Status Read(std::string_view key, std::optional<int64_t>* out);  // null keeps nullopt
  absl::Status Read(std::string_view key, std::vector<std::string>* out);  // scalar or sequence
  // The nested mapping at `key` (all defaults when absent or null).
  absl::StatusOr<YamlFields> Child(std::string_view key);
  // INVALID_ARGUMENT listing every key that no Read()/Child() asked for.
  absl::Status Finish() const;

  // An error about `key` in the same words as the readers use.
  absl::Status Error(std::string_view key, std::string_view reason) const;
  const std::string& source() const { return source_; }

 private:
  std::optional<YAML::Node> Find(std::string_view key);  // nullopt when absent
  std::string Where(const YAML::Node& node) const;

  YAML::Node node_;
  std::string source_;
  std::string prefix_;
  std::set<std::string> seen_;
};

}  // namespace herd

#endif  // HERD_COMMON_YAML_UTIL_H_
