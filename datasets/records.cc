// JSONL record parsing and validation.
#include "datasets/records.h"

#include "common/strings.h"

#include "nlohmann/json.hpp"

namespace herd::datasets {
namespace {

using nlohmann::json;

constexpr int kMaxDepth = 16;

struct FormatKeys {
  RecordFormat format;
  std::vector<std::string_view> keys;  // the keys that identify it
};

const FormatKeys kFormats[] = {
    {RecordFormat::kChat, {"messages"}},
    {RecordFormat::kPromptCompletion, {"prompt", "completion"}},
    {RecordFormat::kAlpaca, {"instruction", "output"}},
    {RecordFormat::kTokenized, {"input_ids"}},
    {RecordFormat::kText, {"text"}},
};

bool Fail(Problem* p, std::string field, std::string reason) {
  p->field = std::move(field);
  p->reason = std::move(reason);
  return false;
}

// The deepest nesting of arrays and objects in the JSON text, counted before parsing: a line of
// a million '[' must be refused without building (and recursively destroying) a value that deep.
int TextDepth(std::string_view text) {
  int depth = 0, deepest = 0;
  bool in_string = false, escaped = false;
  for (char c : text) {
    if (in_string) {
      if (escaped) {
        escaped = false;
      } else if (c == '\\') {
        escaped = true;
      } else if (c == '"') {
        in_string = false;
      }
      continue;
    }
    if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      deepest = std::max(deepest, ++depth);
      if (deepest > kMaxDepth) return deepest;
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return deepest;
}

bool GetString(const json& obj, std::string_view key, bool required, std::string* out, Problem* p) {
  auto it = obj.find(key);
  if (it == obj.end()) return required ? Fail(p, std::string(key), "missing") : true;
  if (!it->is_string()) return Fail(p, std::string(key), herd::StrCat("must be a string, got ", it->type_name()));
  *out = it->get<std::string>();
  return true;
}

bool GetIds(const json& obj, std::string_view key, std::vector<int64_t>* out, Problem* p) {
  const json& arr = obj.at(key);
  if (!arr.is_array()) return Fail(p, std::string(key), "must be an array of integers");
  out->reserve(arr.size());
  for (size_t i = 0; i < arr.size(); ++i) {
    if (!arr[i].is_number_integer()) {
      return Fail(p, herd::StrCat(key, "[", i, "]"), herd::StrCat("must be an integer, got ", arr[i].dump()));
    }
    out->push_back(arr[i].get<int64_t>());
  }
  return true;
}

bool ParseMessages(const json& arr, std::vector<Message>* out, Problem* p) {
  if (!arr.is_array()) return Fail(p, "messages", "must be an array of {role, content} objects");
  if (arr.empty()) return Fail(p, "messages", "must not be empty");
  bool has_assistant = false;
  for (size_t i = 0; i < arr.size(); ++i) {
    const std::string where = herd::StrCat("messages[", i, "]");
    const json& m = arr[i];
    if (!m.is_object()) return Fail(p, where, "must be an object with role and content");
    Message msg;
    if (!GetString(m, "role", true, &msg.role, p) || !GetString(m, "content", true, &msg.content, p)) {
      p->field = herd::StrCat(where, ".", p->field);
      return false;
    }
    if (msg.role != "system" && msg.role != "user" && msg.role != "assistant") {
      return Fail(p, where + ".role", herd::StrCat("must be one of system, user, assistant (got '", msg.role, "')"));
    }
    if (msg.role == "system" && i != 0) return Fail(p, where + ".role", "a system message may only come first");
    if (auto w = m.find("weight"); w != m.end()) {
      if (!w->is_number_integer() || (w->get<int64_t>() != 0 && w->get<int64_t>() != 1)) {
        return Fail(p, where + ".weight", herd::StrCat("must be 0 or 1, got ", w->dump()));
      }
      msg.weight = w->get<int>();
    }
    for (const auto& [key, value] : m.items()) {
      if (key != "role" && key != "content" && key != "weight") {
        return Fail(p, herd::StrCat(where, ".", key), "unknown field (allowed: role, content, weight)");
      }
    }
    has_assistant = has_assistant || msg.role == "assistant";
    out->push_back(std::move(msg));
  }
  if (!has_assistant) return Fail(p, "messages", "has no assistant message to train on");
  return true;
}

}  // namespace

std::string_view FormatName(RecordFormat format) {
  switch (format) {
    case RecordFormat::kText: return "text";
    case RecordFormat::kPromptCompletion: return "prompt_completion";
    case RecordFormat::kChat: return "chat";
    case RecordFormat::kAlpaca: return "alpaca";
    case RecordFormat::kTokenized: return "tokenized";
  }
  return "unknown";
}

std::optional<RecordFormat> ParseFormatName(std::string_view name) {
  for (const FormatKeys& f : kFormats) {
    if (FormatName(f.format) == name) return f.format;
  }
  return std::nullopt;
}

std::optional<Record> ParseRecord(std::string_view line, Problem* p) {
  if (TextDepth(line) > kMaxDepth) {
    Fail(p, "", herd::StrCat("nested deeper than ", kMaxDepth));
    return std::nullopt;
  }
  json j = json::parse(line, nullptr, /*allow_exceptions=*/false);
  bool shape_ok = true;
  if (j.is_discarded()) {
    shape_ok = Fail(p, "", "not valid JSON");
  } else if (!j.is_object()) {
    shape_ok = Fail(p, "", herd::StrCat("must be a JSON object, got ", j.type_name()));
  }
  if (!shape_ok) return std::nullopt;

  std::vector<RecordFormat> matches;
  std::vector<std::string> identifying;
  for (const FormatKeys& f : kFormats) {
    bool any = false;
    for (std::string_view k : f.keys) any = any || j.contains(k);
    if (any) {
      matches.push_back(f.format);
      for (std::string_view k : f.keys) {
        if (j.contains(k)) identifying.emplace_back(k);
      }
    }
  }
  if (matches.empty()) {
    Fail(p, "", "no known format: expected text, prompt+completion, messages, instruction+output or input_ids");
    return std::nullopt;
  }
  if (matches.size() > 1) {
    Fail(p, "", herd::StrCat("mixes formats (has ", herd::StrJoin(identifying, ", "), ")"));
    return std::nullopt;
  }
  Record r;
  r.format = matches[0];
  bool ok = true;
  switch (r.format) {
    case RecordFormat::kText:
      ok = GetString(j, "text", true, &r.text, p);
      if (ok && r.text.empty()) ok = Fail(p, "text", "must not be empty");
      break;
    case RecordFormat::kPromptCompletion:
      ok = GetString(j, "prompt", true, &r.prompt, p) && GetString(j, "completion", true, &r.completion, p);
      if (ok && r.completion.empty()) ok = Fail(p, "completion", "must not be empty");
      break;
    case RecordFormat::kChat:
      ok = ParseMessages(j.at("messages"), &r.messages, p);
      break;
    case RecordFormat::kAlpaca:
      ok = GetString(j, "instruction", true, &r.instruction, p) && GetString(j, "input", false, &r.input, p) &&
           GetString(j, "output", true, &r.output, p);
      if (ok && r.output.empty()) ok = Fail(p, "output", "must not be empty");
      break;
    case RecordFormat::kTokenized:
      ok = GetIds(j, "input_ids", &r.input_ids, p);
      if (ok && r.input_ids.empty()) ok = Fail(p, "input_ids", "must not be empty");
      if (ok && j.contains("labels")) {
        ok = GetIds(j, "labels", &r.labels, p);
        if (ok && r.labels.size() != r.input_ids.size()) {
          ok = Fail(p, "labels", herd::StrCat("has ", r.labels.size(), " entries, input_ids has ",
                                              r.input_ids.size()));
        }
      }
      break;
  }
  if (!ok) return std::nullopt;
  return r;
}

bool ValidationReport::ok(const ValidationOptions& options) const {
  if (accepted == 0) return false;
  return invalid == 0 || options.skip_invalid;
}

ParsedLine ParseJsonlLine(std::string_view line, int64_t number,
                          const ValidationOptions& options) {
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  ParsedLine out;
  if (line.find_first_not_of(" \t") == std::string_view::npos) return out;  // kBlank
  if (line.size() > options.max_line_bytes) return OverlongJsonlLine(line.size(), number, options);
  out.record = ParseRecord(line, &out.problem);
  if (out.record) {
    out.kind = ParsedLine::Kind::kRecord;
  } else {
    out.kind = ParsedLine::Kind::kProblem;
    out.problem.line = number;
  }
  return out;
}

ParsedLine OverlongJsonlLine(size_t bytes, int64_t number, const ValidationOptions& options) {
  ParsedLine out;
  out.kind = ParsedLine::Kind::kProblem;
  out.problem = {number, "",
                 herd::StrCat("line is ", bytes, " bytes, the limit is ", options.max_line_bytes)};
  return out;
}

JsonlValidator::JsonlValidator(const ValidationOptions& options) : options_(options) {
  report_.format = options.format;
}

void JsonlValidator::AddProblem(Problem p) {
  ++report_.invalid;
  if (report_.problems.size() < options_.max_problems) report_.problems.push_back(std::move(p));
}

bool JsonlValidator::Accept(const ParsedLine& line, int64_t number) {
  if (done_) return false;
  if (line.kind == ParsedLine::Kind::kBlank) {
    ++report_.blank_lines;
    return false;
  }
  if (report_.accepted + report_.invalid >= options_.max_records) {
    AddProblem({number, "", herd::StrCat("more than ", options_.max_records, " records")});
    done_ = true;
    return false;
  }
  if (line.kind == ParsedLine::Kind::kProblem) {
    AddProblem(line.problem);
    return false;
  }
  const RecordFormat format = line.record->format;
  if (!report_.format) report_.format = format;
  if (format != *report_.format) {
    AddProblem({number, "",
                herd::StrCat("is ", FormatName(format), " but the file is ",
                             FormatName(*report_.format))});
    return false;
  }
  ++report_.accepted;
  return true;
}

ValidationReport ValidateJsonl(std::istream& in, const ValidationOptions& options,
                               std::vector<Record>* records_out) {
  JsonlValidator validator(options);
  std::string line;
  int64_t number = 0;
  while (!validator.done() && std::getline(in, line)) {
    ++number;
    ParsedLine parsed = ParseJsonlLine(line, number, options);
    if (validator.Accept(parsed, number) && records_out) {
      records_out->push_back(std::move(*parsed.record));
    }
  }
  return validator.report();
}

std::string DescribeProblem(const Problem& p) {
  return herd::StrCat("line ", p.line, ": ", p.field.empty() ? "" : herd::StrCat(p.field, ": "), p.reason);
}

}  // namespace herd::datasets
