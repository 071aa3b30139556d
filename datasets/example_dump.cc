// ParseExampleDump: see example_dump.h.
#include "datasets/example_dump.h"

#include "common/strings.h"
#include "nlohmann/json.hpp"

namespace herd::datasets {

absl::StatusOr<ExampleDump> ParseExampleDump(std::string_view jsonl) {
  using nlohmann::json;
  ExampleDump out;
  size_t start = 0;
  while (start < jsonl.size()) {
    size_t end = jsonl.find('\n', start);
    if (end == std::string_view::npos) end = jsonl.size();
    const std::string_view line = jsonl.substr(start, end - start);
    start = end + 1;
    if (line.empty()) continue;
    json j = json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (!j.is_object() || !j.contains("line") || !j["line"].is_number_integer()) {
      return absl::InvalidArgumentError(StrCat("herd-prepare wrote an unexpected line: ", line.substr(0, 200)));
    }
    InspectedExample ex;
    ex.line = j["line"].get<int64_t>();
    if (out.examples.empty()) {
      out.format = j.value("format", "");
      out.chat_template = j.value("chat_template", "");
    }
    ex.error = j.value("error", "");
    if (ex.error.empty()) {
      const json& ids = j["ids"];
      const json& trained = j["trained"];
      const json& pieces = j["pieces"];
      if (!ids.is_array() || !trained.is_array() || !pieces.is_array() || ids.size() != trained.size() ||
          ids.size() != pieces.size()) {
        return absl::InvalidArgumentError(
            StrCat("herd-prepare wrote line ", ex.line, "'s example without ids, trained and pieces"));
      }
      for (size_t i = 0; i < ids.size(); ++i) {
        if (!ids[i].is_number_integer() || !trained[i].is_number_integer() || !pieces[i].is_string()) {
          return absl::InvalidArgumentError(StrCat("herd-prepare wrote a malformed token in line ", ex.line));
        }
        ex.ids.push_back(ids[i].get<int32_t>());
        ex.trained.push_back(trained[i].get<int>() != 0);
        ex.pieces.push_back(pieces[i].get<std::string>());
      }
      ex.length = j.value("length", static_cast<int64_t>(ex.ids.size()));
    }
    out.examples.push_back(std::move(ex));
  }
  return out;
}

}  // namespace herd::datasets
