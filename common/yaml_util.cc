// YAML helpers over yaml-cpp; every yaml-cpp exception is caught here and becomes a Status.
#include "common/yaml_util.h"

#include <cerrno>
#include <cmath>
#include <cstdlib>

#include "common/strings.h"

#include "common/file_util.h"
#include "common/status.h"

namespace herd {

absl::StatusOr<YAML::Node> ParseYaml(std::string_view text, std::string_view source) {
  try {
    return YAML::Load(std::string(text));
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(
        herd::StrCat(source, ":", e.mark.line + 1, ":", e.mark.column + 1, ": ", e.msg));
  }
}

absl::StatusOr<YAML::Node> LoadYamlFile(const std::string& path) {
  absl::StatusOr<std::string> text = ReadFile(path);
  if (!text.ok()) return text.status();
  return ParseYaml(*text, path);
}

YamlFields::YamlFields(YAML::Node node, std::string source, std::string prefix)
    : node_(node), source_(std::move(source)), prefix_(std::move(prefix)) {}

std::string YamlFields::Where(const YAML::Node& node) const {
  YAML::Mark mark = node.Mark();
  if (mark.line < 0) return source_;
  return herd::StrCat(source_, ":", mark.line + 1);
}

absl::Status YamlFields::Error(std::string_view key, std::string_view reason) const {
  YAML::Node at = node_;
  if (node_.IsMap()) {
    for (const auto& kv : node_) {
      if (kv.first.Scalar() == key) at = kv.second;
    }
  }
  return absl::InvalidArgumentError(herd::StrCat(Where(at), ": ", prefix_, prefix_.empty() ? "" : ".",
                                                 key, ": ", reason));
}

std::optional<YAML::Node> YamlFields::Find(std::string_view key) {
  seen_.insert(std::string(key));
  if (!node_.IsMap()) return std::nullopt;
  for (const auto& kv : node_) {
    if (kv.first.Scalar() == key) return kv.second;
  }
  return std::nullopt;
}

namespace {

std::string Shown(const YAML::Node& n) {
  if (n.IsScalar()) return herd::StrCat("'", n.Scalar(), "'");
  if (n.IsSequence()) return "a list";
  if (n.IsMap()) return "a mapping";
  return "null";
}

}  // namespace

absl::Status YamlFields::Read(std::string_view key, std::string* out) {
  std::optional<YAML::Node> found = Find(key);
  if (!found || found->IsNull()) return absl::OkStatus();
  const YAML::Node& n = *found;
  if (!n.IsScalar()) return Error(key, herd::StrCat("expected a string, got ", Shown(n)));
  *out = n.Scalar();
  return absl::OkStatus();
}

absl::Status YamlFields::Read(std::string_view key, bool* out) {
  std::optional<YAML::Node> found = Find(key);
  if (!found) return absl::OkStatus();
  const YAML::Node& n = *found;
  const std::string& s = n.IsScalar() ? n.Scalar() : "";
  if (s == "true" || s == "True" || s == "yes") {
    *out = true;
  } else if (s == "false" || s == "False" || s == "no") {
    *out = false;
  } else {
    return Error(key, herd::StrCat("expected true or false, got ", Shown(n)));
  }
  return absl::OkStatus();
}

absl::Status YamlFields::Read(std::string_view key, int64_t* out) {
  std::optional<YAML::Node> found = Find(key);
  if (!found) return absl::OkStatus();
  const YAML::Node& n = *found;
  if (n.IsScalar()) {
    const std::string& s = n.Scalar();
    char* end = nullptr;
    errno = 0;
    long long v = std::strtoll(s.c_str(), &end, 10);
    if (!s.empty() && end == s.c_str() + s.size() && errno == 0) {
      *out = v;
      return absl::OkStatus();
    }
  }
  return Error(key, herd::StrCat("expected an integer, got ", Shown(n)));
}

absl::Status YamlFields::Read(std::string_view key, int* out) {
  int64_t v = *out;
  HERD_RETURN_IF_ERROR(Read(key, &v));
  if (v < INT32_MIN || v > INT32_MAX) return Error(key, "integer out of range");
  *out = static_cast<int>(v);
  return absl::OkStatus();
}

absl::Status YamlFields::Read(std::string_view key, double* out) {
  std::optional<YAML::Node> found = Find(key);
  if (!found) return absl::OkStatus();
  const YAML::Node& n = *found;
  if (n.IsScalar()) {
    const std::string& s = n.Scalar();
    char* end = nullptr;
    double v = std::strtod(s.c_str(), &end);
    if (!s.empty() && end == s.c_str() + s.size() && std::isfinite(v)) {
      *out = v;
      return absl::OkStatus();
    }
  }
  return Error(key, herd::StrCat("expected a number, got ", Shown(n)));
}

absl::Status YamlFields::Read(std::string_view key, std::optional<int64_t>* out) {
  std::optional<YAML::Node> found = Find(key);
  if (!found || found->IsNull()) return absl::OkStatus();
  const YAML::Node& n = *found;
  int64_t v = 0;
  HERD_RETURN_IF_ERROR(Read(key, &v));
  *out = v;
  return absl::OkStatus();
}

absl::Status YamlFields::Read(std::string_view key, std::vector<std::string>* out) {
  std::optional<YAML::Node> found = Find(key);
  if (!found) return absl::OkStatus();
  const YAML::Node& n = *found;
  if (n.IsScalar()) {
    *out = {n.Scalar()};
    return absl::OkStatus();
  }
  if (!n.IsSequence()) return Error(key, herd::StrCat("expected a list of strings, got ", Shown(n)));
  std::vector<std::string> values;
  for (const auto& item : n) {
    if (!item.IsScalar()) return Error(key, "expected a list of strings");
    values.push_back(item.Scalar());
  }
  *out = std::move(values);
  return absl::OkStatus();
}

absl::StatusOr<YamlFields> YamlFields::Child(std::string_view key) {
  std::optional<YAML::Node> n = Find(key);
  std::string path = prefix_.empty() ? std::string(key) : herd::StrCat(prefix_, ".", key);
  if (!n || n->IsNull()) return YamlFields(YAML::Node(YAML::NodeType::Null), source_, path);
  if (!n->IsMap()) return Error(key, herd::StrCat("expected a mapping, got ", Shown(*n)));
  return YamlFields(*n, source_, path);
}

absl::Status YamlFields::Finish() const {
  if (!node_.IsMap()) {
    if (!node_.IsNull()) {
      return absl::InvalidArgumentError(herd::StrCat(Where(node_), ": ", prefix_.empty() ? "document" : prefix_,
                                                     ": expected a mapping"));
    }
    return absl::OkStatus();
  }
  for (const auto& kv : node_) {
    const std::string& key = kv.first.Scalar();
    if (seen_.count(key) == 0) {
      std::vector<std::string> known(seen_.begin(), seen_.end());
      return absl::InvalidArgumentError(
          herd::StrCat(Where(kv.first), ": ", prefix_, prefix_.empty() ? "" : ".", key,
                       ": unknown field (known: ", herd::StrJoin(known, ", "), ")"));
    }
  }
  return absl::OkStatus();
}

}  // namespace herd
